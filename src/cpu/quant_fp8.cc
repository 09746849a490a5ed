// FP8 (transformers' FineGrainedFP8 / DeepSeek-V3 layout): w[n, k] = float(weight[n, k]) *
// weight_scale_inv[n / block_out, k / block_in]; the name says "inverse" but the stored value is
// the dequantisation multiplier. Blocks at the right and bottom edges may be ragged.

#include <algorithm>
#include <array>

#include "cpu/float_io.h"
#include "cpu/quant_kernels.h"
#include "cpu/strided_loop.h"

namespace strata::cpu {
namespace {

// All 256 float8_e4m3fn bit patterns as float (bit-exact with PyTorch's conversion).
const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = float8_e4m3fn_bits_to_float(static_cast<std::uint8_t>(i));
    return t;
  }();
  return table;
}

}  // namespace

void dequantize_fp8_rows(const ops::QuantizedWeight& w, std::int64_t n0, std::int64_t n1,
                         float* dst, std::int64_t ld) {
  const std::int64_t k_total = w.in_features;
  const float* scale = w.scale.data<float>();
  const bool per_tensor = w.block_out == 0;
  const std::int64_t scale_cols = per_tensor ? 1 : (k_total + w.block_in - 1) / w.block_in;
  for (std::int64_t n = n0; n < n1; ++n) {
    float* row = dst + (n - n0) * ld;
    if (w.weight.dtype() == DType::Float8E4M3FN) {
      const auto* q = static_cast<const std::uint8_t*>(w.weight.data_ptr()) + n * k_total;
      const std::array<float, 256>& table = fp8_table();
      for (std::int64_t k = 0; k < k_total; ++k) row[k] = table[q[k]];
    } else {
      visit_compute_float(w.weight.dtype(), [&]<typename T>(TypeTag<T>) {
        convert_row_to_float(w.weight.data<T>() + n * k_total, row, k_total);
      });
    }
    if (per_tensor) {
      for (std::int64_t k = 0; k < k_total; ++k) row[k] *= scale[0];
      continue;
    }
    const float* srow = scale + (n / w.block_out) * scale_cols;
    for (std::int64_t b = 0; b < scale_cols; ++b) {
      const std::int64_t end = std::min(k_total, (b + 1) * w.block_in);
      for (std::int64_t k = b * w.block_in; k < end; ++k) row[k] *= srow[b];
    }
  }
}

}  // namespace strata::cpu
