#pragma once
// CPU kernels of quantized_linear (docs/quantization.md). The front end (src/ops/
// quantized_linear.cc) has checked every shape and dtype, made the packed tensors contiguous and
// converted FP8 scales to float32 (the integer formats' scales keep their float dtype and are
// widened per tile); these only compute.
//
// Each format family fills a tile of dequantised weight rows (output features n0..n1, all K
// inputs, float32, row-major [n1 - n0, K]); quant_linear.cc multiplies x by such tiles, so the
// dense weight never exists whole.

#include <cstdint>
#include <optional>

#include "strata/core/tensor.h"
#include "strata/ops.h"

namespace strata::cpu {

// quant_fp8.cc: weight float8_e4m3fn [N, K] (or a compute float, where a loader widened it) times
// weight_scale_inv per (block_out x block_in) block, or one scale.
void dequantize_fp8_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst);
// quant_int.cc: the packed integer formats.
void dequantize_awq_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst);
void dequantize_gptq_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                          float* dst);
void dequantize_compressed_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                                float* dst);

// out[M, N] = x[M, K] @ dequantise(w)^T (+ bias[N]); x, bias, out contiguous, one float dtype.
void quantized_linear(const Tensor& x, const ops::QuantizedWeight& w,
                      const std::optional<Tensor>& bias, const Tensor& out);

}  // namespace strata::cpu
