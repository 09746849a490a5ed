#pragma once
// Chat templates: the `chat_template` of a model's tokenizer_config.json (or chat_template.jinja),
// rendered by Strata's own interpreter of the Jinja2 subset that real templates use, the way
// transformers' apply_chat_template renders it (trim_blocks, lstrip_blocks, loop controls, its
// tojson, raise_exception and strftime_now). docs/chat-templates.md describes the subset.

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "strata/core/error.h"

namespace strata::text {

// A template that cannot be parsed or rendered: a syntax error or unsupported construct (with the
// template's line and column), a render error, or the template's own raise_exception(message).
// The server maps it to HTTP 400: the request (or the model folder) is at fault, not Strata.
class TemplateError : public Error {
 public:
  using Error::Error;
};

// The template called raise_exception(message): message() is the template's own text.
class TemplateRaisedError : public TemplateError {
 public:
  TemplateRaisedError(const std::string& what, std::string message)
      : TemplateError(what), message_(std::move(message)) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// Inputs are nlohmann::ordered_json, not nlohmann::json: Jinja (Python) dicts keep insertion
// order, and templates print tool schemas and arguments with tojson in the order the client sent
// them; nlohmann::json would sort the keys. Parse request bodies with nlohmann::ordered_json.
struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  nlohmann::ordered_json tools;      // null = none (the template sees `tools` as none)
  nlohmann::ordered_json documents;  // null = none
  nlohmann::ordered_json
      extra;  // an object of extra keyword arguments, e.g. {"enable_thinking": false}
  // What strftime_now formats: unset = the local clock (as transformers' datetime.now()); set to
  // pin renders (tests), read as a UTC wall-clock time.
  std::optional<std::chrono::sys_seconds> now;
};

namespace jinja {
struct Program;
}

class ChatTemplate {
 public:
  // Reads MODEL_DIR/tokenizer_config.json (`chat_template`: a string, or a list of
  // {"name", "template"} where "default" is used) or MODEL_DIR/chat_template.jinja, and the special
  // tokens (bos/eos/unk/pad: strings or {"content": ...}) from tokenizer_config.json and
  // special_tokens_map.json. Throws TemplateError naming the folder when it has no template.
  static ChatTemplate from_folder(const std::filesystem::path& model_dir);
  static bool folder_has_template(const std::filesystem::path& model_dir);

  // Parses `source` now (a syntax error throws TemplateError naming `origin`, line and column).
  ChatTemplate(std::string source, std::map<std::string, std::string> special_tokens,
               std::string origin);
  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&);  // cheap: the parsed template is shared and immutable
  ChatTemplate& operator=(const ChatTemplate&);
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // The prompt exactly as the model sees it. `messages` is the OpenAI-style list of
  // {"role", "content", ...}. Throws TemplateError (TemplateRaisedError for raise_exception).
  // Safe to call from several threads at once.
  std::string render(const nlohmann::ordered_json& messages,
                     const ChatTemplateOptions& options) const;

  const std::string& source() const { return source_; }
  const std::string& origin() const { return origin_; }
  const std::map<std::string, std::string>& special_tokens() const { return special_tokens_; }

 private:
  std::string source_;
  std::map<std::string, std::string> special_tokens_;
  std::string origin_;
  std::shared_ptr<const jinja::Program> program_;
};

}  // namespace strata::text
