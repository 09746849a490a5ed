// Floors for the flash-decoding bench (flash_decode_probe.h): an empty kernel and a pure read of
// K and V, each launched like the decode kernels (optionally with programmatic dependent launch).

#include <cstdint>

#include "cuda/flash_decode_probe.h"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels::probe {
namespace {

__global__ void empty_kernel() {
  wait_for_producer();
  allow_dependents();
}

template <int U>
__global__ void __launch_bounds__(256)
    read_kernel(const uint4* a, const uint4* b, std::size_t n, unsigned* sink) {
  wait_for_producer();
  // Block i reads the i-th share of a, then of b: contiguous runs as a decode block reads its
  // chunk of keys.
  const std::size_t per = (n + gridDim.x - 1) / gridDim.x;
  const std::size_t begin = per * blockIdx.x;
  const std::size_t end = begin + per < n ? begin + per : n;
  unsigned x = 0;
  for (const uint4* p : {a, b}) {
    std::size_t i = begin + threadIdx.x;
    for (; i + (U - 1) * 256 < end; i += U * 256) {
      uint4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) v[u] = __ldcs(p + i + u * 256);
#pragma unroll
      for (int u = 0; u < U; ++u) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < end; i += 256) {
      const uint4 v = __ldcs(p + i);
      x ^= v.x ^ v.y ^ v.z ^ v.w;
    }
  }
  allow_dependents();
  if (x == 0x9E3779B9u) *sink = x;
}

}  // namespace

cudaError_t launch_empty(int blocks, int threads, bool pdl, cudaStream_t stream) {
  return launch_maybe_pdl(empty_kernel, dim3(static_cast<unsigned>(blocks)),
                          dim3(static_cast<unsigned>(threads)), 0, stream, pdl);
}

cudaError_t launch_read(const void* a, const void* b, std::size_t bytes, unsigned* sink, int blocks,
                        int unroll, bool pdl, cudaStream_t stream) {
  const auto* pa = static_cast<const uint4*>(a);
  const auto* pb = static_cast<const uint4*>(b);
  const std::size_t n = bytes / 16;
  const dim3 grid(static_cast<unsigned>(blocks)), threads(256);
  if (unroll == 4)
    return launch_maybe_pdl(read_kernel<4>, grid, threads, 0, stream, pdl, pa, pb, n, sink);
  return launch_maybe_pdl(read_kernel<8>, grid, threads, 0, stream, pdl, pa, pb, n, sink);
}

}  // namespace strata::cuda::kernels::probe
