#include "cpu/attention_elementwise.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor softmax(const Tensor& x, std::int64_t dim) {
  constexpr const char* kOp = "softmax";
  detail::check_materialized(kOp, "x", x);
  detail::check_float_dtype(kOp, "x", x);
  const std::int64_t wrapped = wrap_dim(dim, x.dim(), kOp);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.is_cpu()) {
    cpu::softmax(x, wrapped, out);
    return out;
  }
  detail::unsupported(kOp, x.device(), x.dtype());
}

}  // namespace strata::ops
