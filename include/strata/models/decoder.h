#pragma once
// The decoder family: Llama, Mistral, Qwen2, Qwen3, Mixtral, Phi-3, OLMo 2 and SmolLM3 are one
// set of modules whose class names carry the family prefix (LlamaAttention, Qwen3DecoderLayer,
// ...) and whose differences are TransformerConfig flags: q/k/v/o biases, q/k norms per head
// (Qwen3) or over the projection (OLMo 2), sliding windows per layer, layers without RoPE
// (SmolLM3), partial rotary, norms after the sublayers (OLMo 2), fused projections (Phi-3,
// strata/models/phi3.h) and a sparse mixture of experts in place of the MLP (Mixtral).
//
//   <P>ForCausalLM          model, lm_head (tied to model.embed_tokens when configured)
//   <P>Model                embed_tokens, layers (ModuleList), norm, rotary_emb
//   <P>DecoderLayer         self_attn, mlp | block_sparse_moe, input_layernorm,
//                           post_attention_layernorm
//                           (OLMo 2: self_attn, mlp, post_attention_layernorm,
//                           post_feedforward_layernorm)
//   <P>Attention            q_proj, k_proj, v_proj, o_proj (+ q_norm, k_norm)
//                           (Phi-3: o_proj, qkv_proj)
//   <P>MLP                  gate_proj, up_proj, down_proj, act_fn
//                           (Phi-3: gate_up_proj, down_proj, activation_fn)

#include <cstdint>
#include <memory>
#include <vector>

#include "strata/models/base_model.h"
#include "strata/models/causal_lm.h"
#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/models/rope.h"
#include "strata/models/tensor_parallel.h"
#include "strata/nn/layers.h"

namespace strata::models {

// Grouped-query self-attention with RoPE (on the first rope.dim dimensions of each head; none on
// a NoPE layer).
// forward(hidden [batch, seq, hidden]; position_embeddings: [cos, sin] from the rotary module,
// past_key_values: KVCache or none, attention_mask: a padded batch's additive mask
// [batch, 1, seq, past + seq] or none) -> [batch, seq, hidden].
// Under tensor parallelism `config` is the rank's (rank_config: its heads) and o_proj is a
// RowParallelLinear.
class DecoderAttention : public nn::Module {
 public:
  DecoderAttention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype,
                   const TensorParallel& tp = {});
  std::int64_t layer_idx() const { return layer_idx_; }
  std::int64_t sliding_window() const { return sliding_window_; }
  Value forward(Args& args) override;

 private:
  std::int64_t layer_idx_, num_heads_, num_kv_heads_, head_dim_, sliding_window_;
  bool use_rope_, norm_whole_projection_;
  std::shared_ptr<nn::Module> q_proj_, k_proj_, v_proj_, o_proj_;  // Linear or QuantizedLinear
  std::shared_ptr<RMSNorm> q_norm_, k_norm_;                       // Qwen3, OLMo 2
};

// down(act(gate(x)) * up(x)): <P>MLP with gate_proj/up_proj/down_proj, or a Mixtral expert
// (MixtralBlockSparseTop2MLP) with w1 (gate), w2 (down), w3 (up).
class GatedMLP : public nn::Module {
 public:
  enum class Naming { Llama, MixtralExpert };
  // `quant` and `path` (the module's dotted name) choose quantized projections (quant_linear.h).
  // An active `tp` makes down_proj a RowParallelLinear (`intermediate` is then the rank's part).
  GatedMLP(std::string class_name, Naming naming, std::int64_t hidden, std::int64_t intermediate,
           bool bias, Activation activation, DType dtype, const QuantizationConfig* quant = nullptr,
           const std::string& path = "", const TensorParallel& tp = {});
  Value forward(Args& args) override;

 private:
  std::shared_ptr<nn::Module> gate_, up_, down_;
  std::shared_ptr<ActivationLayer> act_;
};

// Pre-norm block: h += attn(norm(h)); h += mlp(norm(h)); with post_norms (OLMo 2)
// h += norm(attn(h)); h += norm(mlp(h)). Keywords are passed to self_attn.
class DecoderLayer : public nn::Module {
 public:
  DecoderLayer(const TransformerConfig& config, std::int64_t layer_idx, DType dtype,
               const TensorParallel& tp = {});
  Value forward(Args& args) override;

 private:
  bool post_norms_;
  std::shared_ptr<nn::Module> self_attn_;  // <P>Attention or Phi3Attention
  std::shared_ptr<nn::Module> mlp_;        // <P>MLP, Phi3MLP or MixtralSparseMoeBlock
  std::shared_ptr<RMSNorm> input_layernorm_, post_attention_layernorm_;
  std::shared_ptr<RMSNorm> post_feedforward_layernorm_;  // OLMo 2
};

// <P>Model: BaseModel (strata/models/base_model.h) with DecoderLayers, RMSNorm and RoPE.
class DecoderModel : public BaseModel {
 public:
  DecoderModel(const TransformerConfig& config, DType dtype, const TensorParallel& tp = {});
};

class DecoderForCausalLM : public CausalLM {
 public:
  // `config` is the whole model's; with an active `tp` each rank builds its part
  // (rank_config) and a vocabulary-parallel head.
  DecoderForCausalLM(const TransformerConfig& config, DType dtype, const TensorParallel& tp = {});
};

}  // namespace strata::models
