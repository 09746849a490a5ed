#pragma once
// DeepSeek-V2 and DeepSeek-V3 (transformers' modeling_deepseek_v2.py / modeling_deepseek_v3.py,
// v5.17): multi-head latent attention (MLA) with a compressed KV cache, and a mixture of experts
// with shared experts and group-limited routing (docs/models.md, "DeepSeek").
//
//   <P>ForCausalLM      model, lm_head                        (<P> = DeepseekV2 / DeepseekV3)
//   <P>Model            embed_tokens, layers (ModuleList), norm, rotary_emb
//   <P>DecoderLayer     self_attn, mlp, input_layernorm, post_attention_layernorm
//   <P>Attention        q_proj (q_lora_rank null) | q_a_proj, q_a_layernorm, q_b_proj;
//                       kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj
//   mlp                 <P>MLP (gate_proj, up_proj, down_proj, act_fn) in the first
//                       first_k_dense_replace layers, else DeepseekV3MoE / DeepseekV2Moe:
//                       experts.N (<P>MLP of moe_intermediate_size), gate, shared_experts
//                       (<P>MLP of n_shared_experts x moe_intermediate_size)
//   gate                V3: DeepseekV3TopkRouter (weight [E, hidden], buffer
//                       e_score_correction_bias [E] float32); V2: Linear (weight [E, hidden])
//
// The routed experts are separate modules (the checkpoints' per-expert names; transformers v5
// fuses them in memory), so device maps and `--experts cpu` place them like Qwen's; the block is
// a MoeBlock (strata/models/moe.h) with DeepSeek's routing function: its offloaded experts run
// like Qwen's (cpu where stored, streamed alone, the expert cache; docs/moe-execution.md). With an
// fp8 quantization_config every Linear of the decoder layers is an FP8Linear (QuantizedLinear), the
// routers stay dense.

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "strata/models/base_model.h"
#include "strata/models/causal_lm.h"
#include "strata/models/config.h"
#include "strata/models/layers.h"
#include "strata/models/moe.h"
#include "strata/models/rope.h"
#include "strata/nn/layers.h"

namespace strata::models {

class GatedMLP;

// Multi-head latent attention. forward(hidden [batch, seq, hidden]; position_embeddings [cos, sin]
// over qk_rope_head_dim, past_key_values, attention_mask as DecoderAttention) -> [batch, seq,
// hidden].
//   q = q_proj(x) or q_b_proj(q_a_layernorm(q_a_proj(x))), per head [nope | rope]
//   [c | k_rope] = kv_a_proj_with_mqa(x); c = kv_a_layernorm(c)      (one k_rope for all heads)
//   rope on the rope parts (de-interleaved first when rope_interleave, as transformers)
//   cache: c [batch, 1, T, kv_lora_rank] as the layer's keys, k_rope [batch, 1, T, rope] as its
//   values (the compressed cache); [k_nope | v] per head = kv_b_proj(c) over all T cached tokens
//   attention of [q_nope | q_rope] over [k_nope | k_rope] with softmax_scale, values v
//   (v_head_dim), then o_proj.
//   With a past longer than the new tokens (decode) and kv_b_proj's weight at hand, the same
//   attention runs absorbed in the latent space: queries [q_nope W_k | q_rope] over the one shared
//   head [c | k_rope] with values c, then each head's output times W_v (no per-token expansion).
class DeepseekAttention : public nn::Module {
 public:
  DeepseekAttention(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  Tensor rotate(const Tensor& x, const Tensor& cos, const Tensor& sin) const;
  // kv_b_proj's weight [heads * (nope + v), kv_lora_rank] in `like`'s dtype (fp8 dequantised),
  // when its tensors are materialised on `like`'s device; nullopt otherwise (the caller expands
  // the cached latents through the module instead).
  std::optional<Tensor> absorbed_kv_b(const Tensor& like) const;

  std::int64_t layer_idx_, num_heads_, sliding_window_;
  DeepseekConfig mla_;
  std::shared_ptr<nn::Module> q_proj_, q_a_proj_, q_b_proj_, kv_a_proj_, kv_b_proj_, o_proj_;
  std::shared_ptr<RMSNorm> q_a_layernorm_, kv_a_layernorm_;
};

// The router. forward(hidden [tokens, hidden]) -> [logits float32 [tokens, E], bias] where the
// logits are computed in float32 (F.linear of the float32 input and weight, as transformers) and
// bias is V3's e_score_correction_bias as float32 (V2: none).
class DeepseekRouter : public nn::Module {
 public:
  DeepseekRouter(const TransformerConfig& config, DType dtype);
  Value forward(Args& args) override;
  bool keeps_tensor_dtype(std::string_view local_name) const override {
    return local_name == "e_score_correction_bias";  // _keep_in_fp32_modules_strict
  }
};

// The routing of a batch: token t's k experts indices[t * k + s] (s < k) and their float32
// weights.
struct DeepseekRouting {
  std::vector<std::int64_t> indices;
  std::vector<float> weights;
};

// DeepSeek's routing of one batch from the router's float32 logits (host, row-major [tokens, E])
// and V3's correction bias ([E], or empty): transformers' route_tokens_to_experts. V3 (NoAuxTc):
// s = sigmoid(logits), choice = s + bias, the topk_group groups of the largest sum of their two
// best choices, top-k of the choices inside them, weights s (over their sum + 1e-20 when
// norm_topk_prob) times routed_scaling_factor. V2: p = softmax(logits); Greedy top-k of p, or
// GroupLimitedGreedy within the topk_group groups of the largest max p; weights p times
// routed_scaling_factor. Ties go to the lower index.
DeepseekRouting deepseek_route(const std::vector<float>& logits, std::int64_t num_experts,
                               const std::vector<float>& bias, std::int64_t top_k,
                               bool norm_topk_prob, const DeepseekConfig& config);

// DeepseekV3MoE / DeepseekV2Moe. forward(hidden [batch, seq, hidden]) -> [batch, seq, hidden]:
// the routed experts (deepseek_route, then the shared expert loop of every mixture of experts:
// only experts with tokens run, each output times its float32 weight, a token's contributions
// added in increasing expert order) plus the shared experts, unscaled.
class DeepseekMoE : public MoeBlock {
 public:
  DeepseekMoE(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  DeepseekConfig config_;
  bool norm_topk_prob_;
  std::shared_ptr<DeepseekRouter> gate_;
  std::shared_ptr<GatedMLP> shared_experts_;
};

// Pre-norm block: h += attn(norm(h)); h += mlp(norm(h)).
class DeepseekDecoderLayer : public nn::Module {
 public:
  DeepseekDecoderLayer(const TransformerConfig& config, std::int64_t layer_idx, DType dtype);
  Value forward(Args& args) override;

 private:
  std::shared_ptr<DeepseekAttention> self_attn_;
  std::shared_ptr<nn::Module> mlp_;  // <P>MLP or DeepseekMoE
  std::shared_ptr<RMSNorm> input_layernorm_, post_attention_layernorm_;
};

// <P>Model: BaseModel (strata/models/base_model.h) with DeepseekDecoderLayers, RMSNorm and the
// rope of the qk_rope_head_dim part (YaRN for DeepSeek-V3).
class DeepseekModel : public BaseModel {
 public:
  DeepseekModel(const TransformerConfig& config, DType dtype);
};

class DeepseekForCausalLM : public CausalLM {
 public:
  DeepseekForCausalLM(const TransformerConfig& config, DType dtype);
};

}  // namespace strata::models
