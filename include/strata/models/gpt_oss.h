#pragma once
// gpt-oss (transformers' modeling_gpt_oss.py, v5.17): a Llama-shaped decoder whose attention has
// biases and learned sinks, whose layers alternate sliding-window and full attention
// (layer_types), with YaRN RoPE, and whose MLP is a mixture of experts stored as fused 3-D
// tensors, optionally MXFP4-packed (docs/models.md, "gpt-oss").
//
//   GptOssForCausalLM        model, lm_head
//   GptOssModel              embed_tokens, layers (ModuleList), norm, rotary_emb
//   GptOssDecoderLayer       self_attn, mlp, input_layernorm, post_attention_layernorm
//   GptOssAttention          q_proj, k_proj, v_proj, o_proj (all with biases), sinks [heads]
//   GptOssMLP                router (GptOssTopKRouter: weight [E, hidden], bias [E]), experts
//   GptOssExperts            gate_up_proj [E, hidden, 2 * inter] (gate/up interleaved: columns
//                            0, 2, 4, ... are the gate), gate_up_proj_bias [E, 2 * inter],
//                            down_proj [E, inter, hidden], down_proj_bias [E, hidden]
//   Mxfp4GptOssExperts       gate_up_proj_blocks uint8 [E, 2 * inter, hidden / 32, 16],
//   (MXFP4 checkpoints)      gate_up_proj_scales uint8 [E, 2 * inter, hidden / 32],
//                            gate_up_proj_bias, down_proj_blocks [E, hidden, inter / 32, 16],
//                            down_proj_scales [E, hidden, inter / 32], down_proj_bias

#include <cstdint>
#include <memory>

#include "strata/models/base_model.h"
#include "strata/models/causal_lm.h"
#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/models/rope.h"
#include "strata/nn/layers.h"

namespace strata::models {

// MXFP4 (OCP microscaling, e2m1 values with one e8m0 scale per 32): blocks uint8 [..., G, 16]
// (two 4-bit codes per byte, the low nibble first; code bit 3 is the sign, bits 0-2 index
// 0, 0.5, 1, 1.5, 2, 3, 4, 6) and scales uint8 [..., G] (value 2^(scale - 127)) -> [..., G * 32]
// in `dtype`, on the blocks' device. transformers' convert_moe_packed_tensors, without its final
// transpose. Composed of ops::embedding lookups (a code-pair table and a power-of-two table), so
// it runs on every device.
Tensor mxfp4_dequantize(const Tensor& blocks, const Tensor& scales, DType dtype);

// gpt-oss' clamped SwiGLU of an interleaved gate/up row block [..., 2 * inter] -> [..., inter]:
// gate = min(x[..., 0::2], limit), up = clamp(x[..., 1::2], -limit, limit),
// out = (up + 1) * gate * sigmoid(alpha * gate). Composed of existing ops (any device).
Tensor clamped_swiglu(const Tensor& gate_up, double alpha, double limit);

// forward(hidden [batch, seq, hidden]; position_embeddings, past_key_values, attention_mask as
// DecoderAttention) -> [batch, seq, hidden]. The sinks join the softmax of every query.
class GptOssAttention : public nn::Module {
 public:
  GptOssAttention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  std::int64_t sliding_window() const { return sliding_window_; }
  Value forward(Args& args) override;

 private:
  std::int64_t layer_idx_, num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  std::shared_ptr<nn::Linear> q_proj_, k_proj_, v_proj_, o_proj_;
};

// forward(hidden [tokens, hidden]) -> router logits [tokens, E] (linear with bias).
class GptOssTopKRouter : public nn::Module {
 public:
  GptOssTopKRouter(std::int64_t hidden, std::int64_t experts, DType dtype);
  Value forward(Args& args) override;
};

// forward(hidden [tokens, hidden]; router_indices int64 [tokens, k], routing_weights [tokens, k]
// in the router's dtype) -> [tokens, hidden]: each token's experts' outputs times their weights,
// added in increasing expert order (transformers' index_add_ loop). Only experts with tokens run;
// an MXFP4 expert's two weights are dequantised on the device that computes, one expert at a
// time, and dropped after use.
class GptOssExperts : public nn::Module {
 public:
  GptOssExperts(const TransformerConfig& config, bool mxfp4, DType dtype);
  bool mxfp4() const { return mxfp4_; }
  Value forward(Args& args) override;
  bool keeps_tensor_dtype(std::string_view local_name) const override;

 private:
  // gate_up [hidden, 2 * inter] applied to x, or down [inter, hidden], for expert e.
  Tensor project(const Tensor& x, std::int64_t expert, bool gate_up) const;

  bool mxfp4_;
  std::int64_t num_experts_, hidden_, intermediate_;
  double alpha_, limit_;
};

// forward(hidden [batch, seq, hidden]) -> [batch, seq, hidden]: top-k of the router logits,
// softmax over the k selected logits (in their dtype), then the experts.
class GptOssMLP : public nn::Module {
 public:
  GptOssMLP(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::int64_t top_k_;
  std::shared_ptr<GptOssTopKRouter> router_;
  std::shared_ptr<GptOssExperts> experts_;
};

// Pre-norm block: h += attn(norm(h)); h += mlp(norm(h)).
class GptOssDecoderLayer : public nn::Module {
 public:
  GptOssDecoderLayer(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::shared_ptr<GptOssAttention> self_attn_;
  std::shared_ptr<GptOssMLP> mlp_;
  std::shared_ptr<RMSNorm> input_layernorm_, post_attention_layernorm_;
};

// GptOssModel: BaseModel (strata/models/base_model.h) with GptOssDecoderLayers, RMSNorm and
// (YaRN) RoPE.
class GptOssModel : public BaseModel {
 public:
  GptOssModel(const TransformerConfig& config, DType dtype);
};

class GptOssForCausalLM : public CausalLM {
 public:
  GptOssForCausalLM(const TransformerConfig& config, DType dtype);
};

}  // namespace strata::models
