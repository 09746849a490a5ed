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

}  // namespace strata::models::detail
