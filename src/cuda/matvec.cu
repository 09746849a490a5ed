// Matrix-vector product for single-row linear layers (decode): bound by reading the weight once.

#include <cstdint>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kUnroll = 4;

// 16 bytes of T widened and multiplied into `acc`.
template <typename T>
__device__ __forceinline__ float dot16(const uint4& w, const uint4& x) {
  constexpr int kPer = 16 / sizeof(T);
  const T* wp = reinterpret_cast<const T*>(&w);
  const T* xp = reinterpret_cast<const T*>(&x);
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc += to_float(wp[e]) * to_float(xp[e]);
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matvec_kernel(const T* weight, const T* x, const T* bias, T* out, std::int64_t n_out,
                  std::int64_t k) {
  const int lane = threadIdx.x & 31;
  const std::int64_t row =
      static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= n_out) return;
  const auto* w = reinterpret_cast<const uint4*>(weight + row * k);
  const auto* xv = reinterpret_cast<const uint4*>(x);
  const std::int64_t chunks = k * static_cast<std::int64_t>(sizeof(T)) / 16;
  float acc = 0.0f;
  std::int64_t c = lane;
  // Several independent 16-byte loads in flight per lane before the first use.
  for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
    uint4 wr[kUnroll], xr[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      wr[u] = __ldg(w + c + 32 * u);
      xr[u] = __ldg(xv + c + 32 * u);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc += dot16<T>(wr[u], xr[u]);
  }
  for (; c < chunks; c += 32) acc += dot16<T>(__ldg(w + c), __ldg(xv + c));
  acc = warp_sum(acc);
  if (lane == 0) out[row] = from_float<T>(bias != nullptr ? acc + to_float(bias[row]) : acc);
}

}  // namespace

cudaError_t matvec(const void* weight, const void* x, const void* bias, void* out, Type type,
                   std::int64_t n_out, std::int64_t k, cudaStream_t stream) {
  if (n_out == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    const auto blocks = static_cast<unsigned>((n_out + kWarpsPerBlock - 1) / kWarpsPerBlock);
    matvec_kernel<T><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
        static_cast<const T*>(weight), static_cast<const T*>(x), static_cast<const T*>(bias),
        static_cast<T*>(out), n_out, k);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
