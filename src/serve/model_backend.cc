// The Backend of a model folder: tokenizer, chat template, generation_config.json defaults and the
// scheduler over make_model_batch.
#include "strata/serve/model_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "strata/engine/generate.h"
#include "strata/engine/sampling.h"
#include "strata/engine/stopping.h"
#include "strata/models/causal_lm.h"
#include "strata/text/chat_template.h"
#include "strata/text/generation_config.h"
#include "strata/text/tokenizer.h"

namespace strata::serve {
namespace {

class ModelTextStream : public TextStream {
 public:
  ModelTextStream(const text::Tokenizer& tokenizer, std::vector<std::string> stop)
      : decoder_(tokenizer, /*skip_special_tokens=*/true), matcher_(std::move(stop)) {}
  Piece push(std::int64_t token) override {
    engine::StopStringMatcher::Piece piece = matcher_.feed(decoder_.push(token));
    return {std::move(piece.text), piece.stopped};
  }
  std::string finish() override {
    if (matcher_.stopped()) return "";
    engine::StopStringMatcher::Piece piece = matcher_.feed(decoder_.finish());
    return piece.stopped ? piece.text : piece.text + matcher_.flush();
  }

 private:
  text::StreamDecoder decoder_;
  engine::StopStringMatcher matcher_;
};

class ModelBackend : public Backend {
 public:
  ModelBackend(std::shared_ptr<models::CausalLM> model, const std::filesystem::path& dir,
               engine::SchedulerOptions options)
      : model_dir_(dir),
        tokenizer_(text::Tokenizer::from_folder(dir)),
        generation_(text::read_generation_config(dir)),
        vocab_(model->config().vocab_size),
        scheduler_(engine::make_model_batch(model), cut_context(options, *model)) {
    defaults_ = engine::sampling_params_from(generation_);
    eos_ = generation_.eos_token_ids;
    if (eos_.empty() && tokenizer_.eos_token_id()) eos_.push_back(*tokenizer_.eos_token_id());
    if (text::ChatTemplate::folder_has_template(dir)) {
      template_.emplace(text::ChatTemplate::from_folder(dir));
      chat_.emplace(*template_, tokenizer_);
    }
  }

  std::vector<std::int64_t> encode_prompt(const std::string& prompt) const override {
    return tokenizer_.encode(prompt, /*add_special_tokens=*/true);
  }
  std::vector<std::int64_t> encode_chat(const nlohmann::json& messages) const override {
    if (!chat_) {
      throw ApiError(400,
                     fmt::format("the model {} has no chat template (no chat_template in "
                                 "tokenizer_config.json, no chat_template.jinja): it is a base "
                                 "model; use /v1/completions, or add a chat template to its "
                                 "folder",
                                 model_dir_.string()),
                     "messages", "no_chat_template");
    }
    return chat_->encode(messages);
  }
  std::int64_t vocab_size() const override { return vocab_; }
  std::vector<std::int64_t> eos_token_ids() const override { return eos_; }

  std::shared_ptr<const engine::SamplingParams> sampling_params(
      const SamplingFields& f) const override {
    auto p = std::make_shared<engine::SamplingParams>(defaults_);
    if (f.temperature) {
      p->temperature = *f.temperature;
      p->do_sample = *f.temperature > 0.0;  // OpenAI: 0 is greedy, anything else samples
    }
    if (f.top_p) p->top_p = *f.top_p;
    if (f.top_k) p->top_k = std::max<std::int64_t>(*f.top_k, 0);
    if (f.min_p) p->min_p = *f.min_p;
    if (f.repetition_penalty) p->repetition_penalty = *f.repetition_penalty;
    p->presence_penalty = f.presence_penalty;
    p->frequency_penalty = f.frequency_penalty;
    if (f.seed) p->seed = *f.seed;
    try {
      p->validate();
    } catch (const InvalidArgument& e) {
      throw ApiError(400, e.what(), "", "invalid_value");
    }
    return p;
  }
  std::uint64_t seed_for(const SamplingFields& fields) const override {
    return fields.seed ? *fields.seed : engine::resolve_seed(defaults_);
  }
  std::unique_ptr<TextStream> text_stream(const std::vector<std::string>& stop) const override {
    return std::make_unique<ModelTextStream>(tokenizer_, stop);
  }
  engine::Scheduler& scheduler() override { return scheduler_; }

 private:
  static engine::SchedulerOptions cut_context(engine::SchedulerOptions options,
                                              const models::CausalLM& model) {
    const std::int64_t limit = model.config().max_position_embeddings;
    if (limit > 0) options.ctx_size = std::min(options.ctx_size, limit);
    return options;
  }

  std::filesystem::path model_dir_;
  text::Tokenizer tokenizer_;
  text::GenerationConfig generation_;
  std::int64_t vocab_;
  engine::SamplingParams defaults_;
  std::vector<std::int64_t> eos_;
  std::optional<text::ChatTemplate> template_;
  std::optional<ChatPromptEncoder> chat_;
  engine::Scheduler scheduler_;  // last: its thread stops before the rest goes
};

}  // namespace

std::unique_ptr<Backend> make_model_backend(std::shared_ptr<models::CausalLM> model,
                                            const std::filesystem::path& model_dir,
                                            engine::SchedulerOptions scheduler) {
  return std::make_unique<ModelBackend>(std::move(model), model_dir, scheduler);
}

}  // namespace strata::serve
