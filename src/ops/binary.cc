// add and mul: one front end for every broadcasting elementwise binary op.

#include "cpu/attention_elementwise.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {
namespace {

Tensor binary(const char* op, cpu::BinaryKind kind, const Tensor& a, const Tensor& b) {
  detail::check_materialized(op, "a", a);
  detail::check_materialized(op, "b", b);
  detail::check_same_device(op, {{"a", &a}, {"b", &b}});
  detail::check_same_dtype(op, {{"a", &a}, {"b", &b}});
  detail::check_float_dtype(op, "a", a);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  if (detail::has_kernels(a.device())) {
    STRATA_OP_KERNEL(a.device(), binary_float)(kind, a.expand(shape), b.expand(shape), out);
    return out;
  }
  detail::unsupported(op, a.device(), a.dtype());
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", cpu::BinaryKind::Add, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", cpu::BinaryKind::Mul, a, b); }

}  // namespace strata::ops
