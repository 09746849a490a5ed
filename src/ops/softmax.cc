#include "cpu/attention_elementwise.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor softmax(const Tensor& x, std::int64_t dim) {
  constexpr const char* kOp = "softmax";
  detail::check_materialized(kOp, "x", x);
  detail::check_float_dtype(kOp, "x", x);
  const std::int64_t wrapped = wrap_dim(dim, x.dim(), kOp);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (detail::has_kernels(x.device())) {
    STRATA_OP_KERNEL(x.device(), softmax)(x, wrapped, out);
    return out;
  }
  detail::unsupported(kOp, x.device(), x.dtype());
}

}  // namespace strata::ops
