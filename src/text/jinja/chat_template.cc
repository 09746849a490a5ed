// strata::text::ChatTemplate: finding a model's template and special tokens, and rendering it
// with the variables transformers' apply_chat_template passes.

#include "strata/text/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "text/jinja/errors.h"
#include "text/jinja/interpreter.h"
#include "text/jinja/parser.h"

namespace strata::text {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

nlohmann::json read_json(const fs::path& path) {
  const auto text = read_file(path);
  if (!text) return nullptr;
  try {
    return nlohmann::json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    throw TemplateError(fmt::format("{}: not valid JSON ({})", path.string(), e.what()));
  }
}

struct Found {
  std::string source;
  std::string origin;
};

// chat_template.jinja wins over tokenizer_config.json's chat_template, as in transformers.
std::optional<Found> find_template(const fs::path& dir) {
  const fs::path file = dir / "chat_template.jinja";
  if (fs::is_regular_file(file)) {
    auto text = read_file(file);
    if (!text) throw TemplateError(fmt::format("{}: cannot be read", file.string()));
    return Found{std::move(*text), file.string()};
  }
  const fs::path config_path = dir / "tokenizer_config.json";
  const nlohmann::json config = read_json(config_path);
  if (!config.is_object() || !config.contains("chat_template") ||
      config["chat_template"].is_null()) {
    return std::nullopt;
  }
  const nlohmann::json& t = config["chat_template"];
  const std::string origin = config_path.string() + " (chat_template)";
  if (t.is_string()) return Found{t.get<std::string>(), origin};
  if (t.is_array()) {
    std::string names;
    for (const auto& entry : t) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string()) {
        throw TemplateError(fmt::format(
            "{}: each entry of the chat_template list must be {{\"name\": ..., \"template\": ...}}",
            origin));
      }
      const std::string name = entry["name"].get<std::string>();
      if (name == "default") {
        return Found{entry["template"].get<std::string>(), origin + " [default]"};
      }
      names += (names.empty() ? "" : ", ") + name;
    }
    throw TemplateError(
        fmt::format("{}: the list of named templates has no \"default\" (it has: {})", origin,
                    names.empty() ? "none" : names));
  }
  throw TemplateError(
      fmt::format("{}: chat_template must be a string or a list of named templates", origin));
}

void read_special_tokens(const nlohmann::json& j, std::map<std::string, std::string>& tokens) {
  if (!j.is_object()) return;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    if (!j.contains(key)) continue;
    const nlohmann::json& v = j[key];
    if (v.is_string()) {
      tokens[key] = v.get<std::string>();
    } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
      tokens[key] = v["content"].get<std::string>();
    }
  }
}

}  // namespace

ChatTemplate ChatTemplate::from_folder(const fs::path& model_dir) {
  auto found = find_template(model_dir);
  if (!found) {
    throw TemplateError(fmt::format(
        "{}: the model has no chat template (no chat_template in tokenizer_config.json and no "
        "chat_template.jinja); pass a prompt without chat formatting, or add a template",
        model_dir.string()));
  }
  std::map<std::string, std::string> tokens;
  read_special_tokens(read_json(model_dir / "tokenizer_config.json"), tokens);
  read_special_tokens(read_json(model_dir / "special_tokens_map.json"), tokens);
  return ChatTemplate(std::move(found->source), std::move(tokens), std::move(found->origin));
}

bool ChatTemplate::folder_has_template(const fs::path& model_dir) {
  if (fs::is_regular_file(model_dir / "chat_template.jinja")) return true;
  try {
    const nlohmann::json config = read_json(model_dir / "tokenizer_config.json");
    return config.is_object() && config.contains("chat_template") &&
           !config["chat_template"].is_null();
  } catch (const TemplateError&) {
    return false;
  }
}

ChatTemplate::ChatTemplate(std::string source, std::map<std::string, std::string> special_tokens,
                           std::string origin)
    : source_(std::move(source)),
      special_tokens_(std::move(special_tokens)),
      origin_(std::move(origin)),
      program_(jinja::parse_template(source_, origin_)) {}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(const ChatTemplate&) = default;
ChatTemplate& ChatTemplate::operator=(const ChatTemplate&) = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& options) const {
  using jinja::Value;
  if (!messages.is_array()) {
    throw TemplateError(
        fmt::format("{}: messages must be a JSON list of {{\"role\", \"content\"}} "
                    "objects, got {}",
                    origin_, messages.type_name()));
  }
  if (!options.extra.is_null() && !options.extra.is_object()) {
    throw TemplateError(fmt::format("{}: extra template arguments must be a JSON object, got {}",
                                    origin_, options.extra.type_name()));
  }
  jinja::RenderInputs inputs;
  auto& vars = inputs.variables;
  try {
    vars.emplace_back("messages", Value::from_json(messages));
    vars.emplace_back("tools", Value::from_json(options.tools));
    vars.emplace_back("documents", Value::from_json(options.documents));
    vars.emplace_back("add_generation_prompt", Value::from_bool(options.add_generation_prompt));
    for (const auto& [k, v] : special_tokens_) vars.emplace_back(k, Value::from_string(v));
    if (options.extra.is_object()) {
      for (auto it = options.extra.begin(); it != options.extra.end(); ++it) {
        const std::string& key = it.key();
        if (key == "messages" || key == "tools" || key == "documents" ||
            key == "add_generation_prompt") {
          throw TemplateError(
              fmt::format("{}: extra template argument '{}' would replace the one Strata passes",
                          origin_, key));
        }
        auto existing =
            std::find_if(vars.begin(), vars.end(), [&](const auto& p) { return p.first == key; });
        if (existing != vars.end()) {
          existing->second = Value::from_json(it.value());
        } else {
          vars.emplace_back(key, Value::from_json(it.value()));
        }
      }
    }
  } catch (const jinja::RenderError& e) {
    throw TemplateError(fmt::format("{}: bad template input: {}", origin_, e.what()));
  }
  if (options.now) {
    const std::time_t t = options.now->time_since_epoch().count();
    std::tm tm{};
    gmtime_r(&t, &tm);
    inputs.now = tm;
  }
  return jinja::render_program(*program_, inputs);
}

}  // namespace strata::text
