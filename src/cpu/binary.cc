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

void sum_in_order(const std::vector<Tensor>& parts, const Tensor& out) {
  // Each add reads and writes the same element of `out` only: in place is the chained adds.
  out.copy_(parts.front());
  for (std::size_t i = 1; i < parts.size(); ++i) binary_float(BinaryKind::Add, out, parts[i], out);
}

}  // namespace strata::cpu
