#pragma once
// Helpers shared by the .cu files: launch geometry, dtype dispatch, strided indexing.

#include <cstdint>

#include "cuda/float_convert.cuh"
#include "cuda/kernels.h"

namespace strata::cuda::kernels {

inline constexpr int kThreads = 256;

inline unsigned grid_for(std::int64_t n, int threads = kThreads) {
  const std::int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

// Calls f(T{}) with T the device storage type of a float compute dtype.
template <typename F>
cudaError_t dispatch_float(Type type, F&& f) {
  switch (type) {
    case Type::Float32:
      return f(float{});
    case Type::BFloat16:
      return f(BF16Bits{});
    case Type::Float16:
      return f(HalfBits{});
    default:
      return cudaErrorInvalidValue;
  }
}

inline cudaError_t launched() { return cudaGetLastError(); }

// Element offset of linear index i (row-major over sizes) in a strided view.
__device__ __forceinline__ std::int64_t strided_offset(const Strided& s, std::int64_t i) {
  std::int64_t offset = 0;
  for (int d = s.rank - 1; d >= 0; --d) {
    const std::int64_t size = s.sizes[d];
    offset += (i % size) * s.strides[d];
    i /= size;
  }
  return offset;
}

// Warp and block sums / maxima (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
// `scratch` holds 32 floats; every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace strata::cuda::kernels
