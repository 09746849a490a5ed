// cast is Tensor::to(dtype); the conversion kernels live in the core.

#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor cast(const Tensor& x, DType dtype) {
  STRATA_CHECK_ARG(x.defined(), "cast: input 'x' is an undefined tensor");
  return x.to(dtype);
}

}  // namespace strata::ops
