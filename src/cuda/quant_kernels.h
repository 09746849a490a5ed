#pragma once
// Launchers of the quantized-linear kernels (src/cuda/quant_gemv.cu, quant_dequant.cu), the CUDA
// side of ops::quantized_linear (docs/quantization.md). C++17 and free of strata's headers, like
// kernels.h; the host entry point (quant_linear.cc) has checked every shape and dtype.

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels.h"

namespace strata::cuda::kernels {

enum class QuantKind : std::uint8_t { FP8, AWQ, GPTQ, Compressed };

// The packed weight of one layer (pointers into contiguous device tensors).
struct QuantWeight {
  QuantKind kind = QuantKind::FP8;
  std::int64_t n = 0, k = 0;  // out_features, in_features
  int bits = 4;
  std::int64_t group = 0;   // integer formats: inputs per group (k for one group)
  std::int64_t groups = 1;  // rows of the scales (GPTQ, AWQ) / columns (compressed-tensors)
  std::int64_t block_out = 0, block_in = 0;  // FP8; 0, 0 = one scale
  const void* weight = nullptr;              // fp8 bytes / int32 words
  const void* scale = nullptr;               // FP8: float32; others: scale_type
  Type scale_type = Type::Float32;
  const std::int32_t* zeros = nullptr;  // qzeros / weight_zero_point (null: symmetric CT)
  const std::int32_t* g_idx = nullptr;  // GPTQ (values clamped to [0, groups) on the device)
  bool g_idx_sequential = false;        // GPTQ: g_idx[k] == k / group for every k
};

// Decode: rows of x up to this many go through the GEMV kernels.
inline constexpr int kQuantMaxRows = 8;

// Rows of x the GEMV reads for `rows` rows: 1, 2, 4 or 8 (the rows past `rows` must be zero).
inline std::int64_t quant_gemv_x_rows(std::int64_t rows) {
  return rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : kQuantMaxRows;
}

// Floats of workspace quant_gemv needs for `rows` rows on a GPU with `sms` multiprocessors.
std::int64_t quant_gemv_workspace_floats(const QuantWeight& w, std::int64_t rows, int sms);

// out[r, n] = sum_k x[r, k] * w[n, k] (+ bias[n]) for r < rows <= kQuantMaxRows, accumulated in
// float32 and rounded once to out_type. x: float32 [quant_gemv_x_rows(rows), x_stride], zero
// beyond k up to x_stride = round_up(k, 32) and in the padding rows (packed words may cover a few
// inputs past k); bias and out of out_type; workspace: quant_gemv_workspace_floats floats.
cudaError_t quant_gemv(const QuantWeight& w, const float* x, std::int64_t x_stride,
                       std::int64_t rows, const void* bias, void* out, Type out_type,
                       float* workspace, int sms, cudaStream_t stream);

// dst[(n - n0) * k + kk] = w[n, kk] in `type` (float32, bfloat16, float16) for n in [n0, n1):
// a row-major tile of the dequantised weight for a GEMM.
cudaError_t quant_dequantize_rows(const QuantWeight& w, std::int64_t n0, std::int64_t n1, void* dst,
                                  Type type, cudaStream_t stream);

}  // namespace strata::cuda::kernels
