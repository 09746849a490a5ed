// add and mul: one front end for every broadcasting elementwise binary op.

#include <fmt/format.h>

#include <string>
#include <vector>

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

Tensor sum_in_order(const std::vector<Tensor>& parts) {
  constexpr const char* kOp = "sum_in_order";
  STRATA_CHECK_ARG(!parts.empty(), "sum_in_order: no parts to add; pass at least one tensor");
  const Tensor& first = parts.front();
  std::vector<Tensor> dense;
  dense.reserve(parts.size());
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const Tensor& p = parts[i];
    const std::string name = fmt::format("parts[{}]", i);
    detail::check_materialized(kOp, name.c_str(), p);
    detail::check_same_device(kOp, {{"parts[0]", &first}, {name.c_str(), &p}});
    detail::check_same_dtype(kOp, {{"parts[0]", &first}, {name.c_str(), &p}});
    STRATA_CHECK_ARG(p.shape() == first.shape(),
                     "sum_in_order: parts[{}] is {} but parts[0] is {}: every part must have the "
                     "same shape (no broadcasting)",
                     i, p.describe(), first.describe());
    dense.push_back(p.contiguous());
  }
  detail::check_float_dtype(kOp, "parts[0]", first);
  if (!detail::has_kernels(first.device())) detail::unsupported(kOp, first.device(), first.dtype());
  Tensor out = Tensor::empty(first.shape(), first.dtype(), first.device());
  STRATA_OP_KERNEL(first.device(), sum_in_order)(dense, out);
  return out;
}

}  // namespace strata::ops
