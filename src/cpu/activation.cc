// Activations: one float function per kind, run by the shared elementwise map.

#include <cmath>

#include "cpu/attention_elementwise.h"
#include "cpu/elementwise_map.h"

namespace strata::cpu {
namespace {

// The formulas of torch.nn.functional (silu, gelu with approximate="none" / "tanh", relu).
struct Silu {
  float operator()(float x) const { return x / (1.0f + std::exp(-x)); }
};
struct GeluErf {
  float operator()(float x) const {
    constexpr float kInvSqrt2 = 0.70710678118654752f;
    return 0.5f * x * (1.0f + std::erf(x * kInvSqrt2));
  }
};
struct GeluTanh {
  float operator()(float x) const {
    constexpr float kSqrt2OverPi = 0.79788456080286536f;
    constexpr float kKappa = 0.044715f;
    return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + kKappa * x * x * x)));
  }
};
struct Tanh {
  float operator()(float x) const { return std::tanh(x); }
};
struct Relu {
  // NaN stays NaN, as in PyTorch.
  float operator()(float x) const { return (x > 0.0f || std::isnan(x)) ? x : 0.0f; }
};

}  // namespace

void unary_float(UnaryKind kind, const Tensor& x, const Tensor& out) {
  visit_compute_float(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::array<Tensor, 1> inputs{x};
    switch (kind) {
      case UnaryKind::Silu:
        return map_as_float<T>(out, inputs, Silu{});
      case UnaryKind::GeluErf:
        return map_as_float<T>(out, inputs, GeluErf{});
      case UnaryKind::GeluTanh:
        return map_as_float<T>(out, inputs, GeluTanh{});
      case UnaryKind::Relu:
        return map_as_float<T>(out, inputs, Relu{});
      case UnaryKind::Tanh:
        return map_as_float<T>(out, inputs, Tanh{});
    }
  });
}

}  // namespace strata::cpu
