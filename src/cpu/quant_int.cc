// The packed integer formats, each unpacked exactly as its producer packs it (sources in
// docs/quantization.md). Words are read as uint32 so every shift is well defined.
//
//   AWQ (AutoAWQ WQLinear_GEMM): qweight [K, N/8], nibble i of word c holds output column
//     c*8 + order[i] with order = 0,2,4,6,1,3,5,7; qzeros [K/g, N/8] packed the same way;
//     w[n, k] = (q - z) * scales[k/g, n].
//   GPTQ v1 (AutoGPTQ QuantLinear): qweight [K*bits/32, N], field j of row r holds input
//     r*(32/bits) + j; qzeros [G, N*bits/32] packed along N, stored minus one (z = field + 1);
//     w[n, k] = (q - z) * scales[g_idx[k], n].
//   compressed-tensors pack-quantized: weight_packed [N, ceil(K*bits/32)], field j of word c holds
//     input c*(32/bits) + j, stored as unsigned (signed value + 2^(bits-1));
//     weight_zero_point (asymmetric) [ceil(N*bits/32), G] packed along N the same way;
//     w[n, k] = (q - zp) * weight_scale[n, k/g].

#include <vector>

#include "cpu/float_io.h"
#include "cpu/quant_kernels.h"
#include "cpu/strided_loop.h"

namespace strata::cpu {
namespace {

// Columns [c0, c0 + cols) of rows [r0, r0 + rows) of the row-major scale matrix `s` (row length
// `ld`, float32/bf16/f16 as stored) as float32, [rows, cols]: the kernels widen only the scales of
// their tile, so a call never copies a model's scales whole.
std::vector<float> scale_block(const Tensor& s, std::int64_t ld, std::int64_t r0, std::int64_t rows,
                               std::int64_t c0, std::int64_t cols) {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  visit_compute_float(s.dtype(), [&]<typename T>(TypeTag<T>) {
    for (std::int64_t r = 0; r < rows; ++r) {
      convert_row_to_float(s.data<T>() + (r0 + r) * ld + c0, out.data() + r * cols, cols);
    }
  });
  return out;
}

inline std::uint32_t field(const std::int32_t* words, std::int64_t word, int shift,
                           std::uint32_t mask) {
  return (static_cast<std::uint32_t>(words[word]) >> shift) & mask;
}

// Shift of output column j (0..7) inside an AWQ word: the inverse of the packing order.
constexpr int kAwqShift[8] = {0, 16, 4, 20, 8, 24, 12, 28};

}  // namespace

void dequantize_awq_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst) {
  const std::int64_t K = w.in_features, N = w.out_features, words = N / 8, g = w.group_size;
  const std::int32_t* qweight = w.weight.data<std::int32_t>();
  const std::int32_t* qzeros = w.zeros->data<std::int32_t>();
  const std::int64_t cols = n1 - n0;
  const std::vector<float> scales = scale_block(w.scale, N, 0, K / g, n0, cols);
  for (std::int64_t k = 0; k < K; ++k) {
    const std::int64_t group = k / g;
    for (std::int64_t n = n0; n < n1; ++n) {
      const std::int64_t word = n / 8;
      const int shift = kAwqShift[n % 8];
      const auto q = static_cast<float>(field(qweight, k * words + word, shift, 0xF));
      const auto z = static_cast<float>(field(qzeros, group * words + word, shift, 0xF));
      dst[(n - n0) * K + k] = (q - z) * scales[group * cols + (n - n0)];
    }
  }
}

void dequantize_gptq_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                          float* dst) {
  const std::int64_t K = w.in_features, N = w.out_features;
  const int per = 32 / w.bits;
  const auto mask = static_cast<std::uint32_t>((1u << w.bits) - 1);
  const std::int64_t zero_words = N / per;
  const std::int32_t* qweight = w.weight.data<std::int32_t>();
  const std::int32_t* qzeros = w.zeros->data<std::int32_t>();
  const std::int32_t* g_idx = w.g_idx->data<std::int32_t>();
  const std::int64_t cols = n1 - n0;
  const std::vector<float> scales = scale_block(w.scale, N, 0, w.scale.size(0), n0, cols);
  for (std::int64_t n = n0; n < n1; ++n) {
    float* row = dst + (n - n0) * K;
    const int zshift = static_cast<int>(n % per) * w.bits;
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t group = g_idx[k];
      const auto q = static_cast<float>(
          field(qweight, (k / per) * N + n, static_cast<int>(k % per) * w.bits, mask));
      const auto z =
          static_cast<float>(field(qzeros, group * zero_words + n / per, zshift, mask) + 1);
      row[k] = (q - z) * scales[group * cols + (n - n0)];
    }
  }
}

void dequantize_compressed_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                                float* dst) {
  const std::int64_t K = w.in_features;
  const int per = 32 / w.bits;
  const auto mask = static_cast<std::uint32_t>((1u << w.bits) - 1);
  const std::int64_t packed_cols = (K + per - 1) / per;
  const std::int64_t groups = w.group_size > 0 ? (K + w.group_size - 1) / w.group_size : 1;
  const std::int64_t g = w.group_size > 0 ? w.group_size : K;
  const std::int32_t* packed = w.weight.data<std::int32_t>();
  const std::int32_t* zp = w.zeros ? w.zeros->data<std::int32_t>() : nullptr;
  const std::vector<float> scales = scale_block(w.scale, groups, n0, n1 - n0, 0, groups);
  for (std::int64_t n = n0; n < n1; ++n) {
    float* row = dst + (n - n0) * K;
    const int zshift = static_cast<int>(n % per) * w.bits;
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t group = k / g;
      // The stored offset 2^(bits-1) cancels in q - zp when there is a zero point.
      auto q = static_cast<float>(
          field(packed, n * packed_cols + k / per, static_cast<int>(k % per) * w.bits, mask));
      if (zp != nullptr) {
        q -= static_cast<float>(field(zp, (n / per) * groups + group, zshift, mask));
      } else {
        q -= static_cast<float>(1 << (w.bits - 1));
      }
      row[k] = q * scales[(n - n0) * groups + group];
    }
  }
}

}  // namespace strata::cpu
