// Gemma 2 and Gemma 3 (text): transformers' modeling_gemma2.py and modeling_gemma3.py.

#include "strata/models/gemma.h"

#include <fmt/format.h>

#include <cmath>

#include "models/attention.h"
#include "models/capped_attention.h"
#include "models/families.h"
#include "strata/core/error.h"
#include "strata/ops.h"

namespace strata::models {

using detail::on_device_of;

namespace {

constexpr const char* kSliding = "sliding_attention";
constexpr const char* kFull = "full_attention";

// sqrt(hidden_size) as transformers forms it: a Python float (double) made a float32 tensor,
// then cast to the embedding's dtype.
float embedding_scale(std::int64_t hidden_size) {
  return static_cast<float>(std::sqrt(static_cast<double>(hidden_size)));
}

// x * scale with the scale rounded to x's dtype first (torch: x * tensor(scale).to(x.dtype)).
Tensor scale_in_dtype(const Tensor& x, float scale) {
  return ops::mul(x, Tensor::full({1}, scale, x.dtype(), x.device()));
}

std::vector<Tensor> frequency_buffers(const RotaryEmbedding& rope) {
  const std::vector<float>& inv = rope.frequencies(0).inv_freq;
  const auto half = static_cast<std::int64_t>(inv.size());
  return {Tensor::from_vector(inv, {half}), Tensor::from_vector(inv, {half})};
}

}  // namespace

GemmaRMSNorm::GemmaRMSNorm(std::string class_name, std::int64_t dim, double eps, DType dtype)
    : nn::Module(std::move(class_name)), eps_(eps) {
  create_parameter("weight", {dim}, dtype, 0.0);
}

Value GemmaRMSNorm::forward(Args& args) {
  const Tensor& x = args.tensor(0, class_name() + ".forward");
  const Tensor& w = parameter("weight");
  // (1 + weight) in float32, as Gemma's norm does before its single cast back.
  const Tensor gain =
      ops::add(ops::cast(w, DType::Float32), Tensor::full({1}, 1.0, DType::Float32, w.device()));
  const Tensor normed = ops::rms_norm(ops::cast(x, DType::Float32), on_device_of(gain, x), eps_);
  return ops::cast(normed, x.dtype());
}

GemmaScaledEmbedding::GemmaScaledEmbedding(std::string class_name, std::int64_t num_embeddings,
                                           std::int64_t embedding_dim, DType dtype)
    : nn::Embedding(std::move(class_name), num_embeddings, embedding_dim, dtype),
      scale_(embedding_scale(embedding_dim)) {
  register_buffer("embed_scale", Tensor::full({}, scale_, DType::Float32), /*persistent=*/false);
}

Value GemmaScaledEmbedding::forward(Args& args) {
  const Tensor rows = ops::embedding(args.tensor(0, class_name() + ".forward"), weight());
  return scale_in_dtype(rows, scale_);
}

void GemmaScaledEmbedding::reset_non_persistent_buffers(Device device) {
  buffer_slot("embed_scale")->set(Tensor::full({}, scale_, DType::Float32, device));
}

GemmaDualRotaryEmbedding::GemmaDualRotaryEmbedding(std::string class_name, const RopeConfig& full,
                                                   const RopeConfig& sliding)
    : nn::Module(std::move(class_name)),
      full_("Gemma3RotaryEmbedding", full),
      sliding_("Gemma3RotaryEmbedding", sliding) {
  // In the order transformers 5.17 listed them (it iterates a set of the layer types); the
  // order only affects the module's listing.
  for (const auto& [type, rope] :
       {std::pair<const char*, const RotaryEmbedding*>{kFull, &full_}, {kSliding, &sliding_}}) {
    std::vector<Tensor> buffers = frequency_buffers(*rope);
    register_buffer(fmt::format("{}_inv_freq", type), buffers[0], /*persistent=*/false);
    register_buffer(fmt::format("{}_original_inv_freq", type), buffers[1], /*persistent=*/false);
  }
}

Value GemmaDualRotaryEmbedding::forward(Args& args) {
  const Value* type = args.keyword("layer_type");
  STRATA_CHECK_ARG(type != nullptr && type->is_string() &&
                       (type->string() == kSliding || type->string() == kFull),
                   "{}.forward: layer_type must be \"{}\" or \"{}\"", class_name(), kSliding,
                   kFull);
  const bool sliding = type->string() == kSliding;
  Args rest(std::move(args.positional), std::move(args.keywords));
  return (sliding ? sliding_ : full_).forward(rest);
}

void GemmaDualRotaryEmbedding::reset_non_persistent_buffers(Device device) {
  for (const auto& [type, rope] :
       {std::pair<const char*, const RotaryEmbedding*>{kSliding, &sliding_}, {kFull, &full_}}) {
    std::vector<Tensor> buffers = frequency_buffers(*rope);
    buffer_slot(fmt::format("{}_inv_freq", type))->set(buffers[0].to(device));
    buffer_slot(fmt::format("{}_original_inv_freq", type))->set(buffers[1].to(device));
  }
}

GemmaAttention::GemmaAttention(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module(c.class_name("Attention")),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      sliding_window_(c.sliding_windows.at(static_cast<std::size_t>(layer_idx))),
      scale_(1.0 / std::sqrt(c.query_pre_attn_scalar)),
      softcap_(c.attn_logit_softcapping) {
  const std::int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  const auto linear = [&](const char* name, std::int64_t in, std::int64_t out, bool bias) {
    return register_module(name, std::make_shared<nn::Linear>(in, out, bias, dtype));
  };
  q_proj_ = linear("q_proj", c.hidden_size, q_out, c.qkv_bias);
  k_proj_ = linear("k_proj", c.hidden_size, kv_out, c.qkv_bias);
  v_proj_ = linear("v_proj", c.hidden_size, kv_out, c.qkv_bias);
  o_proj_ = linear("o_proj", q_out, c.hidden_size, c.o_bias);
  if (c.qk_norm) {
    const std::string norm = c.class_name("RMSNorm");
    q_norm_ = register_module("q_norm",
                              std::make_shared<GemmaRMSNorm>(norm, c.head_dim, c.norm_eps, dtype));
    k_norm_ = register_module("k_norm",
                              std::make_shared<GemmaRMSNorm>(norm, c.head_dim, c.norm_eps, dtype));
  }
}

Value GemmaAttention::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const Value* rope = args.keyword("position_embeddings");
  STRATA_CHECK_ARG(rope != nullptr && rope->is_list() && rope->list().size() == 2,
                   "{}: position_embeddings must be [cos, sin] from the rotary module", who);
  const std::shared_ptr<KVCache> cache = detail::cache_argument(args, who);
  const std::int64_t batch = x.size(0), seq = x.size(1);

  Tensor q = call(*q_proj_, x).view({batch, seq, num_heads_, head_dim_});
  Tensor k = call(*k_proj_, x).view({batch, seq, num_kv_heads_, head_dim_});
  if (q_norm_) {  // Gemma 3: per-head RMSNorm before the rotation
    q = call(*q_norm_, q);
    k = call(*k_norm_, k);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  const Tensor v = detail::split_heads(call(*v_proj_, x), num_kv_heads_, head_dim_);
  const Tensor cos = on_device_of(rope->list()[0].tensor(), q);
  const Tensor sin = on_device_of(rope->list()[1].tensor(), q);
  q = ops::rotary_embedding(q, cos, sin);
  k = ops::rotary_embedding(k, cos, sin);
  const std::optional<Tensor> mask = detail::layer_mask_argument(args, who);
  const Tensor attn =
      softcap_ ? detail::capped_causal_attention(q, k, v, cache.get(), layer_idx_, scale_,
                                                 *softcap_, sliding_window_, mask)
               : detail::causal_attention(q, k, v, cache.get(), layer_idx_, scale_, sliding_window_,
                                          mask);
  return call(*o_proj_, detail::merge_heads(attn));
}

GemmaDecoderLayer::GemmaDecoderLayer(const TransformerConfig& c, std::int64_t layer_idx,
                                     DType dtype)
    : nn::Module(c.class_name("DecoderLayer")) {
  // Registration order is transformers' (it decides state_dict and device-map order).
  self_attn_ = register_module("self_attn", std::make_shared<GemmaAttention>(c, layer_idx, dtype));
  mlp_ = register_module(
      "mlp", std::make_shared<GatedMLP>(c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size,
                                        c.intermediate_size, false, c.activation, dtype));
  const std::string norm = c.class_name("RMSNorm");
  const auto make_norm = [&](const char* name) {
    return register_module(name,
                           std::make_shared<GemmaRMSNorm>(norm, c.hidden_size, c.norm_eps, dtype));
  };
  input_layernorm_ = make_norm("input_layernorm");
  post_attention_layernorm_ = make_norm("post_attention_layernorm");
  pre_feedforward_layernorm_ = make_norm("pre_feedforward_layernorm");
  post_feedforward_layernorm_ = make_norm("post_feedforward_layernorm");
}

Value GemmaDecoderLayer::forward(Args& args) {
  Tensor hidden = args.tensor(0, class_name() + ".forward");
  Args attn_args({call(*input_layernorm_, hidden)}, std::move(args.keywords));
  const Tensor attn = (*self_attn_)(std::move(attn_args)).tensor();
  hidden = ops::add(hidden, on_device_of(call(*post_attention_layernorm_, attn), hidden));
  const Tensor mlp = call(*mlp_, call(*pre_feedforward_layernorm_, hidden));
  return ops::add(hidden, on_device_of(call(*post_feedforward_layernorm_, mlp), hidden));
}

namespace {

BaseModel::Parts gemma_parts(const TransformerConfig& c, DType dtype) {
  STRATA_ASSERT(c.rope.has_value(), "Gemma config without rope parameters");
  BaseModel::Parts parts;
  parts.embed_tokens = std::make_shared<GemmaScaledEmbedding>(
      c.class_name("TextScaledWordEmbedding"), c.vocab_size, c.hidden_size, dtype);
  parts.make_layer = [&c, dtype](std::int64_t i) -> std::shared_ptr<nn::Module> {
    return std::make_shared<GemmaDecoderLayer>(c, i, dtype);
  };
  parts.norm =
      std::make_shared<GemmaRMSNorm>(c.class_name("RMSNorm"), c.hidden_size, c.norm_eps, dtype);
  // Padded batches: soft-capped layers take the mask with finite entries (capped_attention.h).
  parts.finite_masks = c.attn_logit_softcapping.has_value();
  if (c.sliding_rope) {  // Gemma 3: one rope per layer type
    parts.rotary_emb = std::make_shared<GemmaDualRotaryEmbedding>(c.class_name("RotaryEmbedding"),
                                                                  *c.rope, *c.sliding_rope);
    for (const bool sliding : c.sliding_layers) {
      parts.rope_layer_types.emplace_back(sliding ? kSliding : kFull);
    }
  } else {
    parts.rotary_emb = std::make_shared<RotaryEmbedding>(c.class_name("RotaryEmbedding"), *c.rope);
  }
  return parts;
}

}  // namespace

GemmaModel::GemmaModel(const TransformerConfig& c, DType dtype)
    : BaseModel(
          c.architecture == Architecture::Gemma3Text ? "Gemma3TextModel" : c.class_name("Model"), c,
          gemma_parts(c, dtype)) {}

GemmaForCausalLM::GemmaForCausalLM(const TransformerConfig& c, DType dtype)
    : CausalLM(c.class_name("ForCausalLM"), c) {
  finish(std::make_shared<GemmaModel>(c, dtype), dtype);
}

namespace detail {
std::shared_ptr<CausalLM> build_gemma(const TransformerConfig& config, DType dtype) {
  return std::make_shared<GemmaForCausalLM>(config, dtype);
}
}  // namespace detail

}  // namespace strata::models
