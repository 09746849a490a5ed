// The engine's sampler on the GPU: one block per row, the same steps as the CPU backend
// (src/engine/sampler_cpu.cc) on the same packed rows (src/engine/sampling_rows.h):
//   load the row as float32 into a workspace, apply the penalties to the row's distinct history
//   tokens, divide by the temperature, then find the top-k cut (the k-th largest order key) and
//   the top-p cut (the smallest key whose heavier keys weigh less than top_p of the total) by
//   radix selection over the 32-bit keys, 8 bits a pass, with 256-bin histograms of counts and
//   fixed-point weights in shared memory (integer atomics: the result does not depend on thread
//   order), and draw over the kept weights in index order with a block-wide exclusive scan.
// No sort of the vocabulary and nothing vocabulary-sized leaves the GPU: only the ids (and, for
// tests, the optional probabilities) are written.

#include <cstdint>

#include "cuda/kernel_common.cuh"
#include "engine/sampling_rows.h"

namespace strata::cuda::kernels {
namespace {

using engine::detail::fixed_weight;
using engine::detail::order_key;
using engine::detail::PenaltyEntry;
using engine::detail::RowParams;

constexpr int kSampleThreads = 1024;
constexpr int kWarps = kSampleThreads / 32;

struct Best {
  float value;
  std::int64_t index;
};

// NaN ranks first, then larger values, then lower indices (torch.argmax).
__device__ __forceinline__ bool ranks_before(const Best& a, const Best& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
  if (a_nan != b_nan) return a_nan;
  if (!a_nan && a.value != b.value) return a.value > b.value;
  return a.index < b.index;
}

__device__ Best block_argmax(Best c, Best* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    Best other;
    other.value = __shfl_xor_sync(0xFFFFFFFFu, c.value, o);
    other.index = __shfl_xor_sync(0xFFFFFFFFu, c.index, o);
    if (ranks_before(other, c)) c = other;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = c;
  __syncthreads();
  Best best = scratch[0];
  for (int w = 1; w < kWarps; ++w) {
    if (ranks_before(scratch[w], best)) best = scratch[w];
  }
  return best;
}

__device__ unsigned long long block_sum_u64(unsigned long long v, unsigned long long* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  unsigned long long total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// Exclusive prefix of v over the threads of the block, and the block total.
__device__ unsigned long long block_exclusive_scan(unsigned long long v,
                                                   unsigned long long* scratch,
                                                   unsigned long long& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long inclusive = v;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long up = __shfl_up_sync(0xFFFFFFFFu, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  unsigned long long before = 0;
  total = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += scratch[w];
    total += scratch[w];
  }
  return before + inclusive - v;
}

struct Shared {
  unsigned int counts[256];
  unsigned long long masses[256];
  unsigned long long scratch[kWarps];
  Best best[kWarps];
  float fscratch[32];
  unsigned int prefix;
  long long remaining;
  unsigned long long above;
};

// Radix selection of a cut among keys >= floor, 8 bits per pass from the top. With `by_mass`
// false: the k-th largest key (k = remaining). With `by_mass` true: the smallest key whose
// strictly larger keys weigh less than `limit`.
template <bool kByMass>
__device__ unsigned int radix_cut(const float* x, std::int64_t vocab, float max, unsigned int floor,
                                  long long k, unsigned long long limit, Shared& sh) {
  unsigned int prefix = 0, mask = 0;
  if (threadIdx.x == 0) {
    sh.remaining = k;
    sh.above = 0;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sh.counts[b] = 0;
      sh.masses[b] = 0;
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = x[i];
      const unsigned int key = order_key(v);
      if (key < floor || (key & mask) != prefix) continue;
      const unsigned int bin = (key >> shift) & 0xFFu;
      atomicAdd(&sh.counts[bin], 1u);
      if (kByMass) atomicAdd(&sh.masses[bin], fixed_weight(expf(v - max)));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int chosen = -1, lowest = -1;
      for (int b = 255; b >= 0; --b) {
        if (sh.counts[b] == 0) continue;
        lowest = b;
        if (kByMass) {
          if (sh.above + sh.masses[b] >= limit) {
            chosen = b;
            break;
          }
          sh.above += sh.masses[b];
        } else {
          if (static_cast<long long>(sh.counts[b]) >= sh.remaining) {
            chosen = b;
            break;
          }
          sh.remaining -= sh.counts[b];
        }
      }
      if (chosen < 0) chosen = lowest;  // rounding left the limit above the total: keep all
      sh.prefix = prefix | (static_cast<unsigned int>(chosen) << shift);
    }
    __syncthreads();
    prefix = sh.prefix;
    mask |= 0xFFu << shift;
  }
  return prefix;
}

template <typename T>
__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const T* logits, std::int64_t vocab, const RowParams* rows,
                  const PenaltyEntry* penalties, float* workspace, std::int64_t* ids,
                  float* probs) {
  __shared__ Shared sh;
  const std::int64_t r = blockIdx.x;
  const RowParams row = rows[r];
  const T* src = logits + r * vocab;
  float* x = workspace + r * vocab;
  float* p = probs == nullptr ? nullptr : probs + r * vocab;

  for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) x[i] = to_float(src[i]);
  __syncthreads();
  for (std::int64_t j = row.penalty_begin + threadIdx.x; j < row.penalty_end; j += blockDim.x) {
    const PenaltyEntry e = penalties[j];
    x[e.token] = engine::detail::penalized(x[e.token], row, e);
  }
  __syncthreads();

  // Temperature, the maximum and whether a distribution exists.
  float max = -INFINITY;
  int nan = 0;
  Best best{0.0f, -1};
  for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    float v = x[i];
    const Best c{v, i};
    if (ranks_before(c, best)) best = c;
    if (!row.greedy && row.temperature != 1.0f) {
      v = v / row.temperature;
      x[i] = v;
    }
    max = fmaxf(max, v);
    nan |= v != v;
  }
  max = block_max(max, sh.fscratch);
  nan = __syncthreads_or(nan);
  if (row.greedy || nan || !isfinite(max)) {
    best = block_argmax(best, sh.best);
    if (threadIdx.x == 0) ids[r] = best.index;
    if (p != nullptr) {
      for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        p[i] = i == best.index ? 1.0f : 0.0f;
      }
    }
    return;
  }

  unsigned int cut = 0;
  if (row.top_k > 0 && row.top_k < vocab) {
    cut = radix_cut<false>(x, vocab, max, 0u, row.top_k, 0ull, sh);
  }
  if (row.top_p < 1.0f) {
    unsigned long long local = 0;
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = x[i];
      if (order_key(v) >= cut) local += fixed_weight(expf(v - max));
    }
    const unsigned long long total = block_sum_u64(local, sh.scratch);
    // At least 1, so the top token stays however small top_p is (as the CPU backend).
    auto limit = static_cast<unsigned long long>(static_cast<double>(row.top_p) *
                                                 static_cast<double>(total));
    if (limit == 0) limit = 1;
    const unsigned int top_p_cut = radix_cut<true>(x, vocab, max, cut, 0, limit, sh);
    cut = cut > top_p_cut ? cut : top_p_cut;
  }

  // The draw: each thread owns a contiguous chunk, so a scan of chunk weights orders the tokens
  // by index as the CPU walks them.
  const std::int64_t chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const std::int64_t begin = threadIdx.x * chunk;
  const std::int64_t end = begin + chunk < vocab ? begin + chunk : vocab;
  unsigned long long local = 0;
  float local_sum = 0.0f;
  for (std::int64_t i = begin; i < end; ++i) {
    const float v = x[i];
    const float e = expf(v - max);
    if (order_key(v) >= cut && (row.min_p == 0.0f || e >= row.min_p)) {
      local += fixed_weight(e);
      local_sum += e;
    }
  }
  unsigned long long total = 0;
  const unsigned long long before = block_exclusive_scan(local, sh.scratch, total);
  const unsigned long long target =
      engine::detail::scaled_draw(engine::detail::random_bits(row.seed, row.counter), total);
  if (local > 0 && target >= before && target < before + local) {
    unsigned long long acc = before;
    for (std::int64_t i = begin; i < end; ++i) {
      const float v = x[i];
      const float e = expf(v - max);
      if (order_key(v) >= cut && (row.min_p == 0.0f || e >= row.min_p)) {
        acc += fixed_weight(e);
        if (acc > target) {
          ids[r] = i;
          break;
        }
      }
    }
  }
  if (p != nullptr) {
    const float sum = block_sum(local_sum, sh.fscratch);
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = x[i];
      const float e = expf(v - max);
      p[i] = order_key(v) >= cut && (row.min_p == 0.0f || e >= row.min_p) ? e / sum : 0.0f;
    }
  }
}

}  // namespace

cudaError_t sample_rows(const void* logits, Type type, std::int64_t batch, std::int64_t vocab,
                        const void* rows, const void* penalties, float* workspace,
                        std::int64_t* ids, float* probs, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    sample_kernel<T><<<static_cast<unsigned>(batch), kSampleThreads, 0, stream>>>(
        static_cast<const T*>(logits), vocab, static_cast<const RowParams*>(rows),
        static_cast<const PenaltyEntry*>(penalties), workspace, ids, probs);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
