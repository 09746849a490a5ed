// Broadcasting binary ops on the shared elementwise map. Contiguous same-shape operands coalesce
// into one long stretch and the [..., n] + [n] bias pattern into rows of n with unit strides, so
// both take the map's contiguous path; any other broadcast runs with stride-0 or strided loads.

#include "cpu/attention_elementwise.h"
#include "cpu/elementwise_map.h"

namespace strata::cpu {

void binary_float(BinaryKind kind, const Tensor& a, const Tensor& b, const Tensor& out) {
  visit_compute_float(out.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::array<Tensor, 2> inputs{a, b};
    switch (kind) {
      case BinaryKind::Add:
        return map_as_float<T>(out, inputs, [](float x, float y) { return x + y; });
      case BinaryKind::Mul:
        return map_as_float<T>(out, inputs, [](float x, float y) { return x * y; });
    }
  });
}

}  // namespace strata::cpu
