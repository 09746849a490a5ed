// Split-K flash decoding (kernels.h, FlashDecodeArgs): a few query positions against a long KV
// cache, bound by reading K and V from HBM.
//
// Grid: x = (split, row chunk) with the row chunks of a split adjacent (they share K/V through
// the L2), y = (batch, kv head). A block (4 warps) takes up to R query rows of one kv head's group
// and one chunk of its keys. Each key row is read by DMAX/8 lanes with one 16-byte load each, so a
// warp reads 32/(DMAX/8) keys per load instruction; every lane keeps U loads of K and U of V in
// flight before using any. Scores are reduced over the key's lanes by shuffles; each such lane
// group keeps its own online-softmax state (base 2) and output columns in registers, and the
// groups of the block are merged through shared memory at the end. The block writes its partial
// (max, sum, unnormalised output, float32) to the scratch, or the output itself when there is one
// split; flash_decode_combine merges the splits of each row.

#include <algorithm>
#include <cstdint>

#include "cuda/flash_common.cuh"
#include "cuda/flash_decode_common.cuh"
#include "cuda/flash_decode_fused.h"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

using flash::chunk_keys;
using flash::kLog2e;
using flash::length_of;
using flash::mask_at;
using flash::row_at;
using flash::RowAt;
using fused_decode::row_chunks_of;
using fused_decode::rows_per_block;

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kMaxSplits = kFlashDecodeMaxSplits;

template <int DMAX, int R>
struct DecodeShape {
  static constexpr int kLanesPerKey = DMAX / 8;  // 16-byte chunks of a row
  static constexpr int kGroups = 32 / kLanesPerKey;
  static constexpr int kUnroll = R <= 4 ? 4 : 2;  // keys of a lane group per step (x2 in flight)
  static constexpr int kBlockGroups = kDecodeWarps * kGroups;  // lane groups of a block
  static constexpr int kStep = kBlockGroups * kUnroll;         // keys of a block per step
};

template <typename T, int DMAX, int R>
__global__ void __launch_bounds__(kDecodeThreads)
    flash_decode_kernel(FlashDecodeArgs a, int row_chunks) {
  using S = DecodeShape<DMAX, R>;
  constexpr int kLpk = S::kLanesPerKey, kU = S::kUnroll;
  __shared__ float s_m[S::kBlockGroups][R], s_l[S::kBlockGroups][R];
  __shared__ __align__(16) float s_acc[S::kBlockGroups][R][DMAX];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int part = lane % kLpk;                       // the lane's 16-byte chunk of a row
  const int group = warp * S::kGroups + lane / kLpk;  // the lane's key group in the block
  const int split = static_cast<int>(blockIdx.x) / row_chunks;
  const int rc = static_cast<int>(blockIdx.x) % row_chunks;
  const int kvh = static_cast<int>(blockIdx.y) % a.kv_heads;
  const int b = static_cast<int>(blockIdx.y) / a.kv_heads;
  const int length = length_of(a, b);
  const int chunk = chunk_keys(length, a.splits);
  const int begin = split * chunk;
  if (a.splits > 1 && begin >= length) return;  // past the length: the combine skips it
  const int end = min(begin + chunk, length);
  const int first = rc * R;
  const int nrows = min(R, a.q_heads / a.kv_heads * a.q_len - first);

  // q * scale * log2(e) for the lane's 8 columns of each row; keys each row may see.
  float qf[R][8];
  int visible[R];
  std::int64_t mask_row[R];
  const float qscale = a.scale * kLog2e;
  const bool k_part = part * 8 < a.head_dim, v_part = part * 8 < a.v_dim;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const RowAt at = row_at(a, kvh, first + r);
    const bool live = r < nrows;
    const T* q = static_cast<const T*>(a.q) + b * a.q_strides[0] + at.h * a.q_strides[1] +
                 at.i * a.q_strides[2] + part * 8;
#pragma unroll
    for (int e = 0; e < 8; ++e) qf[r][e] = live && k_part ? to_float(q[e]) * qscale : 0.0f;
    visible[r] = !live ? 0 : a.causal ? max(0, length - a.q_len + at.i + 1) : length;
    mask_row[r] = b * a.mask_strides[0] + at.h * a.mask_strides[1] + at.i * a.mask_strides[2];
  }

  float m[R], l[R], acc[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[r][e] = 0.0f;
  }
  const T* k_base =
      static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1] + part * 8;
  const T* v_base =
      static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1] + part * 8;

  // The step's K and V rows (zeros past `end`): 2U 16-byte loads per lane.
  const auto load_step = [&](int step_base, uint4(&kr)[kU], uint4(&vr)[kU]) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int key = step_base + u * S::kBlockGroups + group;
      const bool in = key < end;
      kr[u] = in && k_part ? __ldg(reinterpret_cast<const uint4*>(k_base + key * a.k_strides[2]))
                           : make_uint4(0, 0, 0, 0);
      vr[u] = in && v_part ? __ldg(reinterpret_cast<const uint4*>(v_base + key * a.v_strides[2]))
                           : make_uint4(0, 0, 0, 0);
    }
  };
  // Software pipelining: the next step's loads are issued before this step's arithmetic, so the
  // memory system always has this warp's requests in flight (the blocks of a wave run in near
  // lockstep: without it every step would drain HBM's queue for one full latency).
  uint4 k_next[kU], v_next[kU];
  load_step(begin, k_next, v_next);
  for (int base = begin; base < end; base += S::kStep) {
    uint4 kr[kU], vr[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      kr[u] = k_next[u];
      vr[u] = v_next[u];
    }
    load_step(base + S::kStep, k_next, v_next);  // zeros (no loads) past `end`
    float s[kU][R];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float kf[8];
      flash::unpack8<T>(kr[u], kf);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot = fmaf(qf[r][e], kf[e], dot);
#pragma unroll
        for (int o = 1; o < kLpk; o <<= 1) dot += __shfl_xor_sync(0xFFFFFFFFu, dot, o);
        const int key = base + u * S::kBlockGroups + group;
        float x = -INFINITY;
        if (key < end && key < visible[r]) {
          x = dot;
          if (a.mask != nullptr) x += mask_at(a, mask_row[r] + key * a.mask_strides[3]) * kLog2e;
        }
        s[u][r] = x;
      }
    }
    // Online softmax of each row over the step's keys of this lane group (base 2).
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float corr = flash::online_softmax_row(s, r, m[r], l[r]);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r][e] *= corr;
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float vf[8];
      flash::unpack8<T>(vr[u], vf);
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r][e] = fmaf(s[u][r], vf[e], acc[r][e]);
      }
    }
  }

  // Merge the block's lane groups.
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (part == 0) {
      s_m[group][r] = m[r];
      s_l[group][r] = l[r];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) s_acc[group][r][part * 8 + e] = acc[r][e];
  }
  __syncthreads();
  for (int idx = tid; idx < nrows * DMAX; idx += kDecodeThreads) {
    const int r = idx / DMAX, d = idx % DMAX;
    if (d >= a.v_dim) continue;
    float mx = -INFINITY;
#pragma unroll
    for (int g = 0; g < S::kBlockGroups; ++g) mx = fmaxf(mx, s_m[g][r]);
    float sum = 0.0f, total = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int g = 0; g < S::kBlockGroups; ++g) {
        const float w = flash::fast_exp2(s_m[g][r] - mx);  // 0 for a group that saw no key
        sum = fmaf(s_acc[g][r][d], w, sum);
        total = fmaf(s_l[g][r], w, total);
      }
    }
    flash::write_partial<T>(a, b, kvh, first + r, split, d, mx, sum, total);
  }
}

// Merges the partials of one output row (a block each): weights exp2(m_s - m) of the splits that
// saw keys, the sink in the denominator, the V columns read coalesced.
template <typename T>
__global__ void __launch_bounds__(kDecodeThreads) flash_decode_combine(FlashDecodeArgs a) {
  __shared__ float weight[kMaxSplits];
  __shared__ float reduce[32];
  const std::int64_t row = blockIdx.x;  // (b, h, i) row-major
  const int i = static_cast<int>(row % a.q_len);
  const int h = static_cast<int>(row / a.q_len % a.q_heads);
  const int b = static_cast<int>(row / a.q_len / a.q_heads);
  const int length = length_of(a, b);
  const int chunk = chunk_keys(length, a.splits);
  const int active = min(a.splits, (length + chunk - 1) / chunk);
  const float* parts_o = a.scratch + row * a.splits * a.v_dim;
  const float* parts_ml =
      a.scratch + static_cast<std::int64_t>(a.batch) * a.q_heads * a.q_len * a.splits * a.v_dim +
      row * a.splits * 2;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < active; s += kDecodeThreads) mx = fmaxf(mx, parts_ml[2 * s]);
  mx = block_max(mx, reduce);
  float total = 0.0f;
  for (int s = threadIdx.x; s < active; s += kDecodeThreads) {
    const float ms = parts_ml[2 * s];
    const float w =
        mx == -INFINITY ? 0.0f : flash::fast_exp2(ms - mx);  // a split with no key weighs 0
    weight[s] = w;
    total += parts_ml[2 * s + 1] * w;
  }
  total = block_sum(total, reduce);  // its barriers publish `weight`
  if (a.sinks != nullptr && mx != -INFINITY) total += flash::fast_exp2(a.sinks[h] * kLog2e - mx);
  T* out =
      static_cast<T*>(a.out) + b * a.out_strides[0] + h * a.out_strides[1] + i * a.out_strides[2];
  for (int d = threadIdx.x; d < a.v_dim; d += kDecodeThreads) {
    // Four independent sums: four splits' partials are read at once, not one after another.
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    const std::int64_t stride = a.v_dim;
    int s = 0;
    for (; s + 4 <= active; s += 4) {
      s0 = fmaf(parts_o[s * stride + d], weight[s], s0);
      s1 = fmaf(parts_o[(s + 1) * stride + d], weight[s + 1], s1);
      s2 = fmaf(parts_o[(s + 2) * stride + d], weight[s + 2], s2);
      s3 = fmaf(parts_o[(s + 3) * stride + d], weight[s + 3], s3);
    }
    for (; s < active; ++s) s0 = fmaf(parts_o[s * stride + d], weight[s], s0);
    const float sum = (s0 + s1) + (s2 + s3);
    out[d] = from_float<T>(total > 0.0f ? sum / total : 0.0f);  // all masked: zeros
  }
}

bool aligned16(const void* p, const std::int64_t* strides, int n) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  for (int d = 0; d < n; ++d) {
    if (strides[d] * 2 % 16 != 0) return false;
  }
  return true;
}

using DecodeKernel = void (*)(FlashDecodeArgs, int);

// An instantiation of the kernel and how many of its blocks fit on a multiprocessor (asked once).
struct DecodeVariant {
  DecodeKernel kernel = nullptr;
  int blocks_per_sm = 1;
};

template <typename T, int DMAX, int R>
const DecodeVariant& variant() {
  static const DecodeVariant v = [] {
    DecodeVariant d;
    d.kernel = flash_decode_kernel<T, DMAX, R>;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&d.blocks_per_sm, d.kernel, kDecodeThreads,
                                                      0) != cudaSuccess) {
      cudaGetLastError();  // not sticky: leave no stale error behind
      d.blocks_per_sm = 2;
    }
    d.blocks_per_sm = std::max(d.blocks_per_sm, 1);
    return d;
  }();
  return v;
}

template <typename T, int DMAX>
const DecodeVariant& variant_rows(int rows) {
  return rows == 1   ? variant<T, DMAX, 1>()
         : rows == 2 ? variant<T, DMAX, 2>()
         : rows == 4 ? variant<T, DMAX, 4>()
                     : variant<T, DMAX, 8>();
}

template <typename T>
const DecodeVariant& variant_of_type(const FlashDecodeArgs& a) {
  const int widest = std::max(a.head_dim, a.v_dim), rows = rows_per_block(a);
  return widest <= 64    ? variant_rows<T, 64>(rows)
         : widest <= 128 ? variant_rows<T, 128>(rows)
                         : variant_rows<T, 256>(rows);
}

// Callers have checked flash_decode_supported (bf16 or f16).
const DecodeVariant& variant_of(const FlashDecodeArgs& a) {
  return a.type == Type::BFloat16 ? variant_of_type<BF16Bits>(a) : variant_of_type<HalfBits>(a);
}

// Which kernel variant 0 runs, as measured on H100 (session 7, device call 2;
// docs/cuda-backend.md): at least 32 (batch, kv head, row chunk) groups and caches of 8k keys or
// more take the cluster kernel's 128-thread, six-stage configuration (7: 73-102% of the copy rate
// at batch 4-64 where the scratch merge reached 59-99%); everything else the scratch-merge kernel
// (4). At batch 1 the cluster kernels measured slower (38-40% against 51% at 8k keys), and at 1k
// keys no faster.
// Fewer groups (batch 1) over 8k keys or more take the tensor-core kernel with 64-key tiles in
// three stages (10): session 11 (H100, GQA 32/8, d128) measured it at 56.3% of the copy rate at 8k
// keys against 50.4% for 4, and 83.3% against 80.4% at 32k.
constexpr std::int64_t kDeepFewestGroups = 32;
constexpr int kDeepFewestKeys = 8192;
FlashDecodeArgs resolved(const FlashDecodeArgs& a) {
  FlashDecodeArgs r = a;
  if (a.variant != 0) return r;
  r.variant = 7;
  const std::int64_t groups = std::int64_t{a.batch} * a.kv_heads * row_chunks_of(r);
  if (a.max_kv_len < kDeepFewestKeys) {
    r.variant = 4;
  } else if (groups < kDeepFewestGroups) {
    r.variant = 10;
  } else if (!fused_decode::cluster_ready(r)) {
    r.variant = 4;
  }
  return r;
}

}  // namespace

bool flash_decode_supported(const FlashDecodeArgs& a) {
  if (a.type != Type::BFloat16 && a.type != Type::Float16) return false;
  if (a.variant < 0 || a.variant > 14) return false;
  if (a.mask != nullptr && a.mask_type != Type::Float32 && a.mask_type != a.type) return false;
  if (a.batch < 0 || a.q_len < 1 || a.q_len > kFlashDecodeMaxQ || a.kv_heads < 1 ||
      a.q_heads < a.kv_heads || a.q_heads % a.kv_heads != 0 || a.max_kv_len < 0) {
    return false;
  }
  if (a.head_dim < 8 || a.head_dim > 256 || a.head_dim % 8 != 0 || a.v_dim < 8 || a.v_dim > 256 ||
      a.v_dim % 8 != 0) {
    return false;
  }
  return aligned16(a.k, a.k_strides, 3) && aligned16(a.v, a.v_strides, 3);
}

int flash_decode_splits(const FlashDecodeArgs& args, int multiprocessors) {
  if (!flash_decode_supported(args)) return 1;
  const FlashDecodeArgs a = resolved(args);
  if (fused_decode::is_cluster_variant(a.variant)) return fused_decode::cluster_splits(a);
  // Equal chunks take equal time, so a partial last wave of blocks costs a whole one: pick the
  // split count whose blocks fill the resident slots best (the fewest splits within 2% of the
  // best), each split at least kFlashDecodeMinChunk keys.
  const std::int64_t blocks =
      std::max<std::int64_t>(1, std::int64_t{a.batch} * a.kv_heads * row_chunks_of(a));
  const int per_sm = a.variant == 1 ? variant_of(a).blocks_per_sm : fused_decode::blocks_per_sm(a);
  const std::int64_t slots = std::int64_t{per_sm} * std::max(multiprocessors, 1);
  const std::int64_t most = std::clamp<std::int64_t>(
      (a.max_kv_len + kFlashDecodeMinChunk - 1) / kFlashDecodeMinChunk, 1, kMaxSplits);
  int best = 1;
  double best_fill = 0.0;
  for (std::int64_t s = 1; s <= most; ++s) {
    const std::int64_t total = blocks * s;
    const std::int64_t waves = (total + slots - 1) / slots;
    const double fill = static_cast<double>(total) / static_cast<double>(waves * slots);
    if (fill > best_fill + 0.02) {
      best_fill = fill;
      best = static_cast<int>(s);
    }
  }
  return best;
}

std::size_t flash_decode_scratch_bytes(const FlashDecodeArgs& a) {
  if (a.splits <= 1) return 0;
  return fused_decode::counters_offset(a) + fused_decode::counters_bytes(a);
}

cudaError_t flash_decode_clear_scratch(const FlashDecodeArgs& a, cudaStream_t stream) {
  if (a.splits <= 1) return cudaSuccess;
  if (a.scratch == nullptr) return cudaErrorInvalidValue;
  return cudaMemsetAsync(reinterpret_cast<char*>(a.scratch) + fused_decode::counters_offset(a), 0,
                         fused_decode::counters_bytes(a), stream);
}

cudaError_t launch_flash_decode(const FlashDecodeArgs& args, cudaStream_t stream) {
  if (!flash_decode_supported(args)) return cudaErrorInvalidValue;
  const FlashDecodeArgs a = resolved(args);
  if (a.splits < 1 || a.splits > kMaxSplits || (a.splits > 1 && a.scratch == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t rows = std::int64_t{a.batch} * a.q_heads * a.q_len;
  if (rows == 0) return cudaSuccess;
  if (fused_decode::is_cluster_variant(a.variant)) return fused_decode::cluster_launch(a, stream);
  if (a.variant != 1) return fused_decode::launch(a, stream);
  const int row_chunks = row_chunks_of(a);
  const dim3 grid(static_cast<unsigned>(a.splits * row_chunks),
                  static_cast<unsigned>(a.batch * a.kv_heads));
  variant_of(a).kernel<<<grid, kDecodeThreads, 0, stream>>>(a, row_chunks);
  cudaError_t status = launched();
  if (status != cudaSuccess || a.splits == 1) return status;
  const unsigned combine_blocks = static_cast<unsigned>(rows);
  if (a.type == Type::BFloat16) {
    flash_decode_combine<BF16Bits><<<combine_blocks, kDecodeThreads, 0, stream>>>(a);
  } else {
    flash_decode_combine<HalfBits><<<combine_blocks, kDecodeThreads, 0, stream>>>(a);
  }
  return launched();
}

}  // namespace strata::cuda::kernels
