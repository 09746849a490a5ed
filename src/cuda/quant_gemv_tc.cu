// Streaming int4 decode GEMV on the tensor cores (session 7, issue 16): compressed-tensors int4,
// GPTQ 4-bit (sequential g_idx) and AWQ, bf16 x, 1-8 rows. Session 6's kernels ran every int4
// format at ~2.2 T weights/s whatever their loads: ~3.5 SIMT instructions per weight (LOP3, FSUB,
// FFMA, x widening) at ~2 warp instructions per SM clock is what an H100 issues, and the HBM rate
// needs ~4 T weights/s. Here a weight costs ~1.4 SIMT instructions (quant_mma.cuh: a LOP3 and a
// bf16x2 subtraction per two codes, the multiply-adds in mma.sync), and the stream is kept full:
//  - a warp owns one output tile (GPTQ 32 outputs, compressed-tensors 16, AWQ 64) and a
//    contiguous stretch of its inputs, in stages of U steps; stage s + 1's weights, zero points
//    and scales are loaded (one request, no dependent second round trip) while stage s is
//    computed (two register buffers);
//  - the first stage is loaded before the programmatic-dependent-launch wait (weights never
//    depend on the previous kernel; x is read after it);
//  - independent mma accumulators per stage (session 6's tensor-core trial, quant_gemv_mma.cu,
//    chained every mma of a step through one accumulator, so each warp waited out the mma
//    latency), scaled once per stage (one scale group);
//  - the 8 warps of a block split the tile's inputs, and grid.y splits them further until about
//    `bps` blocks per SM are running; the splits meet in the deterministic ticketed reduction
//    (the last block of a tile adds them in split order).
// Fragment layouts are session 6's quant_gemv_mma.cu's (removed in session 7); the products are
// exact and the tensor cores' float32 accumulation is not IEEE-sequential (within the tests' bf16
// tolerance).

#include <cooperative_groups.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda/flash_common.cuh"
#include "cuda/quant_gemv_common.cuh"
#include "cuda/quant_mma.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kTcWarps = 8;

// AWQ: nibble i of a word holds output 8c + order[i], order = 0, 2, 4, 6, 1, 3, 5, 7.
__device__ __forceinline__ int awq_order(int i) { return ((i & 3) << 1) | (i >> 2); }

// Two 16-bit scales (bf16 or f16; `u`'s low half first) as float32, exactly.
__device__ __forceinline__ void scale_pair(std::uint32_t u, Type type, float& lo, float& hi) {
  if (type == Type::BFloat16) {
    lo = __uint_as_float(u << 16);
    hi = __uint_as_float(u & 0xFFFF0000u);
    return;
  }
  __half2 h;
  std::memcpy(&h, &u, 4);
  const float2 f = __half22float2(h);
  lo = f.x, hi = f.y;
}

// Scales i .. i + N - 1 (N = 4 or 8; i a multiple of N and the scales 16-byte aligned, which
// tc_shape checks) as float32, with one or two vector loads instead of N.
template <int N>
__device__ __forceinline__ void load_scales(const void* p, Type type, std::int64_t i,
                                            float (&out)[N]) {
  if (type == Type::Float32) {
#pragma unroll
    for (int h = 0; h < N / 4; ++h) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(p) + i) + h);
      out[4 * h] = v.x, out[4 * h + 1] = v.y, out[4 * h + 2] = v.z, out[4 * h + 3] = v.w;
    }
    return;
  }
  std::uint32_t u[N / 2];
  const auto* q = static_cast<const std::uint16_t*>(p) + i;
  if constexpr (N == 8) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(q));
    u[0] = v.x, u[1] = v.y, u[2] = v.z, u[3] = v.w;
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(q));
    u[0] = v.x, u[1] = v.y;
  }
#pragma unroll
  for (int j = 0; j < N / 2; ++j) scale_pair(u[j], type, out[2 * j], out[2 * j + 1]);
}

// What every tensor-core kernel takes besides the weight: x [rows, k], bias, out, the split-K
// scratch, the stages of a tile (`per_warp` to each warp), the steps or stages per scale group
// (or block), and whether the splits are one thread block cluster.
struct TcArgs {
  const BF16Bits* x = nullptr;
  std::int64_t rows = 0;
  const BF16Bits* bias = nullptr;
  BF16Bits* out = nullptr;
  float* ws = nullptr;
  unsigned* tickets = nullptr;
  int stages = 0, per_warp = 0;
  ChunkDiv per_group;
  bool cluster = false;
};

// This warp's stages [s0, s1) of its tile: `per_warp` each, the block's warps and grid.y in order.
struct WarpStages {
  int s0, s1;
};
__device__ __forceinline__ WarpStages warp_stages(int stages, int per_warp) {
  const int wi = static_cast<int>(blockIdx.y) * kTcWarps + static_cast<int>(threadIdx.x >> 5);
  const int s0 = wi * per_warp;
  return {s0, s0 + per_warp < stages ? s0 + per_warp : stages};
}

// This warp's stages of its tile (the tile's `stages` split over the block's warps and grid.y,
// `per_warp` each, contiguously), through two register buffers: stage s + 1's loads are in flight
// while stage s is computed. The first stage's loads go out before the PDL wait; every thread
// waits (the finish writes).
template <typename Buf, typename Load, typename Compute>
__device__ __forceinline__ void run_stages(int stages, int per_warp, Load&& load,
                                           Compute&& compute) {
  const auto [s0, s1] = warp_stages(stages, per_warp);
  Buf a, b;
  if (s0 < s1) load(s0, a);
  wait_for_producer();
  allow_dependents();
  for (int s = s0; s < s1; s += 2) {
    if (s + 1 < s1) load(s + 1, b);
    compute(s, a);
    if (s + 1 >= s1) break;
    if (s + 2 < s1) load(s + 2, a);
    compute(s + 1, b);
  }
}

// run_stages with one register buffer, every load after the PDL wait: for stages so large (the
// wide GPTQ tiles: up to 16 packed rows, 64 registers) that a second buffer, or loads held across
// the wait (a memory barrier, so all U loads are live at once there), would cost the occupancy
// that hides their latency. After the wait ptxas interleaves the loads with their use: the
// 16-row stage took 152 registers with the loads before the wait and 80 after (ptxas -v, sm_90,
// session 14's probe).
template <typename Buf, typename Load, typename Compute>
__device__ __forceinline__ void run_stages_one_buffer(int stages, int per_warp, Load&& load,
                                                      Compute&& compute) {
  const auto [s0, s1] = warp_stages(stages, per_warp);
  wait_for_producer();
  allow_dependents();
  for (int s = s0; s < s1; ++s) {
    Buf b;
    load(s, b);
    compute(s, b);
  }
}

// Where one accumulator value of a tensor-core kernel goes (tc_finish's `where`).
struct TcOut {
  int r;           // row of x
  std::int64_t n;  // output
};

// The usual C layout: value (tile t, element e) of lane l is output out_n(t, e, l / 4) of x row
// 2 (l % 4) + e % 2.
template <typename OutN>
__device__ __forceinline__ auto mma_c_out(OutN out_n) {
  return [out_n](int i, int l) {
    return TcOut{2 * (l & 3) + (i & 1), out_n(i >> 2, i & 3, l >> 2)};
  };
}

// The warps' accumulators (value i = 4 t + e of lane l: x row and output where(i, l), TcOut)
// summed in shared memory, then stored; with several splits either written to
// ws[split][row][n] and added by the tile's last block (ticket) in split order, or (`cluster`: the
// splits are one thread block cluster along y) read from the other blocks' shared memory, each
// block finishing every gridDim.y-th value, in split order too (deterministic either way).
template <int TILES, typename Where>
__device__ __forceinline__ void tc_finish(const float (&acc)[TILES][4], Where where,
                                          const QuantWeight& w, const TcArgs& a) {
  const std::int64_t rows = a.rows;
  const BF16Bits* bias = a.bias;
  BF16Bits* out = a.out;
  float* ws = a.ws;
  unsigned* tickets = a.tickets;
  const bool cluster = a.cluster;
  constexpr int kValues = TILES * 4 * 32;
  __shared__ float red[kTcWarps][TILES * 4][32];
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int i = 0; i < TILES * 4; ++i) red[warp][i][lane] = acc[i >> 2][i & 3];
  __syncthreads();
  const bool split = gridDim.y > 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (split && cluster) {
    // red[0] becomes this block's sums (each value read and written by one thread).
    for (int o = threadIdx.x; o < kValues; o += kTcWarps * 32) {
      const int i = o >> 5, l = o & 31;
      float sum = 0.0f;
#pragma unroll
      for (int y = 0; y < kTcWarps; ++y) sum += red[y][i][l];
      red[0][i][l] = sum;
    }
    namespace cg = cooperative_groups;
    cg::cluster_group blocks = cg::this_cluster();
    blocks.sync();  // every block's sums are written
    const int splits = static_cast<int>(gridDim.y), me = static_cast<int>(blockIdx.y);
    for (int o = me + splits * static_cast<int>(threadIdx.x); o < kValues;
         o += splits * kTcWarps * 32) {
      const int i = o >> 5, l = o & 31;
      const auto [r, n] = where(i, l);
      if (r >= rows || n >= w.n) continue;
      float sum = 0.0f;
      for (int y = 0; y < splits; ++y) sum += blocks.map_shared_rank(&red[0][i][l], y)[0];
      store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
    }
    blocks.sync();  // no block leaves while another reads its shared memory
    return;
  }
#endif
  for (int o = threadIdx.x; o < kValues; o += kTcWarps * 32) {
    const int i = o >> 5, l = o & 31;
    const auto [r, n] = where(i, l);
    if (r >= rows || n >= w.n) continue;
    float sum = 0.0f;
#pragma unroll
    for (int y = 0; y < kTcWarps; ++y) sum += red[y][i][l];
    if (split) {
      ws[(static_cast<std::int64_t>(blockIdx.y) * rows + r) * w.n + n] = sum;
    } else {
      store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
    }
  }
  if (!split) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(tickets + blockIdx.x, 1u) == gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int o = threadIdx.x; o < kValues; o += kTcWarps * 32) {
    const int i = o >> 5, l = o & 31;
    const auto [r, n] = where(i, l);
    if (r >= rows || n >= w.n) continue;
    float sum = 0.0f;
    for (unsigned y = 0; y < gridDim.y; ++y) sum += __ldcg(ws + (y * rows + r) * w.n + n);
    store_out(out, w.residual, w.gate, r * w.n + n, sum + bias_of(bias, n));
  }
  if (threadIdx.x == 0) tickets[blockIdx.x] = 0;  // ready for the next launch on this stream
}

// A stage of GPTQ / AWQ: U steps of 4 packed words each, inside one scale group, with the group's
// packed zero-point word and S scales (requested together with the words: no second round trip).
template <int U, int S>
struct GroupStage {
  std::uint32_t v[U][4];
  std::uint32_t zw;
  float s[S];
};

// Stage s: words(t, v) loads step t's 4 words; the zero word is zeros[gi * zero_stride + zero_col],
// the scales scale[gi * n + scale_col ..].
template <int U, int S, typename Words>
__device__ __forceinline__ void load_group_stage(GroupStage<U, S>& b, int s,
                                                 ChunkDiv stages_per_group, const QuantWeight& w,
                                                 std::int64_t zero_stride, std::int64_t zero_col,
                                                 std::int64_t scale_col, Words words) {
  const std::int64_t gi = column_of(s, stages_per_group);
#pragma unroll
  for (int u = 0; u < U; ++u) words(static_cast<std::int64_t>(s) * U + u, b.v[u]);
  b.zw = static_cast<std::uint32_t>(__ldg(w.zeros + gi * zero_stride + zero_col));
  load_scales<S>(w.scale, w.scale_type, gi * w.n + scale_col, b.s);
}

// ---- GPTQ 4-bit, sequential g_idx: qweight [k/8, n] ---------------------------------------------
// Tile: 32 outputs; step: 32 inputs (4 packed rows). Thread (g, c) loads the uint4 of outputs
// n0 + 4g .. + 3 at packed row 4t + c: words 0, 1 are the A rows g, g + 8 of mma set 0, words 2, 3
// those of set 1. A stage (U steps) lies inside one scale group.
template <int U>
__device__ __forceinline__ void gptq4_tc(const QuantWeight& w, const TcArgs& a) {
  const BF16Bits* __restrict__ x = a.x;
  const std::int64_t rows = a.rows;
  const ChunkDiv stages_per_group = a.per_group;
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * 32 + 4 * g;
  const std::int32_t* qw = static_cast<const std::int32_t*>(w.weight) + c * w.n + n0;
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 8 * c;
  using Buf = GroupStage<U, 4>;
  float acc[2][4] = {};
  const auto compute = [&](int s, const Buf& b) {
    std::uint32_t zz[4];
#pragma unroll
    for (int o = 0; o < 4; ++o) {
      // stored minus one; n0 % 4 == 0, so output n0 + o is nibble (n0 % 8) + o
      zz[o] = bf16_zero_pair(((b.zw >> (4 * ((n0 & 7) + o))) & 0xFu) + 1);
    }
    float d[2][2][4] = {};  // [set][m]: four independent accumulators
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t t = static_cast<std::int64_t>(s) * U + u;
      std::uint32_t xb[4];
      x_pairs(__ldg(reinterpret_cast<const uint4*>(xr + 32 * t)), xb);
#pragma unroll
      for (int set = 0; set < 2; ++set) {
        const std::uint32_t wa = b.v[u][2 * set], wb = b.v[u][2 * set + 1];
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          mma_bf16(d[set][m], pair_minus(wa, 2 * m, zz[2 * set]),
                   pair_minus(wb, 2 * m, zz[2 * set + 1]), pair_minus(wa, 2 * m + 1, zz[2 * set]),
                   pair_minus(wb, 2 * m + 1, zz[2 * set + 1]), xb[2 * m], xb[2 * m + 1]);
        }
      }
    }
#pragma unroll
    for (int set = 0; set < 2; ++set) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[set][e] = fmaf(d[set][0][e] + d[set][1][e], b.s[2 * set + (e >> 1)], acc[set][e]);
      }
    }
  };
  run_stages<Buf>(
      a.stages, a.per_warp,
      [&](int s, Buf& b) {
        load_group_stage(b, s, stages_per_group, w, w.n / 8, n0 / 8, n0,
                         [&](std::int64_t t, std::uint32_t(&v)[4]) {
                           const uint4 q = __ldcs(reinterpret_cast<const uint4*>(qw + 4 * t * w.n));
                           v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
                         });
      },
      compute);
  const std::int64_t tile0 = static_cast<std::int64_t>(blockIdx.x) * 32;
  tc_finish<2>(
      acc, mma_c_out([&](int set, int e, int gg) { return tile0 + 4 * gg + 2 * set + (e >> 1); }),
      w, a);
}

// ---- GPTQ 4-bit, wide tiles (session 14; 1-2 rows of x): qweight [k/8, n] ----------------------
// Lane l owns outputs t0 + 4l .. + 3 of a 128-output tile: one uint4 of each packed row (4 words of
// 8 inputs), so a warp reads 512 contiguous bytes of a packed row per load instead of the 32-output
// tile's four runs of 128 bytes, and a stage (U packed rows of one scale group, 16 at most: 8 KB a
// warp) usually is the warp's whole share. Why: session 14's profile of the 32-output kernel (H100,
// 11008 x 4096) showed 21% occupancy (114 registers), 40% of its cycles waiting for loads and HBM
// at 35%; a standalone probe of this layout at 80 registers read the 7B shapes at 1.25-1.4x its
// rate (docs/quantization.md).
// The mma: lane (g, c) supplies rows g and g + 8 of A from its own words (row g: word 2p, row g +
// 8: word 2p + 1, k slots 2c, 2c + 1 / 2c + 8, 2c + 9: the code pairs (s, s + 4) of pair_minus), so
// the four lanes of an A row hold four different outputs. B is therefore diagonal in the supplier:
// B[k][n] is x only where the lane c = n % 4 supplied k slot k (lanes (g, c) with g % 4 == c hold
// it: g < 4 x row 0, g >= 4 row 1) and 0 elsewhere, so C[m][n] sums lane (m % 8, n % 4)'s products
// alone: columns 0..3 are x row 0, 4..7 row 1. The products are the exact (q - z) x of the kernel
// above; a stage's sums are scaled once (one group). More rows of x would need a pass per two rows
// over the same A, whose accumulators cost the registers (164+ for 5-8 rows, one block per SM: 3.5x
// slower than the 32-output tiles on an H200), so 3-8 rows take the kernel above.
template <int U>
__device__ __forceinline__ void gptq4_wide(const QuantWeight& w, const TcArgs& a) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const std::int64_t tile0 = static_cast<std::int64_t>(blockIdx.x) * 128;
  const std::int64_t col = tile0 + 4 * lane;               // this lane's words: outputs col .. + 3
  const std::int64_t scol = tile0 + 16 * g + 8 * (c & 1);  // the 8 outputs of its C values
  const bool in = col < w.n, scaled = scol < w.n;          // n % 32 == 0 (tc_shape)
  const bool supplies_x = (g & 3) == c;
  // A lane past the last output rereads the last 4 (whose sums it leaves unstored): its loads need
  // no predicate, which kept ptxas's 16-row stage from fitting 80 registers.
  const std::int32_t* qw = static_cast<const std::int32_t*>(w.weight) + (in ? col : w.n - 4);
  const BF16Bits* xr = a.x + x_row(g >> 2, a.rows) * w.k;
  struct Buf {
    uint4 v[U];
    std::uint32_t zw;
    uint4 scales;  // the 8 16-bit scales of this lane's C values
  };
  float acc[2][4] = {};  // [p][e]
  const auto load = [&](int s, Buf& b) {
    const std::int64_t gi = column_of(s, a.per_group);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = static_cast<std::int64_t>(s) * U + u;
      b.v[u] = __ldcs(reinterpret_cast<const uint4*>(qw + r * w.n));
    }
    b.zw = in ? static_cast<std::uint32_t>(__ldg(w.zeros + gi * (w.n / 8) + col / 8)) : 0u;
    b.scales = scaled ? __ldg(reinterpret_cast<const uint4*>(
                            static_cast<const std::uint16_t*>(w.scale) + gi * w.n + scol))
                      : make_uint4(0, 0, 0, 0);
  };
  const auto compute = [&](int s, const Buf& b) {
    float scale[8];
    const std::uint32_t su[4] = {b.scales.x, b.scales.y, b.scales.z, b.scales.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) scale_pair(su[j], w.scale_type, scale[2 * j], scale[2 * j + 1]);
    std::uint32_t zz[4];
#pragma unroll
    for (int o = 0; o < 4; ++o) {
      // stored minus one; col % 4 == 0, so output col + o is nibble (col % 8) + o
      zz[o] = bf16_zero_pair(((b.zw >> (4 * ((col & 7) + o))) & 0xFu) + 1);
    }
    float d[2][4] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = static_cast<std::int64_t>(s) * U + u;
      const std::uint32_t word[4] = {b.v[u].x, b.v[u].y, b.v[u].z, b.v[u].w};
      std::uint32_t xb[4];
      x_pairs(__ldg(reinterpret_cast<const uint4*>(xr + 8 * r)), xb);
#pragma unroll
      for (int q = 0; q < 4; ++q) xb[q] = supplies_x ? xb[q] : 0u;
#pragma unroll
      for (int p = 0; p < 2; ++p) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          mma_bf16(d[p], pair_minus(word[2 * p], 2 * h, zz[2 * p]),
                   pair_minus(word[2 * p + 1], 2 * h, zz[2 * p + 1]),
                   pair_minus(word[2 * p], 2 * h + 1, zz[2 * p]),
                   pair_minus(word[2 * p + 1], 2 * h + 1, zz[2 * p + 1]), xb[2 * h], xb[2 * h + 1]);
        }
      }
    }
#pragma unroll
    for (int p = 0; p < 2; ++p) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[p][e] = fmaf(d[p][e], scale[4 * (e & 1) + 2 * p + (e >> 1)], acc[p][e]);
      }
    }
  };
  run_stages_one_buffer<Buf>(a.stages, a.per_warp, load, compute);
  // Value (p, e) of lane (g, c): C column n = 2c + e % 2, so x row n / 4 and the output of
  // supplier lane (g, n % 4)'s word 2p + e / 2.
  tc_finish<2>(
      acc,
      [&](int i, int l) {
        const int p = i >> 2, e = i & 3, n = 2 * (l & 3) + (e & 1);
        return TcOut{n >> 2, tile0 + 16 * (l >> 2) + 4 * (n & 3) + 2 * p + (e >> 1)};
      },
      w, a);
}

// ---- compressed-tensors int4: weight_packed [n, k/8] -------------------------------------------
// Tile: 16 TR rows (mma tile t: A rows 16t + g, 16t + g + 8); step: 128 inputs, thread c's 32 of
// them (one uint4 per row). The TR tiles share each x fragment: a tile of 16 rows reads 2 bytes of
// x (from L1) per byte of weights, one of 32 rows 1. Zero points and scales per step (a step never
// straddles a group: group % 128 == 0 or one).
template <int U, int TR>
__device__ __forceinline__ void ct4_tc(const QuantWeight& w, const TcArgs& a) {
  const BF16Bits* __restrict__ x = a.x;
  const std::int64_t rows = a.rows;
  const ChunkDiv steps_per_group = a.per_group;
  constexpr int kRows = 2 * TR;  // A rows of this thread: g + 8h, h < 2 TR
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * 16 * TR;
  const std::int64_t packed_cols = w.k / 8;
  const std::int64_t steps = w.k / 128;
  std::int64_t nrow[kRows];
  const uint4* wrow[kRows];
#pragma unroll
  for (int h = 0; h < kRows; ++h) {
    const std::int64_t n = first + g + 8 * h;
    nrow[h] = n < w.n ? n : w.n - 1;  // past the end: reread the last row, store nothing
    wrow[h] = reinterpret_cast<const uint4*>(static_cast<const std::int32_t*>(w.weight) +
                                             nrow[h] * packed_cols) +
              c;
  }
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 32 * c;
  struct Buf {
    uint4 v[U][kRows];
    std::uint32_t z[U][kRows];
    float s[U][kRows];
  };
  float acc[TR][4] = {};
  run_stages<Buf>(
      a.stages, a.per_warp,
      [&](int s, Buf& b) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const std::int64_t t = static_cast<std::int64_t>(s) * U + u;
          const bool in = t < steps;
          const std::int64_t gi = w.groups == 1 || !in ? 0 : column_of(t, steps_per_group);
#pragma unroll
          for (int h = 0; h < kRows; ++h) {
            b.v[u][h] = in ? __ldcs(wrow[h] + 4 * t) : make_uint4(0, 0, 0, 0);
            b.z[u][h] = w.zeros != nullptr && in ? field_of(w.zeros, (nrow[h] / 8) * w.groups + gi,
                                                            static_cast<int>(nrow[h] % 8) * 4, 0xFu)
                                                 : 8u;
            b.s[u][h] = in ? load_scale(w.scale, w.scale_type, nrow[h] * w.groups + gi) : 0.0f;
          }
        }
      },
      [&](int s, const Buf& b) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const std::int64_t t = static_cast<std::int64_t>(s) * U + u;
          if (t >= steps) break;
          std::uint32_t zz[kRows];
#pragma unroll
          for (int h = 0; h < kRows; ++h) zz[h] = bf16_zero_pair(b.z[u][h]);
          const uint4* xp = reinterpret_cast<const uint4*>(xr + 128 * t);
          float d[TR][4][4] = {};  // one accumulator per tile and word: independent chains of two
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            std::uint32_t xb[4];
            x_pairs(__ldg(xp + q), xb);
#pragma unroll
            for (int r = 0; r < TR; ++r) {
              const std::uint32_t w0 = part_of_uint4(b.v[u][2 * r], q),
                                  w1 = part_of_uint4(b.v[u][2 * r + 1], q);
#pragma unroll
              for (int m = 0; m < 2; ++m) {
                mma_bf16(d[r][q], pair_minus(w0, 2 * m, zz[2 * r]),
                         pair_minus(w1, 2 * m, zz[2 * r + 1]), pair_minus(w0, 2 * m + 1, zz[2 * r]),
                         pair_minus(w1, 2 * m + 1, zz[2 * r + 1]), xb[2 * m], xb[2 * m + 1]);
              }
            }
          }
#pragma unroll
          for (int r = 0; r < TR; ++r) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              acc[r][e] = fmaf((d[r][0][e] + d[r][1][e]) + (d[r][2][e] + d[r][3][e]),
                               b.s[u][2 * r + (e >> 1)], acc[r][e]);
            }
          }
        }
      });
  tc_finish<TR>(acc,
                mma_c_out([&](int r, int e, int gg) { return first + 16 * r + gg + 8 * (e >> 1); }),
                w, a);
}

// ---- AWQ: qweight [k, n/8], nibble i of word (k, col) = output 8 col + order[i]
// ------------------ Tile: 8 word columns (64 outputs) as 4 mma tiles; step: 16 inputs. Thread (g,
// c) reads column tile * 8 + g at rows 16t + 4c .. + 3; __byte_perm of the words of rows k, k + 1
// puts their low (high) halves side by side, so pair_minus(., T) is the pair (q[k], q[k + 1]) of
// nibble T (T + 4): mma tile T's A rows g and g + 8 are the outputs of nibbles T and T + 4, its
// inputs (2c, 2c + 1) the rows 4c, 4c + 1 and (2c + 8, 2c + 9) the rows 4c + 2, 4c + 3, which are
// also the x pairs as stored (one 8-byte load). A stage (U steps) lies inside one scale group.
template <int U>
__device__ __forceinline__ void awq_tc(const QuantWeight& w, const TcArgs& a) {
  const BF16Bits* __restrict__ x = a.x;
  const std::int64_t rows = a.rows;
  const ChunkDiv stages_per_group = a.per_group;
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const std::int64_t words = w.n / 8;
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * 8 + g;
  const std::int32_t* qw = static_cast<const std::int32_t*>(w.weight) + 4 * c * words + col;
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 4 * c;
  using Buf = GroupStage<U, 8>;  // scales by output 8 col + j
  float acc[4][4] = {};
  run_stages<Buf>(
      a.stages, a.per_warp,
      [&](int s, Buf& b) {
        load_group_stage(b, s, stages_per_group, w, words, col, 8 * col,
                         [&](std::int64_t t, std::uint32_t(&v)[4]) {
#pragma unroll
                           for (int e = 0; e < 4; ++e) {
                             v[e] = static_cast<std::uint32_t>(__ldcs(qw + (16 * t + e) * words));
                           }
                         });
      },
      [&](int s, const Buf& b) {
        std::uint32_t za[4], zb[4];
#pragma unroll
        for (int T = 0; T < 4; ++T) {
          za[T] = bf16_zero_pair((b.zw >> (4 * T)) & 0xFu);
          zb[T] = bf16_zero_pair((b.zw >> (4 * T + 16)) & 0xFu);
        }
        float d[4][4] = {};  // one accumulator per mma tile: four independent chains of U
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const std::int64_t t = static_cast<std::int64_t>(s) * U + u;
          const uint2 xv = __ldg(reinterpret_cast<const uint2*>(xr + 16 * t));
          const std::uint32_t lo01 = __byte_perm(b.v[u][0], b.v[u][1], 0x5410),
                              hi01 = __byte_perm(b.v[u][0], b.v[u][1], 0x7632),
                              lo23 = __byte_perm(b.v[u][2], b.v[u][3], 0x5410),
                              hi23 = __byte_perm(b.v[u][2], b.v[u][3], 0x7632);
#pragma unroll
          for (int T = 0; T < 4; ++T) {
            mma_bf16(d[T], pair_minus(lo01, T, za[T]), pair_minus(hi01, T, zb[T]),
                     pair_minus(lo23, T, za[T]), pair_minus(hi23, T, zb[T]), xv.x, xv.y);
          }
        }
#pragma unroll
        for (int T = 0; T < 4; ++T) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[T][e] = fmaf(d[T][e], b.s[awq_order(T + 4 * (e >> 1))], acc[T][e]);
          }
        }
      });
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * 8;
  tc_finish<4>(acc, mma_c_out([&](int T, int e, int gg) {
                 return 8 * (col0 + gg) + awq_order(T + 4 * (e >> 1));
               }),
               w, a);
}

// ---- AWQ, wide tiles (session 15; 1-2 rows of x): qweight [k, n/8] ------------------------------
// gptq4_wide's layout for AWQ's: lane l owns word column 32 t + l (8 outputs) of a 256-output tile,
// so a warp reads 128 contiguous bytes of an input row per load instead of awq_tc's eight runs of
// 32. A step is 4 input rows: __byte_perm of rows (r, r + 1) and (r + 2, r + 3) gives, per nibble
// T, the code pairs of A row g (nibble T: k slots 2c, 2c + 1 and 2c + 8, 2c + 9 are rows r .. r +
// 3) and of A row g + 8 (nibble T + 4), x's pairs lie as stored (one 8-byte load), and B is
// diagonal in the supplier as in gptq4_wide: C[m][n] sums lane (m % 8, n % 4)'s products (word
// column 4 (m % 8) + n % 4, nibble T + 4 (m / 8)) with x row n / 4. A stage is U steps of one scale
// group; its sums are scaled once. Its 4 x 4 accumulators (against gptq4_wide's 2 x 4) are why
// tc_grid_wide gives it stages of 4 steps unless told (TcOptions::wide_rows).
template <int U>
__device__ __forceinline__ void awq_wide(const QuantWeight& w, const TcArgs& a) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const std::int64_t words = w.n / 8;
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * 32;  // the tile's first word
  const std::int64_t col = col0 + lane;                                  // this lane's word column
  const std::int64_t scol = col0 + 4 * g + 2 * (c & 1);  // its C values' columns: scol, scol + 1
  const bool in = col < words, scaled0 = scol < words, scaled1 = scol + 1 < words;
  const bool supplies_x = (g & 3) == c;
  // Past the last column: reread the last one (unstored), unpredicated loads as in gptq4_wide.
  const std::uint32_t* qw = static_cast<const std::uint32_t*>(w.weight) + (in ? col : words - 1);
  const BF16Bits* xr = a.x + x_row(g >> 2, a.rows) * w.k;
  const auto* scales = static_cast<const std::uint16_t*>(w.scale);
  struct Buf {
    std::uint32_t v[4 * U];
    std::uint32_t zw;
    uint4 scales[2];  // the 16 16-bit scales of columns scol, scol + 1
  };
  float acc[4][4] = {};  // [T][e]
  const auto load = [&](int s, Buf& b) {
    const std::int64_t gi = column_of(s, a.per_group);
#pragma unroll
    for (int j = 0; j < 4 * U; ++j) {
      const std::int64_t r = static_cast<std::int64_t>(s) * 4 * U + j;
      b.v[j] = __ldcs(qw + r * words);
    }
    b.zw = in ? static_cast<std::uint32_t>(__ldg(w.zeros + gi * words + col)) : 0u;
    const uint4* srow = reinterpret_cast<const uint4*>(scales + gi * w.n + 8 * scol);
    b.scales[0] = scaled0 ? __ldg(srow) : make_uint4(0, 0, 0, 0);
    b.scales[1] = scaled1 ? __ldg(srow + 1) : make_uint4(0, 0, 0, 0);
  };
  const auto compute = [&](int s, const Buf& b) {
    std::uint32_t za[4], zb[4];
#pragma unroll
    for (int T = 0; T < 4; ++T) {
      za[T] = bf16_zero_pair((b.zw >> (4 * T)) & 0xFu);
      zb[T] = bf16_zero_pair((b.zw >> (4 * T + 16)) & 0xFu);
    }
    float d[4][4] = {};  // one accumulator per nibble pair T: four independent chains of U
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = (static_cast<std::int64_t>(s) * U + u) * 4;
      const uint2 xv = __ldg(reinterpret_cast<const uint2*>(xr + r));
      const std::uint32_t b0 = supplies_x ? xv.x : 0u, b1 = supplies_x ? xv.y : 0u;
      const std::uint32_t* v = b.v + 4 * u;
      const std::uint32_t lo01 = __byte_perm(v[0], v[1], 0x5410),
                          hi01 = __byte_perm(v[0], v[1], 0x7632),
                          lo23 = __byte_perm(v[2], v[3], 0x5410),
                          hi23 = __byte_perm(v[2], v[3], 0x7632);
#pragma unroll
      for (int T = 0; T < 4; ++T) {
        mma_bf16(d[T], pair_minus(lo01, T, za[T]), pair_minus(hi01, T, zb[T]),
                 pair_minus(lo23, T, za[T]), pair_minus(hi23, T, zb[T]), b0, b1);
      }
    }
    const std::uint32_t su[8] = {b.scales[0].x, b.scales[0].y, b.scales[0].z, b.scales[0].w,
                                 b.scales[1].x, b.scales[1].y, b.scales[1].z, b.scales[1].w};
    // Value e of nibble pair T: column scol + e % 2, nibble T + 4 (e / 2), i.e. output order
    // 2T + e / 2, whose scale is su[T] (column scol) or su[4 + T] (scol + 1), low half for e < 2.
#pragma unroll
    for (int T = 0; T < 4; ++T) {
      float sc[4];  // [e]
      scale_pair(su[T], w.scale_type, sc[0], sc[2]);
      scale_pair(su[4 + T], w.scale_type, sc[1], sc[3]);
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[T][e] = fmaf(d[T][e], sc[e], acc[T][e]);
    }
  };
  run_stages_one_buffer<Buf>(a.stages, a.per_warp, load, compute);
  // Value (T, e) of lane (g, c): C column n = 2c + e % 2, so x row n / 4, word column 4g + n % 4,
  // nibble T + 4 (e / 2).
  tc_finish<4>(
      acc,
      [&](int i, int l) {
        const int T = i >> 2, e = i & 3, n = 2 * (l & 3) + (e & 1);
        const std::int64_t wc = col0 + 4 * (l >> 2) + (n & 3);
        return TcOut{n >> 2, 8 * wc + awq_order(T + 4 * (e >> 1))};
      },
      w, a);
}

// ---- FP8 (float8_e4m3fn [n, k], 128 x 128 block or one scale)
// ------------------------------------ Tile: 16 rows (A rows g, g + 8); step: 64 inputs, thread c's
// 16 bytes of each row. Word q of the 16 bytes (inputs 4q .. 4q + 3) is one mma: A pairs (bytes 0,
// 2) and (1, 3) of rows g and g + 8 (fp8_pair_bf16: the values times 2^-120), B the same pairs of x
// times 2^64 (one PRMT each), so the float32 sums are 2^-56 times the true ones, far from the
// denormal range; 2^56 goes back with the step's block scale (a tile of 16 rows lies in one block
// row: block_out % 16 == 0; a step in one block column: block_in % 64 == 0).
template <int U>
__device__ __forceinline__ void fp8_tc(const QuantWeight& w, const TcArgs& a) {
  const BF16Bits* __restrict__ x = a.x;
  const std::int64_t rows = a.rows;
  const ChunkDiv steps_per_block = a.per_group;
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * 16;
  const std::int64_t steps = w.k / 64;
  const uint4* wrow[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const std::int64_t n = first + g + 8 * h;
    wrow[h] = reinterpret_cast<const uint4*>(static_cast<const std::uint8_t*>(w.weight) +
                                             (n < w.n ? n : w.n - 1) * w.k) +
              c;  // step t: + 4t
  }
  const auto* scale = static_cast<const float*>(w.scale);
  const bool blocked = w.block_out != 0;
  const float* srow =
      blocked ? scale + (first / w.block_out) * ((w.k + w.block_in - 1) / w.block_in) : scale;
  const BF16Bits* xr = x + x_row(g, rows) * w.k + 16 * c;
  struct Buf {
    uint4 v[U][2];
    float s[U];
  };
  float acc[1][4] = {};
  run_stages<Buf>(
      a.stages, a.per_warp,
      [&](int s, Buf& b) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const std::int64_t t = static_cast<std::int64_t>(s) * U + u;
          const bool in = t < steps;
#pragma unroll
          for (int h = 0; h < 2; ++h)
            b.v[u][h] = in ? __ldcs(wrow[h] + 4 * t) : make_uint4(0, 0, 0, 0);
          b.s[u] = in ? __ldg(srow + (blocked ? column_of(t, steps_per_block) : 0)) : 0.0f;
        }
      },
      [&](int s, const Buf& b) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const std::int64_t t = static_cast<std::int64_t>(s) * U + u;
          if (t >= steps) break;
          const uint4* xp = reinterpret_cast<const uint4*>(xr + 64 * t);
          const uint4 xa = __ldg(xp), xb = __ldg(xp + 1);
          const std::uint32_t xw[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
          float d[4][4] = {};  // one accumulator per word
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const std::uint32_t w0 = part_of_uint4(b.v[u][0], q), w1 = part_of_uint4(b.v[u][1], q);
            const std::uint32_t lo = bf16_pair_times_2_64(xw[2 * q]),
                                hi = bf16_pair_times_2_64(xw[2 * q + 1]);
            mma_bf16(d[q], fp8_pair_bf16<0>(w0), fp8_pair_bf16<0>(w1), fp8_pair_bf16<1>(w0),
                     fp8_pair_bf16<1>(w1), __byte_perm(lo, hi, 0x5410),
                     __byte_perm(lo, hi, 0x7632));
          }
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[0][e] =
                fmaf((d[0][e] + d[1][e]) + (d[2][e] + d[3][e]), b.s[u] * 0x1p56f, acc[0][e]);
          }
        }
      });
  tc_finish<1>(acc, mma_c_out([&](int, int e, int gg) { return first + gg + 8 * (e >> 1); }), w, a);
}

// ---- the kernels: one layer (blockIdx.x its tile), or a group of layers of one format that read
// the same x (q, k, v): blockIdx.z the layer, whose blocks past its tiles leave at once. Every
// layer of a group has the splits (gridDim.y) and stages of the others (the same k and groups);
// its own workspace and tickets (TcArgs).
template <int U>
struct Gptq4Tc {
  static __device__ __forceinline__ void run(const QuantWeight& w, const TcArgs& a) {
    gptq4_tc<U>(w, a);
  }
};
template <int U>
struct Gptq4Wide {
  static __device__ __forceinline__ void run(const QuantWeight& w, const TcArgs& a) {
    gptq4_wide<U>(w, a);
  }
  // Blocks per SM the registers must allow: the latency is hidden by warps, not by a second buffer
  // (ptxas -v, sm_90: 70, 80 and 80 registers for stages of 4, 8 and 16 rows, the last with 8 bytes
  // of spill; with the scales loaded and converted at the start of the stage's compute instead of
  // as raw bits with the weights, the 16-row stage took 128 registers at 2 blocks, 144 unbounded).
  static constexpr int kMinBlocks = 3;
};
template <int U, int TR>
struct Ct4Tc {
  static __device__ __forceinline__ void run(const QuantWeight& w, const TcArgs& a) {
    ct4_tc<U, TR>(w, a);
  }
};
template <int U>
struct AwqWide {
  static __device__ __forceinline__ void run(const QuantWeight& w, const TcArgs& a) {
    awq_wide<U>(w, a);
  }
  // As Gptq4Wide's at 4 steps (ptxas -v, sm_90: 80 registers, no spill); 8 steps spilled 164
  // bytes at 3 blocks, so they get 2 (the sweep's tv=8).
  static constexpr int kMinBlocks = U >= 8 ? 2 : 3;
};
template <int U>
struct AwqTc {
  static __device__ __forceinline__ void run(const QuantWeight& w, const TcArgs& a) {
    awq_tc<U>(w, a);
  }
};
template <int U>
struct Fp8Tc {
  static __device__ __forceinline__ void run(const QuantWeight& w, const TcArgs& a) {
    fp8_tc<U>(w, a);
  }
};

// Body::kMinBlocks where a body has one (the blocks per SM its registers must allow), else 1.
template <typename Body, typename = void>
struct MinBlocks {
  static constexpr int value = 1;
};
template <typename Body>
struct MinBlocks<Body, std::void_t<decltype(Body::kMinBlocks)>> {
  static constexpr int value = Body::kMinBlocks;
};

template <typename Body>
__global__ void __launch_bounds__(kTcWarps * 32, MinBlocks<Body>::value)
    tc_kernel(QuantWeight w, TcArgs a) {
  Body::run(w, a);
}

struct TcGroup {
  QuantWeight w[kQuantGroupMax];
  TcArgs a[kQuantGroupMax];
  unsigned tiles[kQuantGroupMax];
};
static_assert(kQuantGroupMax == 3, "tc_group_kernel picks one of three layers");

template <typename Body>
__global__ void __launch_bounds__(kTcWarps * 32, MinBlocks<Body>::value)
    tc_group_kernel(TcGroup g) {
  // Constant indices only: a kernel parameter indexed at run time would be copied to local memory.
  if (blockIdx.z == 0) {
    if (blockIdx.x < g.tiles[0]) Body::run(g.w[0], g.a[0]);
  } else if (blockIdx.z == 1) {
    if (blockIdx.x < g.tiles[1]) Body::run(g.w[1], g.a[1]);
  } else if (blockIdx.x < g.tiles[2]) {
    Body::run(g.w[2], g.a[2]);
  }
}

// ---- host side ----------------------------------------------------------------------------------

// The geometry of one layer: output tiles, steps of the inputs, and the steps a stage may hold
// (a stage of GPTQ / AWQ shares one group's zero points and scales).
struct TcShape {
  std::int64_t tiles = 0;
  std::int64_t steps = 0;
  std::int64_t steps_per_group = 1;  // GPTQ, AWQ: steps of one scale group
  bool stage_in_group = true;
  // The wide tiles (1-2 rows): GPTQ's of 128 outputs (a step is one packed row), AWQ's of 256
  // (a step is 4 input rows): 16 bytes of a lane's weights either way.
  bool wide = false;
  // The most steps a wide stage takes unless TcOptions::wide_rows says (AWQ's 16 accumulators
  // leave 4 steps' words in the registers that 3 blocks per SM allow: AwqWide).
  int wide_steps = 16;
};

// The wide tiles take 1-2 rows of x and 16-bit scales (loaded raw with the weights).
bool wide_rows_ok(const QuantWeight& w, std::int64_t rows) {
  return rows <= 2 && w.scale_type != Type::Float32;
}

bool tc_shape(const QuantWeight& w, const TcOptions& options, std::int64_t rows, TcShape* shape) {
  if (w.kind == QuantKind::FP8) {
    if (w.k % 64 != 0 || (w.block_out != 0 && (w.block_out % 16 != 0 || w.block_in % 64 != 0)) ||
        !aligned16(w.weight)) {
      return false;
    }
    *shape = {(w.n + 15) / 16, w.k / 64, w.block_out != 0 ? w.block_in / 64 : w.k / 64, false};
    return true;
  }
  if (w.bits != 4) return false;
  switch (w.kind) {
    case QuantKind::GPTQ:
      if (!w.g_idx_sequential || w.n % 32 != 0 || w.k % 32 != 0 || w.group % 32 != 0 ||
          w.k % w.group != 0 || !aligned16(w.weight) || !aligned16(w.scale)) {
        return false;
      }
      *shape = options.gptq_wide && wide_rows_ok(w, rows)
                   ? TcShape{(w.n + 127) / 128, w.k / 8, w.group / 8, true, true}
                   : TcShape{w.n / 32, w.k / 32, w.group / 32, true};
      return true;
    case QuantKind::Compressed:
      if (w.k % 128 != 0 || (w.groups != 1 && w.group % 128 != 0) || !aligned16(w.weight)) {
        return false;
      }
      *shape = {(w.n + 16 * options.ct_tiles - 1) / (16 * options.ct_tiles), w.k / 128,
                w.groups == 1 ? w.k / 128 : w.group / 128, false};
      return true;
    case QuantKind::AWQ:
      if (w.n % 8 != 0 || w.k % 16 != 0 || w.group % 16 != 0 || w.k % w.group != 0 ||
          !aligned16(w.scale)) {
        return false;
      }
      if (options.awq_wide && wide_rows_ok(w, rows)) {
        *shape = {(w.n / 8 + 31) / 32, w.k / 4, w.group / 4, true, true, 4};
        return true;
      }
      if ((w.n / 8) % 8 != 0) return false;  // whole 64-output tiles
      *shape = {w.n / 64, w.k / 16, w.group / 16, true};
      return true;
    default:
      return false;
  }
}

// Steps per stage: the configured U, lowered until a stage fits inside a group where it must.
int tc_unroll(const TcShape& shape, int want) {
  int u = want;
  while (u > 1 && shape.stage_in_group && shape.steps_per_group % u != 0) u /= 2;
  return u;
}

struct TcGrid {
  int unroll = 1;
  int stages = 0;
  int per_warp = 0;
  std::int64_t splits = 1;
  bool cluster = false;  // the splits meet in distributed shared memory
};

// Thread block clusters (sm_90 and later) on the current device.
bool clusters_available() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 9;
}

// A cluster of the splits holds at most this many blocks (the portable cluster size).
constexpr std::int64_t kMaxClusterSplits = 8;

// The wide GPTQ tiles: one stage per warp (every stage's loads requested at once), of 16 packed
// rows where that still gives every SM 16 warps, else 8, else 4 (session 14's probe, H100: 4096 x
// 4096 read at 1.47 TB/s with 8-row stages, 1.38 with 16; 11008 x 4096 at 2.14 with 16, 1.97 with
// 8); TcOptions::wide_rows overrides the choice (the sweep).
TcGrid tc_grid_wide(const TcShape& shape, const TcOptions& options, int sms) {
  int want = shape.wide_steps;
  while (want > 4 && shape.tiles * ((shape.steps + want - 1) / want) < 16LL * sms) want /= 2;
  if (options.wide_rows == 4 || options.wide_rows == 8 || options.wide_rows == 16) {
    want = options.wide_rows;
  }
  TcGrid grid;
  grid.unroll = tc_unroll(shape, want);
  grid.stages = static_cast<int>((shape.steps + grid.unroll - 1) / grid.unroll);
  std::int64_t splits =
      options.splits > 0 ? options.splits : (grid.stages + kTcWarps - 1) / kTcWarps;
  if (options.cluster && splits > kMaxClusterSplits) splits = kMaxClusterSplits;
  const std::int64_t most = (grid.stages + kTcWarps - 1) / kTcWarps;
  grid.splits = splits < 1 ? 1 : splits < most ? splits : most;
  grid.cluster = options.cluster && grid.splits > 1 && clusters_available();
  const std::int64_t warps = grid.splits * kTcWarps;
  grid.per_warp = static_cast<int>((grid.stages + warps - 1) / warps);
  return grid;
}

TcGrid tc_grid(const TcShape& shape, const TcOptions& options, int sms) {
  if (shape.wide) return tc_grid_wide(shape, options, sms);
  TcGrid grid;
  grid.unroll = tc_unroll(shape, options.unroll);
  grid.stages = static_cast<int>((shape.steps + grid.unroll - 1) / grid.unroll);
  const std::int64_t want =
      options.splits > 0
          ? options.splits
          : (static_cast<std::int64_t>(options.blocks_per_sm) * sms + shape.tiles - 1) /
                shape.tiles;
  const std::int64_t most = grid.stages / kTcWarps;  // every warp at least one stage
  grid.splits = want < most ? want : most;
  if (options.cluster && grid.splits > kMaxClusterSplits) grid.splits = kMaxClusterSplits;
  if (grid.splits < 1) grid.splits = 1;
  grid.cluster = options.cluster && grid.splits > 1 && clusters_available();
  const std::int64_t warps = grid.splits * kTcWarps;
  grid.per_warp = static_cast<int>((grid.stages + warps - 1) / warps);
  return grid;
}

// launch_maybe_pdl with the splits along y as one thread block cluster when grid.cluster.
template <typename... Params, typename... Args>
cudaError_t tc_launch(void (*kernel)(Params...), dim3 blocks, const TcGrid& grid, bool pdl,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = blocks;
  config.blockDim = dim3(kTcWarps * 32);
  config.stream = stream;
  cudaLaunchAttribute attribute[2];
  int count = 0;
  if (pdl) {
    attribute[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  if (grid.cluster) {
    attribute[count].id = cudaLaunchAttributeClusterDimension;
    attribute[count].val.clusterDim.x = 1;
    attribute[count].val.clusterDim.y = static_cast<unsigned>(grid.splits);
    attribute[count].val.clusterDim.z = 1;
    ++count;
  }
  config.attrs = attribute;
  config.numAttrs = count;
  const cudaError_t status = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (status != cudaSuccess) {
    cudaGetLastError();  // a refused launch must not surface again at the next launch's check
    return status;
  }
  return launched();
}

// One layer (count 1: w[0], a[0]) or a group, with the kernel of w[0]'s format.
template <int U>
cudaError_t tc_launch_u(const QuantWeight* w, const TcArgs* args, const unsigned* tiles, int count,
                        const TcShape& shape, const TcGrid& grid, const TcOptions& options,
                        cudaStream_t stream) {
  TcGroup g = {};
  unsigned most = 0;
  for (int i = 0; i < count; ++i) {
    g.w[i] = w[i];
    g.a[i] = args[i];
    g.a[i].stages = grid.stages;
    g.a[i].per_warp = grid.per_warp;
    g.a[i].cluster = grid.cluster;
    // GPTQ / AWQ count stages per group (a stage lies in one group), the others steps.
    g.a[i].per_group =
        chunk_div(shape.stage_in_group ? shape.steps_per_group / U : shape.steps_per_group);
    g.tiles[i] = tiles[i];
    most = tiles[i] > most ? tiles[i] : most;
  }
  const dim3 blocks(most, static_cast<unsigned>(grid.splits), static_cast<unsigned>(count));
  const auto launch = [&](auto body) {
    using Body = decltype(body);
    if (count == 1)
      return tc_launch(tc_kernel<Body>, blocks, grid, w[0].pdl, stream, g.w[0], g.a[0]);
    return tc_launch(tc_group_kernel<Body>, blocks, grid, w[0].pdl, stream, g);
  };
  if (shape.wide) {
    // tc_grid_wide picks U = 4, 8 or 16 (GPTQ groups of 32k and up, AWQ's of 16k).
    if constexpr (U >= 4) {
      return w[0].kind == QuantKind::AWQ ? launch(AwqWide<U>{}) : launch(Gptq4Wide<U>{});
    }
    return cudaErrorInvalidValue;
  }
  if constexpr (U <= 4) {
    switch (w[0].kind) {
      case QuantKind::GPTQ:
        return launch(Gptq4Tc<U>{});
      case QuantKind::Compressed:
        return options.ct_tiles == 2 ? launch(Ct4Tc<U, 2>{}) : launch(Ct4Tc<U, 1>{});
      case QuantKind::FP8:
        return launch(Fp8Tc<U>{});
      default:
        return launch(AwqTc<U>{});
    }
  }
  return cudaErrorInvalidValue;
}

// The shape of a group (count layers): every layer's own, the tiles summed; false unless every
// layer takes the kernels and they agree on the format, k and the steps of a group.
bool group_shape(const QuantWeight* w, int count, const TcOptions& options, std::int64_t rows,
                 TcShape* shape, unsigned* tiles) {
  if (count < 1 || count > kQuantGroupMax) return false;
  for (int i = 0; i < count; ++i) {
    TcShape one;
    if (!tc_shape(w[i], options, rows, &one)) return false;
    if (i == 0) {
      *shape = one;
      shape->tiles = 0;
    } else if (w[i].kind != w[0].kind || w[i].k != w[0].k || one.steps != shape->steps ||
               one.steps_per_group != shape->steps_per_group || w[i].pdl != w[0].pdl) {
      return false;
    }
    tiles[i] = static_cast<unsigned>(one.tiles);
    shape->tiles += one.tiles;
  }
  return true;
}

}  // namespace

bool quant_tc_takes(const QuantWeight& w, const void* x, Type x_type, std::int64_t rows) {
  TcShape shape;
  return rows >= 1 && rows <= 8 && x_type == Type::BFloat16 && x_vector_ok(x, w.k, x_type) &&
         tc_shape(w, TcOptions{}, rows, &shape);
}

bool quant_tc_group_takes(const QuantWeight* w, int count, const void* x, Type x_type,
                          std::int64_t rows) {
  TcShape shape;
  unsigned tiles[kQuantGroupMax];
  if (!group_shape(w, count, TcOptions{}, rows, &shape, tiles)) return false;
  for (int i = 0; i < count; ++i) {
    if (!quant_tc_takes(w[i], x, x_type, rows) || w[i].residual != nullptr ||
        w[i].gate != nullptr || w[i].scale_type != w[0].scale_type || w[i].bits != w[0].bits ||
        w[i].block_out != w[0].block_out || w[i].block_in != w[0].block_in ||
        (w[i].zeros == nullptr) != (w[0].zeros == nullptr)) {
      return false;
    }
  }
  return true;
}

QuantGemvScratch quant_tc_group_scratch(const QuantWeight* w, int count, std::int64_t rows,
                                        const TcOptions& options, int sms) {
  TcShape shape;
  unsigned tiles[kQuantGroupMax];
  if (rows < 1 || rows > 8 || !group_shape(w, count, options, rows, &shape, tiles)) return {};
  // Reserved with clusters too (a device without them takes the workspace).
  const TcGrid grid = tc_grid(shape, options, sms);
  if (grid.splits <= 1) return {};
  std::int64_t n = 0;
  for (int i = 0; i < count; ++i) n += w[i].n;
  return {grid.splits * rows * n, shape.tiles};
}

QuantGemvScratch quant_tc_scratch(const QuantWeight& w, std::int64_t rows, const TcOptions& options,
                                  int sms) {
  return quant_tc_group_scratch(&w, 1, rows, options, sms);
}

cudaError_t quant_tc_gemv_group(const QuantWeight* w, int count, const void* x, std::int64_t rows,
                                const void* const* bias, void* const* out, float* ws,
                                unsigned* tickets, const TcOptions& options, int sms,
                                cudaStream_t stream) {
  TcShape shape;
  unsigned tiles[kQuantGroupMax];
  if (rows < 1 || rows > 8 || !group_shape(w, count, options, rows, &shape, tiles)) {
    return cudaErrorInvalidValue;
  }
  const TcGrid grid = tc_grid(shape, options, sms);
  if (grid.splits > 1 && !grid.cluster && (ws == nullptr || tickets == nullptr)) {
    return cudaErrorInvalidValue;
  }
  TcArgs a[kQuantGroupMax];
  std::int64_t ws_at = 0, tickets_at = 0;
  for (int i = 0; i < count; ++i) {
    a[i].x = static_cast<const BF16Bits*>(x);
    a[i].rows = rows;
    a[i].bias = static_cast<const BF16Bits*>(bias[i]);
    a[i].out = static_cast<BF16Bits*>(out[i]);
    // Each layer's own slice of the workspace ([split][row][n]) and its own tickets.
    a[i].ws = ws != nullptr ? ws + ws_at : nullptr;
    a[i].tickets = tickets != nullptr ? tickets + tickets_at : nullptr;
    ws_at += grid.splits * rows * w[i].n;
    tickets_at += tiles[i];
  }
  const auto launch = [&](auto u) {
    return tc_launch_u<decltype(u)::value>(w, a, tiles, count, shape, grid, options, stream);
  };
  switch (grid.unroll) {
    case 16:
      return launch(std::integral_constant<int, 16>{});
    case 8:
      return launch(std::integral_constant<int, 8>{});
    case 4:
      return launch(std::integral_constant<int, 4>{});
    case 2:
      return launch(std::integral_constant<int, 2>{});
    default:
      return launch(std::integral_constant<int, 1>{});
  }
}

cudaError_t quant_tc_gemv(const QuantWeight& w, const void* x, std::int64_t rows, const void* bias,
                          void* out, float* ws, unsigned* tickets, const TcOptions& options,
                          int sms, cudaStream_t stream) {
  return quant_tc_gemv_group(&w, 1, x, rows, &bias, &out, ws, tickets, options, sms, stream);
}

}  // namespace strata::cuda::kernels
