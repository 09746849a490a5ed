#pragma once
// The config.json rules of Phi-3, OLMo 2 and SmolLM3 that the shared parser
// (src/models/config.cc) delegates: partial rotary, longrope and per-layer RoPE / windows.
// Private to src/models.

#include <cstdint>
#include <vector>

#include "strata/io/model_config.h"
#include "strata/models/config.h"

namespace strata::models::detail {

// int(head_dim * partial_rotary_factor), transformers' rotated width; CheckpointError for a
// factor outside (0, 1] or a width that is zero or odd (rotate_half needs pairs).
std::int64_t rotary_dim(const io::ModelConfig& config, std::int64_t head_dim, double partial);

// longrope (Phi-3/4, transformers' _compute_longrope_parameters): short and long factors of
// rope.dim / 2 entries each, original_max_position_embeddings (the top-level key first, as
// standardize_rope_params takes it; Phi3Config's default 4096 without one), factor (the file's,
// else max / original) and attention_factor (the file's, else sqrt(1 + ln factor / ln original)).
void parse_longrope(const io::ModelConfig& config, Architecture arch,
                    const io::RopeScaling& scaling, RopeConfig& rope);

// Per-layer sliding windows (0 = full attention) of Phi-3 (sliding_window on every layer),
// OLMo 2 (none) and SmolLM3 (layer_types, or the NoPE layers when use_sliding_window).
std::vector<std::int64_t> family_sliding_windows(const io::ModelConfig& config, Architecture arch,
                                                 std::int64_t layers);

// SmolLM3's no_rope_layers (1 = the layer rotates), or every no_rope_layer_interval-th layer
// without RoPE when the list is absent, as SmolLM3Config builds it.
std::vector<bool> smollm3_rope_layers(const io::ModelConfig& config, std::int64_t layers);

}  // namespace strata::models::detail
