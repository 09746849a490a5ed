// Scaled dot-product attention for prefill and decode: one block per query row, its warps
// splitting the keys, each with an online softmax in float32; long KV caches with few query rows
// are also split across blocks (flash-decoding) and merged by a second kernel.

#include <algorithm>
#include <cstdint>

#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxHeadDim = 256;
constexpr std::int64_t kKeysPerSplit = 256;  // below this a split is not worth a block

struct Partial {
  float m;
  float l;
};

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
  const T* q = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1] +
               i * a.q_strides[2];
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
  for (int d = threadIdx.x; d < a.v_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      if (s_m[w] != -INFINITY) sum += s_acc[w][d] * expf(s_m[w] - mx);
    }
    if (splits == 1) {
      // A row with every key masked yields zeros, not NaN.
      static_cast<T*>(a.out)[row * a.v_dim + d] = from_float<T>(total > 0.0f ? sum / total : 0.0f);
    } else {
      workspace[(row * splits + blockIdx.y) * (2 + a.v_dim) + 2 + d] = sum;
    }
  }
  if (splits > 1 && threadIdx.x == 0) {
    float* part = workspace + (row * splits + blockIdx.y) * (2 + a.v_dim);
    part[0] = mx;
    part[1] = total;
  }
}

template <typename T>
__global__ void merge_splits_kernel(Attention a, int splits, const float* workspace) {
  const std::int64_t row = blockIdx.x;
  const float* parts = workspace + row * splits * (2 + a.v_dim);
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, parts[s * (2 + a.v_dim)]);
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = parts[s * (2 + a.v_dim)];
    if (ms != -INFINITY) total += parts[s * (2 + a.v_dim) + 1] * expf(ms - mx);
  }
  for (int d = threadIdx.x; d < a.v_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = parts[s * (2 + a.v_dim)];
      if (ms != -INFINITY) sum += parts[s * (2 + a.v_dim) + 2 + d] * expf(ms - mx);
    }
    static_cast<T*>(a.out)[row * a.v_dim + d] = from_float<T>(total > 0.0f ? sum / total : 0.0f);
  }
}

int split_count(const Attention& a, int multiprocessors) {
  const std::int64_t rows = a.batch * a.q_heads * a.q_len;
  const std::int64_t want = (4LL * multiprocessors + rows - 1) / std::max<std::int64_t>(rows, 1);
  const std::int64_t most = std::max<std::int64_t>(1, a.k_len / kKeysPerSplit);
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>({want, most, 64})));
}

}  // namespace

std::size_t attention_workspace_bytes(const Attention& a, int multiprocessors) {
  const int splits = split_count(a, multiprocessors);
  if (splits == 1) return 0;
  return static_cast<std::size_t>(a.batch * a.q_heads * a.q_len) * splits * (2 + a.v_dim) *
         sizeof(float);
}

cudaError_t attention(const Attention& a, void* workspace, int multiprocessors,
                      cudaStream_t stream) {
  const std::int64_t rows = a.batch * a.q_heads * a.q_len;
  if (rows == 0 || a.v_dim == 0) return cudaSuccess;
  if (a.head_dim > kMaxHeadDim || a.v_dim > kMaxHeadDim) return cudaErrorInvalidValue;
  const int splits = split_count(a, multiprocessors);
  auto* ws = static_cast<float*>(workspace);
  if (splits > 1 && ws == nullptr) return cudaErrorInvalidValue;
  const int widest = static_cast<int>(std::max(a.head_dim, a.v_dim));
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
    cudaError_t status = launched();
    if (status != cudaSuccess || splits == 1) return status;
    merge_splits_kernel<T><<<static_cast<unsigned>(rows), 128, 0, stream>>>(a, splits, ws);
    return launched();
  });
}

}  // namespace strata::cuda::kernels
