// Row reductions: RMSNorm (transformers' rounding), LayerNorm and softmax, one block per row,
// in float32.

#include <cstdint>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kRowThreads = kRmsNormThreads;

// One block per row. Rows whose length is a whole number of 16-byte packs, with every pointer
// aligned, are read a pack per load (a decode step's single row is latency-bound: few wide
// loads in flight beat many narrow ones one after the other).
template <typename T>
__global__ void rms_norm_kernel(const T* x, const T* w, T* out, std::int64_t dim, float eps) {
  __shared__ float scratch[32];
  wait_for_producer();  // launched with PDL (the decode step): x comes from the kernel before
  allow_dependents();
  const T* row = x + blockIdx.x * dim;
  T* dst = out + blockIdx.x * dim;
  constexpr int kCount = Pack<T>::kCount;
  const bool packed = dim % kCount == 0 && reinterpret_cast<std::uintptr_t>(row) % 16 == 0 &&
                      reinterpret_cast<std::uintptr_t>(dst) % 16 == 0 &&
                      reinterpret_cast<std::uintptr_t>(w) % 16 == 0;
  float sq = 0.0f;
  if (packed) {
    const auto* rows = reinterpret_cast<const Pack<T>*>(row);
    for (std::int64_t p = threadIdx.x; p < dim / kCount; p += blockDim.x) {
      const Pack<T> v = rows[p];
#pragma unroll
      for (int k = 0; k < kCount; ++k) sq += to_float(v.v[k]) * to_float(v.v[k]);
    }
  } else {
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = to_float(row[i]);
      sq += v * v;
    }
  }
  const float inv_rms = 1.0f / sqrtf(block_sum(sq, scratch) / static_cast<float>(dim) + eps);
  if (packed) {
    const auto* rows = reinterpret_cast<const Pack<T>*>(row);
    const auto* weights = reinterpret_cast<const Pack<T>*>(w);
    for (std::int64_t p = threadIdx.x; p < dim / kCount; p += blockDim.x) {
      const Pack<T> v = rows[p], g = weights[p];
      Pack<T> r;
#pragma unroll
      for (int k = 0; k < kCount; ++k) r.v[k] = rms_value(v.v[k], g.v[k], inv_rms);
      reinterpret_cast<Pack<T>*>(dst)[p] = r;
    }
  } else {
    for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      dst[i] = rms_value(row[i], w[i], inv_rms);
    }
  }
}

template <typename T>
__global__ void layer_norm_kernel(const T* x, const T* w, const T* b, T* out, std::int64_t dim,
                                  float eps) {
  __shared__ float scratch[32];
  const T* row = x + blockIdx.x * dim;
  T* dst = out + blockIdx.x * dim;
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += to_float(row[i]);
  const float mean = block_sum(sum, scratch) / static_cast<float>(dim);
  float sq = 0.0f;  // centred second pass: no cancellation for rows with a large mean
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float c = to_float(row[i]) - mean;
    sq += c * c;
  }
  const float inv_std = 1.0f / sqrtf(block_sum(sq, scratch) / static_cast<float>(dim) + eps);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = (to_float(row[i]) - mean) * inv_std;
    if (w != nullptr) v *= to_float(w[i]);
    if (b != nullptr) v += to_float(b[i]);
    dst[i] = from_float<T>(v);
  }
}

// One block per (outer, inner) row of length dim and stride inner.
template <typename T>
__global__ void softmax_kernel(const T* x, T* out, std::int64_t dim, std::int64_t inner) {
  __shared__ float scratch[32];
  const std::int64_t o = blockIdx.x / inner, in = blockIdx.x % inner;
  const std::int64_t base = o * dim * inner + in;
  float mx = -INFINITY;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    mx = fmaxf(mx, to_float(x[base + i * inner]));
  }
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    sum += expf(to_float(x[base + i * inner]) - mx);
  }
  const float inv = 1.0f / block_sum(sum, scratch);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[base + i * inner] = from_float<T>(expf(to_float(x[base + i * inner]) - mx) * inv);
  }
}

}  // namespace

cudaError_t rms_norm(const void* x, const void* weight, void* out, Type type, std::int64_t rows,
                     std::int64_t dim, float eps, cudaStream_t stream, bool pdl) {
  if (rows == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    return launch_maybe_pdl(rms_norm_kernel<T>, static_cast<unsigned>(rows), kRowThreads, 0, stream,
                            pdl, static_cast<const T*>(x), static_cast<const T*>(weight),
                            static_cast<T*>(out), dim, eps);
  });
}

cudaError_t layer_norm(const void* x, const void* weight, const void* bias, void* out, Type type,
                       std::int64_t rows, std::int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    layer_norm_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
        static_cast<T*>(out), dim, eps);
    return launched();
  });
}

cudaError_t softmax(const void* x, void* out, Type type, std::int64_t outer, std::int64_t dim,
                    std::int64_t inner, cudaStream_t stream) {
  if (outer * inner == 0 || dim == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T><<<static_cast<unsigned>(outer * inner), kRowThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), dim, inner);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
