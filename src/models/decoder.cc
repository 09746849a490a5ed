// The decoder family (Llama, Mistral, Qwen2, Qwen3, Mixtral, Phi-3, OLMo 2, SmolLM3):
// transformers' modeling_llama.py and its copies, with the per-model differences as
// TransformerConfig flags.

#include "strata/models/decoder.h"

#include <fmt/format.h>

#include <optional>
#include <typeinfo>
#include <utility>

#include "models/attention.h"
#include "models/families.h"
#include "strata/core/error.h"
#include "strata/models/layers.h"
#include "strata/models/moe.h"
#include "strata/models/phi3.h"
#include "strata/models/quant_linear.h"
#include "strata/nn/align_devices_hook.h"
#include "strata/nn/layers.h"
#include "strata/ops.h"

namespace strata::models {

using detail::on_device_of;

DecoderAttention::DecoderAttention(const TransformerConfig& c, std::int64_t layer_idx, DType dtype,
                                   const TensorParallel& tp)
    : nn::Module(c.class_name("Attention")),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      sliding_window_(c.sliding_windows.at(static_cast<std::size_t>(layer_idx))),
      use_rope_(c.rope_layers.empty() || c.rope_layers.at(static_cast<std::size_t>(layer_idx))),
      norm_whole_projection_(c.qk_norm_over_projection) {
  const std::int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  const QuantizationConfig* quant = c.quantization ? &*c.quantization : nullptr;
  const auto linear = [&](const char* name, std::int64_t in, std::int64_t out, bool bias) {
    const std::string path = fmt::format("model.layers.{}.self_attn.{}", layer_idx, name);
    return register_module(name, make_linear(quant, path, in, out, bias, dtype));
  };
  q_proj_ = linear("q_proj", c.hidden_size, q_out, c.qkv_bias);
  k_proj_ = linear("k_proj", c.hidden_size, kv_out, c.qkv_bias);
  v_proj_ = linear("v_proj", c.hidden_size, kv_out, c.qkv_bias);
  o_proj_ = tp.active() ? register_module("o_proj", std::make_shared<RowParallelLinear>(
                                                        q_out, c.hidden_size, c.o_bias, dtype, tp))
                        : linear("o_proj", q_out, c.hidden_size, c.o_bias);
  if (c.qk_norm) {
    // Qwen3 normalises each head; OLMo 2 the whole projection.
    const std::string norm = c.class_name("RMSNorm");
    const std::int64_t q_dim = norm_whole_projection_ ? q_out : c.head_dim;
    const std::int64_t k_dim = norm_whole_projection_ ? kv_out : c.head_dim;
    q_norm_ = register_module("q_norm", std::make_shared<RMSNorm>(norm, q_dim, c.norm_eps, dtype));
    k_norm_ = register_module("k_norm", std::make_shared<RMSNorm>(norm, k_dim, c.norm_eps, dtype));
  }
}

Value DecoderAttention::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const std::int64_t batch = x.size(0), seq = x.size(1);

  Tensor q = call(*q_proj_, x);
  Tensor k = call(*k_proj_, x);
  if (q_norm_ && norm_whole_projection_) {  // OLMo 2: RMSNorm over the whole projection
    q = call(*q_norm_, q);
    k = call(*k_norm_, k);
  }
  q = q.view({batch, seq, num_heads_, head_dim_});
  k = k.view({batch, seq, num_kv_heads_, head_dim_});
  if (q_norm_ && !norm_whole_projection_) {  // Qwen3: per-head RMSNorm before the rotation
    q = call(*q_norm_, q);
    k = call(*k_norm_, k);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  const Tensor v = detail::split_heads(call(*v_proj_, x), num_kv_heads_, head_dim_);
  // SmolLM3's NoPE layers skip the rotation.
  return call(*o_proj_, detail::rotate_and_attend(args, q, k, v, use_rope_, layer_idx_,
                                                  sliding_window_, who));
}

GatedMLP::GatedMLP(std::string class_name, Naming naming, std::int64_t hidden,
                   std::int64_t intermediate, bool bias, Activation activation, DType dtype,
                   const QuantizationConfig* quant, const std::string& path,
                   const TensorParallel& tp)
    : nn::Module(std::move(class_name)) {
  const auto linear = [&](const char* name, std::int64_t in, std::int64_t out) {
    return register_module(name, make_linear(quant, path + "." + name, in, out, bias, dtype));
  };
  // Registration order is transformers' (it decides state_dict and device-map order).
  if (naming == Naming::Llama) {
    gate_ = linear("gate_proj", hidden, intermediate);
    up_ = linear("up_proj", hidden, intermediate);
    down_ = tp.active() ? register_module("down_proj", std::make_shared<RowParallelLinear>(
                                                           intermediate, hidden, bias, dtype, tp))
                        : linear("down_proj", intermediate, hidden);
  } else {
    gate_ = linear("w1", hidden, intermediate);
    down_ = linear("w2", intermediate, hidden);
    up_ = linear("w3", hidden, intermediate);
  }
  act_ = register_module("act_fn", std::make_shared<ActivationLayer>(activation));
}

namespace {

// gate_proj and up_proj's weights when the first half of the MLP is ops::swiglu of them with the
// numbers of calling the three modules: SiLU, plain bias-free Linears whose hooks (if any) leave
// x and their weights where they are, weights on x's device in x's dtype. On a GPU that is one
// launch for up to 8 rows instead of four (a decode step's MLPs and resident experts).
std::optional<std::pair<Tensor, Tensor>> swiglu_weights(const nn::Module& gate,
                                                        const nn::Module& up,
                                                        const ActivationLayer& act,
                                                        const Tensor& x) {
  if (act.activation() != Activation::SiLU || !nn::hook_passes_through(act, x.device())) {
    return std::nullopt;
  }
  std::pair<Tensor, Tensor> weights;
  for (const auto& [module, weight] : {std::pair{&gate, &weights.first}, {&up, &weights.second}}) {
    if (typeid(*module) != typeid(nn::Linear) || !nn::hook_passes_through(*module, x.device())) {
      return std::nullopt;
    }
    const auto& linear = static_cast<const nn::Linear&>(*module);
    if (linear.has_bias()) return std::nullopt;
    const Tensor& w = linear.weight();
    if (w.device() != x.device() || w.dtype() != x.dtype()) return std::nullopt;
    *weight = w;
  }
  return weights;
}

}  // namespace

Value GatedMLP::forward(Args& args) {
  const Tensor& x = args.tensor(0, class_name() + ".forward");
  if (const auto weights = swiglu_weights(*gate_, *up_, *act_, x)) {
    return call(*down_, ops::swiglu(x, weights->first, weights->second));
  }
  const Tensor gate = call(*act_, call(*gate_, x));
  return call(*down_, ops::mul(gate, on_device_of(call(*up_, x), gate)));
}

DecoderLayer::DecoderLayer(const TransformerConfig& c, std::int64_t layer_idx, DType dtype,
                           const TensorParallel& tp)
    : nn::Module(c.class_name("DecoderLayer")), post_norms_(c.post_norms) {
  if (c.fused_projections) {  // Phi-3 (tensor parallelism refuses it: tensor_parallel.cc)
    self_attn_ = register_module("self_attn", std::make_shared<Phi3Attention>(c, layer_idx, dtype));
    mlp_ = register_module("mlp", std::make_shared<Phi3MLP>(c, layer_idx, dtype));
  } else {
    self_attn_ =
        register_module("self_attn", std::make_shared<DecoderAttention>(c, layer_idx, dtype, tp));
    if (c.is_sparse_layer(layer_idx)) {
      const char* name = c.architecture == Architecture::Mixtral ? "block_sparse_moe" : "mlp";
      mlp_ = register_module(name, std::make_shared<SparseMoeBlock>(c, dtype, tp));
    } else {
      mlp_ = register_module("mlp", std::make_shared<GatedMLP>(
                                        c.class_name("MLP"), GatedMLP::Naming::Llama, c.hidden_size,
                                        c.intermediate_size, c.mlp_bias, c.activation, dtype,
                                        c.quantization ? &*c.quantization : nullptr,
                                        fmt::format("model.layers.{}.mlp", layer_idx), tp));
    }
  }
  const std::string norm = c.class_name("RMSNorm");
  const auto make_norm = [&](const char* name) {
    return register_module(name, std::make_shared<RMSNorm>(norm, c.hidden_size, c.norm_eps, dtype));
  };
  if (!post_norms_) input_layernorm_ = make_norm("input_layernorm");
  post_attention_layernorm_ = make_norm("post_attention_layernorm");
  if (post_norms_) post_feedforward_layernorm_ = make_norm("post_feedforward_layernorm");
}

Value DecoderLayer::forward(Args& args) {
  Tensor hidden = args.tensor(0, class_name() + ".forward");
  if (post_norms_) {  // OLMo 2: h += norm(attn(h)); h += norm(mlp(h))
    Args attn_args({hidden}, std::move(args.keywords));
    const Tensor attn = (*self_attn_)(std::move(attn_args)).tensor();
    hidden = ops::add(hidden, on_device_of(call(*post_attention_layernorm_, attn), hidden));
    const Tensor mlp = call(*post_feedforward_layernorm_, call(*mlp_, hidden));
    return ops::add(hidden, on_device_of(mlp, hidden));
  }
  return detail::pre_norm_block(hidden, args, *input_layernorm_, *self_attn_,
                                *post_attention_layernorm_, *mlp_);
}

namespace {

BaseModel::Parts decoder_parts(const TransformerConfig& c, DType dtype, const TensorParallel& tp) {
  return BaseModel::llama_parts(c, dtype,
                                [&c, dtype, &tp](std::int64_t i) -> std::shared_ptr<nn::Module> {
                                  return std::make_shared<DecoderLayer>(c, i, dtype, tp);
                                });
}

}  // namespace

DecoderModel::DecoderModel(const TransformerConfig& c, DType dtype, const TensorParallel& tp)
    : BaseModel(c.class_name("Model"), c, decoder_parts(c, dtype, tp)) {}

DecoderForCausalLM::DecoderForCausalLM(const TransformerConfig& c, DType dtype,
                                       const TensorParallel& tp)
    : CausalLM(c.class_name("ForCausalLM"), c, tp) {
  finish(std::make_shared<DecoderModel>(tp.active() ? rank_config(c, tp.size) : c, dtype, tp),
         dtype);
}

namespace detail {
std::shared_ptr<CausalLM> build_decoder(const TransformerConfig& config, DType dtype,
                                        const TensorParallel& tp) {
  return std::make_shared<DecoderForCausalLM>(config, dtype, tp);
}
}  // namespace detail

}  // namespace strata::models
