// Kernels of the fused decode step (src/cuda/decode_graph.cc): per-head RMSNorm + rotary + KV
// cache write in one launch, and a split-key decode attention. Both read the cache length from
// device memory, so a CUDA graph captured once replays every token unchanged.

#include <algorithm>
#include <cstdint>

#include "cuda/decode_rope.cuh"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kHeadsPerBlock = 4;  // one warp per head
constexpr int kMaxHeadDim = 256;

template <typename T>
__global__ void __launch_bounds__(kHeadsPerBlock * 32) rope_kv_kernel(RopeKvWrite a) {
  __shared__ float row[kHeadsPerBlock][kMaxHeadDim];
  const int lane = threadIdx.x & 31, slot = threadIdx.x >> 5;
  const std::int64_t heads = a.q_heads + a.kv_heads;
  const std::int64_t task = static_cast<std::int64_t>(blockIdx.x) * kHeadsPerBlock + slot;
  wait_for_producer();  // a.pdl: q/k/v come from the GEMV launched before
  if (task >= a.batch * heads) return;
  const std::int64_t b = task / heads, h = task % heads;
  const bool is_q = h < a.q_heads;
  const std::int64_t kvh = h - a.q_heads;
  const std::int64_t d = a.head_dim;
  const std::int64_t pos = *a.past;  // the new token's position = tokens cached before it
  const T* src = is_q ? static_cast<const T*>(a.q) + b * a.ldq + h * d
                      : static_cast<const T*>(a.k) + b * a.ldk + kvh * d;
  float* r = row[slot];
  const T* norm = static_cast<const T*>(is_q ? a.q_norm : a.k_norm);
  float sq = 0.0f;
  for (std::int64_t i = lane; i < d; i += 32) {
    const float v = to_float(src[i]);
    r[i] = v;
    sq += v * v;
  }
  if (norm != nullptr) {  // Qwen3: RMSNorm of each head before the rotation (rms_norm's roundings)
    const float inv_rms = 1.0f / sqrtf(warp_sum(sq) / static_cast<float>(d) + a.eps);
    for (std::int64_t i = lane; i < d; i += 32) {
      r[i] = to_float(from_float<T>(to_float(from_float<T>(r[i] * inv_rms)) * to_float(norm[i])));
    }
  }
  __syncwarp();
  T* dst = is_q ? static_cast<T*>(a.q_out) + (b * a.q_heads + h) * d
                : static_cast<T*>(a.k_cache) + ((b * a.kv_heads + kvh) * a.capacity + pos) * d;
  const std::int64_t rot = a.rotary_dim, half = rot / 2;
  const T* cos = a.cos != nullptr ? static_cast<const T*>(a.cos) + pos * rot : nullptr;
  const T* sin = a.sin != nullptr ? static_cast<const T*>(a.sin) + pos * rot : nullptr;
  for (std::int64_t i = lane; i < d; i += 32) {
    float v = r[i];
    if (i < rot && cos != nullptr) {
      // rotate_half(x) = cat(-x[half:], x[:half]) over the rotated part.
      const float partner = i < half ? -r[i + half] : r[i - half];
      v = rope_rotate(v, partner, to_float(cos[i]), to_float(sin[i]));
    }
    dst[i] = from_float<T>(v);
  }
  if (!is_q) {
    const T* vs = static_cast<const T*>(a.v) + b * a.ldv + kvh * d;
    T* vd = static_cast<T*>(a.v_cache) + ((b * a.kv_heads + kvh) * a.capacity + pos) * d;
    for (std::int64_t i = lane; i < d; i += 32) vd[i] = vs[i];
  }
}

constexpr int kAttnThreads = 128;
constexpr int kMaxVec = 8;  // elements of a 16-byte load (bfloat16 / float16)

// dot(q[0 .. kPer), the 16 bytes of `k`) with q already float.
template <typename T>
__device__ __forceinline__ float dot_vec(const float* q, const uint4& k) {
  constexpr int kPer = 16 / sizeof(T);
  const T* kp = reinterpret_cast<const T*>(&k);
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc = fmaf(q[e], to_float(kp[e]), acc);
  return acc;
}

// Block (split s, b * kv_heads + g): keys [s * chunk, (s + 1) * chunk) of the live range, every
// query head of group g. Scores: one thread per key (its row in 16-byte loads, all in flight at
// once); values: each key row split over head_dim / vec threads, rows spread over the block,
// then summed across rows in shared memory. Partial results: float acc [b, hq, split, d], max and
// sum [b, hq, split].
template <typename T>
__global__ void __launch_bounds__(kAttnThreads) decode_attention_kernel(DecodeAttention a) {
  extern __shared__ float shared[];
  constexpr int kVec = 16 / sizeof(T);
  const std::int64_t group = a.q_heads / a.kv_heads, d = a.head_dim;
  const int per_row = static_cast<int>(d / kVec);  // threads per key row (16 bytes each)
  const int rows_per_pass = kAttnThreads / per_row;
  float* q = shared;                       // [group, d]
  float* scores = q + group * d;           // [group, chunk]
  float* sums = scores + group * a.chunk;  // [rows_per_pass, d]
  const std::int64_t bg = blockIdx.y;
  const std::int64_t b = bg / a.kv_heads, g = bg % a.kv_heads;
  const std::int64_t length = *a.past + 1;  // the cached keys and the new one
  const std::int64_t begin_all = a.window > 0 && length > a.window ? length - a.window : 0;
  const std::int64_t begin = begin_all + static_cast<std::int64_t>(blockIdx.x) * a.chunk;
  const std::int64_t end = min(begin + a.chunk, length);
  const std::int64_t span = end - begin;
  const std::int64_t first_head = b * a.q_heads + g * group;
  float* part_max = a.partial_max + first_head * a.splits + blockIdx.x;
  if (span <= 0) {  // past the live keys: the combine skips this split
    if (threadIdx.x < group) part_max[threadIdx.x * a.splits] = -INFINITY;
    return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* qs = static_cast<const T*>(a.q) + first_head * d;
  for (std::int64_t i = threadIdx.x; i < group * d; i += kAttnThreads) q[i] = to_float(qs[i]);
  __syncthreads();
  const std::int64_t head_stride = a.capacity * d;
  const T* keys = static_cast<const T*>(a.k_cache) + (b * a.kv_heads + g) * head_stride;
  const T* values = static_cast<const T*>(a.v_cache) + (b * a.kv_heads + g) * head_stride;
  for (std::int64_t j = threadIdx.x; j < span; j += kAttnThreads) {
    const auto* key = reinterpret_cast<const uint4*>(keys + (begin + j) * d);
    for (std::int64_t h = 0; h < group; ++h) {
      const float* qh = q + h * d;
      float dot = 0.0f;
#pragma unroll 8
      for (int c = 0; c < per_row; ++c) dot += dot_vec<T>(qh + c * kVec, __ldg(key + c));
      scores[h * a.chunk + j] = dot * a.scale;
    }
  }
  __syncthreads();
  // One warp per head: max and exp over the split's scores.
  for (std::int64_t h = warp; h < group; h += kAttnThreads / 32) {
    float* s = scores + h * a.chunk;
    float mx = -INFINITY;
    for (std::int64_t j = lane; j < span; j += 32) mx = fmaxf(mx, s[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (std::int64_t j = lane; j < span; j += 32) {
      const float p = expf(s[j] - mx);
      s[j] = p;
      sum += p;
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      part_max[h * a.splits] = mx;
      a.partial_sum[(first_head + h) * a.splits + blockIdx.x] = sum;
    }
  }
  __syncthreads();
  const int row = threadIdx.x / per_row, col = threadIdx.x % per_row;
  for (std::int64_t h = 0; h < group; ++h) {
    const float* p = scores + h * a.chunk;
    float acc[kMaxVec] = {};
    if (row < rows_per_pass) {
#pragma unroll 4
      for (std::int64_t j = row; j < span; j += rows_per_pass) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(values + (begin + j) * d) + col);
        const T* vp = reinterpret_cast<const T*>(&v);
        const float pj = p[j];
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[e] = fmaf(pj, to_float(vp[e]), acc[e]);
      }
#pragma unroll
      for (int e = 0; e < kVec; ++e) sums[row * d + col * kVec + e] = acc[e];
    }
    __syncthreads();
    for (std::int64_t i = threadIdx.x; i < d; i += kAttnThreads) {
      float total = 0.0f;
      for (int r = 0; r < rows_per_pass; ++r) total += sums[r * d + i];
      a.partial_acc[((first_head + h) * a.splits + blockIdx.x) * d + i] = total;
    }
    __syncthreads();
  }
}

// One block per (b, query head): merges the splits (log-sum-exp) and rounds once.
template <typename T>
__global__ void __launch_bounds__(kAttnThreads) decode_combine_kernel(DecodeAttention a) {
  const std::int64_t bh = blockIdx.x;
  const float* mx = a.partial_max + bh * a.splits;
  const float* sum = a.partial_sum + bh * a.splits;
  float m = -INFINITY;
  for (std::int64_t s = 0; s < a.splits; ++s) m = fmaxf(m, mx[s]);
  float total = 0.0f;
  for (std::int64_t s = 0; s < a.splits; ++s) {
    if (mx[s] != -INFINITY) total += expf(mx[s] - m) * sum[s];
  }
  for (std::int64_t dd = threadIdx.x; dd < a.head_dim; dd += blockDim.x) {
    float acc = 0.0f;
    for (std::int64_t s = 0; s < a.splits; ++s) {
      if (mx[s] != -INFINITY)
        acc += expf(mx[s] - m) * a.partial_acc[(bh * a.splits + s) * a.head_dim + dd];
    }
    static_cast<T*>(a.out)[bh * a.head_dim + dd] = from_float<T>(acc / total);
  }
}

constexpr std::int64_t kL2Chunk = 16 * 1024;  // bytes per bulk prefetch

// One thread per 16 KB chunk of the ranges (grid stride). The chunks are hints to the memory
// system: issuing them takes the block a few instructions, the bytes arrive while later kernels
// run.
__global__ void __launch_bounds__(32) l2_prefetch_kernel(L2Prefetch a) {
  if (!a.early) wait_for_producer();
  allow_dependents();
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  std::uint64_t policy = 0;
  if (a.evict_last)
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
#endif
  for (int r = 0; r < a.count; ++r) {
    const std::int64_t bytes = a.bytes[r] & ~std::int64_t{15};
    const std::int64_t chunks = (bytes + kL2Chunk - 1) / kL2Chunk;
    const char* base = static_cast<const char*>(a.ptr[r]);
    for (std::int64_t c = first; c < chunks; c += stride) {
      const char* p = base + c * kL2Chunk;
      const std::int64_t size = min(kL2Chunk, bytes - c * kL2Chunk);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      const auto n = static_cast<std::uint32_t>(size);
      if (a.evict_last) {
        asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(p),
                     "r"(n), "l"(policy)
                     : "memory");
      } else {
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(n) : "memory");
      }
#else
      for (std::int64_t o = 0; o < size; o += 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(p + o));
      }
#endif
    }
    // The next range continues the thread numbering where this one ended (balanced blocks).
    first = ((first - chunks) % stride + stride) % stride;
  }
  if (a.early) wait_for_producer();
}

}  // namespace

cudaError_t rope_kv_write(const RopeKvWrite& a, cudaStream_t stream) {
  if (a.head_dim > kMaxHeadDim || a.rotary_dim > a.head_dim || a.rotary_dim % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t tasks = a.batch * (a.q_heads + a.kv_heads);
  if (tasks == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>((tasks + kHeadsPerBlock - 1) / kHeadsPerBlock);
  return dispatch_float(a.type, [&](auto tag) {
    return launch_maybe_pdl(rope_kv_kernel<decltype(tag)>, blocks, kHeadsPerBlock * 32, 0, stream,
                            a.pdl, a);
  });
}

cudaError_t l2_prefetch(const L2Prefetch& a, cudaStream_t stream) {
  if (a.count < 0 || a.count > kMaxL2Ranges) return cudaErrorInvalidValue;
  std::int64_t chunks = 0;
  for (int r = 0; r < a.count; ++r) {
    if (a.bytes[r] < 0 || !aligned16(a.ptr[r])) return cudaErrorInvalidValue;
    chunks += (a.bytes[r] / 16 * 16 + kL2Chunk - 1) / kL2Chunk;
  }
  if (chunks == 0) return cudaSuccess;
  std::int64_t blocks = a.blocks > 0 ? a.blocks : std::min<std::int64_t>((chunks + 31) / 32, 132);
  return launch_maybe_pdl(l2_prefetch_kernel, static_cast<unsigned>(blocks), 32, 0, stream, a.pdl,
                          a);
}

std::int64_t decode_attention_splits(std::int64_t capacity, std::int64_t chunk) {
  return (capacity + chunk - 1) / chunk;
}

cudaError_t decode_attention(const DecodeAttention& a, cudaStream_t stream) {
  if (a.kv_heads <= 0 || a.q_heads % a.kv_heads != 0 || a.chunk <= 0 || a.splits <= 0) {
    return cudaErrorInvalidValue;
  }
  const std::int64_t group = a.q_heads / a.kv_heads;
  return dispatch_float(a.type, [&](auto tag) {
    using T = decltype(tag);
    constexpr std::int64_t kVec = 16 / sizeof(T);
    if (a.head_dim % kVec != 0 || a.head_dim / kVec > kAttnThreads || group > kAttnThreads) {
      return cudaErrorInvalidValue;
    }
    const std::int64_t rows_per_pass = kAttnThreads / (a.head_dim / kVec);
    const std::size_t smem =
        static_cast<std::size_t>(group * (a.head_dim + a.chunk) + rows_per_pass * a.head_dim) *
        sizeof(float);
    if (smem > 48 * 1024) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.batch * a.kv_heads));
    decode_attention_kernel<T><<<grid, kAttnThreads, smem, stream>>>(a);
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    decode_combine_kernel<T>
        <<<static_cast<unsigned>(a.batch * a.q_heads), kAttnThreads, 0, stream>>>(a);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
