#pragma once
// Phi-3 / Phi-3.5 / Phi-4 mini's fused projections, as its checkpoints store them: the decoder
// family (decoder.h) uses these in place of <P>Attention and <P>MLP when
// TransformerConfig::fused_projections is set.
//
//   Phi3Attention   o_proj, qkv_proj (q, k, v stacked along the output: heads * d, then
//                   kv_heads * d twice)
//   Phi3MLP         gate_up_proj (gate, then up), down_proj, activation_fn

#include <cstdint>
#include <memory>

#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/nn/module.h"

namespace strata::models {

// Same contract as DecoderAttention (forward(hidden; position_embeddings, past_key_values,
// attention_mask) -> [batch, seq, hidden]), with q, k and v sliced from one qkv_proj.
class Phi3Attention : public nn::Module {
 public:
  Phi3Attention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::int64_t layer_idx_, num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  bool use_rope_;
  std::shared_ptr<nn::Module> o_proj_, qkv_proj_;  // Linear or QuantizedLinear
};

// down_proj(up * act(gate)) with [gate, up] = chunk(gate_up_proj(x), 2).
class Phi3MLP : public nn::Module {
 public:
  Phi3MLP(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::int64_t intermediate_;
  std::shared_ptr<nn::Module> gate_up_proj_, down_proj_;
  std::shared_ptr<ActivationLayer> activation_fn_;
};

}  // namespace strata::models
