// argmax and topk along one dimension, for the float dtypes, float64 and the integers. Order:
// NaN is the largest value, and among equal values the lower index ranks first (PyTorch).

#include <cstdint>
#include <type_traits>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kSelectThreads = 256;

// A (value, index) candidate compared in the ranking order.
struct Candidate {
  double value;  // exact for every supported dtype but int64 beyond 2^53 (compared separately)
  std::int64_t ivalue;
  bool nan;
  std::int64_t index;
};

template <typename T>
__device__ __forceinline__ Candidate load(const T* x, std::int64_t offset, std::int64_t index) {
  Candidate c;
  if constexpr (std::is_integral_v<T>) {
    c.ivalue = static_cast<std::int64_t>(x[offset]);
    c.value = 0.0;
    c.nan = false;
  } else {
    if constexpr (std::is_same_v<T, double>) {
      c.value = x[offset];
    } else {
      c.value = static_cast<double>(to_float(x[offset]));
    }
    c.ivalue = 0;
    c.nan = c.value != c.value;
  }
  c.index = index;
  return c;
}

// True when a ranks before b.
template <typename T>
__device__ __forceinline__ bool before(const Candidate& a, const Candidate& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  if constexpr (std::is_integral_v<T>) {
    if (a.ivalue != b.ivalue) return a.ivalue > b.ivalue;
  } else {
    if (a.nan != b.nan) return a.nan;
    if (!a.nan && a.value != b.value) return a.value > b.value;
  }
  return a.index < b.index;
}

template <typename T>
__device__ Candidate block_best(Candidate c, Candidate* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    Candidate other;
    other.value = __shfl_xor_sync(0xFFFFFFFFu, c.value, o);
    other.ivalue = __shfl_xor_sync(0xFFFFFFFFu, c.ivalue, o);
    other.nan = __shfl_xor_sync(0xFFFFFFFFu, static_cast<int>(c.nan), o) != 0;
    other.index = __shfl_xor_sync(0xFFFFFFFFu, c.index, o);
    if (before<T>(other, c)) c = other;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = c;
  __syncthreads();
  Candidate best = scratch[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
    if (before<T>(scratch[w], best)) best = scratch[w];
  }
  return best;
}

// One block per (outer, inner) row. Pass p selects the best element ranking after the one
// selected in pass p - 1: O(k * dim) reads and no extra memory, fine for the small k of sampling.
template <typename T>
__global__ void select_kernel(const T* x, std::int64_t dim, std::int64_t inner, std::int64_t k,
                              T* values, std::int64_t* indices) {
  __shared__ Candidate scratch[32];
  const std::int64_t o = blockIdx.x / inner, in = blockIdx.x % inner;
  const std::int64_t base = o * dim * inner + in;
  const std::int64_t out_base = o * k * inner + in;
  Candidate previous;
  previous.index = -1;
  for (std::int64_t p = 0; p < k; ++p) {
    Candidate best;
    best.index = -1;
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const Candidate c = load(x, base + i * inner, i);
      if (previous.index >= 0 && !before<T>(previous, c)) continue;  // already selected
      if (before<T>(c, best)) best = c;
    }
    best = block_best<T>(best, scratch);
    if (threadIdx.x == 0) {
      indices[out_base + p * inner] = best.index;
      if (values != nullptr) values[out_base + p * inner] = x[base + best.index * inner];
    }
    previous = best;
  }
}

// argmax of contiguous float rows (inner == 1), one block of kArgmaxThreads per row: the row is
// read in 16-byte packs when aligned, many loads in flight per thread, and compared as floats
// (exact for bf16, f16 and f32). A decode step's argmax over a 32k-152k vocabulary is one row,
// so the general select_kernel's one-element-per-load loop left it latency-bound.
constexpr int kArgmaxThreads = 1024;

struct FloatCandidate {
  float value;
  std::int64_t index;  // -1: none
};

__device__ __forceinline__ bool float_before(const FloatCandidate& a, const FloatCandidate& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  const bool an = a.value != a.value, bn = b.value != b.value;
  if (an != bn) return an;
  if (!an && a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

template <typename T>
__global__ void argmax_rows_kernel(const T* x, std::int64_t dim, std::int64_t* out) {
  __shared__ FloatCandidate scratch[kArgmaxThreads / 32];
  const T* row = x + blockIdx.x * dim;
  FloatCandidate best{0.0f, -1};
  constexpr int kCount = Pack<T>::kCount;
  const bool packed = reinterpret_cast<std::uintptr_t>(row) % 16 == 0;
  const std::int64_t packs = packed ? dim / kCount : 0;
  for (std::int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T> v = reinterpret_cast<const Pack<T>*>(row)[p];
#pragma unroll
    for (int k = 0; k < kCount; ++k) {
      const FloatCandidate c{to_float(v.v[k]), p * kCount + k};
      if (float_before(c, best)) best = c;
    }
  }
  for (std::int64_t i = packs * kCount + threadIdx.x; i < dim; i += blockDim.x) {
    const FloatCandidate c{to_float(row[i]), i};
    if (float_before(c, best)) best = c;
  }
  for (int o = 16; o > 0; o >>= 1) {
    FloatCandidate other;
    other.value = __shfl_xor_sync(0xFFFFFFFFu, best.value, o);
    other.index = __shfl_xor_sync(0xFFFFFFFFu, best.index, o);
    if (float_before(other, best)) best = other;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
      if (float_before(scratch[w], best)) best = scratch[w];
    }
    out[blockIdx.x] = best.index;
  }
}

template <typename F>
cudaError_t dispatch_selectable(Type type, F&& f) {
  switch (type) {
    case Type::Float32:
      return f(float{});
    case Type::BFloat16:
      return f(BF16Bits{});
    case Type::Float16:
      return f(HalfBits{});
    case Type::Float64:
      return f(double{});
    case Type::UInt8:
      return f(std::uint8_t{});
    case Type::Int8:
      return f(std::int8_t{});
    case Type::Int16:
      return f(std::int16_t{});
    case Type::Int32:
      return f(std::int32_t{});
    case Type::Int64:
      return f(std::int64_t{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t topk(const void* x, Type type, std::int64_t outer, std::int64_t dim, std::int64_t inner,
                 std::int64_t k, void* values, std::int64_t* indices, cudaStream_t stream) {
  if (outer * inner == 0 || k == 0) return cudaSuccess;
  return dispatch_selectable(type, [&](auto tag) {
    using T = decltype(tag);
    select_kernel<T><<<static_cast<unsigned>(outer * inner), kSelectThreads, 0, stream>>>(
        static_cast<const T*>(x), dim, inner, k, static_cast<T*>(values), indices);
    return launched();
  });
}

cudaError_t argmax(const void* x, Type type, std::int64_t outer, std::int64_t dim,
                   std::int64_t inner, std::int64_t* out, cudaStream_t stream) {
  const bool float_rows =
      inner == 1 && dim > 0 &&
      (type == Type::BFloat16 || type == Type::Float16 || type == Type::Float32);
  if (!float_rows || outer == 0) return topk(x, type, outer, dim, inner, 1, nullptr, out, stream);
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    argmax_rows_kernel<T><<<static_cast<unsigned>(outer), kArgmaxThreads, 0, stream>>>(
        static_cast<const T*>(x), dim, out);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
