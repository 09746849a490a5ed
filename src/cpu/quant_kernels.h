#pragma once
// CPU kernels of quantized_linear (docs/quantization.md). The front end (src/ops/
// quantized_linear.cc) has checked every shape and dtype, made the packed tensors contiguous and
// converted FP8 scales to float32 (the integer formats' scales keep their float dtype and are
// widened per tile); these only compute.
//
// Each format family fills a tile of dequantised weights for output features n0..n1 and all K
// inputs, in float32, in the layout its packing makes cheap: row-major [n1 - n0, K] (FP8 and
// compressed-tensors, packed along the inputs: dst[(n - n0) * ld + k]) or input-major
// [K, n1 - n0] (AWQ and GPTQ, packed along the outputs: dst[k * ld + (n - n0)]). quant_linear.cc
// multiplies x by such tiles, so the dense weight never exists whole.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/ops.h"

namespace strata::cpu {

// quant_fp8.cc: weight float8_e4m3fn [N, K] (or a compute float, where a loader widened it) times
// weight_scale_inv per (block_out x block_in) block, or one scale.
void dequantize_fp8_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst, std::int64_t ld);
// quant_int.cc: the packed integer formats. AWQ and GPTQ write input-major tiles; n0 is a
// multiple of 8.
void dequantize_awq_cols(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst, std::int64_t ld);
void dequantize_gptq_cols(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                          float* dst, std::int64_t ld);
void dequantize_compressed_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                                float* dst, std::int64_t ld);

// quant_fused.cc: acc[r * N + n] = sum_k x[r * K + k] * w[n, k] for r < m <= kFusedMaxRows, with
// the packed words unpacked in SIMD registers (parallel over the outputs). Returns false, having
// done nothing, for layouts without a fused kernel (the caller takes the tile path).
inline constexpr std::int64_t kFusedMaxRows = 4;
bool fused_quantized_decode(const ops::QuantizedWeight& w, const float* x, std::int64_t m,
                            float* acc);
// quant_fp8_fused.cc: the same for float8_e4m3fn weights with float32 scales, on AVX-512 only
// (false elsewhere, and for weights a loader widened).
bool fused_fp8_decode_avx512(const ops::QuantizedWeight& w, const float* x, std::int64_t m,
                             float* acc);
// The fused kernels' instruction-set variants this CPU runs ("avx512", "avx2", "generic"), best
// first; tests pin each in turn ("" returns to the best). Not thread-safe against running calls.
std::vector<std::string> fused_kernel_variants();
void pin_fused_kernel_variant(const std::string& name);

// How the fused GPTQ decode (sequential g_idx) walks the packed rows: `Strips` of 64-256 bytes of
// every row per task (session 5, the default), or `Panels` (session 8, opt-in until measured on
// the device host): tasks of a chunk of rows x up to 4 KiB of each, the chunks' sums added after.
// STRATA_QUANT_CPU_GPTQ=strips|panels picks one, tests pin one (nullopt: back to the environment /
// default). Not thread-safe against running calls.
enum class GptqCpuLayout { Strips, Panels };
GptqCpuLayout gptq_cpu_layout();
void pin_gptq_cpu_layout(std::optional<GptqCpuLayout> layout);

// out[M, N] = x[M, K] @ dequantise(w)^T (+ bias[N]); x, bias, out contiguous, one float dtype.
void quantized_linear(const Tensor& x, const ops::QuantizedWeight& w,
                      const std::optional<Tensor>& bias, const Tensor& out);

}  // namespace strata::cpu
