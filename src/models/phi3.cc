// Phi-3's fused projections (transformers' modeling_phi3.py: Phi3Attention, Phi3MLP).

#include "strata/models/phi3.h"

#include <fmt/format.h>

#include "models/attention.h"
#include "strata/core/error.h"
#include "strata/models/quant_linear.h"
#include "strata/ops.h"

namespace strata::models {

Phi3Attention::Phi3Attention(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module(c.class_name("Attention")),
      layer_idx_(layer_idx),
      num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      sliding_window_(c.sliding_windows.at(static_cast<std::size_t>(layer_idx))),
      use_rope_(c.rope_layers.empty() || c.rope_layers.at(static_cast<std::size_t>(layer_idx))) {
  const QuantizationConfig* quant = c.quantization ? &*c.quantization : nullptr;
  const std::int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  const auto linear = [&](const char* name, std::int64_t in, std::int64_t out) {
    const std::string path = fmt::format("model.layers.{}.self_attn.{}", layer_idx, name);
    return register_module(name, make_linear(quant, path, in, out, /*bias=*/false, dtype));
  };
  // transformers' order: o_proj first.
  o_proj_ = linear("o_proj", q_out, c.hidden_size);
  qkv_proj_ = linear("qkv_proj", c.hidden_size, q_out + 2 * kv_out);
}

Value Phi3Attention::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const std::int64_t batch = x.size(0), seq = x.size(1);
  const std::int64_t q_out = num_heads_ * head_dim_, kv_out = num_kv_heads_ * head_dim_;
  const Tensor qkv = call(*qkv_proj_, x);
  const auto heads = [&](std::int64_t start, std::int64_t width, std::int64_t count) {
    return qkv.narrow(2, start, width).reshape({batch, seq, count, head_dim_}).transpose(1, 2);
  };
  const Tensor q = heads(0, q_out, num_heads_);
  const Tensor k = heads(q_out, kv_out, num_kv_heads_);
  const Tensor v = heads(q_out + kv_out, kv_out, num_kv_heads_);
  return call(*o_proj_, detail::rotate_and_attend(args, q, k, v, use_rope_, layer_idx_,
                                                  sliding_window_, who));
}

Phi3MLP::Phi3MLP(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module(c.class_name("MLP")), intermediate_(c.intermediate_size) {
  const QuantizationConfig* quant = c.quantization ? &*c.quantization : nullptr;
  const std::string path = fmt::format("model.layers.{}.mlp.", layer_idx);
  gate_up_proj_ =
      register_module("gate_up_proj", make_linear(quant, path + "gate_up_proj", c.hidden_size,
                                                  2 * c.intermediate_size, /*bias=*/false, dtype));
  down_proj_ = register_module(
      "down_proj", make_linear(quant, path + "down_proj", c.intermediate_size, c.hidden_size,
                               /*bias=*/false, dtype));
  activation_fn_ =
      register_module("activation_fn", std::make_shared<ActivationLayer>(c.activation));
}

Value Phi3MLP::forward(Args& args) {
  const Tensor& x = args.tensor(0, class_name() + ".forward");
  const Tensor gate_up = call(*gate_up_proj_, x);
  const std::int64_t last = gate_up.dim() - 1;
  const Tensor gate = call(*activation_fn_, gate_up.narrow(last, 0, intermediate_));
  const Tensor up = gate_up.narrow(last, intermediate_, intermediate_);
  return call(*down_proj_, ops::mul(up, gate));
}

}  // namespace strata::models
