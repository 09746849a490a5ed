#pragma once
// TransformerConfig: what a causal language model needs from config.json, resolved once and
// validated. The defaults of a missing optional key are those of the transformers config class
// of the model_type (so a config.json behaves as it does in transformers); a missing size is an
// error naming the key.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/core/dtype.h"
#include "strata/io/model_config.h"
#include "strata/models/quant_config.h"

namespace strata::models {

// The model families Strata builds. Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE,
// Phi-3, OLMo 2 and SmolLM3 share one decoder (src/models/decoder.cc) parameterised by the flags
// below; GPT-2, OPT and gpt-oss (src/models/gpt_oss*.cc) have their own. New values go at the end.
// Gemma 2 and Gemma 3 (text) have their own modules (src/models/gemma.cc).
enum class Architecture : std::uint8_t {
  Llama,
  Mistral,
  Qwen2,
  Qwen3,
  Mixtral,
  GPT2,
  OPT,
  Qwen2Moe,
  Qwen3Moe,
  Phi3,
  Olmo2,
  SmolLM3,
  Gemma2,
  Gemma3Text,
  GptOss,
  DeepseekV2,
  DeepseekV3,
};

// transformers' class-name prefix: "Llama", "Mistral", "Qwen2", "Qwen3", "Mixtral", "GPT2", "OPT",
// "Qwen2Moe", "Qwen3Moe", "Phi3", "Olmo2", "SmolLM3", "Gemma2", "Gemma3", "GptOss", "DeepseekV2",
// "DeepseekV3".
std::string_view class_prefix(Architecture architecture);
// The model_type values accepted in config.json, for messages.
std::vector<std::string> supported_model_types();

// transformers' ACT2FN names: silu/swish, gelu (erf), gelu_new/gelu_pytorch_tanh, relu.
enum class Activation : std::uint8_t { SiLU, Gelu, GeluTanh, ReLU };

// Rotary position embedding parameters (transformers' rope_parameters / rope_scaling).
struct RopeConfig {
  std::string type = "default";  // default, linear, dynamic, yarn, llama3, longrope
  double theta = 10000.0;
  // Rotated dimensions: head_dim * partial_rotary_factor (the first `dim` of each head rotate,
  // the rest pass through unchanged).
  std::int64_t dim = 0;
  std::int64_t max_position_embeddings = 0;           // config.max_position_embeddings
  double factor = 1.0;                                // linear, dynamic, yarn, llama3, longrope
  std::int64_t original_max_position_embeddings = 0;  // yarn, llama3, longrope
  double low_freq_factor = 1.0;                       // llama3
  double high_freq_factor = 4.0;                      // llama3
  std::optional<double> attention_factor;             // yarn, longrope
  double beta_fast = 32.0;                            // yarn
  double beta_slow = 1.0;                             // yarn
  std::optional<double> mscale;                       // yarn
  std::optional<double> mscale_all_dim;               // yarn
  bool truncate = true;                               // yarn
  // longrope (Phi-3/4): per-frequency divisors [dim / 2] for sequences up to
  // original_max_position_embeddings (short) and beyond (long).
  std::vector<double> short_factor, long_factor;
};

// DeepSeek-V2 / V3 (src/models/config_deepseek.cc, docs/models.md "DeepSeek"): multi-head latent
// attention and the routing of their mixture of experts.
struct DeepseekConfig {
  // How the router scores experts and picks the top-k (transformers' topk_method/scoring_func):
  // V2 softmax, then top-k over all experts (Greedy) or within the topk_group groups of the
  // highest expert score (GroupLimitedGreedy); V3 sigmoid, then top-k within the topk_group
  // groups of the highest sum of their two best scores, both plus e_score_correction_bias
  // (NoAuxTc; the bias decides the choice, not the weights).
  enum class TopkMethod : std::uint8_t { Greedy, GroupLimitedGreedy, NoAuxTc };
  std::int64_t q_lora_rank = 0;  // 0: q_proj (q_lora_rank null), else q_a_proj -> q_b_proj
  std::int64_t kv_lora_rank = 0;
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;
  bool rope_interleave = true;  // V2 always (complex pairs); V3 rope_interleave
  double softmax_scale = 0.0;   // qk_head_dim^-0.5, times mscale^2 under V3's yarn
  TopkMethod topk_method = TopkMethod::NoAuxTc;
  std::int64_t n_group = 1;
  std::int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  std::int64_t n_shared_experts = 0;  // shared_experts: one MLP of n x moe_intermediate_size
  std::int64_t first_k_dense_replace = 0;
  std::int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

struct TransformerConfig {
  Architecture architecture = Architecture::Llama;
  std::string model_type;
  std::string source;  // the config file, for messages

  std::int64_t hidden_size = 0;
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double norm_eps = 1e-6;
  Activation activation = Activation::SiLU;
  bool tie_word_embeddings = false;

  // Decoder family (Llama, Mistral, Qwen2, Qwen3, Mixtral).
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2; Llama/Qwen3 attention_bias)
  bool o_bias = false;    // the output projection has one (Llama/Qwen3 attention_bias)
  bool mlp_bias = false;  // Llama mlp_bias
  bool qk_norm = false;   // Qwen3: RMSNorm over head_dim on q and k before RoPE
  std::optional<RopeConfig> rope;
  // Per layer: the sliding attention window (a query sees itself and the window - 1 keys
  // before it), 0 for full attention.
  std::vector<std::int64_t> sliding_windows;
  // Sparse mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE): num_experts > 0.
  std::int64_t num_experts = 0;
  std::int64_t num_experts_per_tok = 0;
  std::int64_t moe_intermediate_size = 0;  // each routed expert's (Mixtral: intermediate_size)
  // Qwen2-MoE's shared expert (every token, scaled by sigmoid(shared_expert_gate)); 0 = none.
  std::int64_t shared_expert_intermediate_size = 0;
  bool norm_topk_prob = true;  // the top-k routing weights are renormalised to sum to one
  // Per layer: a sparse MoE block (true) or the dense MLP of intermediate_size (Qwen MoE's
  // decoder_sparse_step and mlp_only_layers). Empty when num_experts is 0.
  std::vector<bool> sparse_layers;
  bool is_sparse_layer(std::int64_t layer) const {
    return layer >= 0 && static_cast<std::size_t>(layer) < sparse_layers.size() &&
           sparse_layers[static_cast<std::size_t>(layer)];
  }
  // Phi-3: q/k/v in one qkv_proj and gate/up in one gate_up_proj, as its checkpoints store them.
  bool fused_projections = false;
  // OLMo 2: q_norm / k_norm normalise the whole projection (heads * head_dim), not each head.
  bool qk_norm_over_projection = false;
  // OLMo 2: the block's norms apply to the sublayer outputs (post_attention_layernorm,
  // post_feedforward_layernorm) instead of their inputs.
  bool post_norms = false;
  // SmolLM3: per layer, whether it rotates q and k (false: a NoPE layer). Empty: every layer.
  std::vector<bool> rope_layers;

  // GPT-2.
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;

  // OPT.
  std::int64_t word_embed_proj_dim = 0;
  bool do_layer_norm_before = true;
  bool final_layer_norm = true;
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;

  // quantization_config: the checkpoint's linear layers are stored quantized (decoder family).
  std::optional<QuantizationConfig> quantization;

  // Gemma 2 / Gemma 3 (text): attention scores scaled by query_pre_attn_scalar^-0.5, logits
  // soft-capped as cap * tanh(x / cap) where set (attention scores before the mask, and the
  // final logits), Gemma 3's sliding layers rotated with their own rope (rope_local_base_freq;
  // `rope` is then that of the full-attention layers).
  double query_pre_attn_scalar = 0.0;
  std::optional<double> attn_logit_softcapping;
  std::optional<double> final_logit_softcapping;
  std::optional<RopeConfig> sliding_rope;
  // Per layer: its layer_types entry is sliding_attention (Gemma 3 rotates these with
  // sliding_rope, even when sliding_window is null and the layer attends to everything).
  std::vector<bool> sliding_layers;
  // gpt-oss (docs/models.md): attention sinks, the experts' clamped SwiGLU, and per layer whether
  // its experts are stored as MXFP4 (quantization_config quant_method "mxfp4"; empty: none).
  bool attention_sinks = false;
  double swiglu_alpha = 1.702;
  double swiglu_limit = 7.0;
  std::vector<bool> mxfp4_experts;
  // DeepSeek-V2 / V3 (num_experts, num_experts_per_tok, moe_intermediate_size, norm_topk_prob and
  // sparse_layers hold their n_routed_experts, ...; head_dim is qk_head_dim).
  std::optional<DeepseekConfig> deepseek;

  // transformers' class names and _no_split_modules (the decoder block class).
  std::string class_name(std::string_view suffix) const;
  std::vector<std::string> no_split_module_classes() const;
  // Where transformers' base model lives: "model" (Llama family, OPT) or "transformer" (GPT-2).
  std::string base_model_prefix() const;
  // Bytes of KV cache one token takes over all layers (keys and values), for memory planning.
  // DeepSeek caches the compressed kv and the rotated key part: kv_lora_rank + qk_rope_head_dim.
  std::uint64_t kv_cache_bytes_per_token(DType dtype) const;
};

// Reads and validates the fields of `config` for its model_type. Throws NotSupported for an
// unknown model_type or a feature Strata does not implement (naming it), CheckpointError for a
// missing or inconsistent field (naming the key, the file and what to fix).
TransformerConfig parse_transformer_config(const io::ModelConfig& config);

}  // namespace strata::models
