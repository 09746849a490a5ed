// quantized_linear on the CPU: tiles of dequantised weights times x.
//
// Decode, up to simd::kMaxMatvecRows rows of x: the fused kernels of quant_fused.cc where the
// layout has one (packed words unpacked in SIMD registers, no tile), kFusedMaxRows rows of x at a
// time.
// Decode otherwise (layouts without a fused kernel): parallel over output features; each
// chunk dequantises its columns into a float32 tile (about 1 MiB) and multiplies x by it: the
// dispatched SIMD matvec kernel for row-major tiles (FP8, compressed-tensors), a row-by-row
// accumulation for input-major ones (AWQ, GPTQ). The packed bytes are read once and the dense
// weight never exists whole.
// Prefill: tiles of about kTileFloats are dequantised in parallel and fed to sgemm, whose reuse
// of each tile over the rows of x hides the dequantisation.

#include <cblas.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/float_io.h"
#include "cpu/quant_kernels.h"
#include "cpu/simd.h"
#include "cpu/strided_loop.h"
#include "strata/core/parallel.h"

namespace strata::cpu {
namespace {

constexpr std::int64_t kChunkFloats = std::int64_t{256} << 10;  // decode tile: 1 MiB
constexpr std::int64_t kTileFloats = std::int64_t{1} << 20;     // prefill tile: 4 MiB

using DequantizeFn = void (*)(const ops::QuantizedWeight&, std::int64_t, std::int64_t, float*,
                              std::int64_t);

struct Dequantizer {
  DequantizeFn fn;
  bool input_major;  // tile [K, cols] (AWQ, GPTQ) rather than [cols, K]
};

Dequantizer dequantizer(ops::QuantFormat format) {
  switch (format) {
    case ops::QuantFormat::FP8:
      return {dequantize_fp8_rows, false};
    case ops::QuantFormat::AWQ:
      return {dequantize_awq_cols, true};
    case ops::QuantFormat::GPTQ:
      return {dequantize_gptq_cols, true};
    case ops::QuantFormat::CompressedTensors:
      return {dequantize_compressed_rows, false};
  }
  STRATA_THROW(InternalError, "quantized_linear: unknown format {}", static_cast<int>(format));
}

// acc[m, cols] = x[m, K] @ tile[K, cols] for an input-major tile: one pass over the tile, each
// row added into the m accumulators (the compiler vectorises the inner loop).
void matvec_input_major(const float* x, std::int64_t m, std::int64_t k, const float* tile,
                        std::int64_t cols, float* __restrict acc) {
  std::fill(acc, acc + m * cols, 0.0f);
  for (std::int64_t i = 0; i < k; ++i) {
    const float* __restrict t = tile + i * cols;
    for (std::int64_t r = 0; r < m; ++r) {
      const float xv = x[r * k + i];
      float* __restrict a = acc + r * cols;
      for (std::int64_t j = 0; j < cols; ++j) a[j] += xv * t[j];
    }
  }
}

// out[m, n0 + j] = T(acc[m * cols + j] + bias[n0 + j]).
template <typename T>
void store(const float* acc, std::int64_t rows, std::int64_t cols, const std::vector<float>& bias,
           std::int64_t n0, T* out, std::int64_t n, std::vector<float>& scratch) {
  scratch.resize(static_cast<std::size_t>(cols));
  for (std::int64_t m = 0; m < rows; ++m) {
    const float* src = acc + m * cols;
    for (std::int64_t j = 0; j < cols; ++j) {
      scratch[j] = src[j] + (bias.empty() ? 0.0f : bias[n0 + j]);
    }
    store_row_from_float(scratch.data(), out + m * n + n0, cols);
  }
}

}  // namespace

void quantized_linear(const Tensor& x, const ops::QuantizedWeight& w,
                      const std::optional<Tensor>& bias, const Tensor& out) {
  const std::int64_t m = x.size(0), k = w.in_features, n = w.out_features;
  if (m == 0 || n == 0) return;
  const Dequantizer dq = dequantizer(w.format);
  visit_compute_float(x.dtype(), [&]<typename T>(TypeTag<T>) {
    std::vector<float> xf(static_cast<std::size_t>(m * k));
    convert_row_to_float(x.data<T>(), xf.data(), m * k);
    std::vector<float> bias_f;
    if (bias) {
      bias_f.resize(static_cast<std::size_t>(n));
      convert_row_to_float(bias->data<T>(), bias_f.data(), n);
    }
    T* y = out.data<T>();
    // Chunks of whole 8-column units, so a packed AWQ word is never split between threads'
    // tiles (the others do not care).
    const std::int64_t units = (n + 7) / 8;
    const auto unit_range = [n](std::int64_t b, std::int64_t e) {
      return std::pair{b * 8, std::min(n, e * 8)};
    };
    if (m <= simd::kMaxMatvecRows) {
      // The fused kernels take up to kFusedMaxRows rows of x; more (a batched decode of 5-16
      // sequences) go through them in chunks of that many, each chunk reading the packed
      // weights again: the kernels are bound by their arithmetic from 2-4 rows on, so a second
      // read costs little, where the tile path below wrote and re-read a float32 tile of every
      // weight (4096x4096 AWQ at 5 rows: 48 ms a call against 2.5 at 4, session 15). Each row's
      // sums are the same whatever the chunk.
      std::vector<float> acc(static_cast<std::size_t>(m * n));
      bool fused = true;
      for (std::int64_t r0 = 0; r0 < m && fused; r0 += kFusedMaxRows) {
        const std::int64_t rows = std::min(kFusedMaxRows, m - r0);
        fused = fused_quantized_decode(w, xf.data() + r0 * k, rows, acc.data() + r0 * n);
      }
      if (fused) {
        std::vector<float> scratch;
        store(acc.data(), m, n, bias_f, 0, y, n, scratch);
        return;
      }
    }
    if (m <= simd::kMaxMatvecRows) {
      const std::int64_t grain =
          std::max<std::int64_t>(1, kChunkFloats / std::max<std::int64_t>(k, 1) / 8);
      parallel_for(units, grain, [&](std::int64_t b, std::int64_t e) {
        const auto [n0, n1] = unit_range(b, e);
        std::vector<float> tile, acc, scratch;
        for (std::int64_t c0 = n0; c0 < n1; c0 += grain * 8) {
          const std::int64_t c1 = std::min(n1, c0 + grain * 8), cols = c1 - c0;
          tile.resize(static_cast<std::size_t>(cols * k));
          acc.resize(static_cast<std::size_t>(m * cols));
          if (dq.input_major) {
            dq.fn(w, c0, c1, tile.data(), cols);
            matvec_input_major(xf.data(), m, k, tile.data(), cols, acc.data());
          } else {
            dq.fn(w, c0, c1, tile.data(), k);
            simd::kernels().matvec_f32(xf.data(), k, m, tile.data(), k, cols, k, acc.data(), cols);
          }
          store(acc.data(), m, cols, bias_f, c0, y, n, scratch);
        }
      });
      return;
    }
    const std::int64_t tile_units =
        std::max<std::int64_t>(1, kTileFloats / std::max<std::int64_t>(k, 1) / 8);
    std::vector<float> tile, acc;
    for (std::int64_t u0 = 0; u0 < units; u0 += tile_units) {
      // Plain variables, not a structured binding: clang before 16 cannot capture those.
      const auto range = unit_range(u0, std::min(units, u0 + tile_units));
      const std::int64_t n0 = range.first, n1 = range.second;
      const std::int64_t cols = n1 - n0;
      tile.resize(static_cast<std::size_t>(cols * k));
      acc.resize(static_cast<std::size_t>(m * cols));
      parallel_for((cols + 7) / 8, 1, [&](std::int64_t b, std::int64_t e) {
        const std::int64_t c0 = n0 + b * 8, c1 = std::min(n1, n0 + e * 8);
        if (dq.input_major) {
          dq.fn(w, c0, c1, tile.data() + (c0 - n0), cols);
        } else {
          dq.fn(w, c0, c1, tile.data() + (c0 - n0) * k, k);
        }
      });
      cblas_sgemm(CblasRowMajor, CblasNoTrans, dq.input_major ? CblasNoTrans : CblasTrans,
                  static_cast<int>(m), static_cast<int>(cols), static_cast<int>(k), 1.0f, xf.data(),
                  static_cast<int>(k), tile.data(), static_cast<int>(dq.input_major ? cols : k),
                  0.0f, acc.data(), static_cast<int>(cols));
      parallel_for(m, std::max<std::int64_t>(1, 4096 / cols), [&](std::int64_t b, std::int64_t e) {
        std::vector<float> scratch;
        store(acc.data() + b * cols, e - b, cols, bias_f, n0, y + b * n, n, scratch);
      });
    }
  });
}

}  // namespace strata::cpu
