#include "cpu/layer_kernels.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {
namespace {

constexpr const char* kOp = "rotary_embedding";

// cos or sin as a [B, H, S, D] view of x's shape: [S, D] and [B or 1, S, D] broadcast over the
// batch and the heads; [B or 1, H or 1, S, D] (transformers' unsqueezed form) too.
Tensor broadcast_table(const char* name, const Tensor& t, const Tensor& x) {
  const Shape& xs = x.shape();
  const auto mismatch = [&] {
    STRATA_THROW(InvalidArgument,
                 "rotary_embedding: '{}' ({}) does not fit 'x' ({}): expected [{}, {}], "
                 "[1 or {}, {}, {}] or [1 or {}, 1 or {}, {}, {}]",
                 name, t.describe(), x.describe(), xs[2], xs[3], xs[0], xs[2], xs[3], xs[0], xs[1],
                 xs[2], xs[3]);
  };
  Tensor v = t.stride(-1) == 1 ? t : t.contiguous();
  if (t.dim() == 2) {
    v = v.unsqueeze(0).unsqueeze(0);
  } else if (t.dim() == 3) {
    v = v.unsqueeze(1);
  } else if (t.dim() != 4) {
    mismatch();
  }
  for (int d = 0; d < 4; ++d) {
    const bool fits = v.size(d) == xs[d] || (d < 2 && v.size(d) == 1);
    if (!fits) mismatch();
  }
  return v.expand(xs);
}

}  // namespace

Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  detail::check_materialized(kOp, "x", x);
  detail::check_materialized(kOp, "cos", cos);
  detail::check_materialized(kOp, "sin", sin);
  detail::check_float_dtype(kOp, "x", x);
  detail::check_same_dtype(kOp, {{"cos", &cos}, {"sin", &sin}});
  STRATA_CHECK_ARG(cos.dtype() == x.dtype() || cos.dtype() == DType::Float32,
                   "rotary_embedding: 'cos' and 'sin' have dtype {} but 'x' has {}; pass them "
                   "in x's dtype or in float32",
                   cos.dtype(), x.dtype());
  detail::check_same_device(kOp, {{"x", &x}, {"cos", &cos}, {"sin", &sin}});
  detail::check_rank(kOp, "x", x, 4);
  STRATA_CHECK_ARG(x.size(3) % 2 == 0,
                   "rotary_embedding: head_dim of 'x' ({}) is {}, but rotate_half needs an even "
                   "head_dim",
                   x.describe(), x.size(3));
  const Tensor cos_b = broadcast_table("cos", cos, x);
  const Tensor sin_b = broadcast_table("sin", sin, x);
  if (!detail::has_kernels(x.device())) detail::unsupported(kOp, x.device(), x.dtype());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  // The kernel takes any strides but the last (transformers' q/k are transposed views).
  STRATA_OP_KERNEL(x.device(), rotary_embedding)
  (x.stride(3) == 1 ? x : x.contiguous(), cos_b, sin_b, out);
  return out;
}

}  // namespace strata::ops
