#include "cpu/layer_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/norm_params.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor layer_norm(const Tensor& x, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps) {
  constexpr const char* kOp = "layer_norm";
  detail::check_norm_input(kOp, x);
  if (weight) detail::check_norm_param(kOp, "weight", *weight, x);
  if (bias) detail::check_norm_param(kOp, "bias", *bias, x);
  STRATA_CHECK_ARG(eps >= 0.0, "layer_norm: eps must be >= 0, got {}", eps);
  if (!detail::has_kernels(x.device())) detail::unsupported(kOp, x.device(), x.dtype());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  std::optional<Tensor> weight_c, bias_c;
  if (weight) weight_c = weight->contiguous();
  if (bias) bias_c = bias->contiguous();
  STRATA_OP_KERNEL(x.device(), layer_norm)(x.contiguous(), weight_c, bias_c, eps, out);
  return out;
}

}  // namespace strata::ops
