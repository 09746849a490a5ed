// Dynamic FP8 quantisation of the activations for the cuBLASLt FP8 prefill (quant_fp8_gemm.cc,
// docs/quantization.md "Prefill"): x [m, k] in its float dtype becomes float8_e4m3fn codes and
// float32 scales, so that x ~= code * scale.
// - per tensor: one scale, amax(|x|) / 448 (two launches: the amax, then the codes);
// - per 128 inputs of a row (the 1 x 128 activation blocks that pair with 128 x 128 weight blocks,
//   as DeepSeek-V3 and transformers' FineGrainedFP8 quantise them): a warp per (row, block),
//   scales row-major [m, k / 128] (= the column-major [k / 128, m] cuBLASLt's VEC128_32F mode
//   reads for the B operand).

#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/quant_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr float kFp8Max = 448.0f;

template <typename T>
__global__ void amax_kernel(const T* __restrict__ x, std::int64_t count, unsigned* amax_bits) {
  float v = 0.0f;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    v = fmaxf(v, fabsf(to_float(x[i])));
  }
  v = warp_max(v);
  // Non-negative floats order like their bits.
  if ((threadIdx.x & 31) == 0) atomicMax(amax_bits, __float_as_uint(v));
}

__device__ __forceinline__ std::uint8_t to_e4m3(float v) {
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

template <typename T>
__global__ void quantize_tensor_kernel(const T* __restrict__ x, std::int64_t count,
                                       const unsigned* amax_bits, std::uint8_t* codes,
                                       float* scale) {
  const float amax = __uint_as_float(*amax_bits);
  const float s = amax > 0.0f ? amax / kFp8Max : 1.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale = s;
  const float inv = 1.0f / s;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    codes[i] = to_e4m3(to_float(x[i]) * inv);
  }
}

// A warp per (row, 128-input block); k % 128 == 0.
template <typename T>
__global__ void quantize_blocks_kernel(const T* __restrict__ x, std::int64_t m, std::int64_t k,
                                       std::uint8_t* codes, float* scales) {
  const std::int64_t blocks = k / 128;
  const std::int64_t task = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (task >= m * blocks) return;
  const std::int64_t row = task / blocks, kb = task % blocks;
  const T* src = x + row * k + kb * 128;
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    v[j] = to_float(src[lane + 32 * j]);
    amax = fmaxf(amax, fabsf(v[j]));
  }
  amax = warp_max(amax);
  const float s = amax > 0.0f ? amax / kFp8Max : 1.0f;
  const float inv = 1.0f / s;
  std::uint8_t* dst = codes + row * k + kb * 128;
#pragma unroll
  for (int j = 0; j < 4; ++j) dst[lane + 32 * j] = to_e4m3(v[j] * inv);
  if (lane == 0) scales[row * blocks + kb] = s;
}

}  // namespace

cudaError_t quant_fp8_activations(const void* x, Type type, std::int64_t m, std::int64_t k,
                                  bool per_block, std::uint8_t* codes, float* scales,
                                  unsigned* amax_scratch, cudaStream_t stream) {
  if (m <= 0 || k <= 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    const auto* xt = static_cast<const T*>(x);
    if (per_block) {
      if (k % 128 != 0) return cudaErrorInvalidValue;
      quantize_blocks_kernel<T>
          <<<grid_for(m * (k / 128) * 32), kThreads, 0, stream>>>(xt, m, k, codes, scales);
      return launched();
    }
    const std::int64_t count = m * k;
    if (const cudaError_t e = cudaMemsetAsync(amax_scratch, 0, sizeof(unsigned), stream);
        e != cudaSuccess) {
      return e;
    }
    const unsigned blocks = grid_for(count) < 1024 ? grid_for(count) : 1024;
    amax_kernel<T><<<blocks, kThreads, 0, stream>>>(xt, count, amax_scratch);
    if (const cudaError_t e = launched(); e != cudaSuccess) return e;
    quantize_tensor_kernel<T>
        <<<grid_for(count), kThreads, 0, stream>>>(xt, count, amax_scratch, codes, scales);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
