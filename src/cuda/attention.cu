// Scaled dot-product attention, float32 softmax, two paths:
//  - tiled (16-byte aligned K/V rows, see "Tiled path" below): up to 8 query rows sharing a kv
//    head (the GQA heads of a decode step, or consecutive prefill rows) read each K/V tile once
//    from shared memory; long caches are split across blocks (flash-decoding) and merged by the
//    last block of each row group.
//  - per row (any other layout): one block per query row, its warps splitting the keys, and a
//    merge kernel when the keys are split.

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "cuda/flash_common.cuh"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxHeadDim = 256;
constexpr std::int64_t kKeysPerSplit = 256;  // below this a split is not worth a block
constexpr int kMaxSplits = 256;

// A split's partial softmax state of one row in the workspace: m (running max), l (sum of
// exp(s - m)), two pad floats so the unnormalised sum of V rows that follows is 16-byte aligned.
constexpr int kPartHeader = 4;
__host__ __device__ inline std::int64_t part_stride(const Attention& a) {
  return kPartHeader + a.v_dim;
}

// The softmax denominator of output row `row` ((b, h, i) row-major) once its keys' sum `total`
// (relative to their max `mx`) is known: an attention sink adds exp(sink - mx). A row that saw no
// key keeps total 0, so it stays zeros.
__device__ __forceinline__ float with_sink(const Attention& a, std::int64_t row, float mx,
                                           float total) {
  if (a.sinks == nullptr || mx == -INFINITY) return total;
  return total + expf(a.sinks[(row / a.q_len) % a.q_heads] - mx);
}

template <typename T, int E>
__global__ void __launch_bounds__(kWarps * 32)
    attention_kernel(Attention a, int splits, float* workspace) {
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][kMaxHeadDim];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const std::int64_t row = blockIdx.x;  // (b, h, i) row-major
  const std::int64_t i = row % a.q_len;
  const std::int64_t h = (row / a.q_len) % a.q_heads;
  const std::int64_t b = row / (a.q_len * a.q_heads);
  const std::int64_t kvh = h / (a.q_heads / a.kv_heads);
  const T* q =
      static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1] + i * a.q_strides[2];
  const T* k = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* v = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];

  // Keys this row may see (causal masks align to the end of the keys), and this block's share.
  std::int64_t visible = a.k_len;
  if (a.causal) visible = std::min<std::int64_t>(a.k_len, a.k_len - a.q_len + i + 1);
  if (visible < 0) visible = 0;
  const std::int64_t chunk = (a.k_len + splits - 1) / splits;
  const std::int64_t begin = blockIdx.y * chunk;
  const std::int64_t end = std::min<std::int64_t>(begin + chunk, visible);

  float qf[E], acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int d = lane + 32 * e;
    qf[e] = d < a.head_dim ? to_float(q[d]) * a.scale : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (std::int64_t j = begin + warp; j < end; j += kWarps) {
    const T* kj = k + j * a.k_strides[2];
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int d = lane + 32 * e;
      if (d < a.head_dim) dot += qf[e] * to_float(kj[d]);
    }
    float s = warp_sum(dot);
    if (a.mask != nullptr) {
      const std::int64_t off = b * a.mask_strides[0] + h * a.mask_strides[1] +
                               i * a.mask_strides[2] + j * a.mask_strides[3];
      s += a.mask_type == Type::Float32 ? static_cast<const float*>(a.mask)[off]
                                        : to_float(static_cast<const T*>(a.mask)[off]);
    }
    if (s == -INFINITY) continue;  // masked out
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * correction + p;
    const T* vj = v + j * a.v_strides[2];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int d = lane + 32 * e;
      acc[e] = acc[e] * correction + (d < a.v_dim ? p * to_float(vj[d]) : 0.0f);
    }
    m = m_new;
  }
  // Merge the warps.
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) s_acc[warp][lane + 32 * e] = acc[e];
  __syncthreads();
  float mx = -INFINITY;
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w]);
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    if (s_m[w] != -INFINITY) total += s_l[w] * expf(s_m[w] - mx);
  }
  const float denominator = splits == 1 ? with_sink(a, row, mx, total) : total;
  for (int d = threadIdx.x; d < a.v_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (s_m[w] != -INFINITY) sum += s_acc[w][d] * expf(s_m[w] - mx);
    }
    if (splits == 1) {
      // A row with every key masked yields zeros, not NaN.
      static_cast<T*>(a.out)[row * a.v_dim + d] =
          from_float<T>(total > 0.0f ? sum / denominator : 0.0f);
    } else {
      workspace[(row * splits + blockIdx.y) * part_stride(a) + kPartHeader + d] = sum;
    }
  }
  if (splits > 1 && threadIdx.x == 0) {
    float* part = workspace + (row * splits + blockIdx.y) * part_stride(a);
    part[0] = mx;
    part[1] = total;
  }
}

// Combines a row's partial softmax states of every split (per-row path). Each split's weight
// exp(m_s - m) is computed once, by one thread; the V columns are read coalesced.
template <typename T>
__global__ void merge_splits_kernel(Attention a, int splits, const float* workspace) {
  __shared__ float weight[kMaxSplits];
  __shared__ float scratch[32];
  const std::int64_t row = blockIdx.x;
  const std::int64_t stride = part_stride(a);
  const float* parts = workspace + row * splits * stride;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) mx = fmaxf(mx, parts[s * stride]);
  mx = block_max(mx, scratch);
  float total = 0.0f;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    const float ms = parts[s * stride];
    weight[s] = ms == -INFINITY ? 0.0f : expf(ms - mx);  // a split that saw no key weighs 0
    total += parts[s * stride + 1] * weight[s];
  }
  total = with_sink(a, row, mx, block_sum(total, scratch));  // barriers publish `weight`
  for (int d = threadIdx.x; d < a.v_dim; d += blockDim.x) {
    float sum = 0.0f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) sum += parts[s * stride + kPartHeader + d] * weight[s];
    // A row with every key masked yields zeros, not NaN.
    static_cast<T*>(a.out)[row * a.v_dim + d] = from_float<T>(total > 0.0f ? sum / total : 0.0f);
  }
}

// ---- Tiled path ------------------------------------------------------------------------
//
// A block (8 warps, or 4 for rows over 256 bytes) takes R query rows that share a kv head and
// one split of the keys. Tiles of 8 keys per warp are copied to shared memory by cp.async, two
// stages deep. Within a tile each warp owns 8 keys: 4 lanes per key, each lane a quarter of the
// head dim (16-byte chunks), so K is widened once; a reduce-scatter over the 4 lanes leaves each
// lane the scores of R/4 rows, whose online softmax runs over the warp's keys. For P.V the lanes
// split V's columns. The warps keep separate softmax states, combined at the end; with several
// splits, the last block of a row group to finish merges the splits (no second kernel).

constexpr int kWarpKeys = 8;        // keys of a tile per warp, 4 lanes per key
constexpr int kTileStages = 2;      // one tile in flight while one is used
constexpr int kMaxTickets = 4096;   // row groups of one launch that can merge splits
constexpr int kMinSplitKeys = 512;  // best measured on H100 for 8k-32k keys (128-1024 tried)

// How many splits of each row group have finished; the last one merges and resets it to 0. All
// ops of a device run on its compute stream, so two launches never use the counters at once.
__device__ unsigned int g_split_tickets[kMaxTickets] = {};

template <typename T, int DMAX, int R>
struct Tile {
  // Warps per block: many for latency hiding, while two blocks' tiles fit in shared memory.
  static constexpr int kWarps = DMAX * sizeof(T) <= 256 ? 8 : 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kKeys = kWarpKeys * kWarps;               // keys per tile
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte chunk
  static constexpr int kChunks = DMAX / kVec;
  static constexpr int kLaneChunks = kChunks / 4;  // a lane's chunks of a key: 4c + quarter
  static constexpr int kQuads = kVec / 4;          // float4s of q per chunk
  // Rows are not padded: chunk c of key j is stored at chunk c ^ swizzle(j), which puts the 8
  // lanes of a quarter-warp (2 keys x 4 chunks) in distinct banks.
  static constexpr int kRowElems = DMAX;
  static constexpr int kLaneRows = R / 4;      // rows a lane owns after the reduce-scatter
  static constexpr int kLaneDims = DMAX / 32;  // V columns a lane accumulates
  static constexpr int kKvElems = kTileStages * kKeys * kRowElems;
  static constexpr std::size_t kKvBytes = 2 * kKvElems * sizeof(T);
  // Per row: output row, offsets of q and of the mask, keys visible (int64 each).
  static constexpr std::size_t kRowInfoBytes = 4 * R * sizeof(std::int64_t);
  // q (R * DMAX), p per warp, corr, m and l per warp, m and l of the block.
  static constexpr int kFloats = R * DMAX + kKeys * R + 3 * kWarps * R + 2 * R;
  static constexpr std::size_t kSmemBytes = kKvBytes + kRowInfoBytes + kFloats * sizeof(float);
  static_assert(R % 4 == 0 && kChunks % 8 == 0, "tile shape");
  // The end of the kernel reuses the K/V tiles for per-warp sums and the merge's split weights.
  static_assert(kKvBytes >= (R * kMaxSplits + kWarps * R * DMAX) * sizeof(float), "merge");
};

using flash::cp_async16;
using flash::cp_async_commit;
using flash::cp_async_wait;

// One hardware conversion for float16 (exact, like the bit-level one, which casts need for NaN
// payloads; here only values matter).
template <typename T>
__device__ __forceinline__ float widen(T v) {
  return to_float(v);
}
template <>
__device__ __forceinline__ float widen<HalfBits>(HalfBits v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}

// Where 16-byte chunk c of tile key j is stored in its row (see Tile::kRowElems).
__device__ __forceinline__ int swizzled(int c, int j) { return c ^ ((j & 1) << 2); }

// Elements [e0, e0 + N) of tile key j's row (aligned to their size) widened to floats.
template <typename T, int N>
__device__ __forceinline__ void widen_row(const T* row, int j, int e0, float* out) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  using Word =
      std::conditional_t<kBytes % 16 == 0, uint4, std::conditional_t<kBytes == 8, uint2, unsigned>>;
  constexpr int kWords = kBytes / static_cast<int>(sizeof(Word));
  constexpr int kPerWord = N / kWords;
  static_assert(kWords * sizeof(Word) == kBytes, "whole words");
#pragma unroll
  for (int w = 0; w < kWords; ++w) {
    const int e = e0 + w * kPerWord;
    const Word raw = *reinterpret_cast<const Word*>(row + swizzled(e / kVec, j) * kVec + e % kVec);
    const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kPerWord; ++i) out[w * kPerWord + i] = widen(x[i]);
  }
}

// Sums over the 8 keys of a warp: the lanes with the same quarter (lane & 3).
__device__ __forceinline__ float keys_max(float v) {
  for (int o = 4; o < 32; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}
__device__ __forceinline__ float keys_sum(float v) {
  for (int o = 4; o < 32; o <<= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

template <typename T, int DMAX, int R>
__global__ void __launch_bounds__((Tile<T, DMAX, R>::kThreads))
    attention_tiled_kernel(Attention a, std::int64_t row_chunks, std::int64_t chunk_keys,
                           int splits, float* workspace) {
  using G = Tile<T, DMAX, R>;
  extern __shared__ __align__(16) unsigned char smem[];
  T* k_s = reinterpret_cast<T*>(smem);  // [stage][key][kRowElems]
  T* v_s = k_s + G::kKvElems;
  auto* out_row_s = reinterpret_cast<std::int64_t*>(smem + G::kKvBytes);  // [row]
  std::int64_t* q_off_s = out_row_s + R;
  std::int64_t* mask_off_s = q_off_s + R;
  std::int64_t* visible_s = mask_off_s + R;
  float* q_s = reinterpret_cast<float*>(visible_s + R);  // permuted q
  float* p_s = q_s + R * DMAX;                           // [warp][key][row]
  float* corr_s = p_s + G::kKeys * R;                    // [warp][row]
  float* m_s = corr_s + G::kWarps * R;                   // [warp][row]
  float* l_s = m_s + G::kWarps * R;                      // [warp][row]
  float* total_s = l_s + G::kWarps * R;                  // [row]
  float* max_s = total_s + R;                            // [row]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int quarter = lane & 3, key_lane = lane >> 2;
  const std::int64_t group = a.q_heads / a.kv_heads;
  const std::int64_t chunk = blockIdx.x % row_chunks;
  const std::int64_t kvh = (blockIdx.x / row_chunks) % a.kv_heads;
  const std::int64_t b = blockIdx.x / row_chunks / a.kv_heads;
  const std::int64_t first = chunk * R;  // row index inside the kv group: (head, i)
  const int nrows = static_cast<int>(std::min<std::int64_t>(R, group * a.q_len - first));
  if (tid == 0) {  // the rows' coordinates, stepping (head, i) instead of dividing per row
    std::int64_t h = kvh * group + first / a.q_len, i = first % a.q_len;
    for (int r = 0; r < R; ++r) {
      out_row_s[r] = (b * a.q_heads + h) * a.q_len + i;
      q_off_s[r] = b * a.q_strides[0] + h * a.q_strides[1] + i * a.q_strides[2];
      mask_off_s[r] = b * a.mask_strides[0] + h * a.mask_strides[1] + i * a.mask_strides[2];
      // Keys row r may see: causal masks align to the end of the keys.
      std::int64_t visible = r < nrows ? a.k_len : 0;
      if (a.causal && r < nrows) {
        visible = std::max<std::int64_t>(0, std::min(a.k_len, a.k_len - a.q_len + i + 1));
      }
      visible_s[r] = visible;
      if (++i == a.q_len) {
        i = 0;
        ++h;
      }
    }
  }
  __syncthreads();
  std::int64_t most_visible = 0;
  for (int r = 0; r < nrows; ++r) most_visible = std::max(most_visible, visible_s[r]);
  const std::int64_t begin = blockIdx.y * chunk_keys;
  const std::int64_t end = std::min(begin + chunk_keys, most_visible);
  const int ntiles = end > begin ? static_cast<int>((end - begin + G::kKeys - 1) / G::kKeys) : 0;

  // Each thread copies one 16-byte column chunk of every (128 / kChunks)-th key: coalesced.
  const int k_chunks = static_cast<int>(a.head_dim) / G::kVec;
  const int v_chunks = static_cast<int>(a.v_dim) / G::kVec;
  const int copy_chunk = tid % G::kChunks, copy_key = tid / G::kChunks;
  constexpr int kCopyStep = G::kThreads / G::kChunks;
  const T* k_src =
      static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1] + copy_chunk * G::kVec;
  const T* v_src =
      static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1] + copy_chunk * G::kVec;
  const auto load_tile = [&](int t) {
    const std::int64_t key0 = begin + std::int64_t{t} * G::kKeys;
    const int nk = static_cast<int>(std::min<std::int64_t>(G::kKeys, end - key0));
    const int stage = t % kTileStages;
#pragma unroll
    for (int j = copy_key; j < G::kKeys; j += kCopyStep) {
      if (j >= nk) break;
      const int at = (stage * G::kKeys + j) * G::kRowElems + swizzled(copy_chunk, j) * G::kVec;
      if (copy_chunk < k_chunks) cp_async16(k_s + at, k_src + (key0 + j) * a.k_strides[2]);
      if (copy_chunk < v_chunks) cp_async16(v_s + at, v_src + (key0 + j) * a.v_strides[2]);
    }
  };
  // Always commit a group (empty past the last tile): wait_group then counts tiles uniformly.
  for (int t = 0; t < kTileStages - 1; ++t) {
    if (t < ntiles) load_tile(t);
    cp_async_commit();
  }

  // q * scale as float4s at ((c * kQuads + h) * R + r) * 4 + quarter, for dims
  // [(4c + quarter) * kVec + 4h, + 4): the 4 quarters' reads are adjacent (no bank conflict).
  for (int idx = tid; idx < R * DMAX; idx += G::kThreads) {
    const int r = idx / DMAX, d = idx % DMAX;
    const int c4 = d / G::kVec, e = d % G::kVec;
    const int at = (((c4 / 4 * G::kQuads + e / 4) * R + r) * 4 + c4 % 4) * 4 + e % 4;
    float value = 0.0f;
    if (r < nrows && d < a.head_dim) {
      value = to_float(static_cast<const T*>(a.q)[q_off_s[r] + d]) * a.scale;
    }
    q_s[at] = value;
  }

  // The rows this lane owns after the reduce-scatter: quarter * kLaneRows + i.
  float m_run[G::kLaneRows], l_run[G::kLaneRows];
  std::int64_t row_visible[G::kLaneRows], mask_row[G::kLaneRows];
#pragma unroll
  for (int i = 0; i < G::kLaneRows; ++i) {
    const int r = quarter * G::kLaneRows + i;
    m_run[i] = -INFINITY;
    l_run[i] = 0.0f;
    row_visible[i] = visible_s[r];
    mask_row[i] = mask_off_s[r];
  }
  float acc[R][G::kLaneDims] = {};
  float* p_warp = p_s + warp * kWarpKeys * R;
  float* corr_warp = corr_s + warp * R;

  for (int t = 0; t < ntiles; ++t) {
    const std::int64_t key0 = begin + std::int64_t{t} * G::kKeys;
    const int nk = static_cast<int>(std::min<std::int64_t>(G::kKeys, end - key0));
    const int stage = t % kTileStages;
    if (t + kTileStages - 1 < ntiles) load_tile(t + kTileStages - 1);
    cp_async_commit();
    cp_async_wait<kTileStages - 1>();  // tile t has landed (later ones may still be in flight)
    __syncthreads();                   // ... for every thread's copies

    // Partial scores of this lane's key over its quarter of the head dim, for every row.
    const int key = warp * kWarpKeys + key_lane;  // in the tile
    float s[R] = {};
    if (key < nk) {
      const T* k_row = k_s + (stage * G::kKeys + key) * G::kRowElems;
      const float4* q4 = reinterpret_cast<const float4*>(q_s);
#pragma unroll
      for (int c = 0; c < G::kLaneChunks; ++c) {
        if (4 * c + quarter >= k_chunks) break;
        float kf[G::kVec];
        widen_row<T, G::kVec>(k_row, key, (4 * c + quarter) * G::kVec, kf);
#pragma unroll
        for (int h = 0; h < G::kQuads; ++h) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const float4 q = q4[((c * G::kQuads + h) * R + r) * 4 + quarter];
            s[r] = fmaf(q.x, kf[4 * h], s[r]);
            s[r] = fmaf(q.y, kf[4 * h + 1], s[r]);
            s[r] = fmaf(q.z, kf[4 * h + 2], s[r]);
            s[r] = fmaf(q.w, kf[4 * h + 3], s[r]);
          }
        }
      }
    }
    // Reduce-scatter over the key's 4 lanes: lane `quarter` keeps rows quarter * kLaneRows + i.
    float half[R / 2];
#pragma unroll
    for (int i = 0; i < R / 2; ++i) {
      const bool upper = quarter & 2;
      const float give = upper ? s[i] : s[R / 2 + i];
      half[i] = (upper ? s[R / 2 + i] : s[i]) + __shfl_xor_sync(0xFFFFFFFFu, give, 2);
    }
    float own[G::kLaneRows];
#pragma unroll
    for (int i = 0; i < G::kLaneRows; ++i) {
      const bool upper = quarter & 1;
      const float give = upper ? half[i] : half[G::kLaneRows + i];
      own[i] = (upper ? half[G::kLaneRows + i] : half[i]) + __shfl_xor_sync(0xFFFFFFFFu, give, 1);
    }

    // Online softmax of each owned row over the warp's 8 keys.
    const std::int64_t j = key0 + key;
#pragma unroll
    for (int i = 0; i < G::kLaneRows; ++i) {
      float x = -INFINITY;
      if (key < nk && j < row_visible[i]) {
        x = own[i];
        if (a.mask != nullptr) {
          const std::int64_t off = mask_row[i] + j * a.mask_strides[3];
          x += a.mask_type == Type::Float32 ? static_cast<const float*>(a.mask)[off]
                                            : to_float(static_cast<const T*>(a.mask)[off]);
        }
      }
      const float m_new = fmaxf(m_run[i], keys_max(x));
      float p = 0.0f, corr = 1.0f;
      if (m_new != -INFINITY) {  // else every key so far is masked: nothing to scale
        p = x == -INFINITY ? 0.0f : expf(x - m_new);
        corr = expf(m_run[i] - m_new);
      }
      l_run[i] = l_run[i] * corr + keys_sum(p);
      m_run[i] = m_new;
      const int r = quarter * G::kLaneRows + i;
      p_warp[key_lane * R + r] = p;
      if (key_lane == 0) corr_warp[r] = corr;
    }
    __syncwarp();

    // P.V over the warp's keys; the lane owns V columns [lane * kLaneDims, + kLaneDims).
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float corr = corr_warp[r];
#pragma unroll
      for (int e = 0; e < G::kLaneDims; ++e) acc[r][e] *= corr;
    }
#pragma unroll
    for (int kl = 0; kl < kWarpKeys; ++kl) {
      const int v_key = warp * kWarpKeys + kl;
      if (v_key >= nk) break;
      float vf[G::kLaneDims];
      widen_row<T, G::kLaneDims>(v_s + (stage * G::kKeys + v_key) * G::kRowElems, v_key,
                                 lane * G::kLaneDims, vf);
      float p[R];
#pragma unroll
      for (int r = 0; r < R; r += 4) {  // broadcast 16-byte reads
        const float4 p4 = *reinterpret_cast<const float4*>(p_warp + kl * R + r);
        p[r] = p4.x;
        p[r + 1] = p4.y;
        p[r + 2] = p4.z;
        p[r + 3] = p4.w;
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int e = 0; e < G::kLaneDims; ++e) acc[r][e] = fmaf(p[r], vf[e], acc[r][e]);
      }
    }
    __syncthreads();  // the next prefetch overwrites this stage (and p, corr)
  }

  // Combine the warps' softmax states: each warp writes its sums, rescaled to the block's max,
  // to a slice of its own (the K/V tiles are free now); the slices are added when written out.
  if (key_lane == 0) {
#pragma unroll
    for (int i = 0; i < G::kLaneRows; ++i) {
      m_s[warp * R + quarter * G::kLaneRows + i] = m_run[i];
      l_s[warp * R + quarter * G::kLaneRows + i] = l_run[i];
    }
  }
  __syncthreads();
  float* slices = reinterpret_cast<float*>(smem);  // [warp][row][DMAX]
  float scale[R], block_m[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    block_m[r] = -INFINITY;
    for (int w = 0; w < G::kWarps; ++w) block_m[r] = fmaxf(block_m[r], m_s[w * R + r]);
    const float mw = m_s[warp * R + r];
    scale[r] = mw == -INFINITY ? 0.0f : expf(mw - block_m[r]);
  }
  if (tid < R) {
    float mx = -INFINITY, total = 0.0f;
    for (int w = 0; w < G::kWarps; ++w) mx = fmaxf(mx, m_s[w * R + tid]);
    for (int w = 0; w < G::kWarps; ++w) {
      const float mw = m_s[w * R + tid];
      if (mw != -INFINITY) total += l_s[w * R + tid] * expf(mw - mx);
    }
    max_s[tid] = mx;
    total_s[tid] = splits == 1 && tid < nrows ? with_sink(a, out_row_s[tid], mx, total) : total;
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int e = 0; e < G::kLaneDims; ++e) {
      slices[(warp * R + r) * DMAX + lane * G::kLaneDims + e] = acc[r][e] * scale[r];
    }
  }
  __syncthreads();
  const auto block_sum_at = [&](int r, int d) {
    float sum = 0.0f;
    for (int w = 0; w < G::kWarps; ++w) sum += slices[(w * R + r) * DMAX + d];
    return sum;
  };

  const auto row_index = [&](int r) { return out_row_s[r]; };
  if (splits == 1) {
    for (int idx = tid; idx < nrows * a.v_dim; idx += G::kThreads) {
      const int r = idx / static_cast<int>(a.v_dim), d = idx % static_cast<int>(a.v_dim);
      const float total = total_s[r];
      // A row with every key masked yields zeros, not NaN.
      static_cast<T*>(a.out)[row_index(r) * a.v_dim + d] =
          from_float<T>(total > 0.0f ? block_sum_at(r, d) / total : 0.0f);
    }
    return;
  }

  const std::int64_t stride = part_stride(a);
  for (int idx = tid; idx < nrows * a.v_dim; idx += G::kThreads) {
    const int r = idx / static_cast<int>(a.v_dim), d = idx % static_cast<int>(a.v_dim);
    float* part = workspace + (row_index(r) * splits + blockIdx.y) * stride;
    part[kPartHeader + d] = block_sum_at(r, d);
    if (d == 0) {
      part[0] = max_s[r];
      part[1] = total_s[r];
    }
  }
  // The last split of this row group to finish merges them all.
  __threadfence();  // this block's partials are visible before its ticket
  __syncthreads();
  __shared__ bool last;
  if (tid == 0) last = atomicAdd(&g_split_tickets[blockIdx.x], 1u) == unsigned(splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  float* weight = reinterpret_cast<float*>(smem);  // [row][split]; K/V tiles are done
  float* warp_sums = weight + R * kMaxSplits;      // [warp][row][DMAX]
  for (int r = warp; r < nrows; r += G::kWarps) {
    const float* parts = workspace + row_index(r) * splits * stride;
    float mx = -INFINITY;
    for (int sp = lane; sp < splits; sp += 32) mx = fmaxf(mx, __ldcg(parts + sp * stride));
    mx = warp_max(mx);
    float total = 0.0f;
    for (int sp = lane; sp < splits; sp += 32) {
      const float ms = __ldcg(parts + sp * stride);
      const float w = ms == -INFINITY ? 0.0f : expf(ms - mx);  // a split with no key weighs 0
      weight[r * kMaxSplits + sp] = w;
      total += __ldcg(parts + sp * stride + 1) * w;
    }
    total = warp_sum(total);
    if (lane == 0) total_s[r] = with_sink(a, row_index(r), mx, total);
  }
  __syncthreads();
  // Warp w sums splits w, w + 4, ... of every row, its lanes 4 columns each: many loads in flight.
  const int quads = static_cast<int>(a.v_dim) / 4;  // v_dim is a multiple of 4 on this path
  for (int c = lane; c < quads; c += 32) {
    float4 sum[R];
#pragma unroll
    for (int r = 0; r < R; ++r) sum[r] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 2
    for (int sp = warp; sp < splits; sp += G::kWarps) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= nrows) break;
        const float4 v = __ldcg(reinterpret_cast<const float4*>(
            workspace + (row_index(r) * splits + sp) * stride + kPartHeader + 4 * c));
        const float w = weight[r * kMaxSplits + sp];
        sum[r].x = fmaf(v.x, w, sum[r].x);
        sum[r].y = fmaf(v.y, w, sum[r].y);
        sum[r].z = fmaf(v.z, w, sum[r].z);
        sum[r].w = fmaf(v.w, w, sum[r].w);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      *reinterpret_cast<float4*>(warp_sums + (warp * R + r) * DMAX + 4 * c) = sum[r];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < nrows * a.v_dim; idx += G::kThreads) {
    const int r = idx / static_cast<int>(a.v_dim), d = idx % static_cast<int>(a.v_dim);
    float sum = 0.0f;
    for (int w = 0; w < G::kWarps; ++w) sum += warp_sums[(w * R + r) * DMAX + d];
    const float total = total_s[r];
    static_cast<T*>(a.out)[row_index(r) * a.v_dim + d] =
        from_float<T>(total > 0.0f ? sum / total : 0.0f);
  }
  if (tid == 0) g_split_tickets[blockIdx.x] = 0;  // ready for the next launch
}

int split_count(const Attention& a, int multiprocessors) {
  const std::int64_t rows = a.batch * a.q_heads * a.q_len;
  const std::int64_t want = (4LL * multiprocessors + rows - 1) / std::max<std::int64_t>(rows, 1);
  const std::int64_t most = std::max<std::int64_t>(1, a.k_len / kKeysPerSplit);
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({want, most, 64})));
}

bool aligned16(const void* p, const std::int64_t* strides, int n, std::size_t element) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  for (int d = 0; d < n; ++d) {
    if (strides[d] * static_cast<std::int64_t>(element) % 16 != 0) return false;
  }
  return true;
}

using TiledKernel = void (*)(Attention, std::int64_t, std::int64_t, int, float*);

// One instantiation of the tiled kernel: its shared memory and how many blocks of it fit on a
// multiprocessor (asked once; the shared-memory opt-in above 48 KiB is made then too).
struct TiledVariant {
  TiledKernel kernel = nullptr;
  int threads = 0;
  int tile_keys = 0;
  std::size_t smem = 0;
  int blocks_per_sm = 0;
  cudaError_t status = cudaSuccess;
  std::atomic<std::uint64_t>* opted_in = nullptr;  // devices (< 64) where smem was raised
};

template <typename T, int DMAX, int R>
const TiledVariant& tiled_variant() {
  static std::atomic<std::uint64_t> opted_in{0};
  static const TiledVariant variant = [] {
    TiledVariant v;
    v.opted_in = &opted_in;
    v.kernel = attention_tiled_kernel<T, DMAX, R>;
    v.threads = Tile<T, DMAX, R>::kThreads;
    v.tile_keys = Tile<T, DMAX, R>::kKeys;
    v.smem = Tile<T, DMAX, R>::kSmemBytes;
    v.status = cudaFuncSetAttribute(v.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(v.smem));
    if (v.status == cudaSuccess) {
      v.status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v.blocks_per_sm, v.kernel,
                                                               v.threads, v.smem);
    }
    if (v.status != cudaSuccess) cudaGetLastError();  // not sticky: leave no stale error behind
    return v;
  }();
  return variant;
}

template <typename T, int DMAX>
const TiledVariant& tiled_variant(int rows) {
  return rows == 4 ? tiled_variant<T, DMAX, 4>() : tiled_variant<T, DMAX, 8>();
}

// Geometry shared by the workspace query and the launch: which variant, how the rows of a kv
// group are cut into blocks, and how the keys are split across blocks.
struct TilePlan {
  const TiledVariant* variant = nullptr;  // null: the tiled path cannot take these tensors
  int rows = 0;                           // rows per block (the variant's R)
  std::int64_t row_chunks = 0;            // blocks of `rows` rows per (batch, kv head)
  std::int64_t chunk_keys = 0;            // keys per split, a multiple of the tile's
  int splits = 1;
};

TilePlan tile_plan(const Attention& a, int multiprocessors) {
  TilePlan plan;
  const std::size_t element = a.type == Type::Float32 ? 4 : 2;
  const std::int64_t vec = 16 / static_cast<std::int64_t>(element);
  const std::int64_t widest = std::max(a.head_dim, a.v_dim);
  if (a.head_dim % vec != 0 || a.v_dim % vec != 0 || widest > kMaxHeadDim ||
      !aligned16(a.k, a.k_strides, 3, element) || !aligned16(a.v, a.v_strides, 3, element)) {
    return plan;
  }
  const std::int64_t group_rows = (a.q_heads / a.kv_heads) * a.q_len;
  plan.rows = group_rows <= 4 ? 4 : 8;
  plan.variant = [&]() -> const TiledVariant* {
    const int dmax = widest <= 64 ? 64 : widest <= 128 ? 128 : 256;
    const TiledVariant* v = nullptr;
    dispatch_float(a.type, [&](auto tag) {
      using T = decltype(tag);
      v = dmax == 64    ? &tiled_variant<T, 64>(plan.rows)
          : dmax == 128 ? &tiled_variant<T, 128>(plan.rows)
                        : &tiled_variant<T, 256>(plan.rows);
      return cudaSuccess;
    });
    return v;
  }();
  if (plan.variant == nullptr || plan.variant->status != cudaSuccess ||
      plan.variant->blocks_per_sm == 0) {
    plan.variant = nullptr;  // the per-row path still works
    return plan;
  }
  plan.row_chunks = (group_rows + plan.rows - 1) / plan.rows;
  // Split the keys so that the blocks fill the GPU in one wave (a second, partial wave would
  // double the time), with at least kMinSplitKeys keys per split: a block's start (the first
  // tile's latency) and end (combining warps, writing and merging partials) are fixed costs.
  const std::int64_t blocks = a.batch * a.kv_heads * plan.row_chunks;
  const std::int64_t resident = std::int64_t{plan.variant->blocks_per_sm} * multiprocessors;
  std::int64_t fit = std::max<std::int64_t>(1, resident / std::max<std::int64_t>(blocks, 1));
  if (blocks > kMaxTickets) fit = 1;  // too many row groups to count their splits
  const std::int64_t most = std::max<std::int64_t>(1, a.k_len / kMinSplitKeys);
  const std::int64_t splits = std::min<std::int64_t>({fit, most, kMaxSplits});
  const std::int64_t per_split = (a.k_len + splits - 1) / splits;
  const std::int64_t tile = plan.variant->tile_keys;
  plan.chunk_keys = std::max<std::int64_t>(tile, (per_split + tile - 1) / tile * tile);
  plan.splits = static_cast<int>(
      std::max<std::int64_t>(1, (a.k_len + plan.chunk_keys - 1) / plan.chunk_keys));
  return plan;
}

cudaError_t launch_tiled(const Attention& a, const TilePlan& plan, float* ws, cudaStream_t stream) {
  const TiledVariant& v = *plan.variant;
  if (v.smem > 48 * 1024) {  // the opt-in belongs to a device: once on each
    int device = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess) return status;
    const std::uint64_t bit = device < 64 ? std::uint64_t{1} << device : 0;
    if ((v.opted_in->load(std::memory_order_acquire) & bit) == 0) {
      status = cudaFuncSetAttribute(v.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(v.smem));
      if (status != cudaSuccess) return status;
      v.opted_in->fetch_or(bit, std::memory_order_release);
    }
  }
  const dim3 grid(static_cast<unsigned>(a.batch * a.kv_heads * plan.row_chunks),
                  static_cast<unsigned>(plan.splits));
  plan.variant->kernel<<<grid, v.threads, v.smem, stream>>>(a, plan.row_chunks, plan.chunk_keys,
                                                            plan.splits, ws);
  return launched();
}

// Which kernel takes a call: flash decoding for a few query positions, the tensor-core flash
// kernel for longer ones (both bf16/f16 with 16-byte aligned K/V rows and head dims that are
// multiples of 8), and the tiled or per-row kernels above for everything else (float32, odd
// head dims, unaligned rows).
enum class Route { FlashDecode, FlashPrefill, Tiled, PerRow };

bool fits_int(const Attention& a) {
  constexpr std::int64_t kMax = 0x7FFFFFFF;
  return a.batch <= kMax && a.q_heads <= kMax && a.kv_heads <= kMax && a.q_len <= kMax &&
         a.k_len <= kMax && a.batch * a.kv_heads <= 65535;
}

FlashDecodeArgs decode_args(const Attention& a, int multiprocessors) {
  FlashDecodeArgs d;
  d.q = a.q;
  d.k = a.k;
  d.v = a.v;
  d.out = a.out;
  d.type = a.type;
  d.batch = static_cast<int>(a.batch);
  d.q_heads = static_cast<int>(a.q_heads);
  d.kv_heads = static_cast<int>(a.kv_heads);
  d.q_len = static_cast<int>(a.q_len);
  d.head_dim = static_cast<int>(a.head_dim);
  d.v_dim = static_cast<int>(a.v_dim);
  for (int i = 0; i < 3; ++i) {
    d.q_strides[i] = a.q_strides[i];
    d.k_strides[i] = a.k_strides[i];
    d.v_strides[i] = a.v_strides[i];
  }
  d.out_strides[0] = a.q_heads * a.q_len * a.v_dim;  // contiguous [b, hq, lq, dv]
  d.out_strides[1] = a.q_len * a.v_dim;
  d.out_strides[2] = a.v_dim;
  d.max_kv_len = static_cast<int>(a.k_len);
  d.mask = a.mask;
  d.mask_type = a.mask_type;
  for (int i = 0; i < 4; ++i) d.mask_strides[i] = a.mask_strides[i];
  d.causal = a.causal;
  d.scale = a.scale;
  d.sinks = a.sinks;
  d.splits = flash_decode_splits(d, multiprocessors);
  return d;
}

Route route_of(const Attention& a, int multiprocessors) {
  if (fits_int(a) && a.q_len <= kFlashDecodeMaxQ &&
      flash_decode_supported(decode_args(a, multiprocessors))) {
    return Route::FlashDecode;
  }
  if (a.q_len > kFlashDecodeMaxQ && flash_prefill_supported(a)) return Route::FlashPrefill;
  return tile_plan(a, multiprocessors).variant != nullptr ? Route::Tiled : Route::PerRow;
}

}  // namespace

std::size_t attention_workspace_bytes(const Attention& a, int multiprocessors) {
  switch (route_of(a, multiprocessors)) {
    case Route::FlashDecode:
      return flash_decode_scratch_bytes(decode_args(a, multiprocessors));
    case Route::FlashPrefill:
      return 0;
    case Route::Tiled:
    case Route::PerRow:
      break;
  }
  const TilePlan plan = tile_plan(a, multiprocessors);
  const int splits = plan.variant != nullptr ? plan.splits : split_count(a, multiprocessors);
  if (splits == 1) return 0;
  return static_cast<std::size_t>(a.batch * a.q_heads * a.q_len * splits * part_stride(a)) *
         sizeof(float);
}

cudaError_t attention(const Attention& a, void* workspace, int multiprocessors,
                      cudaStream_t stream) {
  const std::int64_t rows = a.batch * a.q_heads * a.q_len;
  if (rows == 0 || a.v_dim == 0) return cudaSuccess;
  if (a.head_dim > kMaxHeadDim || a.v_dim > kMaxHeadDim) return cudaErrorInvalidValue;
  const Route route = route_of(a, multiprocessors);
  if (route == Route::FlashDecode) {
    FlashDecodeArgs d = decode_args(a, multiprocessors);
    d.scratch = static_cast<float*>(workspace);
    // A fresh workspace each call: its ticket counters start at zero here.
    const cudaError_t cleared = flash_decode_clear_scratch(d, stream);
    return cleared != cudaSuccess ? cleared : launch_flash_decode(d, stream);
  }
  if (route == Route::FlashPrefill) return launch_flash_prefill(a, stream);
  const TilePlan plan = tile_plan(a, multiprocessors);
  const int splits = plan.variant != nullptr ? plan.splits : split_count(a, multiprocessors);
  auto* ws = static_cast<float*>(workspace);
  if (splits > 1 && ws == nullptr) return cudaErrorInvalidValue;
  const int widest = static_cast<int>(std::max(a.head_dim, a.v_dim));
  if (plan.variant != nullptr) return launch_tiled(a, plan, ws, stream);  // merges its splits
  return dispatch_float(a.type, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(splits));
    if (widest <= 64) {
      attention_kernel<T, 2><<<grid, kWarps * 32, 0, stream>>>(a, splits, ws);
    } else if (widest <= 128) {
      attention_kernel<T, 4><<<grid, kWarps * 32, 0, stream>>>(a, splits, ws);
    } else {
      attention_kernel<T, 8><<<grid, kWarps * 32, 0, stream>>>(a, splits, ws);
    }
    const cudaError_t status = launched();
    if (status != cudaSuccess || splits == 1) return status;
    merge_splits_kernel<T><<<static_cast<unsigned>(rows), 128, 0, stream>>>(a, splits, ws);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
