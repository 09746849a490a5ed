// gpt-oss' mixture of experts (transformers' GptOssTopKRouter, GptOssExperts, GptOssMLP and, for
// MXFP4 checkpoints, Mxfp4GptOssExperts' tensors with convert_moe_packed_tensors' arithmetic).
//
// Everything here is composed of existing ops, so it runs on every device: the clamped SwiGLU
// from relu/silu/add/mul, the MXFP4 dequantisation from two ops::embedding lookups (a byte ->
// code pair table and an e8m0 -> power of two table) and a product. An MXFP4 expert is
// dequantised on the device that computes, one weight at a time, only when it has tokens.

#include <array>
#include <cmath>
#include <vector>

#include "models/attention.h"
#include "models/expert_routing.h"
#include "strata/core/error.h"
#include "strata/models/gpt_oss.h"
#include "strata/ops.h"

namespace strata::models {

using detail::ExpertRouting;

namespace {

// e2m1 values of codes 0..15 (bit 3 = sign), transformers' FP4_VALUES.
constexpr std::array<float, 16> kFp4Values = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,
                                              4.0f,  6.0f,  -0.0f, -0.5f, -1.0f, -1.5f,
                                              -2.0f, -3.0f, -4.0f, -6.0f};

// Row b holds the two values of byte b: the low nibble's first.
const Tensor& code_pair_table() {
  static const Tensor table = [] {
    std::vector<float> v(512);
    for (std::size_t b = 0; b < 256; ++b) {
      v[2 * b] = kFp4Values[b & 0x0F];
      v[2 * b + 1] = kFp4Values[b >> 4];
    }
    return Tensor::from_vector(v, {256, 2});
  }();
  return table;
}

// Row s holds 2^(s - 127) (torch.ldexp's value; 255 gives inf, e8m0's NaN code).
const Tensor& scale_table() {
  static const Tensor table = [] {
    std::vector<float> v(256);
    for (int s = 0; s < 256; ++s) v[static_cast<std::size_t>(s)] = std::ldexp(1.0f, s - 127);
    return Tensor::from_vector(v, {256, 1});
  }();
  return table;
}

Tensor scalar_like(const Tensor& x, double value) {
  return Tensor::full({1}, value, x.dtype(), x.device());
}

}  // namespace

Tensor mxfp4_dequantize(const Tensor& blocks, const Tensor& scales, DType dtype) {
  STRATA_CHECK_ARG(blocks.dtype() == DType::UInt8 && scales.dtype() == DType::UInt8,
                   "mxfp4_dequantize: blocks {} and scales {} must be uint8", blocks.describe(),
                   scales.describe());
  STRATA_CHECK_ARG(blocks.dim() >= 2 && blocks.size(-1) == 16 && scales.dim() == blocks.dim() - 1,
                   "mxfp4_dequantize: blocks {} must be [..., groups, 16] and scales {} "
                   "[..., groups]",
                   blocks.describe(), scales.describe());
  for (std::int64_t d = 0; d < scales.dim(); ++d) {
    STRATA_CHECK_ARG(scales.size(d) == blocks.size(d),
                     "mxfp4_dequantize: scales {} do not match blocks {} (one scale per 16 bytes)",
                     scales.describe(), blocks.describe());
  }
  const Device device = blocks.device();
  const std::int64_t groups = scales.numel();
  const Tensor codes = blocks.contiguous().view({groups * 16}).to(DType::Int64);
  const Tensor values = ops::embedding(codes, code_pair_table().to(device)).view({groups, 32});
  const Tensor exps = scales.contiguous().view({groups}).to(DType::Int64);
  const Tensor factors = ops::embedding(exps, scale_table().to(device));  // [groups, 1]
  Shape shape = scales.shape();
  shape.back() *= 32;
  return ops::mul(values, factors).view(shape).to(dtype);
}

Tensor clamped_swiglu(const Tensor& gate_up, double alpha, double limit) {
  STRATA_CHECK_ARG(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0,
                   "clamped_swiglu: gate_up {} must end in 2 * intermediate (gate and up "
                   "interleaved)",
                   gate_up.describe());
  const std::int64_t inter = gate_up.size(-1) / 2, rows = gate_up.numel() / gate_up.size(-1);
  const Tensor pairs = gate_up.contiguous().view({rows, inter, 2});
  Tensor gate = pairs.narrow(2, 0, 1).reshape({rows, inter});
  Tensor up = pairs.narrow(2, 1, 1).reshape({rows, inter});
  const Tensor minus_one = scalar_like(gate, -1.0), minus_limit = scalar_like(gate, -limit);
  // min(g, L) = g - relu(g - L); clamp(u, -L, L) = u - relu(u - L) + relu(-u - L).
  gate = ops::add(gate, ops::mul(ops::relu(ops::add(gate, minus_limit)), minus_one));
  up = ops::add(ops::add(up, ops::mul(ops::relu(ops::add(up, minus_limit)), minus_one)),
                ops::relu(ops::add(ops::mul(up, minus_one), minus_limit)));
  // g * sigmoid(alpha g) = silu(alpha g) / alpha.
  const Tensor glu =
      ops::mul(ops::silu(ops::mul(gate, scalar_like(gate, alpha))), scalar_like(gate, 1.0 / alpha));
  Shape shape = gate_up.shape();
  shape.back() = inter;
  return ops::mul(ops::add(up, scalar_like(up, 1.0)), glu).view(shape);
}

GptOssTopKRouter::GptOssTopKRouter(std::int64_t hidden, std::int64_t experts, DType dtype)
    : nn::Module("GptOssTopKRouter") {
  create_parameter("weight", {experts, hidden}, dtype, 0.0);
  create_parameter("bias", {experts}, dtype, 0.0);
}

Value GptOssTopKRouter::forward(Args& args) {
  return ops::linear(args.tensor(0, "GptOssTopKRouter.forward"), parameter("weight"),
                     parameter("bias"));
}

GptOssExperts::GptOssExperts(const TransformerConfig& c, bool mxfp4, DType dtype)
    : nn::Module(mxfp4 ? "Mxfp4GptOssExperts" : "GptOssExperts"),
      mxfp4_(mxfp4),
      num_experts_(c.num_experts),
      hidden_(c.hidden_size),
      intermediate_(c.intermediate_size),
      alpha_(c.swiglu_alpha),
      limit_(c.swiglu_limit) {
  const std::int64_t E = num_experts_, H = hidden_, I = intermediate_;
  if (!mxfp4) {
    create_parameter("gate_up_proj", {E, H, 2 * I}, dtype, 0.0);
    create_parameter("gate_up_proj_bias", {E, 2 * I}, dtype, 0.0);
    create_parameter("down_proj", {E, I, H}, dtype, 0.0);
    create_parameter("down_proj_bias", {E, H}, dtype, 0.0);
    return;
  }
  STRATA_CHECK(H % 32 == 0 && I % 32 == 0, NotSupported,
               "Mxfp4GptOssExperts: hidden_size {} and intermediate_size {} must be multiples of "
               "32 (MXFP4 blocks of 32 inputs)",
               H, I);
  // Mxfp4GptOssExperts' order; packed [E, out, in / 32, 16] with the scales beside.
  create_parameter("gate_up_proj_blocks", {E, 2 * I, H / 32, 16}, DType::UInt8, 0.0);
  create_parameter("gate_up_proj_scales", {E, 2 * I, H / 32}, DType::UInt8, 127.0);
  create_parameter("gate_up_proj_bias", {E, 2 * I}, dtype, 0.0);
  create_parameter("down_proj_blocks", {E, H, I / 32, 16}, DType::UInt8, 0.0);
  create_parameter("down_proj_scales", {E, H, I / 32}, DType::UInt8, 127.0);
  create_parameter("down_proj_bias", {E, H}, dtype, 0.0);
}

bool GptOssExperts::keeps_tensor_dtype(std::string_view name) const {
  return name.ends_with("_blocks") || name.ends_with("_scales");
}

Tensor GptOssExperts::project(const Tensor& x, std::int64_t expert, bool gate_up) const {
  const std::string name = gate_up ? "gate_up_proj" : "down_proj";
  const Tensor bias = parameter(name + "_bias").select(0, expert);
  if (!mxfp4_) {  // stored [in, out]: x @ W + b, as transformers computes it
    return ops::add(ops::matmul(x, parameter(name).select(0, expert)), bias);
  }
  const Tensor weight = mxfp4_dequantize(parameter(name + "_blocks").select(0, expert),
                                         parameter(name + "_scales").select(0, expert), x.dtype());
  return ops::add(ops::linear(x, weight), bias);  // dequantised [out, in]
}

Value GptOssExperts::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  const Value* indices_value = args.keyword("router_indices");
  const Value* weights_value = args.keyword("routing_weights");
  STRATA_CHECK_ARG(x.dim() == 2 && x.size(1) == hidden_,
                   "{}: hidden_states must be [tokens, {}], got {}", who, hidden_, x.describe());
  STRATA_CHECK_ARG(indices_value != nullptr && indices_value->is_tensor() &&
                       weights_value != nullptr && weights_value->is_tensor(),
                   "{}: needs the keywords router_indices and routing_weights (tensors)", who);
  const Tensor& indices_t = indices_value->tensor();
  const Tensor& weights_t = weights_value->tensor();
  const std::int64_t tokens = x.size(0);
  STRATA_CHECK_ARG(
      indices_t.dim() == 2 && indices_t.size(0) == tokens && weights_t.shape() == indices_t.shape(),
      "{}: router_indices {} and routing_weights {} must both be [{}, k]", who,
      indices_t.describe(), weights_t.describe(), tokens);
  const ExpertRouting routing =
      detail::route_tokens(indices_t, weights_t, num_experts_, /*normalize_top_k=*/false, who);
  // An MXFP4 expert's weights are dequantised here, only for experts with tokens.
  return detail::combine_experts(
      x, routing, weights_t.dtype(), [&](std::int64_t e, const Tensor& rows) {
        return project(clamped_swiglu(project(rows, e, true), alpha_, limit_), e, false);
      });
}

GptOssMLP::GptOssMLP(const TransformerConfig& c, std::int64_t layer_idx, DType dtype)
    : nn::Module(c.class_name("MLP")), top_k_(c.num_experts_per_tok) {
  const auto layer = static_cast<std::size_t>(layer_idx);
  const bool mxfp4 = layer < c.mxfp4_experts.size() && c.mxfp4_experts[layer];
  router_ = register_module(
      "router", std::make_shared<GptOssTopKRouter>(c.hidden_size, c.num_experts, dtype));
  experts_ = register_module("experts", std::make_shared<GptOssExperts>(c, mxfp4, dtype));
}

Value GptOssMLP::forward(Args& args) {
  const std::string who = class_name() + ".forward";
  const Tensor& x = args.tensor(0, who);
  STRATA_CHECK_ARG(x.dim() == 3, "{}: hidden_states must be [batch, seq, hidden], got {}", who,
                   x.describe());
  const Tensor flat = x.reshape({x.size(0) * x.size(1), x.size(2)});
  const Tensor logits = call(*router_, flat);
  // softmax over the k selected logits, in their dtype (GptOssTopKRouter).
  auto [top_values, top_indices] = ops::topk(logits, top_k_, -1);
  Args expert_args(
      {flat}, {{"router_indices", top_indices}, {"routing_weights", ops::softmax(top_values, -1)}});
  const Tensor out = (*experts_)(std::move(expert_args)).tensor();
  return detail::on_device_of(out, flat).view(x.shape());
}

}  // namespace strata::models
