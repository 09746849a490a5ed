// silu, gelu and relu: one front end shared by every activation.

#include "cpu/attention_elementwise.h"
#include "cuda/op_dispatch.h"
#include "ops/op_common.h"
#include "strata/ops.h"

namespace strata::ops {
namespace {

Tensor activation(const char* op, cpu::UnaryKind kind, const Tensor& x) {
  detail::check_materialized(op, "x", x);
  detail::check_float_dtype(op, "x", x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (detail::has_kernels(x.device())) {
    STRATA_OP_KERNEL(x.device(), unary_float)(kind, x, out);
    return out;
  }
  detail::unsupported(op, x.device(), x.dtype());
}

}  // namespace

Tensor silu(const Tensor& x) { return activation("silu", cpu::UnaryKind::Silu, x); }

Tensor gelu(const Tensor& x, GeluApproximation approximation) {
  switch (approximation) {
    case GeluApproximation::None:
      return activation("gelu", cpu::UnaryKind::GeluErf, x);
    case GeluApproximation::Tanh:
      return activation("gelu", cpu::UnaryKind::GeluTanh, x);
  }
  STRATA_THROW(InvalidArgument, "gelu: unknown approximation {}; use None or Tanh",
               static_cast<int>(approximation));
}

Tensor relu(const Tensor& x) { return activation("relu", cpu::UnaryKind::Relu, x); }

Tensor tanh(const Tensor& x) { return activation("tanh", cpu::UnaryKind::Tanh, x); }

}  // namespace strata::ops
