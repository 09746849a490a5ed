#include "template_command.h"

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "strata/core/error.h"
#include "strata/text/chat_template.h"

namespace strata::cli {
namespace {

// Ordered, as the template must see the keys in the order the file gives them.
nlohmann::ordered_json read_json_file(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in.good(), IoError, "{} {}: cannot open the file", option, path);
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::ordered_json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    STRATA_THROW(InvalidArgument, "{} {}: not valid JSON ({})", option, path, e.what());
  }
}

std::chrono::sys_seconds parse_now(const std::string& text) {
  std::tm tm{};
  std::istringstream in(text);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  STRATA_CHECK_ARG(!in.fail() && in.peek() == std::char_traits<char>::eof(),
                   "--now '{}': expected YYYY-MM-DDTHH:MM:SS, e.g. 2024-07-26T10:30:00", text);
  const auto day = std::chrono::year{tm.tm_year + 1900} / (tm.tm_mon + 1) / tm.tm_mday;
  STRATA_CHECK_ARG(day.ok(), "--now '{}': not a calendar date", text);
  return std::chrono::sys_days{day} + std::chrono::hours{tm.tm_hour} +
         std::chrono::minutes{tm.tm_min} + std::chrono::seconds{tm.tm_sec};
}

}  // namespace

CLI::App* add_template_command(CLI::App& app, TemplateArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "template", "print the prompt a model's chat template renders for a conversation");
  cmd->add_option("model_dir", args.model_dir,
                  "folder with tokenizer_config.json (chat_template) or chat_template.jinja")
      ->required();
  cmd->add_option("--messages", args.messages_file, "JSON file: a list of {role, content} messages")
      ->required();
  cmd->add_flag("--add-generation-prompt", args.add_generation_prompt,
                "end with the header of the assistant's turn");
  cmd->add_option("--tools", args.tools_file, "JSON file: a list of tool (function) schemas");
  cmd->add_option("--kwargs", args.kwargs,
                  "extra template variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
  cmd->add_option("--now", args.now,
                  "the time strftime_now formats, YYYY-MM-DDTHH:MM:SS (default: the local clock)");
  return cmd;
}

int run_template(const TemplateArgs& args, std::ostream& out) {
  const nlohmann::ordered_json messages = read_json_file(args.messages_file, "--messages");
  STRATA_CHECK_ARG(messages.is_array(), "--messages {}: expected a JSON list of messages, found {}",
                   args.messages_file, messages.type_name());
  text::ChatTemplateOptions options;
  options.add_generation_prompt = args.add_generation_prompt;
  if (args.tools_file) {
    options.tools = read_json_file(*args.tools_file, "--tools");
    STRATA_CHECK_ARG(options.tools.is_array(),
                     "--tools {}: expected a JSON list of tools, found {}", *args.tools_file,
                     options.tools.type_name());
  }
  if (args.kwargs) {
    try {
      options.extra = nlohmann::ordered_json::parse(*args.kwargs);
    } catch (const nlohmann::json::exception& e) {
      STRATA_THROW(InvalidArgument, "--kwargs: not valid JSON ({})", e.what());
    }
    STRATA_CHECK_ARG(options.extra.is_object(), "--kwargs '{}': expected a JSON object",
                     *args.kwargs);
  }
  if (args.now) options.now = parse_now(*args.now);
  const text::ChatTemplate chat_template = text::ChatTemplate::from_folder(args.model_dir);
  out << chat_template.render(messages, options);
  return 0;
}

}  // namespace strata::cli
