#pragma once
// out = op(inputs...) element by element, computed in float and rounded once to T. The inputs
// are views already expanded to out's shape (stride 0 where broadcast) with any layout; out is
// contiguous. Shared by the activations (one input) and the broadcasting binary ops (two).

#include <array>
#include <cstdint>
#include <type_traits>

#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"
#include "strata/core/tensor.h"

namespace strata::cpu {

template <typename T, std::size_t NIn, typename Op>
void map_as_float(const Tensor& out, const std::array<Tensor, NIn>& inputs, Op op) {
  static_assert(NIn == 1 || NIn == 2);
  constexpr std::int64_t kChunk = 512;      // floats per operand buffer (stays in L1)
  constexpr std::int64_t kGrain = 1 << 15;  // elements per thread at least
  std::array<Shape, NIn + 1> strides;
  strides[0] = out.strides();
  std::array<const T*, NIn> in{};
  for (std::size_t k = 0; k < NIn; ++k) {
    strides[k + 1] = inputs[k].strides();
    in[k] = inputs[k].template data<T>();
  }
  const StridedLoop<NIn + 1> loop = make_strided_loop(out.shape(), strides);
  T* const dst_base = out.data<T>();
  parallel_for(loop.numel, kGrain, [&](std::int64_t begin, std::int64_t end) {
    float buffers[NIn + 1][kChunk];
    for_each_run(loop, begin, end, [&](std::int64_t, const auto& offsets, std::int64_t n) {
      const std::int64_t out_stride = loop.inner_stride(0);
      for (std::int64_t c = 0; c < n; c += kChunk) {
        const std::int64_t m = std::min(kChunk, n - c);
        std::array<const float*, NIn> f;
        for (std::size_t k = 0; k < NIn; ++k) {
          const std::int64_t s = loop.inner_stride(k + 1);
          f[k] = load_floats(in[k] + offsets[k + 1] + c * s, s, m, buffers[k + 1]);
        }
        T* dst = dst_base + offsets[0] + c * out_stride;
        float* result = buffers[0];
        if constexpr (std::is_same_v<T, float>) {
          if (out_stride == 1) result = dst;  // write in place, no store pass
        }
        if constexpr (NIn == 1) {
          for (std::int64_t i = 0; i < m; ++i) result[i] = op(f[0][i]);
        } else {
          for (std::int64_t i = 0; i < m; ++i) result[i] = op(f[0][i], f[1][i]);
        }
        if (static_cast<void*>(result) != static_cast<void*>(dst)) {
          store_floats(result, dst, out_stride, m);
        }
      }
    });
  });
}

}  // namespace strata::cpu
