// DeepSeek-V2 / V3: multi-head latent attention, the decoder layer, the base model and the causal
// LM (transformers' modeling_deepseek_v2.py / modeling_deepseek_v3.py). The mixture of experts
// is in deepseek_moe.cc.

#include "strata/models/deepseek.h"

#include <fmt/format.h>

#include "models/attention.h"
#include "models/capped_attention.h"
#include "models/families.h"
#include "strata/core/error.h"
#include "strata/models/decoder.h"
#include "strata/models/quant_linear.h"
#include "strata/ops.h"

namespace strata::models {

using detail::on_device_of;

namespace {

// DeepseekV{2,3}RMSNorm of the LoRA bottlenecks: built with the class default eps (1e-6), not
// rms_norm_eps.
constexpr double kLoraNormEps = 1e-6;
// The widest head ops::scaled_dot_product_attention takes on every device (the CUDA kernels'
// kMaxHeadDim).
constexpr std::int64_t kFusedHeadLimit = 256;

}  // namespace

DeepseekAttention::DeepseekAttention(const TransformerConfig& c, std::int64_t layer_idx,
                                     DType dtype)
    : nn::Module(c.class_name("Attention")),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      sliding_window_(c.sliding_windows.at(static_cast<std::size_t>(layer_idx))),
      mla_(*c.deepseek) {
  const QuantizationConfig* quant = c.quantization ? &*c.quantization : nullptr;
  const auto linear = [&](const char* name, std::int64_t in, std::int64_t out, bool bias) {
    const std::string path = fmt::format("model.layers.{}.self_attn.{}", layer_idx, name);
    return register_module(name, make_linear(quant, path, in, out, bias, dtype));
  };
  const auto norm = [&](const char* name, std::int64_t dim) {
    return register_module(
        name, std::make_shared<RMSNorm>(c.class_name("RMSNorm"), dim, kLoraNormEps, dtype));
  };
  const std::int64_t q_out = num_heads_ * mla_.qk_head_dim();
  // transformers' registration order (state_dict and device-map order).
  if (mla_.q_lora_rank == 0) {
    q_proj_ = linear("q_proj", c.hidden_size, q_out, false);
  } else {
    q_a_proj_ = linear("q_a_proj", c.hidden_size, mla_.q_lora_rank, c.qkv_bias);
    q_a_layernorm_ = norm("q_a_layernorm", mla_.q_lora_rank);
    q_b_proj_ = linear("q_b_proj", mla_.q_lora_rank, q_out, false);
  }
  kv_a_proj_ = linear("kv_a_proj_with_mqa", c.hidden_size,
                      mla_.kv_lora_rank + mla_.qk_rope_head_dim, c.qkv_bias);
  kv_a_layernorm_ = norm("kv_a_layernorm", mla_.kv_lora_rank);
  kv_b_proj_ = linear("kv_b_proj", mla_.kv_lora_rank,
                      num_heads_ * (mla_.qk_nope_head_dim + mla_.v_head_dim), false);
  o_proj_ = linear("o_proj", num_heads_ * mla_.v_head_dim, c.hidden_size, c.o_bias);
}

Tensor DeepseekAttention::rotate(const Tensor& x, const Tensor& cos, const Tensor& sin) const {
  if (!mla_.rope_interleave) return ops::rotary_embedding(x.contiguous(), cos, sin);
  // transformers' apply_rotary_pos_emb_interleave: the pairs (x0, x1), (x2, x3), ... become the
  // halves [x0, x2, ...] and [x1, x3, ...], then rotate_half. DeepSeek-V2's complex rotation of
  // the same pairs gives the same numbers in the interleaved order; q and k share the order, so
  // their products (all attention reads of them) are the same.
  const Shape& s = x.shape();
  const std::int64_t d = s[3];
  const Tensor halves =
      x.contiguous().view({s[0], s[1], s[2], d / 2, 2}).transpose(3, 4).contiguous().view(s);
  return ops::rotary_embedding(halves, cos, sin);
}

Value DeepseekAttention::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const Value* rope = args.keyword("position_embeddings");
  STRATA_CHECK_ARG(rope != nullptr && rope->is_list() && rope->list().size() == 2,
                   "{}: position_embeddings must be [cos, sin] from the rotary module", who);
  const std::shared_ptr<KVCache> cache = detail::cache_argument(args, who);
  const std::int64_t batch = x.size(0), seq = x.size(1), heads = num_heads_;
  const std::int64_t nope = mla_.qk_nope_head_dim, rot = mla_.qk_rope_head_dim;
  const std::int64_t rank = mla_.kv_lora_rank, v_dim = mla_.v_head_dim;

  const Tensor q_flat =
      q_proj_ ? call(*q_proj_, x) : call(*q_b_proj_, call(*q_a_layernorm_, call(*q_a_proj_, x)));
  const Tensor q = detail::split_heads(q_flat, heads, nope + rot).contiguous();  // [b, h, s, qk]
  const Tensor compressed = call(*kv_a_proj_, x);  // [b, s, rank + rot]
  const Tensor latent = call(*kv_a_layernorm_, compressed.narrow(2, 0, rank).contiguous());
  const Tensor cos = on_device_of(rope->list()[0].tensor(), q);
  const Tensor sin = on_device_of(rope->list()[1].tensor(), q);
  const Tensor q_rot = rotate(q.narrow(3, nope, rot), cos, sin);
  Tensor k_rot =
      rotate(compressed.narrow(2, rank, rot).contiguous().view({batch, 1, seq, rot}), cos, sin);

  // The compressed cache: per token the normalised latent and the rotated shared key part.
  Tensor all_latent = latent.view({batch, 1, seq, rank});
  if (cache) std::tie(all_latent, k_rot) = cache->update(layer_idx_, all_latent, k_rot);
  const std::int64_t total = all_latent.size(2);
  const std::optional<Tensor> mask = detail::layer_mask_argument(args, who);
  // Decoding over a longer past: attend in the latent space instead of expanding every cached
  // token through kv_b_proj (absorbed_kv_b: the layer's dequantised weight, when at hand).
  if (total > seq) {
    if (const std::optional<Tensor> w = absorbed_kv_b(q); w.has_value()) {
      const Tensor w_heads = w->view({heads, nope + v_dim, rank});
      // q_nope . k_nope = (q_nope W_k) . c, and sum_j p_j v_j = W_v (sum_j p_j c_j).
      Tensor q_latent = Tensor::empty({batch, heads, seq, rank + rot}, q.dtype(), q.device());
      q_latent.narrow(3, 0, rank)
          .copy_(ops::matmul(q.narrow(3, 0, nope).contiguous(),
                             w_heads.narrow(1, 0, nope).contiguous()));
      q_latent.narrow(3, rank, rot).copy_(q_rot);
      Tensor key = Tensor::empty({batch, 1, total, rank + rot}, q.dtype(), q.device());
      key.narrow(3, 0, rank).copy_(on_device_of(all_latent, q));
      key.narrow(3, rank, rot).copy_(on_device_of(k_rot, q));
      const Tensor latent_value = key.narrow(3, 0, rank).contiguous();
      // [b, h, s, rank]. The fused attention kernels take heads up to kFusedHeadLimit wide;
      // wider latent heads (DeepSeek-V3: 576) attend through the composed float32 attention.
      const Tensor latent_out =
          rank + rot <= kFusedHeadLimit
              ? detail::causal_attention(q_latent, key, latent_value, nullptr, layer_idx_,
                                         mla_.softmax_scale, sliding_window_, mask)
              : detail::capped_causal_attention(
                    q_latent, key, latent_value, nullptr, layer_idx_, mla_.softmax_scale,
                    /*cap=*/0.0, sliding_window_,
                    mask ? std::optional<Tensor>(detail::finite_mask(*mask)) : std::nullopt);
      const Tensor w_v = w_heads.narrow(1, nope, v_dim).transpose(1, 2).contiguous();
      return call(*o_proj_, detail::merge_heads(ops::matmul(latent_out, w_v)));
    }
  }
  const Tensor expanded = call(*kv_b_proj_, all_latent.reshape({batch, total, rank}));
  const Tensor kv = detail::split_heads(on_device_of(expanded, q), heads, nope + v_dim);
  Tensor query = Tensor::empty({batch, heads, seq, nope + rot}, q.dtype(), q.device());
  query.narrow(3, 0, nope).copy_(q.narrow(3, 0, nope));
  query.narrow(3, nope, rot).copy_(q_rot);
  Tensor key = Tensor::empty({batch, heads, total, nope + rot}, q.dtype(), q.device());
  key.narrow(3, 0, nope).copy_(kv.narrow(3, 0, nope));
  key.narrow(3, nope, rot).copy_(on_device_of(k_rot, q).expand({batch, heads, total, rot}));
  const Tensor value = kv.narrow(3, nope, v_dim).contiguous();
  const Tensor attn = detail::causal_attention(query, key, value, nullptr, layer_idx_,
                                               mla_.softmax_scale, sliding_window_, mask);
  return call(*o_proj_, detail::merge_heads(attn));
}

std::optional<Tensor> DeepseekAttention::absorbed_kv_b(const Tensor& like) const {
  const auto usable = [&](const Tensor& t) { return !t.is_meta() && t.device() == like.device(); };
  if (const auto* dense = dynamic_cast<const nn::Linear*>(kv_b_proj_.get())) {
    const Tensor& w = dense->parameter("weight");
    if (!usable(w)) return std::nullopt;
    return w.dtype() == like.dtype() ? w : ops::cast(w, like.dtype());
  }
  const auto* quantized = dynamic_cast<const QuantizedLinear*>(kv_b_proj_.get());
  if (quantized == nullptr) return std::nullopt;
  const ops::QuantizedWeight qw = quantized->quantized_weight();
  if (qw.format != ops::QuantFormat::FP8 || !usable(qw.weight) || !usable(qw.scale)) {
    return std::nullopt;
  }
  // fp8 blocks: w[i, j] * scale[i / bo, j / bi] (whole blocks only; otherwise expand).
  const std::int64_t n = qw.out_features, k = qw.in_features;
  const std::int64_t bo = qw.block_out > 0 ? qw.block_out : n;
  const std::int64_t bi = qw.block_in > 0 ? qw.block_in : k;
  if (n % bo != 0 || k % bi != 0) return std::nullopt;
  const Tensor scale =
      qw.scale.dim() == 0 ? qw.scale.view({1, 1, 1, 1}) : qw.scale.view({n / bo, 1, k / bi, 1});
  const Tensor w = ops::mul(ops::cast(qw.weight, DType::Float32).view({n / bo, bo, k / bi, bi}),
                            ops::cast(scale, DType::Float32));
  return ops::cast(w.view({n, k}), like.dtype());
}

DeepseekDecoderLayer::DeepseekDecoderLayer(const TransformerConfig& c, std::int64_t layer_idx,
                                           DType dtype)
    : nn::Module(c.class_name("DecoderLayer")) {
  // transformers' registration order: self_attn, mlp, input_layernorm, post_attention_layernorm.
  self_attn_ =
      register_module("self_attn", std::make_shared<DeepseekAttention>(c, layer_idx, dtype));
  if (c.is_sparse_layer(layer_idx)) {
    mlp_ = register_module("mlp", std::make_shared<DeepseekMoE>(c, layer_idx, dtype));
  } else {
    mlp_ = register_module(
        "mlp", std::make_shared<GatedMLP>(
                   c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size, c.intermediate_size,
                   c.mlp_bias, c.activation, dtype, c.quantization ? &*c.quantization : nullptr,
                   fmt::format("model.layers.{}.mlp", layer_idx)));
  }
  const std::string norm = c.class_name("RMSNorm");
  input_layernorm_ = register_module(
      "input_layernorm", std::make_shared<RMSNorm>(norm, c.hidden_size, c.norm_eps, dtype));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm",
                      std::make_shared<RMSNorm>(norm, c.hidden_size, c.norm_eps, dtype));
}

Value DeepseekDecoderLayer::forward(Args& args) {
  Tensor hidden = args.tensor(0, class_name() + ".forward");
  return detail::pre_norm_block(hidden, args, *input_layernorm_, *self_attn_,
                                *post_attention_layernorm_, *mlp_);
}

namespace {

BaseModel::Parts deepseek_parts(const TransformerConfig& c, DType dtype) {
  STRATA_ASSERT(c.deepseek.has_value(), "deepseek config without MLA parameters");
  return BaseModel::llama_parts(c, dtype,
                                [&c, dtype](std::int64_t i) -> std::shared_ptr<nn::Module> {
                                  return std::make_shared<DeepseekDecoderLayer>(c, i, dtype);
                                });
}

}  // namespace

DeepseekModel::DeepseekModel(const TransformerConfig& c, DType dtype)
    : BaseModel(c.class_name("Model"), c, deepseek_parts(c, dtype)) {}

DeepseekForCausalLM::DeepseekForCausalLM(const TransformerConfig& c, DType dtype)
    : CausalLM(c.class_name("ForCausalLM"), c) {
  finish(std::make_shared<DeepseekModel>(c, dtype), dtype);
}

namespace detail {
std::shared_ptr<CausalLM> build_deepseek(const TransformerConfig& config, DType dtype) {
  return std::make_shared<DeepseekForCausalLM>(config, dtype);
}
}  // namespace detail

}  // namespace strata::models
