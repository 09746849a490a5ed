#include "cpu/layer_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/norm_params.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  constexpr const char* kOp = "rms_norm";
  detail::check_norm_input(kOp, x);
  detail::check_norm_param(kOp, "weight", weight, x);
  STRATA_CHECK_ARG(eps >= 0.0, "rms_norm: eps must be >= 0, got {}", eps);
  if (!detail::has_kernels(x.device())) detail::unsupported(kOp, x.device(), x.dtype());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  STRATA_OP_KERNEL(x.device(), rms_norm)(x.contiguous(), weight.contiguous(), eps, out);
  return out;
}

}  // namespace strata::ops
