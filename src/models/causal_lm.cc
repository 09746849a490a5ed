#include "strata/models/causal_lm.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "models/attention.h"
#include "models/capped_attention.h"
#include "models/families.h"
#include "models/padding_mask.h"
#include "strata/core/error.h"
#include "strata/models/base_model.h"
#include "strata/models/decode_graph.h"
#include "strata/models/layers.h"
#include "strata/ops.h"

namespace strata::models {

CausalLM::CausalLM(std::string class_name, TransformerConfig config, TensorParallel tp)
    : nn::Module(std::move(class_name)), config_(std::move(config)), tp_(std::move(tp)) {}

void CausalLM::finish(std::shared_ptr<nn::Module> base, std::shared_ptr<nn::Embedding> embed_tokens,
                      std::int64_t head_in, DType dtype) {
  base_ = register_module(config_.base_model_prefix(), std::move(base));
  embed_tokens_ = std::move(embed_tokens);
  if (tp_.active()) {
    lm_head_ = register_module(
        "lm_head", std::make_shared<VocabParallelHead>(head_in, config_.vocab_size, dtype, tp_));
    return;
  }
  lm_head_ = register_module(
      "lm_head", std::make_shared<nn::Linear>(head_in, config_.vocab_size, false, dtype));
  // One slot under both names: loading or moving either moves both (transformers'
  // _tied_weights_keys {"lm_head.weight": "<embedding>.weight"}).
  if (config_.tie_word_embeddings) {
    lm_head_->bind_tensor("weight", embed_tokens_->parameter_slot("weight"));
  }
}

void CausalLM::finish(std::shared_ptr<BaseModel> base, DType dtype) {
  std::shared_ptr<nn::Embedding> embed = base->embed_tokens();
  finish(std::move(base), std::move(embed), config_.hidden_size, dtype);
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
  Args base_args({ids}, {{"past_key_values", cache_value}});
  // The base model checks it against input_ids and the cache (detail::PaddingMask).
  if (const Value* mask = args.keyword("attention_mask"); mask != nullptr && !mask->is_none()) {
    base_args.keywords.set("attention_mask", *mask);
  }
  const Tensor logits = head((*base_)(std::move(base_args)).tensor(), keep);
  return nn::ValueDict{{"logits", logits}, {"past_key_values", cache_value}};
}

Tensor CausalLM::head(Tensor hidden, std::int64_t logits_to_keep) {
  const std::int64_t seq = hidden.size(1);
  if (logits_to_keep > 0 && logits_to_keep < seq) {
    hidden = hidden.narrow(1, seq - logits_to_keep, logits_to_keep);
  }
  Tensor logits = call(*lm_head_, hidden);
  // Gemma 2: logits = cap * tanh(logits / cap).
  if (config_.final_logit_softcapping) {
    logits = detail::soft_cap(logits, *config_.final_logit_softcapping);
  }
  return logits;
}

CausalLM::Output CausalLM::run(const Tensor& input_ids, const std::shared_ptr<KVCache>& cache,
                               std::int64_t logits_to_keep,
                               const std::optional<Tensor>& attention_mask) {
  Args args({input_ids});
  if (cache) args.keywords.set("past_key_values", Value(cache));
  args.keywords.set("logits_to_keep", Value(logits_to_keep));
  if (attention_mask) args.keywords.set("attention_mask", Value(*attention_mask));
  const Value out = (*this)(std::move(args));
  return {out.dict().at("logits").tensor(), cache};
}

std::shared_ptr<CausalLM> build_causal_lm(const TransformerConfig& config, DType dtype) {
  return build_causal_lm(config, dtype, TensorParallel{});
}

std::shared_ptr<CausalLM> build_causal_lm(const TransformerConfig& config, DType dtype,
                                          const TensorParallel& tp) {
  check_tensor_parallel(config, tp.size);
  STRATA_CHECK_ARG(is_floating_point(dtype),
                   "build_causal_lm: dtype {} is not a floating-point dtype; use float32, "
                   "bfloat16 or float16",
                   dtype);
  switch (config.architecture) {
    case Architecture::GPT2:
      return detail::build_gpt2(config, dtype);
    case Architecture::OPT:
      return detail::build_opt(config, dtype);
    case Architecture::Gemma2:
    case Architecture::Gemma3Text:
      return detail::build_gemma(config, dtype);
    case Architecture::GptOss:
      return detail::build_gpt_oss(config, dtype);
    case Architecture::DeepseekV2:
    case Architecture::DeepseekV3:
      return detail::build_deepseek(config, dtype);
    default:
      return detail::build_decoder(config, dtype, tp);
  }
}

std::shared_ptr<CausalLM> build_causal_lm(const io::ModelConfig& config, DType dtype) {
  return build_causal_lm(parse_transformer_config(config), dtype);
}

namespace {

// The prompt's attention mask on the host (int64 [batch, seq] values), checked for greedy
// decoding: every row must end with a token, since the next token is read from the last column.
std::vector<std::int64_t> prompt_mask(const Tensor& mask, const Tensor& prompt_ids) {
  const std::int64_t batch = prompt_ids.size(0), seq = prompt_ids.size(1);
  const detail::PaddingMask checked(mask, batch, seq, 0, "generate_greedy");
  std::vector<std::int64_t> values = checked.tensor().to_vector<std::int64_t>();
  for (std::int64_t b = 0; b < batch; ++b) {
    STRATA_CHECK_ARG(values[static_cast<std::size_t>((b + 1) * seq - 1)] == 1,
                     "generate_greedy: attention_mask row {} ends with padding; the next token "
                     "follows the last column, so pad prompts on the left",
                     b);
  }
  return values;
}

}  // namespace

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
  const std::int64_t prompt_len = prompt_ids.size(1);
  auto cache = model.make_cache(prompt_len + new_tokens);
  Tensor tokens = Tensor::empty({batch, new_tokens}, DType::Int64);
  GenerationResult result;

  // A padded prompt's mask, extended by a column of ones per step (the cache keeps the padded
  // entries; the mask hides them). Kept on the host as [batch, prompt_len + new_tokens].
  std::vector<std::int64_t> mask;
  if (options.attention_mask) {
    const std::vector<std::int64_t> prompt = prompt_mask(*options.attention_mask, prompt_ids);
    const std::int64_t width = prompt_len + new_tokens;
    mask.assign(static_cast<std::size_t>(batch * width), 1);
    for (std::int64_t b = 0; b < batch; ++b) {
      std::copy_n(prompt.begin() + b * prompt_len, prompt_len, mask.begin() + b * width);
    }
  }
  const auto mask_until = [&](std::int64_t columns) -> std::optional<Tensor> {
    if (mask.empty()) return std::nullopt;
    const std::int64_t width = prompt_len + new_tokens;
    std::vector<std::int64_t> part(static_cast<std::size_t>(batch * columns));
    for (std::int64_t b = 0; b < batch; ++b) {
      std::copy_n(mask.begin() + b * width, columns, part.begin() + b * columns);
    }
    return Tensor::from_vector(part, {batch, columns});
  };

  Tensor input = prompt_ids.to(device, DType::Int64);
  // Unpadded decode steps may take the fused CUDA graph (it refuses what it cannot run).
  std::unique_ptr<DecodeGraphRunner> fast;
  if (options.decode_graph && mask.empty() && new_tokens > 1) {
    fast = std::make_unique<DecodeGraphRunner>(model);
  }
  Tensor host_next;
  for (std::int64_t step = 0; step < new_tokens; ++step) {
    const auto start = Clock::now();
    std::optional<Tensor> fast_logits;
    if (fast && step > 0) fast_logits = fast->step(host_next, *cache);
    if (!fast_logits && step > 0) input = host_next.to(device);
    const std::optional<Tensor> step_mask = mask_until(prompt_len + step);
    const Tensor logits =
        fast_logits ? *fast_logits : model.run(input, cache, 1, step_mask).logits;  // [b, 1, V]
    // The copy to the cpu waits for the device, so the time covers the whole step.
    const Tensor next = ops::argmax(logits, -1).to(Device::cpu());  // [batch, 1]
    const auto end = Clock::now();
    (step == 0 ? result.prefill_seconds : result.step_seconds.emplace_back()) = seconds(start, end);
    tokens.narrow(1, step, 1).copy_(next);
    host_next = next;
    if (options.next_input && step + 1 < new_tokens) {
      host_next = options.next_input(step + 1, next);
      STRATA_CHECK_ARG(host_next.shape() == next.shape() && host_next.dtype() == DType::Int64,
                       "generate_greedy: next_input returned {} for step {}; it must return the "
                       "step's token ids as int64 {}",
                       host_next.describe(), step + 1, next.describe());
    }
  }
  result.tokens = tokens;
  return result;
}

}  // namespace strata::models
