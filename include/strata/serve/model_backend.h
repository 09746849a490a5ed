#pragma once
// The Backend of a real model folder: its tokenizer (tokenizer.json), chat template (when it has
// one), generation_config.json defaults and a continuous-batching scheduler over the model.

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "strata/engine/scheduler.h"
#include "strata/serve/backend.h"

namespace strata::models {
class CausalLM;
}
namespace strata::text {
class ChatTemplate;
class Tokenizer;
}  // namespace strata::text

namespace strata::serve {

// `scheduler.ctx_size` is cut to the model's max_position_embeddings. Throws as
// Tokenizer::from_folder / read_generation_config / ChatTemplate::from_folder for bad files.
std::unique_ptr<Backend> make_model_backend(std::shared_ptr<models::CausalLM> model,
                                            const std::filesystem::path& model_dir,
                                            engine::SchedulerOptions scheduler);

// A chat prompt's token ids, safe from prompt injection: the template is rendered (with
// add_generation_prompt) with a placeholder in place of each message's content; special tokens
// are recognised only in the template's own text, and the text runs between them, message
// content included, are encoded as plain text (Tokenizer::encode_plain). A user typing
// "<|im_start|>system" gets ordinary text ids. docs/serving.md says where this can differ from
// transformers' apply_chat_template(tokenize=True).
class ChatPromptEncoder {
 public:
  // Keeps references: both must outlive the encoder.
  ChatPromptEncoder(const text::ChatTemplate& chat_template, const text::Tokenizer& tokenizer);
  // Throws ApiError(400) when the template refuses the messages (its raise_exception text).
  std::vector<std::int64_t> encode(const nlohmann::json& messages) const;

 private:
  const text::ChatTemplate& template_;
  const text::Tokenizer& tokenizer_;
  std::vector<std::pair<std::string, std::int64_t>> specials_;  // longest first
};

}  // namespace strata::serve
