#pragma once
// Rotary position embeddings as transformers computes them (modeling_rope_utils.py): the inverse
// frequencies of each rope type, evaluated in float32 the way torch evaluates them, and the
// cos/sin tables of a range of positions.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/models/config.h"
#include "strata/nn/module.h"

namespace strata::models {

using nn::Args;
using nn::Value;

struct RopeFrequencies {
  std::vector<float> inv_freq;     // [dim / 2]
  float attention_scaling = 1.0f;  // multiplies cos and sin (YaRN's attention factor)
};

// transformers' ROPE_INIT_FUNCTIONS[rope.type](config, seq_len). `seq_len` only matters for
// "dynamic" (at or below max_position_embeddings it gives the unscaled frequencies, above it the
// NTK-scaled base for that length) and "longrope" (the long factors above
// original_max_position_embeddings, the short ones otherwise). Frequencies cover rope.dim, the
// rotated part of a head (partial rotary rotates the first rope.dim dimensions only).
RopeFrequencies compute_rope_frequencies(const RopeConfig& rope, std::int64_t seq_len = 0);

// cos and sin, float32 [1, length, dim] on the cpu, for positions start .. start + length - 1:
// emb = cat(freqs, freqs), freqs = position * inv_freq (float32), times attention_scaling.
std::pair<Tensor, Tensor> rope_tables(const RopeFrequencies& frequencies, std::int64_t start,
                                      std::int64_t length);
// The same for per-row positions: `position_ids` int64 [batch, seq] (any device) gives cos and
// sin float32 [batch, seq, dim] on the cpu (a padded batch: each row has its own positions).
std::pair<Tensor, Tensor> rope_tables(const RopeFrequencies& frequencies,
                                      const Tensor& position_ids);

// transformers' <Prefix>RotaryEmbedding: holds the non-persistent buffers inv_freq and
// original_inv_freq (so the module tree, and the sizes a device map sees, match transformers)
// and computes cos/sin on the host, where the frequencies already are.
//
// forward(hidden_states [batch, seq, ...]; past_length: int) -> [cos, sin], each
// [1, seq, dim] in hidden_states' dtype on its device, for positions past_length ..
// past_length + seq - 1. With the keyword position_ids (int64 [batch or 1, seq], a padded
// batch's per-row positions) instead: [batch or 1, seq, dim] for those positions.
//
// Longrope switches to the long factors for a call whose length (as above) passes
// original_max_position_embeddings, as transformers' longrope_frequency_update does per forward.
//
// Dynamic NTK: transformers keeps the frequencies of the longest sequence seen so far in module
// state. Here they are a function of the current length (past_length + seq, or the largest
// position + 1 as transformers computes it from position_ids): the same numbers
// whenever a sequence only grows, as in prefill + decode, and no state to go stale between
// unrelated calls.
class RotaryEmbedding : public nn::Module {
 public:
  RotaryEmbedding(std::string class_name, RopeConfig rope);
  const RopeConfig& rope() const { return rope_; }
  // The frequencies used for a sequence of `seq_len` tokens.
  RopeFrequencies frequencies(std::int64_t seq_len) const;
  Value forward(Args& args) override;
  void reset_non_persistent_buffers(Device device) override;

 private:
  RopeConfig rope_;
  RopeFrequencies original_;
};

}  // namespace strata::models
