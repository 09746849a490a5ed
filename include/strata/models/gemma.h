#pragma once
// Gemma 2 and Gemma 3 (text): transformers' modeling_gemma2.py / modeling_gemma3.py module trees.
//
//   Gemma2ForCausalLM       model (Gemma2Model), lm_head (tied to model.embed_tokens by default)
//   Gemma2Model             embed_tokens (Gemma2TextScaledWordEmbedding: rows times
//                           sqrt(hidden_size) in the embedding dtype, buffer embed_scale), layers,
//                           norm, rotary_emb
//   Gemma3ForCausalLM       model (Gemma3TextModel), lm_head
//   Gemma3TextModel         embed_tokens (Gemma3TextScaledWordEmbedding), layers, norm,
//                           rotary_emb (Gemma3RotaryEmbedding: one rope per layer type)
//   <P>DecoderLayer         self_attn, mlp, input_layernorm, post_attention_layernorm,
//                           pre_feedforward_layernorm, post_feedforward_layernorm (pre- and
//                           post-norms around attention and MLP)
//   <P>Attention            q_proj, k_proj, v_proj, o_proj (+ Gemma 3: q_norm, k_norm); scores
//                           scaled by query_pre_attn_scalar^-0.5, soft-capped where configured
//   <P>MLP                  gate_proj, up_proj, down_proj, act_fn (GeGLU: gelu tanh)
//   <P>RMSNorm              x_norm * (1 + weight), computed in float32 (GemmaRMSNorm)
//
// The final logits are soft-capped by CausalLM (config.final_logit_softcapping).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/models/base_model.h"
#include "strata/models/causal_lm.h"
#include "strata/models/config.h"
#include "strata/models/decoder.h"
#include "strata/models/rope.h"
#include "strata/nn/layers.h"

namespace strata::models {

// transformers' Gemma2RMSNorm / Gemma3RMSNorm: float32 x * rsqrt(mean(x^2) + eps) * (1 + weight),
// then cast to x's dtype. The weight starts at zero (the identity), as in transformers.
class GemmaRMSNorm : public nn::Module {
 public:
  GemmaRMSNorm(std::string class_name, std::int64_t dim, double eps, DType dtype);
  Value forward(Args& args) override;

 private:
  double eps_;
};

// <P>TextScaledWordEmbedding: the rows times embed_scale (sqrt(hidden_size), a float32
// non-persistent buffer as in transformers) cast to the weight's dtype.
class GemmaScaledEmbedding : public nn::Embedding {
 public:
  GemmaScaledEmbedding(std::string class_name, std::int64_t num_embeddings,
                       std::int64_t embedding_dim, DType dtype);
  Value forward(Args& args) override;
  void reset_non_persistent_buffers(Device device) override;

 private:
  float scale_;
};

// Gemma3RotaryEmbedding: one rope per layer type, buffers <type>_inv_freq and
// <type>_original_inv_freq (non-persistent). forward(hidden_states; layer_type:
// "sliding_attention" | "full_attention", past_length or position_ids) -> [cos, sin] as
// RotaryEmbedding gives them.
class GemmaDualRotaryEmbedding : public nn::Module {
 public:
  GemmaDualRotaryEmbedding(std::string class_name, const RopeConfig& full,
                           const RopeConfig& sliding);
  Value forward(Args& args) override;
  void reset_non_persistent_buffers(Device device) override;

 private:
  RotaryEmbedding full_, sliding_;  // computation only (not registered children)
};

// Self-attention: as DecoderAttention with Gemma's scale and optional soft-cap.
class GemmaAttention : public nn::Module {
 public:
  GemmaAttention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  std::int64_t sliding_window() const { return sliding_window_; }
  Value forward(Args& args) override;

 private:
  std::int64_t layer_idx_, num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  double scale_;
  std::optional<double> softcap_;
  std::shared_ptr<nn::Linear> q_proj_, k_proj_, v_proj_, o_proj_;
  std::shared_ptr<GemmaRMSNorm> q_norm_, k_norm_;  // Gemma 3 only
};

// h += post_attention_layernorm(attn(input_layernorm(h)));
// h += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).
class GemmaDecoderLayer : public nn::Module {
 public:
  GemmaDecoderLayer(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::shared_ptr<GemmaAttention> self_attn_;
  std::shared_ptr<GatedMLP> mlp_;
  std::shared_ptr<GemmaRMSNorm> input_layernorm_, post_attention_layernorm_,
      pre_feedforward_layernorm_, post_feedforward_layernorm_;
};

// <P>Model / Gemma3TextModel: BaseModel (strata/models/base_model.h) with the scaled embedding,
// GemmaDecoderLayers, GemmaRMSNorm, a rope per layer type (Gemma 3) and finite padding masks for
// soft-capped attention.
class GemmaModel : public BaseModel {
 public:
  GemmaModel(const TransformerConfig& config, DType dtype);
};

class GemmaForCausalLM : public CausalLM {
 public:
  GemmaForCausalLM(const TransformerConfig& config, DType dtype);
};

}  // namespace strata::models
