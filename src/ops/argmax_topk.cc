// argmax and topk: selection along one dimension, for float and integer dtypes.

#include "cpu/attention_elementwise.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {
namespace {

// Both ops compare values: the float compute dtypes, float64, and the integer dtypes.
void check_selectable(const char* op, const Tensor& x) {
  detail::check_materialized(op, "x", x);
  const DType dtype = x.dtype();
  if (!(detail::is_compute_float(dtype) || dtype == DType::Float64 || is_integral(dtype))) {
    STRATA_THROW(NotSupported,
                 "{}: input 'x' has dtype {} on {}; this op takes float32, bfloat16, float16, "
                 "float64 or an integer dtype (cast it first with Tensor::to)",
                 op, dtype, x.device());
  }
}

// Size of `dim` (1 for a rank-0 tensor, which is one row of one element).
std::int64_t row_length(const Tensor& x, std::int64_t dim) {
  return x.dim() == 0 ? 1 : x.size(dim);
}

}  // namespace

Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim) {
  constexpr const char* kOp = "argmax";
  check_selectable(kOp, x);
  const std::int64_t d = wrap_dim(dim, x.dim(), kOp);
  STRATA_CHECK_ARG(row_length(x, d) > 0,
                   "argmax: dimension {} of x ({}) is empty; the largest element of nothing is "
                   "undefined",
                   dim, x.describe());
  Shape shape = x.shape();
  if (x.dim() > 0) {
    if (keepdim) {
      shape[d] = 1;
    } else {
      shape.erase(shape.begin() + d);
    }
  }
  Tensor out = Tensor::empty(shape, DType::Int64, x.device());
  if (detail::has_kernels(x.device())) {
    STRATA_OP_KERNEL(x.device(), argmax)(x, d, out);
    return out;
  }
  detail::unsupported(kOp, x.device(), x.dtype());
}

std::pair<Tensor, Tensor> topk(const Tensor& x, std::int64_t k, std::int64_t dim) {
  constexpr const char* kOp = "topk";
  check_selectable(kOp, x);
  const std::int64_t d = wrap_dim(dim, x.dim(), kOp);
  const std::int64_t n = row_length(x, d);
  // A rank-0 result cannot be empty, so there k must be 1.
  const std::int64_t min_k = x.dim() == 0 ? 1 : 0;
  STRATA_CHECK_ARG(k >= min_k && k <= n,
                   "topk: k = {} is out of range for dimension {} of x ({}), which has {} "
                   "elements; pass {} <= k <= {}",
                   k, dim, x.describe(), n, min_k, n);
  Shape shape = x.shape();
  if (x.dim() > 0) shape[d] = k;
  Tensor values = Tensor::empty(shape, x.dtype(), x.device());
  Tensor indices = Tensor::empty(shape, DType::Int64, x.device());
  if (detail::has_kernels(x.device())) {
    STRATA_OP_KERNEL(x.device(), topk)(x, k, d, values, indices);
    return {values, indices};
  }
  detail::unsupported(kOp, x.device(), x.dtype());
}

}  // namespace strata::ops
