#pragma once
// One builder per model family (private to src/models; build_causal_lm dispatches).

#include <memory>

#include "strata/models/causal_lm.h"

namespace strata::models::detail {

std::shared_ptr<CausalLM> build_decoder(const TransformerConfig& config, DType dtype,
                                        const TensorParallel& tp);
std::shared_ptr<CausalLM> build_gpt2(const TransformerConfig& config, DType dtype);
std::shared_ptr<CausalLM> build_opt(const TransformerConfig& config, DType dtype);
std::shared_ptr<CausalLM> build_gemma(const TransformerConfig& config, DType dtype);
std::shared_ptr<CausalLM> build_gpt_oss(const TransformerConfig& config, DType dtype);
std::shared_ptr<CausalLM> build_deepseek(const TransformerConfig& config, DType dtype);

// gpt-oss keys parse_transformer_config leaves to src/models/gpt_oss_config.cc: the MXFP4
// quantization_config, swiglu_limit/alpha, and GptOssConfig's YaRN default when no rope is given.
void parse_gpt_oss_config(const io::ModelConfig& config, TransformerConfig& t);

}  // namespace strata::models::detail
