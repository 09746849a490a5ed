// Decode-time quantized GEMV (up to kQuantMaxRows rows of x): one kernel launch per call that
// reads x in its own dtype, the packed words with 16-byte loads and the scales/zeros once per
// group, dequantises in registers and accumulates in float32 with one rounding to the output
// dtype (docs/quantization.md, "CUDA kernels").
//
// - FP8 and compressed-tensors store each output's inputs contiguously: a warp computes
// kRowsPerWarp
//   outputs, its lanes striding along the rows with uint4 loads (16 fp8 bytes / 4 packed words);
//   every chunk of x is loaded once for those outputs.
// - AWQ and GPTQ pack along the outputs: a thread owns V consecutive words (AWQ: 8V outputs,
//   GPTQ: V outputs), a warp 32V words, the 8 warps of a block split the block's inputs in units
//   that never straddle a scale group (zero and scale hoisted per unit); partial sums meet in
//   shared memory, and when the inputs are split over several blocks (grid.y) each block leaves
//   its sums in a float32 workspace and the last block of a column tile to finish (an atomic
//   ticket) adds them in split order: deterministic, and no second launch.
// - Shapes or alignments outside these layouts take a generic warp-per-output kernel.
// Integer codes become floats by the exponent trick: the bits of 2^23 + q, minus 2^23 + z, is
// exactly q - z (no int-to-float conversion, which is slow on the GPU).

#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/quant_gemv_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kRowsPerWarp = 2;  // row kernels: outputs per warp

// ---- FP8: kRowsPerWarp outputs per warp, 16 bytes per lane step --------------------------------
// Needs k % 16 == 0 and block_in % 16 == 0 (every 16 inputs share a scale).
template <int R, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    fp8_gemv_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows,
                    const T* __restrict__ bias, T* __restrict__ out, ChunkDiv per_scale) {
  const int lane = threadIdx.x & 31;
  const std::int64_t first =
      (static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * kRowsPerWarp;
  if (first >= w.n) return;
  const std::int64_t chunks = w.k / 16;
  const auto* scale = static_cast<const float*>(w.scale);
  const std::int64_t scale_cols = w.block_out ? (w.k + w.block_in - 1) / w.block_in : 0;
  const uint4* wrow[kRowsPerWarp];
  const float* srow[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const std::int64_t n = first + i < w.n ? first + i : w.n - 1;
    wrow[i] = reinterpret_cast<const uint4*>(static_cast<const std::uint8_t*>(w.weight) + n * w.k);
    srow[i] = w.block_out ? scale + (n / w.block_out) * scale_cols : scale;
  }
  float acc[kRowsPerWarp][R] = {};
#pragma unroll 2
  for (std::int64_t c = lane; c < chunks; c += 32) {
    uint4 v[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) v[i] = __ldg(wrow[i] + c);
    float wv[kRowsPerWarp][16];
    float s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      s[i] = w.block_out ? __ldg(srow[i] + column_of(c, per_scale)) : 1.0f;
      const std::uint32_t parts[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>(parts[p] & 0xFFFFu), __NV_E4M3);
        const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>(parts[p] >> 16), __NV_E4M3);
        wv[i][4 * p + 0] = fp32_from_fp16(lo.x);
        wv[i][4 * p + 1] = fp32_from_fp16(lo.y);
        wv[i][4 * p + 2] = fp32_from_fp16(hi.x);
        wv[i][4 * p + 3] = fp32_from_fp16(hi.y);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float xv[16];
      load_x<16>(x + x_row(r, rows) * w.k + c * 16, xv);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        float part = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) part = fmaf(wv[i][j], xv[j], part);
        acc[i][r] = fmaf(part, s[i], acc[i][r]);
      }
    }
  }
  const float tensor_scale = w.block_out ? 1.0f : __ldg(scale);
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const std::int64_t n = first + i;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = warp_sum(acc[i][r]);
      if (lane == 0 && n < w.n && r < rows) {
        store_out(out, w.residual, w.gate, r * w.n + n, sum * tensor_scale + bias_of(bias, n));
      }
    }
  }
}

// ---- compressed-tensors: kRowsPerWarp outputs per warp, 4 packed words per lane step -----------
// Needs k % (4 * 32/BITS) == 0 (no padded word) and the group a multiple of 4 words (or one group).
template <int R, int BITS, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    compressed_gemv_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows,
                           const T* __restrict__ bias, T* __restrict__ out, ChunkDiv per_group) {
  constexpr int kPer = 32 / BITS;
  constexpr std::uint32_t kMask = (1u << BITS) - 1;
  const int lane = threadIdx.x & 31;
  const std::int64_t first =
      (static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * kRowsPerWarp;
  if (first >= w.n) return;
  const std::int64_t packed_cols = w.k / kPer, chunks = packed_cols / 4;
  const uint4* wrow[kRowsPerWarp];
  std::int64_t nrow[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    nrow[i] = first + i < w.n ? first + i : w.n - 1;
    wrow[i] = reinterpret_cast<const uint4*>(static_cast<const std::int32_t*>(w.weight) +
                                             nrow[i] * packed_cols);
  }
  float acc[kRowsPerWarp][R] = {};
#pragma unroll 2
  for (std::int64_t c = lane; c < chunks; c += 32) {
    uint4 v[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) v[i] = __ldg(wrow[i] + c);
    const std::int64_t gi = w.groups == 1 ? 0 : column_of(c, per_group);
    float mz[kRowsPerWarp], s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const float z =
          w.zeros != nullptr
              ? static_cast<float>(field_of(w.zeros, (nrow[i] / kPer) * w.groups + gi,
                                            static_cast<int>(nrow[i] % kPer) * BITS, kMask))
              : static_cast<float>(1u << (BITS - 1));
      mz[i] = kMagic + z;
      s[i] = load_scale(w.scale, w.scale_type, nrow[i] * w.groups + gi);
    }
    float part[kRowsPerWarp][R] = {};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float t[kRowsPerWarp][kPer];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const std::uint32_t word = q == 0 ? v[i].x : q == 1 ? v[i].y : q == 2 ? v[i].z : v[i].w;
#pragma unroll
        for (int j = 0; j < kPer; ++j) t[i][j] = code_minus((word >> (BITS * j)) & kMask, mz[i]);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float xv[kPer];
        load_x<kPer>(x + x_row(r, rows) * w.k + (c * 4 + q) * kPer, xv);
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
#pragma unroll
          for (int j = 0; j < kPer; ++j) part[i][r] = fmaf(t[i][j], xv[j], part[i][r]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] = fmaf(part[i][r], s[i], acc[i][r]);
    }
  }
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const std::int64_t n = first + i;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = warp_sum(acc[i][r]);
      if (lane == 0 && n < w.n && r < rows)
        store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
    }
  }
}

// Generic warp-per-output kernel (any format, shape and alignment): the slow path.
template <int R, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    generic_gemv_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows,
                        const T* __restrict__ bias, T* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= w.n) return;
  float acc[R] = {};
  for (std::int64_t kk = lane; kk < w.k; kk += 32) {
    const float v = dequantize_one(w, n, kk);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(v, to_float(x[x_row(r, rows) * w.k + kk]), acc[r]);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float sum = warp_sum(acc[r]);
    if (lane == 0 && r < rows)
      store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
  }
}

// AWQ: qweight [k, n/8]; a thread owns V words (8V outputs), a warp 32V words.
template <int R, int V, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    awq_gemv_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows, Units units,
                    const T* __restrict__ bias, T* __restrict__ out, float* ws, unsigned* tickets) {
  const std::int64_t words = w.n / 8;
  const std::int64_t c = (static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x) * V;
  float acc[R][8 * V] = {};
  if (c < words) {
    const auto* qweight = static_cast<const std::int32_t*>(w.weight);
    for (std::int64_t u = static_cast<std::int64_t>(blockIdx.y) * kWarps + threadIdx.y;
         u < units.count; u += static_cast<std::int64_t>(gridDim.y) * kWarps) {
      const auto uu = static_cast<unsigned>(u), upg = static_cast<unsigned>(units.per_group);
      const std::int64_t gi = uu / upg;
      const std::int64_t k0 = gi * w.group + static_cast<std::int64_t>(uu % upg) * units.length;
      float mz[8 * V], s[8 * V];
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const auto zw = static_cast<std::uint32_t>(__ldg(w.zeros + gi * words + c + v));
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          mz[8 * v + j] = kMagic + static_cast<float>((zw >> awq_shift(j)) & 0xFu);
          s[8 * v + j] = load_scale(w.scale, w.scale_type, gi * w.n + (c + v) * 8 + j);
        }
      }
      float part[R][8 * V] = {};
#pragma unroll 4
      for (std::int64_t kk = k0; kk < k0 + units.length; ++kk) {
        std::uint32_t word[V];
        if constexpr (V == 4) {
          const uint4 q = __ldg(reinterpret_cast<const uint4*>(qweight + kk * words + c));
          word[0] = q.x, word[1] = q.y, word[2] = q.z, word[3] = q.w;
        } else if constexpr (V == 2) {
          const uint2 q = __ldg(reinterpret_cast<const uint2*>(qweight + kk * words + c));
          word[0] = q.x, word[1] = q.y;
        } else {
          word[0] = static_cast<std::uint32_t>(__ldg(qweight + kk * words + c));
        }
        float tq[8 * V];
#pragma unroll
        for (int v = 0; v < V; ++v) {
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            tq[8 * v + j] = code_minus((word[v] >> awq_shift(j)) & 0xFu, mz[8 * v + j]);
          }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float xv = to_float(x[x_row(r, rows) * w.k + kk]);
#pragma unroll
          for (int j = 0; j < 8 * V; ++j) part[r][j] = fmaf(tq[j], xv, part[r][j]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int j = 0; j < 8 * V; ++j) acc[r][j] = fmaf(part[r][j], s[j], acc[r][j]);
      }
    }
  }
  finish_columns<R, 8 * V, T>(acc, w.residual, w.gate,
                              static_cast<std::int64_t>(blockIdx.x) * 256 * V, w.n, rows, bias, out,
                              ws, tickets);
}

// GPTQ: qweight [k/per, n]; a thread owns V consecutive outputs (one uint4/uint2/word per packed
// row). Sequential g_idx: units are stretches of packed rows inside one group (zero and scale
// hoisted); act-order: each input reads its own group.
template <int R, int BITS, int V, bool ACT, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    gptq_gemv_kernel(QuantWeight w, const T* __restrict__ x, std::int64_t rows, Units units,
                     const T* __restrict__ bias, T* __restrict__ out, float* ws,
                     unsigned* tickets) {
  constexpr int kPer = 32 / BITS;
  constexpr std::uint32_t kMask = (1u << BITS) - 1;
  const std::int64_t n0 = (static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x) * V;
  float acc[R][V] = {};
  if (n0 < w.n) {
    const auto* qweight = static_cast<const std::int32_t*>(w.weight);
    const std::int64_t zero_words = w.n / kPer;
    for (std::int64_t u = static_cast<std::int64_t>(blockIdx.y) * kWarps + threadIdx.y;
         u < units.count; u += static_cast<std::int64_t>(gridDim.y) * kWarps) {
      const auto uu = static_cast<unsigned>(u), upg = static_cast<unsigned>(units.per_group);
      const std::int64_t gi = ACT ? 0 : uu / upg;
      const std::int64_t pr0 =
          ACT ? u * units.length
              : gi * (w.group / kPer) + static_cast<std::int64_t>(uu % upg) * units.length;
      float mz[V], s[V];
      if constexpr (!ACT) {
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const std::int64_t n = n0 + v;
          mz[v] = kMagic + static_cast<float>(field_of(w.zeros, gi * zero_words + n / kPer,
                                                       static_cast<int>(n % kPer) * BITS, kMask) +
                                              1);
          s[v] = load_scale(w.scale, w.scale_type, gi * w.n + n);
        }
      }
      float part[R][V] = {};
#pragma unroll 4
      for (std::int64_t pr = pr0; pr < pr0 + units.length; ++pr) {
        std::uint32_t word[V];
        if constexpr (V == 4) {
          const uint4 q = __ldg(reinterpret_cast<const uint4*>(qweight + pr * w.n + n0));
          word[0] = q.x, word[1] = q.y, word[2] = q.z, word[3] = q.w;
        } else if constexpr (V == 2) {
          const uint2 q = __ldg(reinterpret_cast<const uint2*>(qweight + pr * w.n + n0));
          word[0] = q.x, word[1] = q.y;
        } else {
          word[0] = static_cast<std::uint32_t>(__ldg(qweight + pr * w.n + n0));
        }
        float xv[R][kPer];
#pragma unroll
        for (int r = 0; r < R; ++r) load_x<kPer>(x + x_row(r, rows) * w.k + pr * kPer, xv[r]);
        if constexpr (ACT) {
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const std::int64_t g = gptq_group(w, pr * kPer + j);
#pragma unroll
            for (int v = 0; v < V; ++v) {
              const std::int64_t n = n0 + v;
              const float z =
                  static_cast<float>(field_of(w.zeros, g * zero_words + n / kPer,
                                              static_cast<int>(n % kPer) * BITS, kMask) +
                                     1);
              const float wv = code_minus((word[v] >> (BITS * j)) & kMask, kMagic + z) *
                               load_scale(w.scale, w.scale_type, g * w.n + n);
#pragma unroll
              for (int r = 0; r < R; ++r) acc[r][v] = fmaf(wv, xv[r][j], acc[r][v]);
            }
          }
        } else {
#pragma unroll
          for (int v = 0; v < V; ++v) {
#pragma unroll
            for (int j = 0; j < kPer; ++j) {
              const float t = code_minus((word[v] >> (BITS * j)) & kMask, mz[v]);
#pragma unroll
              for (int r = 0; r < R; ++r) part[r][v] = fmaf(t, xv[r][j], part[r][v]);
            }
          }
        }
      }
      if constexpr (!ACT) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int v = 0; v < V; ++v) acc[r][v] = fmaf(part[r][v], s[v], acc[r][v]);
        }
      }
    }
  }
  finish_columns<R, V, T>(acc, w.residual, w.gate, static_cast<std::int64_t>(blockIdx.x) * 32 * V,
                          w.n, rows, bias, out, ws, tickets);
}

// ---- host side
// ------------------------------------------------------------------------------------

// Words (AWQ) or outputs (GPTQ) per thread: as wide a load as the accumulators allow (AWQ
// keeps 8 sums per word and row, GPTQ one per output and row).
int column_vector(const QuantWeight& w, std::int64_t rows) {
  if (w.kind == QuantKind::AWQ) return rows == 1 && (w.n / 8) % 2 == 0 ? 2 : 1;
  return rows <= 4 ? 4 : 2;
}

std::int64_t column_tiles(const QuantWeight& w, int v) {
  const std::int64_t cols = w.kind == QuantKind::AWQ ? w.n / 8 : w.n;
  return (cols + 32 * v - 1) / (32 * v);
}

// The layouts the column kernels take (others go generic).
bool column_kernel(const QuantWeight& w) {
  if (!aligned16(w.weight)) return false;
  if (w.kind == QuantKind::AWQ) return w.k % w.group == 0;
  if (w.kind != QuantKind::GPTQ) return false;
  const int per = 32 / w.bits;
  if (!w.g_idx_sequential) return (w.k / per) % 2 == 0;
  return w.group % per == 0 && w.k % w.group == 0;
}

std::int64_t column_splits(const QuantWeight& w, int v, int sms) {
  const std::int64_t tiles = column_tiles(w, v);
  const std::int64_t max_splits = (column_units(w).count + kWarps - 1) / kWarps;
  // About 2 blocks per SM: every split adds a round trip of rows x n partial sums through L2.
  const std::int64_t want = (2 * static_cast<std::int64_t>(sms) + tiles - 1) / tiles;
  return want < 1 ? 1 : (want > max_splits ? max_splits : want);
}

template <int R, typename T>
cudaError_t launch_rows(const QuantWeight& w, const T* x, std::int64_t rows, const T* bias, T* out,
                        Type x_type, cudaStream_t stream) {
  const dim3 threads(kWarps * 32);
  const auto row_blocks =
      static_cast<unsigned>((w.n + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp));
  const bool x_ok = x_vector_ok(x, w.k, x_type) && aligned16(w.weight);
  if (w.kind == QuantKind::FP8 && x_ok && w.k % 16 == 0 &&
      (w.block_out == 0 || w.block_in % 16 == 0)) {
    fp8_gemv_kernel<R, T><<<row_blocks, threads, 0, stream>>>(
        w, x, rows, bias, out, chunk_div(w.block_out ? w.block_in / 16 : 1));
    return launched();
  }
  if (w.kind == QuantKind::Compressed && x_ok) {
    const int per = 32 / w.bits;
    if (w.k % (4 * per) == 0 && (w.groups == 1 || w.group % (4 * per) == 0)) {
      const ChunkDiv per_group = chunk_div(w.groups == 1 ? 1 : w.group / (4 * per));
      if (w.bits == 4) {
        compressed_gemv_kernel<R, 4, T>
            <<<row_blocks, threads, 0, stream>>>(w, x, rows, bias, out, per_group);
      } else {
        compressed_gemv_kernel<R, 8, T>
            <<<row_blocks, threads, 0, stream>>>(w, x, rows, bias, out, per_group);
      }
      return launched();
    }
  }
  const auto blocks = static_cast<unsigned>((w.n + kWarps - 1) / kWarps);
  generic_gemv_kernel<R, T><<<blocks, threads, 0, stream>>>(w, x, rows, bias, out);
  return launched();
}

template <int R, int V, typename T>
cudaError_t launch_awq(const QuantWeight& w, const T* x, std::int64_t rows, const T* bias, T* out,
                       float* ws, unsigned* tickets, int sms, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(column_tiles(w, V)),
                  static_cast<unsigned>(column_splits(w, V, sms)));
  awq_gemv_kernel<R, V, T>
      <<<grid, dim3(32, kWarps), 0, stream>>>(w, x, rows, column_units(w), bias, out, ws, tickets);
  return launched();
}

template <int R, typename T>
cudaError_t launch_gptq(const QuantWeight& w, const T* x, std::int64_t rows, const T* bias, T* out,
                        float* ws, unsigned* tickets, int sms, cudaStream_t stream) {
  constexpr int kV = R <= 4 ? 4 : 2;
  const dim3 grid(static_cast<unsigned>(column_tiles(w, kV)),
                  static_cast<unsigned>(column_splits(w, kV, sms)));
  const dim3 threads(32, kWarps);
  const Units units = column_units(w);
  if (!w.g_idx_sequential) {
    if (w.bits == 4) {
      gptq_gemv_kernel<R, 4, kV, true, T>
          <<<grid, threads, 0, stream>>>(w, x, rows, units, bias, out, ws, tickets);
    } else {
      gptq_gemv_kernel<R, 8, kV, true, T>
          <<<grid, threads, 0, stream>>>(w, x, rows, units, bias, out, ws, tickets);
    }
  } else if (w.bits == 4) {
    gptq_gemv_kernel<R, 4, kV, false, T>
        <<<grid, threads, 0, stream>>>(w, x, rows, units, bias, out, ws, tickets);
  } else {
    gptq_gemv_kernel<R, 8, kV, false, T>
        <<<grid, threads, 0, stream>>>(w, x, rows, units, bias, out, ws, tickets);
  }
  return launched();
}

template <int R, typename T>
cudaError_t launch(const QuantWeight& w, const T* x, std::int64_t rows, const T* bias, T* out,
                   Type x_type, float* ws, unsigned* tickets, int sms, cudaStream_t stream) {
  if (column_kernel(w) && w.kind == QuantKind::AWQ) {
    if constexpr (R == 1) {
      if (column_vector(w, rows) == 2) {
        return launch_awq<R, 2, T>(w, x, rows, bias, out, ws, tickets, sms, stream);
      }
    }
    return launch_awq<R, 1, T>(w, x, rows, bias, out, ws, tickets, sms, stream);
  }
  if (column_kernel(w) && x_vector_ok(x, w.k, x_type)) {
    return launch_gptq<R, T>(w, x, rows, bias, out, ws, tickets, sms, stream);
  }
  return launch_rows<R, T>(w, x, rows, bias, out, x_type, stream);
}

}  // namespace

QuantGemvScratch quant_gemv_scratch(const QuantWeight& w, std::int64_t rows, int sms) {
  QuantGemvScratch need = quant_gemv_stream_scratch(w, rows, sms);
  if (!column_kernel(w)) return need;
  const int v = column_vector(w, rows);
  const std::int64_t splits = column_splits(w, v, sms);
  if (splits <= 1) return need;
  need.floats = std::max(need.floats, splits * rows * w.n);
  need.tickets = std::max(need.tickets, column_tiles(w, v));
  return need;
}

cudaError_t quant_gemv(const QuantWeight& w, const void* x, Type x_type, std::int64_t rows,
                       const void* bias, void* out, float* workspace, unsigned* tickets, int sms,
                       cudaStream_t stream) {
  if (rows <= 0 || w.n == 0) return cudaSuccess;
  if (w.bits != 4 && w.bits != 8 && w.kind != QuantKind::FP8) return cudaErrorInvalidValue;
  if (rows > kQuantMaxRows) return cudaErrorInvalidValue;
  cudaError_t streamed = cudaSuccess;
  if (quant_gemv_stream(w, x, x_type, rows, bias, out, workspace, tickets, sms, stream,
                        &streamed)) {
    return streamed;
  }
  return dispatch_float(x_type, [&](auto tag) {
    using T = decltype(tag);
    const auto* xt = static_cast<const T*>(x);
    const auto* bt = static_cast<const T*>(bias);
    auto* ot = static_cast<T*>(out);
    if (rows <= 1)
      return launch<1, T>(w, xt, rows, bt, ot, x_type, workspace, tickets, sms, stream);
    if (rows <= 2)
      return launch<2, T>(w, xt, rows, bt, ot, x_type, workspace, tickets, sms, stream);
    if (rows <= 4)
      return launch<4, T>(w, xt, rows, bt, ot, x_type, workspace, tickets, sms, stream);
    return launch<kQuantMaxRows, T>(w, xt, rows, bt, ot, x_type, workspace, tickets, sms, stream);
  });
}

}  // namespace strata::cuda::kernels
