#pragma once
// The one-kernel flash decoding's kernel (flash_decode_fused.cu explains the algorithm), shared by
// its two instantiation sets: flash_decode_fused.cu (the partials of a head's splits merged by the
// last block through a global scratch and a ticket counter) and flash_decode_cluster.cu (a head's
// splits are one thread-block cluster and merge over distributed shared memory: no scratch, no
// ticket, no fence; sm_90+).

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "cuda/flash_common.cuh"
#include "cuda/flash_decode_common.cuh"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels::fused_decode {

using flash::chunk_keys;
using flash::kLog2e;
using flash::length_of;
using flash::mask_at;
using flash::row_at;
using flash::RowAt;

using Kernel = void (*)(FlashDecodeArgs, int);

// Threads of a block of the scratch-merge instantiations (flash_decode_fused.cu).
inline constexpr int kThreads = 128;
// Most blocks of a cluster (the splits of a head in flash_decode_cluster.cu): 16 is Hopper's
// non-portable limit, 8 the portable one.
inline constexpr int kMostCluster = 16;

// An instantiation, its dynamic shared memory and how many of its blocks fit on an SM (clusters:
// how many clusters of each size fit on the device at once).
// The opt-in to more than 48 KB of dynamic shared memory is a per-device attribute of the
// function, so it is made on each device the first time it launches there (`opted` bit per device).
struct Instance {
  Kernel kernel = nullptr;
  int smem = 0;
  int threads = 0;
  int blocks_per_sm = 1;
  bool ok = false;       // the shared-memory opt-in succeeded on the first device
  bool cluster = false;  // launched in clusters of a.splits blocks
  int most_cluster = 1;  // the largest cluster size with active_clusters > 0
  int active_clusters[kMostCluster + 1] = {};
  std::atomic<std::uint64_t>* opted = nullptr;
};

// Made once per instantiation (a function-local static of its caller); `opted` lives as long.
inline Instance make_instance(Kernel kernel, int smem, int threads, bool cluster) {
  Instance d;
  d.opted = new std::atomic<std::uint64_t>(0);  // one per instantiation, never freed
  d.kernel = kernel;
  d.smem = smem;
  d.threads = threads;
  d.cluster = cluster;
  d.ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) ==
         cudaSuccess;
  if (!d.ok || cudaOccupancyMaxActiveBlocksPerMultiprocessor(&d.blocks_per_sm, kernel, threads,
                                                             smem) != cudaSuccess) {
    cudaGetLastError();  // not sticky: leave no stale error behind
    d.blocks_per_sm = 1;
  }
  d.blocks_per_sm = std::max(d.blocks_per_sm, 1);
  if (!cluster || !d.ok) return d;
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      major < 9) {
    cudaGetLastError();
    d.ok = false;  // clusters need sm_90
    return d;
  }
  // Past 8 blocks a cluster is "non-portable": allowed on H100 by this opt-in.
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
      cudaSuccess) {
    cudaGetLastError();
  }
  for (int size = 1; size <= kMostCluster; ++size) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(static_cast<unsigned>(size));
    config.blockDim = dim3(static_cast<unsigned>(threads));
    config.dynamicSmemBytes = static_cast<std::size_t>(smem);
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = static_cast<unsigned>(size);
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, kernel, &config) != cudaSuccess) {
      cudaGetLastError();
      n = 0;
    }
    d.active_clusters[size] = n;
    if (n > 0) d.most_cluster = size;
  }
  return d;
}

// The shared-memory opt-in on the current device, once per device.
inline cudaError_t opt_in(const Instance& k) {
  if (!k.ok) return cudaErrorInvalidValue;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return launched();
  const std::uint64_t bit = std::uint64_t{1} << device;
  if ((k.opted->load(std::memory_order_acquire) & bit) == 0) {
    const cudaError_t set =
        cudaFuncSetAttribute(k.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem);
    if (set != cudaSuccess) return set;
    if (k.cluster) {
      const cudaError_t wide =
          cudaFuncSetAttribute(k.kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (wide != cudaSuccess) cudaGetLastError();  // clusters of at most 8 still launch
    }
    k.opted->fetch_or(bit, std::memory_order_acq_rel);
  }
  return cudaSuccess;
}

// Most bytes of K/V stages a block keeps in shared memory (of the 227 KB an SM has): head dim 256
// with 64-key tiles gets fewer stages than asked for.
inline constexpr int kMostPipeBytes = 160 * 1024;

// MMA: the tensor-core instantiations (scores and P V by mma.sync, one warp a key group, rows of
// the stages padded by 16 bytes so that ldmatrix reads them without bank conflicts).
template <int DMAX, int R, int W, int TK, int STAGES_ASKED, int THREADS, bool MMA = false>
struct Shape {
  static constexpr int kThreads = THREADS;
  static constexpr int kChunks = DMAX / 8;    // 16-byte chunks of a row
  static constexpr int kLanes = kChunks / W;  // lanes per key (not MMA)
  static constexpr int kGroups = MMA ? kThreads / 32 : kThreads / kLanes;  // key groups
  static constexpr int kKeys = TK / kGroups;               // keys of a group per tile
  static constexpr int kRow = MMA ? DMAX + 8 : DMAX;       // elements between two keys in a stage
  static constexpr int kTileElems = TK * kRow;             // one of K or V
  static constexpr int kCopies = TK * kChunks / kThreads;  // 16-byte copies per thread, K or V
  static constexpr int kStageBytes = 2 * kTileElems * 2;
  static constexpr int kStages = STAGES_ASKED * kStageBytes <= kMostPipeBytes ? STAGES_ASKED
                                 : kMostPipeBytes / kStageBytes >= 2 ? kMostPipeBytes / kStageBytes
                                                                     : 2;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kMergeBytes = R * kGroups * DMAX * 4 + 2 * R * kGroups * 4;
  static constexpr int kSmem = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
  static_assert(kLanes >= 1 && kLanes <= 32 && 32 % kLanes == 0, "lanes per key");
  static_assert(kKeys >= 1 && TK % kGroups == 0, "a tile covers every key group");
  static_assert(kCopies >= 1 && TK * kChunks % kThreads == 0, "copies per thread");
  static_assert(!MMA || (kKeys % 16 == 0 && R <= 8), "a warp's keys are whole k-steps of 16");
};

// The merge of a cluster's partials: each of its blocks writes a share of the group's outputs from
// every block's partial, read over distributed shared memory. The first barrier publishes the
// partials (and makes sure every block of the cluster runs); the second keeps each block's shared
// memory alive until the others are done reading it.
template <typename T, int DMAX, int R, int THREADS>
__device__ __forceinline__ void cluster_merge(const FlashDecodeArgs& a, int b, int kvh, int first,
                                              int nrows, float* s_part, float* s_pml) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int blocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int items = nrows * a.v_dim;
  for (int idx = rank * THREADS + static_cast<int>(threadIdx.x); idx < items;
       idx += blocks * THREADS) {
    const int r = idx / a.v_dim, d = idx % a.v_dim;
    // Every block's (max, sum, output) requested at once: one distributed-shared-memory round
    // trip, not one per block.
    float ms[kMostCluster], ls[kMostCluster], ps[kMostCluster];
#pragma unroll
    for (int s = 0; s < kMostCluster; ++s) {
      ms[s] = -INFINITY;
      ls[s] = ps[s] = 0.0f;
      if (s < blocks) {
        const float* ml = cluster.map_shared_rank(s_pml, s);
        ms[s] = ml[2 * r];
        ls[s] = ml[2 * r + 1];
        ps[s] = cluster.map_shared_rank(s_part, s)[r * DMAX + d];
      }
    }
    float mx = -INFINITY;
#pragma unroll
    for (int s = 0; s < kMostCluster; ++s) mx = fmaxf(mx, ms[s]);
    float sum = 0.0f, total = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int s = 0; s < kMostCluster; ++s) {
        const float w = flash::fast_exp2(ms[s] - mx);  // 0: the split saw no key (or no block)
        total = fmaf(ls[s], w, total);
        sum = fmaf(ps[s], w, sum);
      }
    }
    const RowAt at = row_at(a, kvh, first + r);
    if (a.sinks != nullptr && mx != -INFINITY)
      total += flash::fast_exp2(a.sinks[at.h] * kLog2e - mx);
    // A row with every key masked yields zeros, not NaN.
    static_cast<T*>(
        a.out)[b * a.out_strides[0] + at.h * a.out_strides[1] + at.i * a.out_strides[2] + d] =
        from_float<T>(total > 0.0f ? sum / total : 0.0f);
  }
  cluster.sync();
#endif
}

// One tile of the tensor-core instantiations, for the calling warp's S::kKeys keys starting at
// `key0` (its share of the tile in the stage `ks`/`vs`): S = Q K^T with m16n8k16 (M: the block's
// query rows, padded to 16; N: 8 keys; K: the head dim), the online softmax of the lane's row
// `row` (base 2) over the quad, P rounded to the input type (as FlashAttention does) and
// O += P V with V's B fragments by ldmatrix.trans. Same layouts as flash_prefill.cu.
template <typename T, int DMAX, int R, typename S>
__device__ __forceinline__ void mma_tile(const FlashDecodeArgs& a, const T* ks, const T* vs,
                                         int key0, int end, int visible, bool plain,
                                         const std::uint32_t (&qa)[DMAX / 16][4], float qscale,
                                         int b, int kvh, int row, float& m_run, float& l_run,
                                         float (&o)[DMAX / 8][4]) {
  constexpr int KW = S::kKeys, NT = KW / 8;
  const int lane = threadIdx.x & 31, quad = lane & 3;
  const int warp_key = (threadIdx.x >> 5) * KW;  // the warp's first key in the stage
  float sc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
  for (int kstep = 0; kstep < DMAX / 16; ++kstep) {
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      std::uint32_t kb[4];
      const int key = warp_key + np * 16 + (lane >> 4) * 8 + (lane & 7);
      const int col = kstep * 16 + ((lane >> 3) & 1) * 8;
      flash::ldmatrix_x4(kb, ks + key * S::kRow + col);
      flash::mma_16816<T>(sc[2 * np], qa[kstep], kb[0], kb[1]);
      flash::mma_16816<T>(sc[2 * np + 1], qa[kstep], kb[2], kb[3]);
    }
  }
  float mx = m_run;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float x = sc[nt][e] * qscale;
      if (!plain) {
        const int at = key0 + nt * 8 + 2 * quad + e;
        if (at < end && at < visible) {
          if (a.mask != nullptr) {  // visible > 0: `row` is one of the block's live rows
            const RowAt q = row_at(a, kvh, row);
            x += mask_at(a, b * a.mask_strides[0] + q.h * a.mask_strides[1] +
                                q.i * a.mask_strides[2] + at * a.mask_strides[3]) *
                 kLog2e;
          }
        } else {
          x = -INFINITY;
        }
      }
      sc[nt][e] = x;
      mx = fmaxf(mx, x);
    }
  }
  mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 2));
  // A row that has seen no key yet keeps max -inf: subtract 0 instead (every p is then 0).
  const float base = mx == -INFINITY ? 0.0f : mx;
  const float corr = flash::fast_exp2(m_run - base);  // 0 while the max was -inf
  m_run = mx;
  float sum = 0.0f;
  std::uint32_t pa[KW / 16][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    sc[nt][0] = flash::fast_exp2(sc[nt][0] - base);
    sc[nt][1] = flash::fast_exp2(sc[nt][1] - base);
    sum += sc[nt][0] + sc[nt][1];
  }
  l_run = l_run * corr + sum;
#pragma unroll
  for (int dt = 0; dt < DMAX / 8; ++dt) {
    o[dt][0] *= corr;
    o[dt][1] *= corr;
  }
  // P's C fragments are A fragments once rounded (rows 8-15 zero).
#pragma unroll
  for (int kk = 0; kk < KW / 16; ++kk) {
    pa[kk][0] = flash::pack2<T>(sc[2 * kk][0], sc[2 * kk][1]);
    pa[kk][1] = 0u;
    pa[kk][2] = flash::pack2<T>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
    pa[kk][3] = 0u;
  }
#pragma unroll
  for (int kk = 0; kk < KW / 16; ++kk) {
#pragma unroll
    for (int dp = 0; dp < DMAX / 16; ++dp) {
      std::uint32_t vb[4];
      const int key = warp_key + kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
      const int col = dp * 16 + (lane >> 4) * 8;
      flash::ldmatrix_x4_trans(vb, vs + key * S::kRow + col);
      flash::mma_16816<T>(o[2 * dp], pa[kk], vb[0], vb[1]);
      flash::mma_16816<T>(o[2 * dp + 1], pa[kk], vb[2], vb[3]);
    }
  }
}

// Four columns of query row `at`'s output: sum * inv rounded to T.
template <typename T>
__device__ __forceinline__ void store4(const FlashDecodeArgs& a, int b, RowAt at, int d, float4 sum,
                                       float inv) {
  T* out = static_cast<T*>(a.out) + b * a.out_strides[0] + at.h * a.out_strides[1] +
           at.i * a.out_strides[2] + d;
  out[0] = from_float<T>(sum.x * inv);
  out[1] = from_float<T>(sum.y * inv);
  out[2] = from_float<T>(sum.z * inv);
  out[3] = from_float<T>(sum.w * inv);
}

// The last block's merge of every split's partials of (batch b, kv head kvh, rows first..+nrows)
// into the output, two passes: the weights exp2(m_s - m) of the splits first (a warp per row, the
// sink in the denominator), then the partials.
template <typename T, int R, int THREADS>
__device__ __forceinline__ void merge_two_pass(const FlashDecodeArgs& a, int b, int kvh, int first,
                                               int nrows, int active, const float* scratch_o,
                                               const float* scratch_ml) {
  __shared__ float s_weight[R][kFlashDecodeMaxSplits];
  __shared__ float s_total[R];
  constexpr int kThreads = THREADS;
  const int tid = threadIdx.x, lane = tid & 31;
  const int warp = tid >> 5;
  for (int r = warp; r < nrows; r += kThreads / 32) {
    const RowAt at = row_at(a, kvh, first + r);
    const std::int64_t row = (static_cast<std::int64_t>(b) * a.q_heads + at.h) * a.q_len + at.i;
    const float* ml = scratch_ml + row * a.splits * 2;
    // One read of every split's (max, sum): at most kFlashDecodeMaxSplits / 32 per lane.
    constexpr int kPerLane = kFlashDecodeMaxSplits / 32;
    float ms[kPerLane], ls[kPerLane];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int s = lane + 32 * j;
      const float2 v = s < active ? __ldcg(reinterpret_cast<const float2*>(ml) + s)
                                  : make_float2(-INFINITY, 0.0f);
      ms[j] = v.x;
      ls[j] = v.y;
      mx = fmaxf(mx, v.x);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
    float total = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int s = lane + 32 * j;
      if (s < active) {
        const float w = mx == -INFINITY ? 0.0f : flash::fast_exp2(ms[j] - mx);
        s_weight[r][s] = w;
        total = fmaf(ls[j], w, total);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xFFFFFFFFu, total, o);
    if (a.sinks != nullptr && mx != -INFINITY)
      total += flash::fast_exp2(a.sinks[at.h] * kLog2e - mx);
    if (lane == 0) s_total[r] = total;
  }
  __syncthreads();
  // Four columns a thread (float4), sixteen splits' partials requested at once: one block reads
  // every split's partials of the group, so this tail is latency-bound, not bandwidth-bound.
  const int quads = a.v_dim / 4;
  for (int idx = tid; idx < nrows * quads; idx += kThreads) {
    const int r = idx / quads, d = idx % quads * 4;
    const RowAt at = row_at(a, kvh, first + r);
    const std::int64_t row = (static_cast<std::int64_t>(b) * a.q_heads + at.h) * a.q_len + at.i;
    const float4* parts = reinterpret_cast<const float4*>(scratch_o + row * a.splits * a.v_dim + d);
    const int stride = quads;  // float4s between two splits' partials
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    constexpr int kBatch = 16;  // loads in flight: ceil(active / 16) L2 round trips
    for (int s = 0; s < active; s += kBatch) {
      float4 p[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        p[j] =
            s + j < active ? __ldcg(parts + (s + j) * stride) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const float w = s + j < active ? s_weight[r][s + j] : 0.0f;
        sum.x = fmaf(p[j].x, w, sum.x);
        sum.y = fmaf(p[j].y, w, sum.y);
        sum.z = fmaf(p[j].z, w, sum.z);
        sum.w = fmaf(p[j].w, w, sum.w);
      }
    }
    const float total = s_total[r];
    store4<T>(a, b, at, d, sum, total > 0.0f ? 1.0f / total : 0.0f);  // all masked: zeros
  }
}

// The same merge in one pass: each split's (max, sum) is read with its partial, sixteen splits at
// once, and the sums rescaled as the running max grows (ceil(active / 16) L2 round trips, not one
// more for the maxima first).
template <typename T, int THREADS>
__device__ __forceinline__ void merge_one_pass(const FlashDecodeArgs& a, int b, int kvh, int first,
                                               int nrows, int active, const float* scratch_o,
                                               const float* scratch_ml) {
  const int quads = a.v_dim / 4;
  for (int idx = static_cast<int>(threadIdx.x); idx < nrows * quads; idx += THREADS) {
    const int r = idx / quads, d = idx % quads * 4;
    const RowAt at = row_at(a, kvh, first + r);
    const std::int64_t row = (static_cast<std::int64_t>(b) * a.q_heads + at.h) * a.q_len + at.i;
    const float4* parts = reinterpret_cast<const float4*>(scratch_o + row * a.splits * a.v_dim + d);
    const float2* mls = reinterpret_cast<const float2*>(scratch_ml + row * a.splits * 2);
    const int stride = quads;  // float4s between two splits' partials
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float mx = -INFINITY, total = 0.0f;
    constexpr int kBatch = 16;
    for (int s = 0; s < active; s += kBatch) {
      float4 p[kBatch];
      float2 ml[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const bool in = s + j < active;
        p[j] = in ? __ldcg(parts + (s + j) * stride) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        ml[j] = in ? __ldcg(mls + s + j) : make_float2(-INFINITY, 0.0f);
      }
      float next = mx;
#pragma unroll
      for (int j = 0; j < kBatch; ++j) next = fmaxf(next, ml[j].x);
      if (next == -INFINITY) continue;              // no split so far saw a key
      const float c = flash::fast_exp2(mx - next);  // 0 while the max was -inf
      mx = next;
      total *= c;
      sum.x *= c;
      sum.y *= c;
      sum.z *= c;
      sum.w *= c;
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const float w = flash::fast_exp2(ml[j].x - mx);  // 0: the split saw no key (or none)
        total = fmaf(ml[j].y, w, total);
        sum.x = fmaf(p[j].x, w, sum.x);
        sum.y = fmaf(p[j].y, w, sum.y);
        sum.z = fmaf(p[j].z, w, sum.z);
        sum.w = fmaf(p[j].w, w, sum.w);
      }
    }
    if (a.sinks != nullptr && mx != -INFINITY)
      total += flash::fast_exp2(a.sinks[at.h] * kLog2e - mx);
    store4<T>(a, b, at, d, sum, total > 0.0f ? 1.0f / total : 0.0f);  // all masked: zeros
  }
}

// CLUSTER: grid (split, batch * kv head, row chunk), a cluster of a.splits blocks along x.
// Else grid (split * row_chunks + row chunk, batch * kv head) and the global scratch merge.
// MMA: scores and P V on the tensor cores (flash_decode_fused.cu, "tensor cores").
template <typename T, int DMAX, int R, int W, int TK, int STAGES_ASKED, int THREADS, bool CLUSTER,
          bool MMA = false>
__global__ void __launch_bounds__(THREADS) fused_decode_kernel(FlashDecodeArgs a, int row_chunks) {
  using S = Shape<DMAX, R, W, TK, STAGES_ASKED, THREADS, MMA>;
  constexpr int kLanes = S::kLanes, kU = S::kKeys, kThreads = THREADS, STAGES = S::kStages;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_last;
  // CLUSTER: the block's partial (unnormalised output, then max and sum per row), which the other
  // blocks of the cluster read.
  __shared__ float s_part[CLUSTER ? R * DMAX : 1];
  __shared__ float s_pml[CLUSTER ? 2 * R : 1];

  const int tid = threadIdx.x, lane = tid & 31;
  const int part = lane % kLanes;  // the lane's first 16-byte chunk of a row
  const int group = tid / kLanes;  // the lane's key group in the block
  const int split =
      CLUSTER ? static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.x) / row_chunks;
  const int rc = CLUSTER ? static_cast<int>(blockIdx.z) : static_cast<int>(blockIdx.x) % row_chunks;
  const int kvh = static_cast<int>(blockIdx.y) % a.kv_heads;
  const int b = static_cast<int>(blockIdx.y) / a.kv_heads;
  // Launched with programmatic dependent launch (a.pdl): the block was placed while the previous
  // kernel ran; everything below reads what it wrote (the length, q, the cache, the counters)
  // after wait_for_producer, except with a.pdl_prefetch (kernels.h): the length, and the first
  // tiles when they hold only keys older than this step's q_len.
  if (!a.pdl_prefetch) wait_for_producer();
  const int length = length_of(a, b);
  const int chunk = chunk_keys(length, a.splits);
  // Splits holding keys (at least one, so that a sequence of length 0 still writes zeros).
  const int active = max(1, min(a.splits, (length + chunk - 1) / chunk));
  // Past the length: the merge skips the split. A cluster's block stays for the cluster's
  // barriers with an empty chunk (its partial: max -inf, sum 0).
  if (!CLUSTER && split >= active) return;
  const bool idle = split >= active;
  const int begin = idle ? 0 : split * chunk;
  const int end = idle ? 0 : min(begin + chunk, length);
  const int first = rc * R;
  const int nrows = min(R, a.q_heads / a.kv_heads * a.q_len - first);

  T* tiles = reinterpret_cast<T*>(smem);  // [STAGES][K, V][TK][kRow]
  const T* k_base = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* v_base = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  // Tile `t` of the chunk into stage `stage`: zeros past `end` and past the row's width.
  const auto load_tile = [&](int t, int stage) {
    T* ks = tiles + stage * 2 * S::kTileElems;
    T* vs = ks + S::kTileElems;
    const int base = begin + t * TK;
#pragma unroll
    for (int c = 0; c < S::kCopies; ++c) {
      const int idx = tid + c * kThreads;
      const int key = idx / S::kChunks, col = idx % S::kChunks * 8;
      const bool in = base + key < end;
      const std::int64_t row = base + key;
      const bool kin = in && col < a.head_dim, vin = in && col < a.v_dim;
      flash::cp_async16_or_zero(ks + key * S::kRow + col,
                                kin ? k_base + row * a.k_strides[2] + col : k_base, kin);
      flash::cp_async16_or_zero(vs + key * S::kRow + col,
                                vin ? v_base + row * a.v_strides[2] + col : v_base, vin);
    }
  };

  // The first tiles are requested before q is read: q's latency hides under theirs.
  const int tiles_n = (end - begin + TK - 1) / TK;  // 0 for an empty chunk
  const bool early = a.pdl_prefetch && min(end, begin + (STAGES - 1) * TK) <= length - a.q_len;
  if (a.pdl_prefetch && !early) wait_for_producer();
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < tiles_n) load_tile(t, t);
    flash::cp_async_commit();
  }
  if (early) wait_for_producer();

  // q * scale * log2(e) for the lane's W chunks of each row; keys each row may see.
  float qf[R][W][8];
  int visible[R];
  const float qscale = a.scale * kLog2e;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const RowAt at = row_at(a, kvh, first + r);
    const bool live = r < nrows;
    visible[r] = !live ? 0 : a.causal ? max(0, length - a.q_len + at.i + 1) : length;
    if constexpr (MMA) continue;
    const T* q = static_cast<const T*>(a.q) + b * a.q_strides[0] + at.h * a.q_strides[1] +
                 at.i * a.q_strides[2];
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const int col = (part + w * kLanes) * 8;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        qf[r][w][e] = live && col < a.head_dim ? to_float(q[col + e]) * qscale : 0.0f;
      }
    }
  }
  // MMA: the warp's A fragments of Q (m16n8k16: rows 0-7 are the block's query rows, 8-15 zero),
  // unscaled (the input's own bits: the scale is applied to the float32 scores), and the keys the
  // lane's row (g) may see.
  [[maybe_unused]] const int g = lane >> 2, quad = lane & 3;
  std::uint32_t qa[MMA ? DMAX / 16 : 1][4] = {};
  int my_visible = 0;
  if constexpr (MMA) {
    const bool live = g < nrows;
    const RowAt at = row_at(a, kvh, first + (live ? g : 0));
    const std::uint16_t* q =
        reinterpret_cast<const std::uint16_t*>(static_cast<const T*>(a.q) + b * a.q_strides[0] +
                                               at.h * a.q_strides[1] + at.i * a.q_strides[2]);
#pragma unroll
    for (int ks = 0; ks < DMAX / 16; ++ks) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int col = ks * 16 + half * 8 + 2 * quad;  // head_dim is a multiple of 8
        qa[ks][2 * half] =
            live && col < a.head_dim ? q[col] | static_cast<std::uint32_t>(q[col + 1]) << 16 : 0u;
      }
    }
    my_visible = !live ? 0 : a.causal ? max(0, length - a.q_len + at.i + 1) : length;
  }

  int open_until = end;  // keys below it are visible to every live row
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r < nrows) open_until = min(open_until, visible[r]);
  }

  // MMA: the warp's running max and sum of row g (the sum over the lane's keys only, summed over
  // the quad at the end) and O's C fragments (columns dt * 8 + 2 * quad + {0, 1} of row g in
  // [0] and [1]; [2] and [3] are the zero rows 8-15).
  float m_run = -INFINITY, l_run = 0.0f;
  float o[MMA ? DMAX / 8 : 1][4] = {};
  float m[R], l[R], acc[R][W][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r][w][e] = 0.0f;
    }
  }

  for (int t = 0; t < tiles_n; ++t) {
    flash::cp_async_wait<STAGES - 2>();
    // Tile t has landed for every thread, and every thread is done with tile t - 1, whose stage
    // the next copy overwrites.
    __syncthreads();
    {
      const int next = t + STAGES - 1;
      if (next < tiles_n) load_tile(next, next % STAGES);
      flash::cp_async_commit();
    }
    const T* ks = tiles + (t % STAGES) * 2 * S::kTileElems;
    const T* vs = ks + S::kTileElems;
    const int base = begin + t * TK;
    // Every key of the tile before the end and visible to every row, no mask: no per-key test.
    const bool plain = a.mask == nullptr && base + TK <= open_until;
    if constexpr (MMA) {
      mma_tile<T, DMAX, R, S>(a, ks, vs, base + (tid >> 5) * kU, end, my_visible, plain, qa, qscale,
                              b, kvh, first + g, m_run, l_run, o);
    } else {
      float s[kU][R];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int key = u * S::kGroups + group;  // a warp reads adjacent rows: no bank conflicts
        float dot[R];
#pragma unroll
        for (int r = 0; r < R; ++r) dot[r] = 0.0f;
#pragma unroll
        for (int w = 0; w < W; ++w) {
          float kf[8];
          flash::unpack8<T>(
              *reinterpret_cast<const uint4*>(ks + key * S::kRow + (part + w * kLanes) * 8), kf);
#pragma unroll
          for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int e = 0; e < 8; ++e) dot[r] = fmaf(qf[r][w][e], kf[e], dot[r]);
          }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int o = 1; o < kLanes; o <<= 1) dot[r] += __shfl_xor_sync(0xFFFFFFFFu, dot[r], o);
          const int at = base + key;
          float x = -INFINITY;
          if (plain) {
            x = dot[r];
          } else if (at < end && at < visible[r]) {
            x = dot[r];
            if (a.mask != nullptr) {  // the row's offset recomputed here: 2R registers saved
              const RowAt q = row_at(a, kvh, first + r);
              x += mask_at(a, b * a.mask_strides[0] + q.h * a.mask_strides[1] +
                                  q.i * a.mask_strides[2] + at * a.mask_strides[3]) *
                   kLog2e;
            }
          }
          s[u][r] = x;
        }
      }
      // Online softmax of each row over the tile's keys of this lane group (base 2).
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float corr = flash::online_softmax_row(s, r, m[r], l[r]);
#pragma unroll
        for (int w = 0; w < W; ++w) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][w][e] *= corr;
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int key = u * S::kGroups + group;
#pragma unroll
        for (int w = 0; w < W; ++w) {
          float vf[8];
          flash::unpack8<T>(
              *reinterpret_cast<const uint4*>(vs + key * S::kRow + (part + w * kLanes) * 8), vf);
#pragma unroll
          for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[r][w][e] = fmaf(s[u][r], vf[e], acc[r][w][e]);
          }
        }
      }
    }
  }
  // The next kernel (with programmatic dependent launch) may start placing its blocks; it waits
  // for this grid's completion before it reads anything.
  allow_dependents();
  flash::cp_async_wait<0>();
  __syncthreads();  // the stages are free: the merge below reuses their shared memory

  // Merge the block's lane groups: s_acc[r][group][column], then (max, sum) per group and row.
  float* s_acc = reinterpret_cast<float*>(smem);
  float* s_m = s_acc + R * kThreads * W * 8;
  float* s_l = s_m + R * S::kGroups;
  if constexpr (MMA) {
    const int warp = tid >> 5;
    l_run += __shfl_xor_sync(0xFFFFFFFFu, l_run, 1);
    l_run += __shfl_xor_sync(0xFFFFFFFFu, l_run, 2);
    if (g < R) {
      if (quad == 0) {
        s_m[g * S::kGroups + warp] = m_run;
        s_l[g * S::kGroups + warp] = l_run;
      }
#pragma unroll
      for (int dt = 0; dt < DMAX / 8; ++dt) {
        float* to = s_acc + (g * S::kGroups + warp) * DMAX + dt * 8 + 2 * quad;
        to[0] = o[dt][0];
        to[1] = o[dt][1];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < (MMA ? 0 : R); ++r) {
    if (part == 0) {
      s_m[r * S::kGroups + group] = m[r];
      s_l[r * S::kGroups + group] = l[r];
    }
#pragma unroll
    for (int w = 0; w < W; ++w) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        s_acc[(r * S::kGroups + group) * DMAX + (part + w * kLanes) * 8 + e] = acc[r][w][e];
      }
    }
  }
  __syncthreads();
  float* scratch_o = a.scratch;
  const std::int64_t all_rows = static_cast<std::int64_t>(a.batch) * a.q_heads * a.q_len;
  float* scratch_ml = a.scratch + all_rows * a.splits * a.v_dim;
  for (int idx = tid; idx < nrows * DMAX; idx += kThreads) {
    const int r = idx / DMAX, d = idx % DMAX;
    if (d >= a.v_dim) continue;
    float mx = -INFINITY;
#pragma unroll
    for (int g = 0; g < S::kGroups; ++g) mx = fmaxf(mx, s_m[r * S::kGroups + g]);
    float sum = 0.0f, total = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int g = 0; g < S::kGroups; ++g) {
        const float w = flash::fast_exp2(s_m[r * S::kGroups + g] - mx);  // 0: a group saw no key
        sum = fmaf(s_acc[(r * S::kGroups + g) * DMAX + d], w, sum);
        total = fmaf(s_l[r * S::kGroups + g], w, total);
      }
    }
    if constexpr (CLUSTER) {
      s_part[r * DMAX + d] = sum;
      if (d == 0) {
        s_pml[2 * r] = mx;
        s_pml[2 * r + 1] = total;
      }
      continue;
    }
    flash::write_partial<T>(a, b, kvh, first + r, split, d, mx, sum, total);
  }
  if constexpr (CLUSTER) {
    cluster_merge<T, DMAX, R, THREADS>(a, b, kvh, first, nrows, s_part, s_pml);
    return;
  }
  if (a.splits == 1) return;

  // The ticket: the partials above are made visible device-wide before the count is taken, and
  // the block that takes the last ticket reads every split's (threadFenceReduction's pattern).
  unsigned* counter = reinterpret_cast<unsigned*>(scratch_ml + all_rows * a.splits * 2) +
                      (static_cast<std::int64_t>(b) * a.kv_heads + kvh) * row_chunks + rc;
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    const unsigned ticket = atomicAdd(counter, 1u);
    s_last = ticket + 1 == static_cast<unsigned>(active);
    if (s_last) *counter = 0;  // every block of this launch has counted: ready for the next
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();

  // The session-7 merge for the CUDA-core variants (the defaults as measured), the one-pass merge
  // for the tensor-core ones (new, not yet measured).
  if constexpr (MMA) {
    merge_one_pass<T, THREADS>(a, b, kvh, first, nrows, active, scratch_o, scratch_ml);
  } else {
    merge_two_pass<T, R, THREADS>(a, b, kvh, first, nrows, active, scratch_o, scratch_ml);
  }
}

}  // namespace strata::cuda::kernels::fused_decode
