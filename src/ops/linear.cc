#include "cpu/layer_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
  constexpr const char* kOp = "linear";
  detail::check_materialized(kOp, "x", x);
  detail::check_materialized(kOp, "weight", weight);
  if (bias) detail::check_materialized(kOp, "bias", *bias);
  detail::check_float_dtype(kOp, "x", x);
  detail::check_same_dtype(kOp, {{"x", &x}, {"weight", &weight}});
  detail::check_same_device(kOp, {{"x", &x}, {"weight", &weight}});
  if (bias) {
    detail::check_same_dtype(kOp, {{"x", &x}, {"bias", &*bias}});
    detail::check_same_device(kOp, {{"x", &x}, {"bias", &*bias}});
  }
  detail::check_rank(kOp, "weight", weight, 2);
  const std::int64_t out_features = weight.size(0), in_features = weight.size(1);
  STRATA_CHECK_ARG(x.dim() >= 1,
                   "linear: 'x' must be [..., in_features], got a 0-dimensional tensor ({})",
                   x.describe());
  STRATA_CHECK_ARG(x.size(-1) == in_features,
                   "linear: 'x' ({}) has {} features in its last dimension but 'weight' ({}) is "
                   "[out_features, in_features] with in_features = {}; pass x as [..., {}] (or "
                   "check the weight is not transposed)",
                   x.describe(), x.size(-1), weight.describe(), in_features, in_features);
  if (bias) {
    STRATA_CHECK_ARG(bias->dim() == 1 && bias->size(0) == out_features,
                     "linear: 'bias' ({}) must be [out_features] = [{}] to match 'weight' ({})",
                     bias->describe(), out_features, weight.describe());
  }
  if (!detail::has_kernels(x.device())) detail::unsupported(kOp, x.device(), x.dtype());

  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  std::int64_t rows = 1;
  for (std::int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  std::optional<Tensor> bias_c;
  if (bias) bias_c = bias->contiguous();
  STRATA_OP_KERNEL(x.device(), linear)
  (x.contiguous().view({rows, in_features}), weight.contiguous(), bias_c,
   out.view({rows, out_features}));
  return out;
}

Tensor swiglu(const Tensor& x, const Tensor& gate_weight, const Tensor& up_weight) {
  constexpr const char* kOp = "swiglu";
  detail::check_materialized(kOp, "x", x);
  detail::check_materialized(kOp, "gate_weight", gate_weight);
  detail::check_materialized(kOp, "up_weight", up_weight);
  detail::check_float_dtype(kOp, "x", x);
  detail::check_same_dtype(kOp,
                           {{"x", &x}, {"gate_weight", &gate_weight}, {"up_weight", &up_weight}});
  detail::check_same_device(kOp,
                            {{"x", &x}, {"gate_weight", &gate_weight}, {"up_weight", &up_weight}});
  detail::check_rank(kOp, "gate_weight", gate_weight, 2);
  STRATA_CHECK_ARG(up_weight.shape() == gate_weight.shape(),
                   "swiglu: 'gate_weight' ({}) and 'up_weight' ({}) must have one shape "
                   "[intermediate, in_features]",
                   gate_weight.describe(), up_weight.describe());
  STRATA_CHECK_ARG(x.dim() >= 1 && x.size(-1) == gate_weight.size(1),
                   "swiglu: 'x' ({}) must be [..., in_features] with in_features = {} (the "
                   "weights are [intermediate, in_features] = {})",
                   x.describe(), gate_weight.size(1), gate_weight.describe());
#ifdef STRATA_WITH_CUDA
  const DType t = x.dtype();
  if (x.is_cuda() && (t == DType::Float32 || t == DType::BFloat16 || t == DType::Float16) &&
      x.size(-1) > 0 && x.numel() > 0 && gate_weight.size(0) > 0 && x.is_contiguous() &&
      gate_weight.is_contiguous() && up_weight.is_contiguous()) {
    const std::int64_t rows = x.numel() / x.size(-1), inter = gate_weight.size(0);
    Shape out_shape = x.shape();
    out_shape.back() = inter;
    Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
    if (cuda::swiglu_gemv(x.view({rows, x.size(-1)}), gate_weight, up_weight,
                          out.view({rows, inter}))) {
      return out;
    }
  }
#endif
  return mul(silu(linear(x, gate_weight)), linear(x, up_weight));
}

}  // namespace strata::ops
