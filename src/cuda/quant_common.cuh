#pragma once
// Device helpers of the quantized-linear kernels: scale loads in any float dtype and the
// element-wise dequantisation of each format (the formulas of docs/quantization.md, unpacked as
// the producers pack; the CPU twins are in src/cpu/quant_fp8.cc and quant_int.cc).

#include <cstdint>

#include "cuda/kernel_common.cuh"
#include "cuda/quant_kernels.h"

namespace strata::cuda::kernels {

// out[i] = v in T; with `gate` (QuantWeight::gate) silu(gate[i]) * that, with `residual`
// (QuantWeight::residual) residual[i] + that, each step rounded to T as the separate ops round.
template <typename T>
__device__ __forceinline__ void store_out(T* out, const void* residual, const void* gate,
                                          std::int64_t i, float v) {
  const T y = from_float<T>(v);
  if (gate != nullptr) {
    const float g = to_float(static_cast<const T*>(gate)[i]);
    const float act = to_float(from_float<T>(g / (1.0f + expf(-g))));  // elementwise.cu's SiLU
    out[i] = from_float<T>(act * to_float(y));
  } else if (residual != nullptr) {
    out[i] = from_float<T>(to_float(static_cast<const T*>(residual)[i]) + to_float(y));
  } else {
    out[i] = y;
  }
}

__device__ __forceinline__ float load_scale(const void* p, Type type, std::int64_t i) {
  switch (type) {
    case Type::BFloat16:
      return fp32_from_bf16(__ldg(static_cast<const std::uint16_t*>(p) + i));
    case Type::Float16:
      return fp32_from_fp16(__ldg(static_cast<const std::uint16_t*>(p) + i));
    default:
      return __ldg(static_cast<const float*>(p) + i);
  }
}

__device__ __forceinline__ std::uint32_t field_of(const std::int32_t* words, std::int64_t i,
                                                  int shift, std::uint32_t mask) {
  return (static_cast<std::uint32_t>(__ldg(words + i)) >> shift) & mask;
}

// Shift of output column j (0..7) inside an AWQ word (packing order 0,2,4,6,1,3,5,7).
__device__ __forceinline__ int awq_shift(int j) { return ((j & 1) << 4) | ((j >> 1) << 2); }

// GPTQ group of input kk, clamped so a bad g_idx can never read outside the scales (the host
// checks the values once per layer and reports them).
__device__ __forceinline__ std::int64_t gptq_group(const QuantWeight& w, std::int64_t kk) {
  if (w.g_idx_sequential) return kk / w.group;
  const std::int64_t g = __ldg(w.g_idx + kk);
  return g < 0 ? 0 : (g >= w.groups ? w.groups - 1 : g);
}

// Scale of the FP8 block holding (n, kk) (one scale when block_out is 0).
__device__ __forceinline__ float fp8_scale(const QuantWeight& w, std::int64_t n, std::int64_t kk) {
  const auto* s = static_cast<const float*>(w.scale);
  if (w.block_out == 0) return __ldg(s);
  const std::int64_t cols = (w.k + w.block_in - 1) / w.block_in;
  return __ldg(s + (n / w.block_out) * cols + kk / w.block_in);
}

// w[n, kk] as float32, whatever the format (the dequantise-for-GEMM kernel and slow paths).
__device__ __forceinline__ float dequantize_one(const QuantWeight& w, std::int64_t n,
                                                std::int64_t kk) {
  const auto mask = static_cast<std::uint32_t>((1u << w.bits) - 1);
  const auto* words = static_cast<const std::int32_t*>(w.weight);
  switch (w.kind) {
    case QuantKind::FP8: {
      const std::uint8_t b = __ldg(static_cast<const std::uint8_t*>(w.weight) + n * w.k + kk);
      return fp32_from_fp8e4m3fn(b) * fp8_scale(w, n, kk);
    }
    case QuantKind::AWQ: {
      const std::int64_t wpr = w.n / 8, gi = kk / w.group;
      const int shift = awq_shift(static_cast<int>(n % 8));
      const auto q = static_cast<float>(field_of(words, kk * wpr + n / 8, shift, 0xF));
      const auto z = static_cast<float>(field_of(w.zeros, gi * wpr + n / 8, shift, 0xF));
      return (q - z) * load_scale(w.scale, w.scale_type, gi * w.n + n);
    }
    case QuantKind::GPTQ: {
      const int per = 32 / w.bits;
      const std::int64_t gi = gptq_group(w, kk);
      const auto q = static_cast<float>(
          field_of(words, (kk / per) * w.n + n, static_cast<int>(kk % per) * w.bits, mask));
      const auto z = static_cast<float>(
          field_of(w.zeros, gi * (w.n / per) + n / per, static_cast<int>(n % per) * w.bits, mask) +
          1);
      return (q - z) * load_scale(w.scale, w.scale_type, gi * w.n + n);
    }
    case QuantKind::Compressed: {
      const int per = 32 / w.bits;
      const std::int64_t packed_cols = (w.k + per - 1) / per, gi = kk / w.group;
      const auto q = static_cast<float>(
          field_of(words, n * packed_cols + kk / per, static_cast<int>(kk % per) * w.bits, mask));
      const float z = w.zeros != nullptr
                          ? static_cast<float>(field_of(w.zeros, (n / per) * w.groups + gi,
                                                        static_cast<int>(n % per) * w.bits, mask))
                          : static_cast<float>(1 << (w.bits - 1));
      return (q - z) * load_scale(w.scale, w.scale_type, n * w.groups + gi);
    }
  }
  return 0.0f;
}

}  // namespace strata::cuda::kernels
