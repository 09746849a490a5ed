#pragma once
// The decode GEMV kernel (kernels::gemv, kernels.h), shared by the translation units that
// instantiate it: matvec.cu dispatches, matvec_b*.cu instantiate one batch group each and
// matvec_sweep.cu the tuning-sweep shapes, so a parallel build compiles them side by side
// instead of one file holding every unrolled instantiation.
//
// Bound by reading the weight once, so the kernel is built around keeping HBM busy:
//  - Each warp owns R weight rows and computes them for every input row: the weight is read once
//    whatever the batch, the input rows (a few KB, L1/L2 resident) are reread per warp.
//  - 16-byte loads, U of them per weight row in flight per lane before the first use.
//  - Small blocks (4 warps) so the grid spreads evenly over the SMs even for 1024-row matrices.
//  - Up to three weights in one launch (q/k/v), and two epilogues that save a kernel each:
//    residual add (o_proj, down_proj) and SiLU(gate) * up (gate/up as one launch).
//  - Optionally the RMSNorm of x in the prologue (Norm) and programmatic dependent launch: the
//    first weight lines are fetched into L2 before waiting for the kernel that produces x.
// Every product accumulates in float32 and is rounded once to T, then each epilogue rounds where
// the unfused ops round (so the fused step and the module path agree bit for bit in the
// epilogues: SiLU result, product and residual sum are each rounded to T, as the separate ops do).

#include <cstdint>
#include <type_traits>

#include "cuda/decode_rope.cuh"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels::gemv_detail {

inline constexpr int kWarps = 4;  // warps per block

// Defaults, from the H100 sweep of device call 1 (cuda_gemv_bench --sweep, docs/decode-graph.md).
// Rows per warp: every input chunk a lane loads serves all of them, so more rows cut the (L1)
// input traffic per weight byte, which grows with the batch; two keep small matrices spread.
// 16-byte loads per weight row in flight per lane: 8 at batch 1; at batch 2 four read 7B's
// o_proj at 85% of the copy rate (65% with 8) and down_proj at 88% (77%); from batch 5 two
// (the accumulators take the registers: batch 8 q/k/v read at 76% with two, 62% with four).
__host__ __device__ constexpr int default_unroll(int batch) {
  return batch == 1 ? 8 : batch <= 4 ? 4 : 2;
}
__host__ __device__ constexpr int default_rows(int batch) { return batch <= 2 ? 2 : 4; }
// Weight passes fetched into L2 before the PDL wait: fetching ahead slowed batch 1 (7B o_proj
// 66% with two passes, 76% with none: the lines compete with the running kernel's stream and
// are evicted before use), one pass helped batch 2 a little, two batches 4-8.
__host__ __device__ constexpr int default_prefetch(int batch) {
  return batch == 1 ? 0 : batch == 2 ? 1 : 2;
}

__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// float16 to float32 in one instruction for the products: the conversion is exact, the same value
// as float_convert.cuh's branchy bit-exact version for every finite and infinite input (a NaN
// only may carry another payload, and any NaN makes the sum NaN). The bit version, unrolled over
// 8 inputs x 4 rows x 4 loads, made the batch-8 float16 kernel spill and take most of the
// file's compile time.
template <typename T>
__device__ __forceinline__ float product_float(T v) {
  return to_float(v);
}
template <>
__device__ __forceinline__ float product_float<HalfBits>(HalfBits v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}

template <typename T>
__device__ __forceinline__ float dot16(const uint4& w, const uint4& x) {
  constexpr int kPer = 16 / sizeof(T);
  const T* wp = reinterpret_cast<const T*>(&w);
  const T* xp = reinterpret_cast<const T*>(&x);
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc = fmaf(product_float(wp[e]), product_float(xp[e]), acc);
  return acc;
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

struct Task {
  int group;
  std::int64_t row;  // first output row
};

// GemvEpilogue::RopeKv: groups 0 and 1 (q, k) are cut into rotation pairs (rows d and
// d + head_dim / 2 of a head), R / 2 of them per warp task; group 2 (v) into R rows per task.
// A task's `row` is then its first pair (q, k) or row (v).
// Rope: the kernel is RopeKv's (a template flag, so the other kernels compile as without it).
template <bool Rope>
__device__ __forceinline__ bool rope_paired(int group) {
  return Rope && group < 2;
}
// Pairs or rows of a group (task_active's bound).
template <bool Rope>
__device__ __forceinline__ std::int64_t task_units(const Gemv& g, int group) {
  return rope_paired<Rope>(group) ? g.groups[group].n / 2 : g.groups[group].n;
}

template <int R, bool Rope>
__device__ __forceinline__ Task task_of(const Gemv& g, std::int64_t warp) {
  if (g.epilogue == GemvEpilogue::SiluMul) return {0, warp * (R / 2)};
  for (int i = 0; i < g.group_count; ++i) {
    const int per = rope_paired<Rope>(i) ? R / 2 : R;
    const std::int64_t tasks = (task_units<Rope>(g, i) + per - 1) / per;
    if (warp < tasks) return {i, warp * per};
    warp -= tasks;
  }
  return {-1, 0};
}

// rms_norm(x) of the B rows into `dst` ([B, k] packs in shared memory), every thread of the
// block taking part. The sum of squares replays rms_norm_kernel (norm.cu): its kRmsNormThreads
// threads each sum the packs p = t, t + kRmsNormThreads, ... in order, then warp sums, then the
// first warp sums the warps' results; here each of the kWarps * 32 threads plays
// kRmsNormThreads / (kWarps * 32) of those threads, so every partial and the total are the same.
// Rows `len` elements long at src + b * ld into dst + b * dst_ld (16-byte packs); `Coherent`
// reads the rows through L2 only (__ldcg: other blocks of this grid wrote them).
template <typename T, int B, bool Coherent>
__device__ __forceinline__ void norm_rows(const T* src, std::int64_t ld, std::int64_t len,
                                          const void* gamma_ptr, float eps, uint4* dst,
                                          std::int64_t dst_ld) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kPlays = kRmsNormThreads / kThreads;
  static_assert(kRmsNormThreads % kThreads == 0 && kRmsNormThreads / 32 <= 32);
  constexpr int kPer = 16 / static_cast<int>(sizeof(T));
  __shared__ float scratch[kRmsNormThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::int64_t packs = len / kPer;
  const auto* gamma = static_cast<const uint4*>(gamma_ptr);
  const auto load = [](const uint4* p) {
    if constexpr (Coherent) {
      return __ldcg(p);
    } else {
      return *p;
    }
  };
#pragma unroll 1
  for (int b = 0; b < B; ++b) {
    const auto* row = reinterpret_cast<const uint4*>(src + b * ld);
#pragma unroll
    for (int i = 0; i < kPlays; ++i) {
      float sq = 0.0f;
      for (std::int64_t p = threadIdx.x + i * kThreads; p < packs; p += kRmsNormThreads) {
        const uint4 raw = load(row + p);
        const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int e = 0; e < kPer; ++e) sq += to_float(v[e]) * to_float(v[e]);
      }
      sq = warp_sum(sq);
      if (lane == 0) scratch[warp + i * kWarps] = sq;
    }
    __syncthreads();
    float total = lane < kRmsNormThreads / 32 ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    const float inv_rms = 1.0f / sqrtf(total / static_cast<float>(len) + eps);
    for (std::int64_t p = threadIdx.x; p < packs; p += kThreads) {
      const uint4 raw = load(row + p), gw = gamma[p];
      const T* v = reinterpret_cast<const T*>(&raw);
      const T* w = reinterpret_cast<const T*>(&gw);
      uint4 out;
      T* o = reinterpret_cast<T*>(&out);
#pragma unroll
      for (int e = 0; e < kPer; ++e) o[e] = rms_value(v[e], w[e], inv_rms);
      dst[b * dst_ld + p] = out;
    }
    __syncthreads();  // scratch is rewritten by the next row; dst is read after the loop
  }
}

template <typename T, int B>
__device__ __forceinline__ void norm_prologue(const Gemv& g, uint4* dst) {
  norm_rows<T, B, false>(static_cast<const T*>(g.x), g.ldx, g.k, g.norm_weight, g.norm_eps, dst,
                         g.k / (16 / static_cast<int>(sizeof(T))));
}

// Gemv::tail_norm_out: every block counts itself done on g.ticket once its rows are stored; the
// last one computes the RMSNorm of the finished output rows (the residual sums) with
// rms_norm_kernel's order and roundings, then resets the ticket for the next launch.
template <typename T, int B>
__device__ __forceinline__ void tail_norm(const Gemv& g) {
  __shared__ bool last;
  __threadfence();  // this thread's stores before the ticket, for the block that reads them
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(g.ticket, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const GemvGroup& out = g.groups[0];
  norm_rows<T, B, true>(static_cast<const T*>(out.out), out.ldo, out.n, g.tail_norm_weight,
                        g.norm_eps, static_cast<uint4*>(g.tail_norm_out),
                        out.ldo / (16 / static_cast<int>(sizeof(T))));
  if (threadIdx.x == 0) *g.ticket = 0u;
}

template <bool Norm>
__device__ __forceinline__ uint4 load_x(const uint4* p) {
  if constexpr (Norm) {
    return *p;  // shared memory
  } else {
    return __ldg(p);
  }
}

template <bool Rope>
__device__ __forceinline__ bool task_active(const Gemv& g, const Task& task) {
  return task.group >= 0 && task.row < task_units<Rope>(g, task.group);
}

// The task's weight rows (SiluMul: gate, up, gate, up, ... of consecutive outputs; RopeKv's q and
// k: d, d + half, d + 1, d + 1 + half, ... of consecutive pairs); a row past the end rereads the
// last one and stores nothing.
template <typename T, int R, bool Rope>
__device__ __forceinline__ void weight_rows(const Gemv& g, const Task& task, const uint4* (&w)[R]) {
  const bool gated = g.epilogue == GemvEpilogue::SiluMul;
  const GemvGroup& first = g.groups[task.group];
  if (rope_paired<Rope>(task.group)) {
    const std::int64_t half = g.rope.head_dim / 2, pairs = first.n / 2;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const std::int64_t pair = task.row + r / 2;
      const std::int64_t safe = pair < pairs ? pair : pairs - 1;
      const std::int64_t row = (safe / half) * g.rope.head_dim + safe % half + (r % 2) * half;
      w[r] = reinterpret_cast<const uint4*>(static_cast<const T*>(first.weight) + row * g.k);
    }
    return;
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const GemvGroup& grp = gated ? g.groups[r % 2] : first;
    const std::int64_t row = gated ? task.row + r / 2 : task.row + r;
    const std::int64_t safe = row < grp.n ? row : grp.n - 1;
    w[r] = reinterpret_cast<const uint4*>(static_cast<const T*>(grp.weight) + safe * g.k);
  }
}

// One pass of U 16-byte chunks per row from chunk c (this lane's), loads past `end` replaced by
// zeros: the split-K kernel's segments (matvec_splitk.cu), and what gemv_task's last, partial
// pass does.
template <typename T, int B, int R, int U, bool Norm>
__device__ __forceinline__ void predicated_pass(float (&acc)[R][B], const uint4* const (&w)[R],
                                                const uint4* const (&x)[B], std::int64_t c,
                                                std::int64_t end) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 wr[R][U];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int u = 0; u < U; ++u) wr[r][u] = c + 32 * u < end ? __ldcs(w[r] + c + 32 * u) : zero;
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint4 xv = c + 32 * u < end ? load_x<Norm>(x[b] + c + 32 * u) : zero;
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r][b] += dot16<T>(wr[r][u], xv);
    }
  }
}

// Every lane's partial sums summed over the warp (each lane ends with every total).
template <int B, int R>
__device__ __forceinline__ void warp_sums(float (&acc)[R][B]) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = warp_sum(acc[r][b]);
  }
}

// acc[r][b] of this lane's (output o, input row my_b): the unrolled select keeps acc in
// registers (a runtime index would put it in local memory).
template <int B, int R>
__device__ __forceinline__ float pick(const float (&acc)[R][B], int r, int my_b) {
  float v = 0.0f;
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      if (i == r && b == my_b) v = acc[i][b];
    }
  }
  return v;
}

// GemvEpilogue::RopeKv's store, rope_kv_kernel's (decode_step.cu) arithmetic on the GEMV's
// rounded outputs. Lane o * B + b holds row o of the task for input row b (`v`, bias not yet
// added): for q and k, rows 2p and 2p + 1 are pair p's halves (d, d + half of a head), so each
// lane takes its partner from lane (o ^ 1) * B + b, rotates its own half (rope_rotate) and
// stores it (q to groups[0].out, k to the cache at row *past); a v row goes to its cache as is.
// Every lane of the warp calls it (the shuffle).
template <typename T, int B, int R>
__device__ __forceinline__ void rope_store(const Gemv& g, const Task& task, float v, int lane) {
  const GemvGroup& grp = g.groups[task.group];
  const GemvRope& rp = g.rope;
  const bool paired = rope_paired<true>(task.group);
  const int o = lane / B, my_b = lane % B;
  const std::int64_t d = rp.head_dim, half = d / 2;
  const std::int64_t pair = task.row + o / 2;
  const std::int64_t n = paired ? (pair / half) * d + pair % half + (o % 2) * half : task.row + o;
  const bool valid = lane < R * B && (paired ? pair < grp.n / 2 : n < grp.n);
  float x = 0.0f;
  if (valid) {
    if (grp.bias != nullptr) v += to_float(static_cast<const T*>(grp.bias)[n]);
    x = to_float(from_float<T>(v));  // the GEMV's rounding, which rope_kv_write reads
  }
  const float partner = __shfl_sync(0xFFFFFFFFu, x, ((o ^ 1) * B + my_b) & 31);
  if (!valid) return;
  const std::int64_t head = n / d, i = n % d, pos = *rp.past;
  // Row `pos` of a cache (k or v; q's heads are not cache heads).
  const auto cache_row = [&](void* c) {
    return static_cast<T*>(c) + ((my_b * rp.kv_heads + head) * rp.capacity + pos) * d;
  };
  if (!paired) {
    cache_row(rp.v_cache)[i] = from_float<T>(x);
    return;
  }
  float y = x;
  if (rp.cos != nullptr) {
    const float c = to_float(static_cast<const T*>(rp.cos)[pos * d + i]);
    const float s = to_float(static_cast<const T*>(rp.sin)[pos * d + i]);
    y = rope_rotate(x, o % 2 == 0 ? -partner : partner, c, s);
  }
  T* dst =
      task.group == 0 ? static_cast<T*>(grp.out) + my_b * grp.ldo + n : cache_row(rp.k_cache) + i;
  *dst = from_float<T>(y);
}

// One warp task: R weight rows against the B input rows `x`, then the epilogue's stores.
// `pre` (when `preloaded`) holds the task's first pass of weight loads, issued before the PDL
// wait; that pass is then summed predicated, which is the loop's first iteration or, for rows
// shorter than one pass, the tail: the same sums in the same order either way.
template <typename T, int B, int R, int U, bool Norm, bool Rope>
__device__ __forceinline__ void gemv_task(const Gemv& g, const Task& task,
                                          const uint4* const (&x)[B], int lane,
                                          const uint4 (&pre)[R][U], bool preloaded) {
  const bool gated = g.epilogue == GemvEpilogue::SiluMul;
  const GemvGroup& first = g.groups[task.group];
  const uint4* w[R];
  weight_rows<T, R, Rope>(g, task, w);
  const std::int64_t chunks = g.k * static_cast<std::int64_t>(sizeof(T)) / 16;
  float acc[R][B];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.0f;
  }
  std::int64_t c = lane;
  if (preloaded) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int b = 0; b < B; ++b) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const uint4 xv = c + 32 * u < chunks ? load_x<Norm>(x[b] + c + 32 * u) : zero;
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][b] += dot16<T>(pre[r][u], xv);
      }
    }
    c += 32 * U;
  }
  for (; c + 32 * (U - 1) < chunks; c += 32 * U) {
    uint4 wr[R][U];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int u = 0; u < U; ++u) wr[r][u] = __ldcs(w[r] + c + 32 * u);  // streamed once
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const uint4 xv = load_x<Norm>(x[b] + c + 32 * u);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][b] += dot16<T>(wr[r][u], xv);
      }
    }
  }
  // The rest (fewer than U chunks per lane): one predicated pass, every load in flight. (This is
  // predicated_pass written out: calling it changed ptxas's register allocation of the default
  // kernels, bf16 batch 8 from 151 to 157 registers, which session 7's measurements were made
  // with.)
  if (c < chunks) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 wr[R][U];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        wr[r][u] = c + 32 * u < chunks ? __ldcs(w[r] + c + 32 * u) : zero;
      }
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const uint4 xv = c + 32 * u < chunks ? load_x<Norm>(x[b] + c + 32 * u) : zero;
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][b] += dot16<T>(wr[r][u], xv);
      }
    }
  }
  // Every lane ends with every sum; lane o * B + b stores (output o of the task, input row b).
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = warp_sum(acc[r][b]);
  }
  if constexpr (Rope) {
    rope_store<T, B, R>(g, task, pick<B, R>(acc, lane / B, lane % B), lane);
    return;
  }
  const int outputs = gated ? R / 2 : R;
  if (lane >= outputs * B) return;
  const int o = lane / B, my_b = lane % B;
  float v = 0.0f, up = 0.0f;
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      if (b != my_b) continue;
      if (gated) {
        if (2 * i + 1 < R && i == o) {
          v = acc[2 * i][b];
          up = acc[2 * i + 1][b];
        }
      } else if (i == o) {
        v = acc[i][b];
      }
    }
  }
  const std::int64_t n = task.row + o;
  if (n >= first.n) return;
  if (first.bias != nullptr) v += to_float(static_cast<const T*>(first.bias)[n]);
  T* out = static_cast<T*>(first.out) + my_b * first.ldo + n;
  if (gated) {
    const GemvGroup& up_group = g.groups[1];
    if (up_group.bias != nullptr) up += to_float(static_cast<const T*>(up_group.bias)[n]);
    // act(gate) and up rounded as the separate ops leave them, then their product.
    const float act = to_float(from_float<T>(silu(to_float(from_float<T>(v)))));
    *out = from_float<T>(act * to_float(from_float<T>(up)));
  } else if (g.epilogue == GemvEpilogue::AddResidual) {
    const T* res = static_cast<const T*>(g.residual) + my_b * first.ldo + n;
    *out = from_float<T>(to_float(*res) + to_float(from_float<T>(v)));
  } else {
    *out = from_float<T>(v);
  }
}

// Rope: GemvEpilogue::RopeKv's kernel (its own instantiations, matvec_rope.cu: inside the
// other kernels the store's branch cost registers, 48 with it against 55 without for bf16 batch 1,
// and the loads in flight they hold).
template <typename T, int B, int R, int U, bool Norm, bool Pre, bool Rope>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(Gemv g) {
  static_assert(R * B <= 32, "one lane stores each (output row, input row) of a warp");
  extern __shared__ uint4 normed[];  // Norm: [B, k] of T
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const std::int64_t chunks = g.k * static_cast<std::int64_t>(sizeof(T)) / 16;
  // Before waiting for the previous kernel, the first passes of the warp's first task's weight
  // rows are fetched into L2 (the weights do not depend on it), so HBM is busy while it drains;
  // the loop then finds them there. Prefetches leave the sums and their order untouched. A warp
  // with no task still waits for the producer and helps with the norm.
  // Pre (Gemv::preload, sweep kernels only: the registers it holds across the wait cost the
  // others occupancy): the first pass goes into registers (predicated, zeros past the row).
  uint4 pre[R][U];
  bool preloaded = false;
  if (const Task task = task_of<R, Rope>(g, warp); task_active<Rope>(g, task)) {
    const uint4* w[R];
    weight_rows<T, R, Rope>(g, task, w);
    if constexpr (Pre) {
      const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          pre[r][u] = lane + 32 * u < chunks ? __ldcs(w[r] + lane + 32 * u) : zero;
        }
      }
      preloaded = true;
    }
    const bool fetcher = g.prefetch_blocks <= 0 || blockIdx.x < g.prefetch_blocks;
    const int passes = !fetcher                 ? 0
                       : g.prefetch_passes >= 0 ? g.prefetch_passes
                       : g.pdl                  ? default_prefetch(B)
                                                : 0;
    const int ahead = passes * U;
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll 4
      for (int u = 0; u < ahead; ++u) {
        if (lane + 32 * u < chunks) prefetch_l2(w[r] + lane + 32 * u);
      }
    }
  }
  wait_for_producer();
  if (!g.late_trigger) allow_dependents();
  const uint4* x[B];
  if constexpr (Norm) {
    norm_prologue<T, B>(g, normed);
#pragma unroll
    for (int b = 0; b < B; ++b) x[b] = normed + b * chunks;
  } else {
#pragma unroll
    for (int b = 0; b < B; ++b) {
      x[b] = reinterpret_cast<const uint4*>(static_cast<const T*>(g.x) + b * g.ldx);
    }
  }
  // One task per warp, or (Gemv::grid_blocks) a grid-stride loop over them: the tasks come in
  // row order, so the first one past the end ends the warp.
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarps;
  for (std::int64_t t = warp;; t += stride) {
    const Task task = task_of<R, Rope>(g, t);
    if (!task_active<Rope>(g, task)) break;
    gemv_task<T, B, R, U, Norm, Rope>(g, task, x, lane, pre, Pre && preloaded);
    preloaded = false;  // later tasks (grid stride) load their own
  }
  if (g.late_trigger) allow_dependents();
  if constexpr (!std::is_same_v<T, float>) {  // float32 keeps the norm kernel (compile time)
    if (g.tail_norm_out != nullptr) tail_norm<T, B>(g);
  }
}

// Launches gemv_kernel<T, B, R, U, Norm> over `blocks` blocks (host side; explicitly
// instantiated by the matvec_*.cu files).
template <typename T, int B, int R, int U, bool Norm, bool Pre = false, bool Rope = false>
cudaError_t launch(const Gemv& g, unsigned blocks, cudaStream_t stream) {
  const auto kernel = gemv_kernel<T, B, R, U, Norm, Pre, Rope>;
  // gemv() checked that this fits the 48 KB every block may take without opting in.
  const std::size_t smem = Norm ? static_cast<std::size_t>(B * g.k) * sizeof(T) : 0;
  return launch_maybe_pdl(kernel, blocks, kWarps * 32, smem, stream, g.pdl, g);
}

// The rows in dynamic shared memory, beside the prologue's own static scratch, within the 48 KB a
// block takes without opting in.
inline constexpr std::size_t kMaxNormBytes = 47 * 1024;

// One shape's kernels, both Norm variants (_PLAIN: without the norm, float32, whose decode step
// keeps the norm kernel: half the compile time of its instantiations): declared where they are
// dispatched (matvec.cu), instantiated in one of the matvec_*.cu files.
#define STRATA_GEMV_DECLARE(T, B, R, U)                                                       \
  extern template cudaError_t launch<T, B, R, U, false>(const Gemv&, unsigned, cudaStream_t); \
  extern template cudaError_t launch<T, B, R, U, true>(const Gemv&, unsigned, cudaStream_t);
#define STRATA_GEMV_INSTANTIATE(T, B, R, U)                                            \
  template cudaError_t launch<T, B, R, U, false>(const Gemv&, unsigned, cudaStream_t); \
  template cudaError_t launch<T, B, R, U, true>(const Gemv&, unsigned, cudaStream_t);

#define STRATA_GEMV_DECLARE_PRELOAD(T, B, R, U) \
  extern template cudaError_t launch<T, B, R, U, false, true>(const Gemv&, unsigned, cudaStream_t);
#define STRATA_GEMV_INSTANTIATE_PRELOAD(T, B, R, U) \
  template cudaError_t launch<T, B, R, U, false, true>(const Gemv&, unsigned, cudaStream_t);
// M(1) ... M(8): a macro over every batch the kernel is built for (kMaxGemvBatch).
#define STRATA_GEMV_EACH_BATCH(M) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8)

// GemvEpilogue::RopeKv's kernel of a shape (without the fused norm).
#define STRATA_GEMV_DECLARE_ROPE(T, B, R, U)                                                \
  extern template cudaError_t launch<T, B, R, U, false, false, true>(const Gemv&, unsigned, \
                                                                     cudaStream_t);
#define STRATA_GEMV_INSTANTIATE_ROPE(T, B, R, U) \
  template cudaError_t launch<T, B, R, U, false, false, true>(const Gemv&, unsigned, cudaStream_t);
#define STRATA_GEMV_DECLARE_PLAIN(T, B, R, U) \
  extern template cudaError_t launch<T, B, R, U, false>(const Gemv&, unsigned, cudaStream_t);
#define STRATA_GEMV_INSTANTIATE_PLAIN(T, B, R, U) \
  template cudaError_t launch<T, B, R, U, false>(const Gemv&, unsigned, cudaStream_t);

}  // namespace strata::cuda::kernels::gemv_detail
