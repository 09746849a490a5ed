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

#include <algorithm>
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

void dequantize_awq_cols(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst, std::int64_t ld) {
  // Per group, a table of the 16 possible values (q - z) * s of each of the tile's columns (the
  // same single rounding as computing them one by one); then each input row's words are
  // unpacked into one contiguous tile row by lookups.
  const std::int64_t K = w.in_features, N = w.out_features, words = N / 8, g = w.group_size;
  const std::int32_t* qweight = w.weight.data<std::int32_t>();
  const std::int32_t* qzeros = w.zeros->data<std::int32_t>();
  const std::int64_t cols = n1 - n0, w0 = n0 / 8, w1 = (n1 + 7) / 8;
  const std::vector<float> scales = scale_block(w.scale, N, 0, K / g, n0, cols);
  std::vector<float> table(static_cast<std::size_t>(cols * 16));
  for (std::int64_t group = 0; group < K / g; ++group) {
    for (std::int64_t n = n0; n < n1; ++n) {
      const auto z =
          static_cast<float>(field(qzeros, group * words + n / 8, kAwqShift[n % 8], 0xF));
      const float s = scales[group * cols + (n - n0)];
      for (int q = 0; q < 16; ++q) table[(n - n0) * 16 + q] = (static_cast<float>(q) - z) * s;
    }
    for (std::int64_t k = group * g; k < (group + 1) * g; ++k) {
      const std::int32_t* row = qweight + k * words;
      float* out = dst + k * ld;
      for (std::int64_t c = w0; c < w1; ++c) {
        const auto word = static_cast<std::uint32_t>(row[c]);
        const std::int64_t base = c * 8 - n0;
        const std::int64_t count = std::min<std::int64_t>(8, cols - base);
        const float* t = table.data() + base * 16;
        for (std::int64_t j = 0; j < count; ++j)
          out[base + j] = t[j * 16 + ((word >> kAwqShift[j]) & 0xF)];
      }
    }
  }
}

void dequantize_gptq_cols(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                          float* dst, std::int64_t ld) {
  // The zeros and scales of every group for the tile's columns once; then each packed row of
  // `per` inputs (one word per output column) fills `per` tile rows, the group of each input
  // taken from g_idx.
  const std::int64_t K = w.in_features, N = w.out_features;
  const int per = 32 / w.bits;
  const auto mask = static_cast<std::uint32_t>((1u << w.bits) - 1);
  const std::int64_t zero_words = N / per, groups = w.scale.size(0), cols = n1 - n0;
  const std::int32_t* qweight = w.weight.data<std::int32_t>();
  const std::int32_t* qzeros = w.zeros->data<std::int32_t>();
  const std::int32_t* g_idx = w.g_idx->data<std::int32_t>();
  const std::vector<float> scales = scale_block(w.scale, N, 0, groups, n0, cols);
  std::vector<float> zeros(static_cast<std::size_t>(groups * cols));
  for (std::int64_t gi = 0; gi < groups; ++gi) {
    for (std::int64_t n = n0; n < n1; ++n) {
      zeros[gi * cols + (n - n0)] = static_cast<float>(
          field(qzeros, gi * zero_words + n / per, static_cast<int>(n % per) * w.bits, mask) + 1);
    }
  }
  for (std::int64_t r = 0; r < K / per; ++r) {
    const std::int32_t* row = qweight + r * N + n0;
    for (int j = 0; j < per; ++j) {
      const std::int64_t k = r * per + j;
      const float* z = zeros.data() + g_idx[k] * cols;
      const float* s = scales.data() + g_idx[k] * cols;
      float* out = dst + k * ld;
      const int shift = w.bits * j;
      for (std::int64_t c = 0; c < cols; ++c) {
        const auto q = static_cast<float>((static_cast<std::uint32_t>(row[c]) >> shift) & mask);
        out[c] = (q - z[c]) * s[c];
      }
    }
  }
}

void dequantize_compressed_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                                float* dst, std::int64_t ld) {
  // Per output row: unpack the words into codes, then subtract the zero point (the stored offset
  // 2^(bits-1) when symmetric: it cancels in q - zp otherwise) and scale group by group.
  const std::int64_t K = w.in_features;
  const int per = 32 / w.bits;
  const auto mask = static_cast<std::uint32_t>((1u << w.bits) - 1);
  const std::int64_t packed_cols = (K + per - 1) / per;
  const std::int64_t groups = w.group_size > 0 ? (K + w.group_size - 1) / w.group_size : 1;
  const std::int64_t g = w.group_size > 0 ? w.group_size : K;
  const std::int32_t* packed = w.weight.data<std::int32_t>();
  const std::int32_t* zp = w.zeros ? w.zeros->data<std::int32_t>() : nullptr;
  const std::vector<float> scales = scale_block(w.scale, groups, n0, n1 - n0, 0, groups);
  const auto offset = static_cast<float>(1 << (w.bits - 1));
  for (std::int64_t n = n0; n < n1; ++n) {
    float* row = dst + (n - n0) * ld;
    const std::int32_t* words = packed + n * packed_cols;
    const std::int64_t whole = K / per;
    for (std::int64_t c = 0; c < whole; ++c) {
      const auto word = static_cast<std::uint32_t>(words[c]);
      for (int i = 0; i < per; ++i) {
        row[c * per + i] = static_cast<float>((word >> (w.bits * i)) & mask);
      }
    }
    for (std::int64_t k = whole * per; k < K; ++k) {  // the padded last word
      row[k] =
          static_cast<float>(field(words, whole, static_cast<int>(k - whole * per) * w.bits, mask));
    }
    const int zshift = static_cast<int>(n % per) * w.bits;
    for (std::int64_t gi = 0; gi < groups; ++gi) {
      const float z = zp != nullptr
                          ? static_cast<float>(field(zp, (n / per) * groups + gi, zshift, mask))
                          : offset;
      const float s = scales[(n - n0) * groups + gi];
      const std::int64_t end = std::min(K, (gi + 1) * g);
      for (std::int64_t k = gi * g; k < end; ++k) row[k] = (row[k] - z) * s;
    }
  }
}

}  // namespace strata::cpu
