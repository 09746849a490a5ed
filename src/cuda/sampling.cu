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

// Coarse bins by distance to the maximum, 1/32 nat each, the last one open-ended (a token more
// than 32 nats below the top weighs 0). Monotone in the value, so a bin is a range of keys.
constexpr int kBins = 1024;
constexpr float kBinsPerNat = 32.0f;
// Tokens of the boundary bin resolved in shared memory (a larger bin is resolved over the row).
constexpr int kBuffer = 2048;

__device__ __forceinline__ int coarse_bin(float v, float max) {
  const float f = (max - v) * kBinsPerNat;
  return f < static_cast<float>(kBins - 1) ? static_cast<int>(f) : kBins - 1;
}

struct Shared {
  unsigned int counts[kBins];
  unsigned long long masses[kBins];
  unsigned int buffer_keys[kBuffer];
  unsigned long long buffer_weights[kBuffer];
  unsigned long long scratch[kWarps];
  Best best[kWarps];
  float fscratch[32];
  unsigned int prefix;
  unsigned int fill;
  int bin;
  long long remaining;
  unsigned long long above;
  unsigned long long limit;
};

// The boundary tokens as a source for radix selection: (key, weight) of entry j, or false.
struct RowSource {
  const float* x;
  float max;
  unsigned int floor;
  int bin;
  __device__ bool operator()(std::int64_t j, unsigned int& key, unsigned long long& w,
                             bool by_mass) const {
    const float v = x[j];
    key = order_key(v);
    if (key < floor || coarse_bin(v, max) != bin) return false;
    w = by_mass ? fixed_weight(expf(v - max)) : 0ull;
    return true;
  }
};
struct BufferSource {
  const Shared* sh;
  __device__ bool operator()(std::int64_t j, unsigned int& key, unsigned long long& w, bool) const {
    key = sh->buffer_keys[j];
    w = sh->buffer_weights[j];
    return true;
  }
};

// Radix selection over the n entries of `source`, 8 bits per pass from the top. With `by_mass`
// false: the remaining-th largest key (sh.remaining set by the caller). With `by_mass` true: the
// smallest key whose strictly larger keys weigh less than `limit`, sh.above holding the weight
// above every entry. Uses the first 256 coarse bins as its histogram.
template <bool kByMass, typename Source>
__device__ unsigned int radix_select(const Source& source, std::int64_t n, unsigned long long limit,
                                     Shared& sh) {
  unsigned int prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    __syncthreads();  // the previous pass's readers are done with the bins
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sh.counts[b] = 0;
      sh.masses[b] = 0;
    }
    __syncthreads();
    for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      unsigned int key;
      unsigned long long w;
      if (!source(j, key, w, kByMass) || (key & mask) != prefix) continue;
      const unsigned int bin = (key >> shift) & 0xFFu;
      atomicAdd(&sh.counts[bin], 1u);
      if (kByMass && w != 0) atomicAdd(&sh.masses[bin], w);
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
      if (chosen < 0) chosen = lowest;  // defensive: keep everything left
      sh.prefix = prefix | (static_cast<unsigned int>(chosen) << shift);
    }
    __syncthreads();
    prefix = sh.prefix;
    mask |= 0xFFu << shift;
  }
  return prefix;
}

// A cut among the keys >= floor: with `by_mass` false the k-th largest key (top-k); with it true
// the smallest key whose strictly larger keys weigh less than top_p of the total (top-p). One pass
// builds count and weight histograms of the coarse bins (values spread over them, so the shared
// atomics rarely collide, unlike histograms of the keys' top bits); warp 0 finds the bin holding
// the cut; its tokens are gathered into shared memory and resolved exactly by radix selection.
template <bool kByMass>
__device__ unsigned int find_cut(const float* x, std::int64_t vocab, float max, unsigned int floor,
                                 long long k, float top_p, Shared& sh) {
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) {
    sh.counts[b] = 0;
    sh.masses[b] = 0;
  }
  __syncthreads();
  // The open-ended last bin may hold most of a confident model's vocabulary: each thread counts
  // its share there in registers and adds it once, so the tail does not serialise on one word.
  unsigned int tail_count = 0;
  unsigned long long tail_mass = 0;
  for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = x[i];
    if (order_key(v) < floor) continue;
    const int bin = coarse_bin(v, max);
    const unsigned long long w = kByMass ? fixed_weight(expf(v - max)) : 0ull;
    if (bin == kBins - 1) {
      ++tail_count;
      tail_mass += w;
      continue;
    }
    atomicAdd(&sh.counts[bin], 1u);
    if (w != 0) atomicAdd(&sh.masses[bin], w);
  }
  if (tail_count != 0) atomicAdd(&sh.counts[kBins - 1], tail_count);
  if (tail_mass != 0) atomicAdd(&sh.masses[kBins - 1], tail_mass);
  __syncthreads();
  if (threadIdx.x < 32) {
    // Lane l sums bins [32 l, 32 l + 32); a scan over the lanes finds the lane of the cut.
    const int lane = threadIdx.x;
    unsigned long long own = 0;
    for (int j = 0; j < 32; ++j) {
      own += kByMass ? sh.masses[lane * 32 + j] : sh.counts[lane * 32 + j];
    }
    unsigned long long inclusive = own;
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long up = __shfl_up_sync(0xFFFFFFFFu, inclusive, o);
      if (lane >= o) inclusive += up;
    }
    const unsigned long long total = __shfl_sync(0xFFFFFFFFu, inclusive, 31);
    unsigned long long target;  // the cut's bin is the first whose running sum reaches it
    if (kByMass) {
      target =
          static_cast<unsigned long long>(static_cast<double>(top_p) * static_cast<double>(total));
      if (target == 0) target = 1;
    } else {
      target = static_cast<unsigned long long>(k);
    }
    const unsigned long long exclusive = inclusive - own;
    const unsigned int holds =
        __ballot_sync(0xFFFFFFFFu, exclusive < target && target <= inclusive);
    if (lane == 0) {
      sh.bin = -1;
      sh.limit = target;
    }
    __syncwarp();
    if (holds != 0 && lane == __ffs(holds) - 1) {
      unsigned long long running = exclusive;
      for (int j = 0; j < 32; ++j) {
        const int b = lane * 32 + j;
        const unsigned long long v = kByMass ? sh.masses[b] : sh.counts[b];
        if (sh.counts[b] != 0 && running + v >= target) {
          sh.bin = b;
          if (kByMass) {
            sh.above = running;
          } else {
            sh.remaining = static_cast<long long>(target - running);
          }
          break;
        }
        running += v;
      }
    }
  }
  __syncthreads();
  const int bin = sh.bin;
  if (bin < 0) return floor;  // defensive: nothing to cut
  const unsigned int in_bin = sh.counts[bin];
  const unsigned long long limit = sh.limit;
  if (threadIdx.x == 0) sh.fill = 0;
  __syncthreads();
  const RowSource row{x, max, floor, bin};
  if (in_bin <= static_cast<unsigned int>(kBuffer)) {
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      unsigned int key;
      unsigned long long w;
      if (!row(i, key, w, kByMass)) continue;
      const unsigned int slot = atomicAdd(&sh.fill, 1u);
      sh.buffer_keys[slot] = key;
      sh.buffer_weights[slot] = w;
    }
    __syncthreads();
    return radix_select<kByMass>(BufferSource{&sh}, sh.fill, limit, sh);
  }
  return radix_select<kByMass>(row, vocab, limit, sh);
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

  // Load, penalties, temperature, the maximum and whether a distribution exists. A row without
  // penalties does it all in one pass over the logits; with penalties the penalised tokens are
  // rewritten between the load and the scaling pass.
  const bool scale = !row.greedy && row.temperature != 1.0f;
  const bool penalised = row.penalty_begin != row.penalty_end;
  float max = -INFINITY;
  int nan = 0;
  Best best{0.0f, -1};
  const auto visit = [&](std::int64_t i, float v) {
    const Best c{v, i};
    if (ranks_before(c, best)) best = c;
    if (scale) v = v / row.temperature;
    x[i] = v;
    max = fmaxf(max, v);
    nan |= v != v;
  };
  if (!penalised) {
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) visit(i, to_float(src[i]));
  } else {
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) x[i] = to_float(src[i]);
    __syncthreads();
    for (std::int64_t j = row.penalty_begin + threadIdx.x; j < row.penalty_end; j += blockDim.x) {
      const PenaltyEntry e = penalties[j];
      x[e.token] = engine::detail::penalized(x[e.token], row, e);
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) visit(i, x[i]);
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
    cut = find_cut<false>(x, vocab, max, 0u, row.top_k, 1.0f, sh);
  }
  if (row.top_p < 1.0f) {
    const unsigned int top_p_cut = find_cut<true>(x, vocab, max, cut, 0, row.top_p, sh);
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
