#pragma once
// Pieces of parse_transformer_config (src/models/config.cc) that the families parsed in files of
// their own reuse (private to src/models).

#include <cstdint>
#include <string_view>

#include "strata/io/model_config.h"
#include "strata/models/config.h"

namespace strata::models::detail {

// transformers' ACT2FN name under `key` (or `fallback` when absent); NotSupported naming the key
// and the value for a name Strata does not implement.
Activation activation_named(const io::ModelConfig& config, std::string_view key,
                            std::string_view fallback);

// The rope of `config`'s rope_theta (default_theta when absent) and rope_scaling /
// rope_parameters, checked as for the Llama family (NotSupported naming an unknown rope type).
RopeConfig rope_from(const io::ModelConfig& config, double default_theta, std::int64_t head_dim,
                     std::int64_t max_positions);

// Gemma 2 / Gemma 3 text (src/models/config_gemma.cc): fills `t` (architecture, model_type,
// source and tie_word_embeddings already set) with Gemma's config-class defaults for absent keys.
void parse_gemma_config(const io::ModelConfig& config, TransformerConfig& t);

// DeepSeek-V2 / V3 (src/models/config_deepseek.cc): fills `t` (architecture, model_type, source
// and tie_word_embeddings already set), with DeepseekV2Config / DeepseekV3Config's defaults for
// the optional keys; NotSupported naming the key for a routing option Strata does not implement.
void parse_deepseek_config(const io::ModelConfig& config, TransformerConfig& t);

}  // namespace strata::models::detail
