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

}  // namespace strata::ops
