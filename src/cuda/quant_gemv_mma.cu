// compressed-tensors int4 decode GEMV on the tensor cores (bf16 x, 1-8 rows): a trial variant of
// quant_gemv_stream.cu (STRATA_QUANT_GEMV=...,ctm=1) that moves the multiply-adds to mma.sync so
// the SIMT pipes only dequantise, two codes per instruction:
//  - (word >> 4s) & 0x000F000F | 0x43004300 is the bf16 pair (128 + q_s, 128 + q_{s+4}); one
//    bf16x2 subtraction of (128 + z) leaves (q - z) exactly (small integers are exact in bf16).
//  - m16n8k16: A = 16 weight rows x 16 inputs, B = 16 inputs x 8 rows of x (bf16, exact), C in
//    float32. The inputs of one mma need not be consecutive: thread (g, c) = (lane / 4, lane % 4)
//    holds inputs 32c.. of a 128-input chunk for rows g and g + 8, and the pairs (j, j + 4) the
//    LOP3 makes are matched by the same pairs of x (one PRMT each).
//  - One chunk of 128 inputs is one scale group (group % 128 == 0, or per channel): its mma sums
//    are scaled into float32 accumulators per chunk.
//  - A block is 4 warps on the same 16 rows, splitting the chunks; their sums meet in shared
//    memory. U chunks are loaded before use.
// The products are exact; the tensor cores' float32 accumulation is not IEEE sequential (it
// aligns the partial products to the largest), within the tests' bf16 tolerance.

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/quant_gemv_common.cuh"
#include "cuda/quant_mma.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kMmaWarps = 4;

template <int U>
__global__ void __launch_bounds__(kMmaWarps * 32)
    ct4_mma_kernel(QuantWeight w, const BF16Bits* __restrict__ x, std::int64_t rows,
                   const BF16Bits* __restrict__ bias, BF16Bits* __restrict__ out,
                   ChunkDiv per_group) {
  __shared__ float red[kMmaWarps][32][4];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * 16;
  const std::int64_t packed_cols = w.k / 8;
  const int chunks = static_cast<int>(w.k / 128);
  std::int64_t nrow[2];
  const uint4* wrow[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const std::int64_t n = first + g + 8 * h;
    nrow[h] = n < w.n ? n : w.n - 1;
    wrow[h] = reinterpret_cast<const uint4*>(static_cast<const std::int32_t*>(w.weight) +
                                             nrow[h] * packed_cols) +
              c;  // this thread's 32 inputs of each chunk
  }
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 32 * c;
  // PDL: the first chunks into L2, then wait for the previous kernel before reading x.
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int kc = warp + kMmaWarps * u;
    if (kc < chunks) {
      prefetch_to_l2(wrow[0] + 4 * kc);
      prefetch_to_l2(wrow[1] + 4 * kc);
    }
  }
  wait_for_producer();
  allow_dependents();
  float acc[4] = {};  // (row g, x rows 2c, 2c+1), (row g + 8, x rows 2c, 2c+1)
  for (int k0 = warp; k0 < chunks; k0 += kMmaWarps * U) {
    uint4 v[U][2];
    std::uint32_t zv[U][2];
    float sv[U][2];
#pragma unroll
    for (int u = 0; u < U; ++u) {  // weights, zeros and scales requested together
      const int kc = k0 + kMmaWarps * u;
      const bool in = kc < chunks;
      const std::int64_t gi = w.groups == 1 || !in ? 0 : column_of(kc, per_group);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        v[u][h] = in ? __ldcs(wrow[h] + 4 * kc) : make_uint4(0, 0, 0, 0);
        zv[u][h] = w.zeros != nullptr && in ? field_of(w.zeros, (nrow[h] / 8) * w.groups + gi,
                                                       static_cast<int>(nrow[h] % 8) * 4, 0xFu)
                                            : 8u;
        sv[u][h] = in ? load_scale(w.scale, w.scale_type, nrow[h] * w.groups + gi) : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int kc = k0 + kMmaWarps * u;
      if (kc >= chunks) break;
      std::uint32_t zz[2];
      float s[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        zz[h] = bf16_zero_pair(zv[u][h]);
        s[h] = sv[u][h];
      }
      const uint4* xp = reinterpret_cast<const uint4*>(xr + 128 * static_cast<std::int64_t>(kc));
      float d[4] = {};
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // word q: inputs 32c + 8q .. + 7
        const uint4 xv = __ldg(xp + q);
        // x pairs (j, j + 4) of the 8 inputs: (0,4), (1,5), (2,6), (3,7).
        std::uint32_t xb[4];
        x_pairs(xv, xb);
        const std::uint32_t w0 = part_of_uint4(v[u][0], q), w1 = part_of_uint4(v[u][1], q);
#pragma unroll
        for (int m = 0; m < 2; ++m) {  // pairs 2m and 2m + 1 of the word
          mma_bf16(d, pair_minus(w0, 2 * m, zz[0]), pair_minus(w1, 2 * m, zz[1]),
                   pair_minus(w0, 2 * m + 1, zz[0]), pair_minus(w1, 2 * m + 1, zz[1]), xb[2 * m],
                   xb[2 * m + 1]);
        }
      }
      acc[0] = fmaf(d[0], s[0], acc[0]);
      acc[1] = fmaf(d[1], s[0], acc[1]);
      acc[2] = fmaf(d[2], s[1], acc[2]);
      acc[3] = fmaf(d[3], s[1], acc[3]);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) red[warp][lane][i] = acc[i];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float sum = 0.0f;
#pragma unroll
    for (int y = 0; y < kMmaWarps; ++y) sum += red[y][lane][i];
    const std::int64_t n = first + g + 8 * (i >> 1);
    const int r = 2 * c + (i & 1);
    if (n < w.n && r < rows)
      store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
  }
}

// GPTQ 4-bit (sequential g_idx): qweight [k/8, n]. A thread (g, c) loads the uint4 of outputs
// n0 + 4g .. + 3 at packed row r0 + c: words 0, 1 are the rows g, g + 8 of mma set 0, words 2, 3
// those of set 1 (so set s, row g is output n0 + 4g + 2s and row g + 8 output n0 + 4g + 2s + 1;
// the C rows of a thread are the same outputs, whose scales it loads). One step is 4 packed rows
// (32 inputs) for 32 outputs; the 8 warps of a block split the steps; sums meet in shared memory.
template <int U>
__global__ void __launch_bounds__(8 * 32)
    gptq4_mma_kernel(QuantWeight w, const BF16Bits* __restrict__ x, std::int64_t rows,
                     const BF16Bits* __restrict__ bias, BF16Bits* __restrict__ out) {
  constexpr int kW = 8;
  __shared__ float red[kW][32][8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * 32 + 4 * g;  // w.n % 32 == 0
  const int steps = static_cast<int>(w.k / 32);
  const int steps_per_group = static_cast<int>(w.group / 32);
  const auto* qweight = static_cast<const std::int32_t*>(w.weight);
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 8 * c;
#pragma unroll
  for (int u = 0; u < U; ++u) {  // PDL, as ct4_mma_kernel
    const int t = warp + kW * u;
    if (t < steps) prefetch_to_l2(qweight + (4 * static_cast<std::int64_t>(t) + c) * w.n + n0);
  }
  wait_for_producer();
  allow_dependents();
  float acc[2][4] = {};
  for (int t0 = warp; t0 < steps; t0 += kW * U) {
    uint4 v[U];
    std::uint32_t zwv[U];
    float sv[U][4];
#pragma unroll
    for (int u = 0; u < U; ++u) {  // weights, zeros and scales requested together
      const int t = t0 + kW * u;
      const bool in = t < steps;
      const std::int64_t gi = in ? t / steps_per_group : 0;
      v[u] = in ? __ldcs(reinterpret_cast<const uint4*>(
                      qweight + (4 * static_cast<std::int64_t>(t) + c) * w.n + n0))
                : make_uint4(0, 0, 0, 0);
      zwv[u] = in ? static_cast<std::uint32_t>(__ldg(w.zeros + gi * (w.n / 8) + n0 / 8)) : 0u;
#pragma unroll
      for (int o = 0; o < 4; ++o) {
        sv[u][o] = in ? load_scale(w.scale, w.scale_type, gi * w.n + n0 + o) : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = t0 + kW * u;
      if (t >= steps) break;
      const std::uint32_t zw = zwv[u];
      std::uint32_t zz[4];
      float s[4];
#pragma unroll
      for (int o = 0; o < 4; ++o) {
        const std::uint32_t z = ((zw >> (4 * ((n0 + o) % 8))) & 0xFu) + 1;  // stored minus one
        zz[o] = bf16_zero_pair(z);
        s[o] = sv[u][o];
      }
      const uint4 xv =
          __ldg(reinterpret_cast<const uint4*>(xr + 32 * static_cast<std::int64_t>(t)));
      std::uint32_t xb[4];
      x_pairs(xv, xb);
#pragma unroll
      for (int set = 0; set < 2; ++set) {
        const std::uint32_t wa = part_of_uint4(v[u], 2 * set),
                            wb = part_of_uint4(v[u], 2 * set + 1);
        float d[4] = {};
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          mma_bf16(d, pair_minus(wa, 2 * m, zz[2 * set]), pair_minus(wb, 2 * m, zz[2 * set + 1]),
                   pair_minus(wa, 2 * m + 1, zz[2 * set]),
                   pair_minus(wb, 2 * m + 1, zz[2 * set + 1]), xb[2 * m], xb[2 * m + 1]);
        }
        acc[set][0] = fmaf(d[0], s[2 * set], acc[set][0]);
        acc[set][1] = fmaf(d[1], s[2 * set], acc[set][1]);
        acc[set][2] = fmaf(d[2], s[2 * set + 1], acc[set][2]);
        acc[set][3] = fmaf(d[3], s[2 * set + 1], acc[set][3]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) red[warp][lane][i] = acc[i >> 2][i & 3];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    float sum = 0.0f;
#pragma unroll
    for (int y = 0; y < kW; ++y) sum += red[y][lane][i];
    const int set = i >> 2, e = i & 3;
    const std::int64_t n = n0 + 2 * set + (e >> 1);
    const int r = 2 * c + (e & 1);
    if (r < rows) store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
  }
}

// AWQ (qweight [k, n/8], nibble i of word (k, c) = output 8c + order[i]): a warp covers 8 word
// columns (64 outputs) as 4 mma tiles; thread (g, c) loads column cb + g at rows k0 + 4c .. + 3.
// __byte_perm of the words of rows k, k + 1 puts their low (high) halves side by side, so
// (u >> 4T) & 0x000F000F is the pair (q[k], q[k + 1]) of nibble T (T + 4): tile T's rows g and
// g + 8 are the outputs of nibbles T and T + 4 of column cb + g, its inputs (2c, 2c + 1) the rows
// k0 + 4c, + 1 and (2c + 8, 2c + 9) the rows k0 + 4c + 2, + 3, which are also the x pairs as
// stored (one 8-byte load). Steps of 16 rows never straddle a group (group % 16 == 0); the mma
// sums are scaled per step. The 8 warps split the steps, grid.y the inputs (ticket finish).
template <int U>
__global__ void __launch_bounds__(8 * 32)
    awq_mma_kernel(QuantWeight w, const BF16Bits* __restrict__ x, std::int64_t rows,
                   const BF16Bits* __restrict__ bias, BF16Bits* __restrict__ out, float* ws,
                   unsigned* tickets) {
  constexpr int kW = 8;
  constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  __shared__ float red[kW][64][8];
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const std::int64_t words = w.n / 8;
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * 8 + g;  // words % 8 == 0
  const int steps = static_cast<int>(w.k / 16);
  const int steps_per_group = static_cast<int>(w.group / 16);
  // This block's stretch of steps.
  const int per_split = (steps + static_cast<int>(gridDim.y) - 1) / static_cast<int>(gridDim.y);
  const int s_begin = static_cast<int>(blockIdx.y) * per_split;
  const int s_end = s_begin + per_split < steps ? s_begin + per_split : steps;
  const auto* qweight = static_cast<const std::int32_t*>(w.weight);
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 4 * c;
  wait_for_producer();  // PDL (writes and x after the previous kernel)
  allow_dependents();
  float acc[4][4] = {};  // tile T: (nibble T, x rows 2c, 2c+1), (nibble T + 4, x rows 2c, 2c+1)
  for (int t0 = s_begin + warp; t0 < s_end; t0 += kW * U) {
    std::uint32_t v[U][4];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = t0 + kW * u;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        v[u][e] =
            t < s_end
                ? static_cast<std::uint32_t>(__ldcs(
                      qweight + (16 * static_cast<std::int64_t>(t) + 4 * c + e) * words + col))
                : 0u;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int t = t0 + kW * u;
      if (t >= s_end) break;
      const std::int64_t gi = t / steps_per_group;
      const auto zw = static_cast<std::uint32_t>(__ldg(w.zeros + gi * words + col));
      const uint2 xv =
          __ldg(reinterpret_cast<const uint2*>(xr + 16 * static_cast<std::int64_t>(t)));
      const std::uint32_t lo01 = __byte_perm(v[u][0], v[u][1], 0x5410),
                          hi01 = __byte_perm(v[u][0], v[u][1], 0x7632),
                          lo23 = __byte_perm(v[u][2], v[u][3], 0x5410),
                          hi23 = __byte_perm(v[u][2], v[u][3], 0x7632);
#pragma unroll
      for (int T = 0; T < 4; ++T) {
        const std::uint32_t za = bf16_zero_pair((zw >> (4 * T)) & 0xFu);
        const std::uint32_t zb = bf16_zero_pair((zw >> (4 * T + 16)) & 0xFu);
        float d[4] = {};
        mma_bf16(d, pair_minus(lo01, T, za), pair_minus(hi01, T, zb), pair_minus(lo23, T, za),
                 pair_minus(hi23, T, zb), xv.x, xv.y);
        const float sa = load_scale(w.scale, w.scale_type, gi * w.n + 8 * col + kOrder[T]);
        const float sb = load_scale(w.scale, w.scale_type, gi * w.n + 8 * col + kOrder[T + 4]);
        acc[T][0] = fmaf(d[0], sa, acc[T][0]);
        acc[T][1] = fmaf(d[1], sa, acc[T][1]);
        acc[T][2] = fmaf(d[2], sb, acc[T][2]);
        acc[T][3] = fmaf(d[3], sb, acc[T][3]);
      }
    }
  }
  // red[warp][output within the block's 64][x row]: output 8g + order[nibble].
#pragma unroll
  for (int T = 0; T < 4; ++T) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int nib = T + 4 * (e >> 1), r = 2 * c + (e & 1);
      red[warp][8 * g + kOrder[nib]][r] = acc[T][e];
    }
  }
  __syncthreads();
  const int t = threadIdx.x;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * 64;
  const bool split = gridDim.y > 1;
  for (int i = t; i < 64 * rows; i += kW * 32) {
    const int o = i & 63, r = i >> 6;
    float sum = 0.0f;
#pragma unroll
    for (int y = 0; y < kW; ++y) sum += red[y][o][r];
    if (split) {
      ws[(static_cast<std::int64_t>(blockIdx.y) * rows + r) * w.n + n0 + o] = sum;
    } else {
      store_out(out, w.residual, w.gate, r * w.n + n0 + o, sum + bias_of(bias, n0 + o));
    }
  }
  if (!split) return;
  __threadfence();
  __syncthreads();
  if (t == 0) last = atomicAdd(tickets + blockIdx.x, 1u) == gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = t; i < 64 * rows; i += kW * 32) {
    const int o = i & 63, r = i >> 6;
    float sum = 0.0f;
    for (unsigned y = 0; y < gridDim.y; ++y) sum += __ldcg(ws + (y * rows + r) * w.n + n0 + o);
    store_out(out, w.residual, w.gate, r * w.n + n0 + o, sum + bias_of(bias, n0 + o));
  }
  if (t == 0) tickets[blockIdx.x] = 0;
}

}  // namespace

bool awq_mma_takes(const QuantWeight& w, const void* x, Type x_type) {
  return w.kind == QuantKind::AWQ && x_type == Type::BFloat16 && x_vector_ok(x, w.k, x_type) &&
         (w.n / 8) % 8 == 0 && w.k % 16 == 0 && w.group % 16 == 0 && w.k % w.group == 0;
}

// Splits of the inputs: about 2 blocks per SM, each at least 4 steps per warp.
std::int64_t awq_mma_splits(const QuantWeight& w, int sms) {
  const std::int64_t blocks = w.n / 64, steps = w.k / 16;
  std::int64_t s = (2 * static_cast<std::int64_t>(sms) + blocks - 1) / blocks;
  const std::int64_t most = steps / (8 * 4);
  if (s > most) s = most;
  return s < 1 ? 1 : s;
}

QuantGemvScratch awq_mma_scratch(const QuantWeight& w, std::int64_t rows, int sms) {
  const std::int64_t s = awq_mma_splits(w, sms);
  if (s <= 1) return {};
  return {s * rows * w.n, w.n / 64};
}

cudaError_t awq_mma_gemv(const QuantWeight& w, const void* x, std::int64_t rows, const void* bias,
                         void* out, float* ws, unsigned* tickets, int sms, cudaStream_t stream) {
  if (rows < 1 || rows > 8) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(w.n / 64), static_cast<unsigned>(awq_mma_splits(w, sms)));
  return launch_maybe_pdl(awq_mma_kernel<8>, grid, dim3(8 * 32), 0, stream, w.pdl, w,
                          static_cast<const BF16Bits*>(x), rows, static_cast<const BF16Bits*>(bias),
                          static_cast<BF16Bits*>(out), ws, tickets);
}

bool gptq4_mma_takes(const QuantWeight& w, const void* x, Type x_type) {
  return w.kind == QuantKind::GPTQ && w.bits == 4 && w.g_idx_sequential &&
         x_type == Type::BFloat16 && aligned16(w.weight) && x_vector_ok(x, w.k, x_type) &&
         w.n % 32 == 0 && w.k % 32 == 0 && w.group % 32 == 0 && w.k % w.group == 0;
}

cudaError_t gptq4_mma_gemv(const QuantWeight& w, const void* x, std::int64_t rows, const void* bias,
                           void* out, cudaStream_t stream) {
  if (rows < 1 || rows > 8) return cudaErrorInvalidValue;
  return launch_maybe_pdl(gptq4_mma_kernel<8>, dim3(static_cast<unsigned>(w.n / 32)), dim3(8 * 32),
                          0, stream, w.pdl, w, static_cast<const BF16Bits*>(x), rows,
                          static_cast<const BF16Bits*>(bias), static_cast<BF16Bits*>(out));
}

bool ct4_mma_takes(const QuantWeight& w, const void* x, Type x_type) {
  return w.kind == QuantKind::Compressed && w.bits == 4 && x_type == Type::BFloat16 &&
         aligned16(w.weight) && x_vector_ok(x, w.k, x_type) && w.k % 128 == 0 &&
         (w.groups == 1 || w.group % 128 == 0);
}

cudaError_t ct4_mma_gemv(const QuantWeight& w, const void* x, std::int64_t rows, const void* bias,
                         void* out, cudaStream_t stream) {
  if (rows < 1 || rows > 8) return cudaErrorInvalidValue;
  const auto blocks = static_cast<unsigned>((w.n + 15) / 16);
  return launch_maybe_pdl(ct4_mma_kernel<4>, dim3(blocks), dim3(kMmaWarps * 32), 0, stream, w.pdl,
                          w, static_cast<const BF16Bits*>(x), rows,
                          static_cast<const BF16Bits*>(bias), static_cast<BF16Bits*>(out),
                          chunk_div(w.groups == 1 ? 1 : w.group / 128));
}

}  // namespace strata::cuda::kernels
