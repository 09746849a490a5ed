#pragma once
// Helpers shared by the .cu files: launch geometry, dtype dispatch, strided indexing.

#include <cstddef>
#include <cstdint>
#include <utility>

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

// The same element offset with 32-bit arithmetic (64-bit division is many instructions on the
// GPU): valid when the view's element count and every offset fit in 31 bits (fits_32bit).
__device__ __forceinline__ std::int64_t strided_offset32(const Strided& s, std::uint32_t i) {
  std::uint32_t offset = 0;
  for (int d = s.rank - 1; d > 0; --d) {
    const auto size = static_cast<std::uint32_t>(s.sizes[d]);
    offset += (i % size) * static_cast<std::uint32_t>(s.strides[d]);
    i /= size;
  }
  return static_cast<std::int64_t>(offset + i * static_cast<std::uint32_t>(s.strides[0]));
}

// Host side: true when the view's elements and offsets are all below 2^31 and its strides are
// not negative, so strided_offset32 gives the same offsets.
inline bool fits_32bit(const Strided& s) {
  std::int64_t count = 1, last = 0;
  for (int d = 0; d < s.rank; ++d) {
    if (s.strides[d] < 0) return false;
    count *= s.sizes[d];
    last += (s.sizes[d] - 1) * s.strides[d];
  }
  constexpr std::int64_t kLimit = std::int64_t{1} << 31;
  return count < kLimit && last < kLimit;
}

// Host side: rewrites views of one shape (`count` of them) to the fewest dimensions that walk
// the same elements in the same order: dimensions of size 1 go, and a dimension merges into the
// next one when, in every view, stepping it equals stepping the next one size-many times. Views
// of different shapes are left as they are.
inline void coalesce(Strided* const* views, int count) {
  Strided& first = *views[0];
  for (int v = 1; v < count; ++v) {
    if (views[v]->rank != first.rank) return;
    for (int d = 0; d < first.rank; ++d) {
      if (views[v]->sizes[d] != first.sizes[d]) return;
    }
  }
  int rank = 0;
  for (int d = 0; d < first.rank; ++d) {
    if (first.sizes[d] == 1 && first.rank > 1) continue;
    bool merges = rank > 0;
    for (int v = 0; v < count && merges; ++v) {
      const Strided& s = *views[v];
      merges = s.strides[rank - 1] == s.strides[d] * s.sizes[d];
    }
    for (int v = 0; v < count; ++v) {
      Strided& s = *views[v];
      if (merges) {
        s.sizes[rank - 1] *= s.sizes[d];
        s.strides[rank - 1] = s.strides[d];
      } else {
        s.sizes[rank] = s.sizes[d];
        s.strides[rank] = s.strides[d];
      }
    }
    if (!merges) ++rank;
  }
  if (rank == 0) {  // every dimension had size 1: one element
    for (int v = 0; v < count; ++v) {
      views[v]->sizes[0] = 1;
      views[v]->strides[0] = 1;
    }
    rank = 1;
  }
  for (int v = 0; v < count; ++v) views[v]->rank = rank;
}

inline bool is_dense(const Strided& s) { return s.rank == 1 && s.strides[0] == 1; }

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Sixteen bytes of T: what one vector load or store moves (dense kernels over aligned data).
template <typename T>
struct alignas(16) Pack {
  static constexpr int kCount = 16 / static_cast<int>(sizeof(T));
  T v[kCount];
};

// Programmatic dependent launch, device side (no-ops before sm_90 and when the kernel was not
// launched with programmatic stream serialization): wait until the previous kernel has finished
// and its writes are visible; let the next kernel start launching.
__device__ __forceinline__ void wait_for_producer() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches `kernel` on `grid` x `threads` (1-D sizes convert to dim3) with programmatic stream
// serialization when `pdl` (the kernel must call wait_for_producer before touching what earlier
// kernels write).
template <typename... Params, typename... Args>
cudaError_t launch_maybe_pdl(void (*kernel)(Params...), dim3 grid, dim3 threads, std::size_t smem,
                             cudaStream_t stream, bool pdl, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = threads;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = pdl ? 1 : 0;
  const cudaError_t status = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (status != cudaSuccess) {
    cudaGetLastError();  // a refused launch must not surface again at the next launch's check
    return status;
  }
  return launched();
}

// RMSNorm's rounding (`weight * hidden.to(input_dtype)`): round the normalised value, then the
// product. Shared by rms_norm (norm.cu) and the GEMV's fused-norm prologue (matvec.cuh), which
// must give the same bits.
template <typename T>
__device__ __forceinline__ T rms_value(T x, T w, float inv_rms) {
  return from_float<T>(to_float(from_float<T>(to_float(x) * inv_rms)) * to_float(w));
}
// Threads of rms_norm's block: the fused prologue replays its summation order.
inline constexpr int kRmsNormThreads = 256;

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
