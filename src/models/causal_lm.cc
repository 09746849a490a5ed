#include "strata/models/causal_lm.h"

#include <chrono>

#include "models/attention.h"
#include "models/families.h"
#include "strata/core/error.h"
#include "strata/models/layers.h"
#include "strata/ops.h"

namespace strata::models {

CausalLM::CausalLM(std::string class_name, TransformerConfig config)
    : nn::Module(std::move(class_name)), config_(std::move(config)) {}

void CausalLM::finish(std::shared_ptr<nn::Module> base, std::shared_ptr<nn::Embedding> embed_tokens,
                      std::int64_t head_in, DType dtype) {
  base_ = register_module(config_.base_model_prefix(), std::move(base));
  embed_tokens_ = std::move(embed_tokens);
  lm_head_ = register_module(
      "lm_head", std::make_shared<nn::Linear>(head_in, config_.vocab_size, false, dtype));
  // One slot under both names: loading or moving either moves both (transformers'
  // _tied_weights_keys {"lm_head.weight": "<embedding>.weight"}).
  if (config_.tie_word_embeddings) {
    lm_head_->bind_tensor("weight", embed_tokens_->parameter_slot("weight"));
  }
}

std::shared_ptr<KVCache> CausalLM::make_cache(std::int64_t reserve_tokens) const {
  return std::make_shared<KVCache>(config_.num_layers, reserve_tokens);
}

Value CausalLM::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& ids = args.tensor(0, who);
  STRATA_CHECK_ARG(ids.dim() == 2 && is_integral(ids.dtype()) && ids.dtype() != DType::Bool,
                   "{}: input_ids must be integer token ids [batch, seq], got {}", who,
                   ids.describe());
  STRATA_CHECK_ARG(ids.size(1) > 0, "{}: input_ids is empty ({})", who, ids.describe());
  std::shared_ptr<KVCache> cache = detail::cache_argument(args, who);
  std::int64_t keep = 0;
  if (const Value* k = args.keyword("logits_to_keep")) keep = k->to_int();
  STRATA_CHECK_ARG(keep >= 0, "{}: logits_to_keep is {}; it must be >= 0", who, keep);

  Value cache_value = cache ? Value(cache) : Value();
  Tensor hidden = (*base_)(Args({ids}, {{"past_key_values", cache_value}})).tensor();
  const std::int64_t seq = hidden.size(1);
  if (keep > 0 && keep < seq) hidden = hidden.narrow(1, seq - keep, keep);
  Tensor logits = call(*lm_head_, hidden);
  return nn::ValueDict{{"logits", logits}, {"past_key_values", cache_value}};
}

CausalLM::Output CausalLM::run(const Tensor& input_ids, const std::shared_ptr<KVCache>& cache,
                               std::int64_t logits_to_keep) {
  Args args({input_ids});
  if (cache) args.keywords.set("past_key_values", Value(cache));
  args.keywords.set("logits_to_keep", Value(logits_to_keep));
  const Value out = (*this)(std::move(args));
  return {out.dict().at("logits").tensor(), cache};
}

std::shared_ptr<CausalLM> build_causal_lm(const TransformerConfig& config, DType dtype) {
  STRATA_CHECK_ARG(is_floating_point(dtype),
                   "build_causal_lm: dtype {} is not a floating-point dtype; use float32, "
                   "bfloat16 or float16",
                   dtype);
  switch (config.architecture) {
    case Architecture::GPT2:
      return detail::build_gpt2(config, dtype);
    case Architecture::OPT:
      return detail::build_opt(config, dtype);
    default:
      return detail::build_decoder(config, dtype);
  }
}

std::shared_ptr<CausalLM> build_causal_lm(const io::ModelConfig& config, DType dtype) {
  return build_causal_lm(parse_transformer_config(config), dtype);
}

GenerationResult generate_greedy(CausalLM& model, const Tensor& prompt_ids,
                                 const GenerationOptions& options) {
  STRATA_CHECK_ARG(prompt_ids.dim() == 2 && prompt_ids.size(1) > 0,
                   "generate_greedy: prompt_ids must be [batch, seq] token ids, got {}",
                   prompt_ids.describe());
  STRATA_CHECK_ARG(options.max_new_tokens > 0,
                   "generate_greedy: max_new_tokens is {}; it must be positive",
                   options.max_new_tokens);
  Device device = Device::cpu();
  if (options.input_device) {
    device = *options.input_device;
  } else if (const Tensor& w = model.input_embeddings().weight(); !w.is_meta()) {
    device = w.device();
  }
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const std::int64_t batch = prompt_ids.size(0), new_tokens = options.max_new_tokens;
  auto cache = model.make_cache(prompt_ids.size(1) + new_tokens);
  Tensor tokens = Tensor::empty({batch, new_tokens}, DType::Int64);
  GenerationResult result;

  Tensor input = prompt_ids.to(device, DType::Int64);
  for (std::int64_t step = 0; step < new_tokens; ++step) {
    const auto start = Clock::now();
    const Tensor logits = model.run(input, cache, 1).logits;  // [batch, 1, vocab]
    // The copy to the cpu waits for the device, so the time covers the whole step.
    const Tensor next = ops::argmax(logits, -1).to(Device::cpu());  // [batch, 1]
    const auto end = Clock::now();
    (step == 0 ? result.prefill_seconds : result.step_seconds.emplace_back()) = seconds(start, end);
    tokens.narrow(1, step, 1).copy_(next);
    input = next.to(device);
  }
  result.tokens = tokens;
  return result;
}

}  // namespace strata::models
