#include "cpu/layer_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {

Tensor matmul(const Tensor& a, const Tensor& b) {
  constexpr const char* kOp = "matmul";
  detail::check_materialized(kOp, "a", a);
  detail::check_materialized(kOp, "b", b);
  detail::check_float_dtype(kOp, "a", a);
  detail::check_same_dtype(kOp, {{"a", &a}, {"b", &b}});
  detail::check_same_device(kOp, {{"a", &a}, {"b", &b}});
  STRATA_CHECK_ARG(a.dim() >= 1 && b.dim() >= 1,
                   "matmul: both operands need at least 1 dimension, got 'a' {} and 'b' {}; "
                   "use mul for a scalar product",
                   a.describe(), b.describe());
  // numpy's rules: a vector is a [1, k] row on the left and a [k, 1] column on the right, and
  // the added dimension is dropped from the result.
  const Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  const Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  const std::int64_t m = a2.size(-2), k = a2.size(-1), n = b2.size(-1);
  STRATA_CHECK_ARG(b2.size(-2) == k,
                   "matmul: 'a' ({}) has {} columns but 'b' ({}) has {} rows; the inner "
                   "dimensions must match (a: [..., m, k], b: [..., k, n])",
                   a.describe(), k, b.describe(), b2.size(-2));
  const Shape a_batch(a2.shape().begin(), a2.shape().end() - 2);
  const Shape b_batch(b2.shape().begin(), b2.shape().end() - 2);
  Shape batch = broadcast_shapes(a_batch, b_batch, "matmul (batch dimensions of 'a' and 'b')");
  if (!detail::has_kernels(a.device())) detail::unsupported(kOp, a.device(), a.dtype());

  Shape a_shape = batch, b_shape = batch, out_shape = batch;
  a_shape.insert(a_shape.end(), {m, k});
  b_shape.insert(b_shape.end(), {k, n});
  out_shape.insert(out_shape.end(), {m, n});
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  STRATA_OP_KERNEL(a.device(), matmul)(a2.expand(a_shape), b2.expand(b_shape), out);

  Shape result_shape = batch;
  if (a.dim() > 1) result_shape.push_back(m);
  if (b.dim() > 1) result_shape.push_back(n);
  return out.view(result_shape);
}

}  // namespace strata::ops
