// Flash attention for prefill (kernels.h, launch_flash_prefill): tensor cores through
// mma.sync.m16n8k16 (bf16/f16 in, float32 accumulators), online softmax in registers, no score
// matrix in global memory (FlashAttention-2's schedule).
//
// A block (4 warps) takes 64 query rows of one (batch, q head), 16 per warp; Q's A-fragments stay
// in registers. Tiles of kBlockN keys of K and V go to shared memory by cp.async, two stages deep
// (rows padded by 16 bytes: ldmatrix reads them without bank conflicts; columns past head_dim or
// v_dim and keys past k_len are zero-filled). Per tile a warp computes S = Q K^T (16 x kBlockN),
// applies scale, the end-aligned causal mask and the additive mask, updates its rows' running
// max and sum (base 2), and multiplies P (rounded to the input type, as FlashAttention does) by V
// into its float32 output fragments. Causal blocks stop at the last key their rows can see and
// run heaviest first.

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "cuda/flash_common.cuh"
#include "cuda/kernel_common.cuh"

namespace strata::cuda::kernels {
namespace {

using flash::kLog2e;

constexpr int kPrefillWarps = 4;
constexpr int kPrefillThreads = 32 * kPrefillWarps;
constexpr int kBlockM = 16 * kPrefillWarps;  // query rows of a block

template <int DMAX>
struct PrefillShape {
  static constexpr int kBlockN = DMAX <= 128 ? 64 : 32;  // keys per tile (registers at 256)
  static constexpr int kRow = DMAX + 8;                  // smem row, padded by 16 bytes
  static constexpr int kTileElems = kBlockN * kRow;
  static constexpr int kStages = 2;
  static constexpr std::size_t kSmemBytes = 2 * kStages * kTileElems * 2;  // K and V, 16-bit
  static constexpr int kChunks = DMAX / 8;  // 16-byte chunks of a row
  static constexpr int kKSteps = DMAX / 16;
  static constexpr int kNTiles = kBlockN / 8;  // n-tiles of S
  static constexpr int kDTiles = DMAX / 8;     // n-tiles of O
};

template <typename T>
__device__ __forceinline__ float mask_value(const Attention& a, std::int64_t off) {
  return a.mask_type == Type::Float32 ? static_cast<const float*>(a.mask)[off]
                                      : to_float(static_cast<const T*>(a.mask)[off]);
}

template <typename T, int DMAX>
__global__ void __launch_bounds__(kPrefillThreads) flash_prefill_kernel(Attention a) {
  using P = PrefillShape<DMAX>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [stage][key][kRow]
  T* v_s = k_s + P::kStages * P::kTileElems;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int quad = lane >> 2, pair = (lane & 3) * 2;  // fragment row and column pair
  const std::int64_t q_tiles = gridDim.x;
  const std::int64_t tile = a.causal ? q_tiles - 1 - blockIdx.x : blockIdx.x;  // heavy first
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  const std::int64_t kvh = h / (a.q_heads / a.kv_heads);
  const std::int64_t q0 = tile * kBlockM;
  const std::int64_t row0 = q0 + warp * 16 + quad, row1 = row0 + 8;  // this thread's rows
  const std::int64_t offset = a.k_len - a.q_len;  // causal: row i sees keys <= i + offset

  // Keys the block's rows can see: all, or up to its last row's diagonal.
  std::int64_t key_end = a.k_len;
  if (a.causal) {
    const std::int64_t last_row = std::min<std::int64_t>(a.q_len, q0 + kBlockM) - 1;
    key_end = std::max<std::int64_t>(0, std::min(a.k_len, last_row + offset + 1));
  }
  const int n_tiles = static_cast<int>((key_end + P::kBlockN - 1) / P::kBlockN);

  const T* k_g = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* v_g = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  const int k_chunks = static_cast<int>(a.head_dim / 8), v_chunks = static_cast<int>(a.v_dim / 8);
  const auto load_tile = [&](int t) {
    const std::int64_t key0 = std::int64_t{t} * P::kBlockN;
    T* k_dst = k_s + (t % P::kStages) * P::kTileElems;
    T* v_dst = v_s + (t % P::kStages) * P::kTileElems;
    for (int idx = tid; idx < P::kBlockN * P::kChunks; idx += kPrefillThreads) {
      const int j = idx / P::kChunks, c = idx % P::kChunks;
      const std::int64_t key = key0 + j;
      const bool in = key < a.k_len;
      flash::cp_async16_or_zero(k_dst + j * P::kRow + c * 8,
                                in && c < k_chunks ? k_g + key * a.k_strides[2] + c * 8 : k_g,
                                in && c < k_chunks);
      flash::cp_async16_or_zero(v_dst + j * P::kRow + c * 8,
                                in && c < v_chunks ? v_g + key * a.v_strides[2] + c * 8 : v_g,
                                in && c < v_chunks);
    }
  };
  if (n_tiles > 0) load_tile(0);
  flash::cp_async_commit();

  // Q's A-fragments: registers {(r0, k), (r1, k), (r0, k + 8), (r1, k + 8)} of each 16-column
  // step, k = 16 * step + pair. Zeros past q_len and head_dim.
  std::uint32_t qa[P::kKSteps][4];
  {
    const T* q_g = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
    const auto q_pair = [&](std::int64_t row, int col) -> std::uint32_t {
      if (row >= a.q_len || col >= a.head_dim) return 0u;
      const T* p = q_g + row * a.q_strides[2] + col;
      return static_cast<std::uint32_t>(p[0].bits) | (static_cast<std::uint32_t>(p[1].bits) << 16);
    };
#pragma unroll
    for (int ks = 0; ks < P::kKSteps; ++ks) {
      qa[ks][0] = q_pair(row0, ks * 16 + pair);
      qa[ks][1] = q_pair(row1, ks * 16 + pair);
      qa[ks][2] = q_pair(row0, ks * 16 + 8 + pair);
      qa[ks][3] = q_pair(row1, ks * 16 + 8 + pair);
    }
  }

  float o[P::kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < P::kDTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // per-thread partial sums l
  const float scale = a.scale * kLog2e;
  const std::int64_t mask0 =
      b * a.mask_strides[0] + h * a.mask_strides[1] + row0 * a.mask_strides[2];
  const std::int64_t mask1 = mask0 + 8 * a.mask_strides[2];
  const int k_steps = static_cast<int>((a.head_dim + 15) / 16);
  const int d_pairs = static_cast<int>((a.v_dim + 15) / 16);

  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) load_tile(t + 1);
    flash::cp_async_commit();
    flash::cp_async_wait<1>();  // tile t has landed
    __syncthreads();
    const T* k_t = k_s + (t % P::kStages) * P::kTileElems;
    const T* v_t = v_s + (t % P::kStages) * P::kTileElems;
    const std::int64_t key0 = std::int64_t{t} * P::kBlockN;

    // S = Q K^T: ldmatrix.x4 gives the B-fragments of two n-tiles (16 keys) per k-step.
    float s[P::kNTiles][4];
#pragma unroll
    for (int nt = 0; nt < P::kNTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < P::kKSteps; ++ks) {
      if (ks >= k_steps) break;
#pragma unroll
      for (int np = 0; np < P::kNTiles / 2; ++np) {
        std::uint32_t kb[4];
        const int key = np * 16 + (lane >> 4) * 8 + (lane & 7);
        const int col = ks * 16 + ((lane >> 3) & 1) * 8;
        flash::ldmatrix_x4(kb, k_t + key * P::kRow + col);
        flash::mma_16816<T>(s[2 * np], qa[ks], kb[0], kb[1]);
        flash::mma_16816<T>(s[2 * np + 1], qa[ks], kb[2], kb[3]);
      }
    }

    // Scale, masks, and the running max of the thread's two rows (shared by its quad).
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int nt = 0; nt < P::kNTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const std::int64_t row = e < 2 ? row0 : row1;
        const std::int64_t key = key0 + nt * 8 + pair + (e & 1);
        float x = s[nt][e] * scale;
        if (key >= a.k_len || (a.causal && key > row + offset)) {
          x = -INFINITY;
        } else if (a.mask != nullptr && row < a.q_len) {
          x += mask_value<T>(a, (e < 2 ? mask0 : mask1) + key * a.mask_strides[3]) * kLog2e;
        }
        s[nt][e] = x;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xFFFFFFFFu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xFFFFFFFFu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xFFFFFFFFu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xFFFFFFFFu, mx1, 2));
    // A row that has seen no key yet keeps max -inf: subtract 0 instead (every p is then 0).
    const float base0 = mx0 == -INFINITY ? 0.0f : mx0, base1 = mx1 == -INFINITY ? 0.0f : mx1;
    const float corr0 = exp2f(m0 - base0), corr1 = exp2f(m1 - base1);  // 0 while m is -inf
    m0 = mx0;
    m1 = mx1;
    l0 *= corr0;
    l1 *= corr1;
#pragma unroll
    for (int dt = 0; dt < P::kDTiles; ++dt) {
      o[dt][0] *= corr0;
      o[dt][1] *= corr0;
      o[dt][2] *= corr1;
      o[dt][3] *= corr1;
    }
#pragma unroll
    for (int nt = 0; nt < P::kNTiles; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - base0);
      s[nt][1] = exp2f(s[nt][1] - base0);
      s[nt][2] = exp2f(s[nt][2] - base1);
      s[nt][3] = exp2f(s[nt][3] - base1);
      l0 += s[nt][0] + s[nt][1];
      l1 += s[nt][2] + s[nt][3];
    }

    // O += P V: P's C-fragments are A-fragments once rounded; V^T's B-fragments by ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < P::kBlockN / 16; ++kk) {
      const std::uint32_t pa[4] = {flash::pack2<T>(s[2 * kk][0], s[2 * kk][1]),
                                   flash::pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                                   flash::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   flash::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < P::kDTiles / 2; ++dp) {
        if (dp >= d_pairs) break;
        std::uint32_t vb[4];
        const int key = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
        const int col = dp * 16 + (lane >> 4) * 8;
        flash::ldmatrix_x4_trans(vb, v_t + key * P::kRow + col);
        flash::mma_16816<T>(o[2 * dp], pa, vb[0], vb[1]);
        flash::mma_16816<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // the next iteration's copy overwrites this stage
  }

  // Rows' sums over the quad, the sink, and the output rounded once.
  l0 += __shfl_xor_sync(0xFFFFFFFFu, l0, 1);
  l0 += __shfl_xor_sync(0xFFFFFFFFu, l0, 2);
  l1 += __shfl_xor_sync(0xFFFFFFFFu, l1, 1);
  l1 += __shfl_xor_sync(0xFFFFFFFFu, l1, 2);
  if (a.sinks != nullptr) {
    const float sink = a.sinks[h] * kLog2e;
    if (m0 != -INFINITY) l0 += exp2f(sink - m0);
    if (m1 != -INFINITY) l1 += exp2f(sink - m1);
  }
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  T* out = static_cast<T*>(a.out) + (b * a.q_heads + h) * a.q_len * a.v_dim;
#pragma unroll
  for (int dt = 0; dt < P::kDTiles; ++dt) {
    const int col = dt * 8 + pair;
    if (col >= a.v_dim) break;
    if (row0 < a.q_len) {
      out[row0 * a.v_dim + col] = from_float<T>(o[dt][0] * inv0);
      out[row0 * a.v_dim + col + 1] = from_float<T>(o[dt][1] * inv0);
    }
    if (row1 < a.q_len) {
      out[row1 * a.v_dim + col] = from_float<T>(o[dt][2] * inv1);
      out[row1 * a.v_dim + col + 1] = from_float<T>(o[dt][3] * inv1);
    }
  }
}

// The shared-memory opt-in above 48 KiB, once per (instantiation, device).
template <typename T, int DMAX>
cudaError_t launch_variant(const Attention& a, cudaStream_t stream) {
  using P = PrefillShape<DMAX>;
  static std::atomic<std::uint64_t> opted_in{0};
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  const std::uint64_t bit = device < 64 ? std::uint64_t{1} << device : 0;
  if (P::kSmemBytes > 48 * 1024 && (opted_in.load(std::memory_order_acquire) & bit) == 0) {
    status = cudaFuncSetAttribute(flash_prefill_kernel<T, DMAX>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(P::kSmemBytes));
    if (status != cudaSuccess) return status;
    opted_in.fetch_or(bit, std::memory_order_release);
  }
  const dim3 grid(static_cast<unsigned>((a.q_len + kBlockM - 1) / kBlockM),
                  static_cast<unsigned>(a.q_heads), static_cast<unsigned>(a.batch));
  flash_prefill_kernel<T, DMAX><<<grid, kPrefillThreads, P::kSmemBytes, stream>>>(a);
  return launched();
}

bool rows_aligned16(const void* p, const std::int64_t* strides) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  for (int d = 0; d < 3; ++d) {
    if (strides[d] * 2 % 16 != 0) return false;
  }
  return true;
}

}  // namespace

bool flash_prefill_supported(const Attention& a) {
  if (a.type != Type::BFloat16 && a.type != Type::Float16) return false;
  if (a.mask != nullptr && a.mask_type != Type::Float32 && a.mask_type != a.type) return false;
  if (a.head_dim < 8 || a.head_dim > 256 || a.head_dim % 8 != 0 || a.v_dim < 8 || a.v_dim > 256 ||
      a.v_dim % 8 != 0) {
    return false;
  }
  if (a.kv_heads < 1 || a.q_heads % a.kv_heads != 0 || a.q_heads > 65535 || a.batch > 65535) {
    return false;
  }
  return rows_aligned16(a.k, a.k_strides) && rows_aligned16(a.v, a.v_strides);
}

cudaError_t launch_flash_prefill(const Attention& a, cudaStream_t stream) {
  if (!flash_prefill_supported(a)) return cudaErrorInvalidValue;
  if (a.batch * a.q_heads * a.q_len == 0) return cudaSuccess;
  const std::int64_t widest = std::max(a.head_dim, a.v_dim);
  if (a.type == Type::BFloat16) {
    return widest <= 64    ? launch_variant<BF16Bits, 64>(a, stream)
           : widest <= 128 ? launch_variant<BF16Bits, 128>(a, stream)
                           : launch_variant<BF16Bits, 256>(a, stream);
  }
  return widest <= 64    ? launch_variant<HalfBits, 64>(a, stream)
         : widest <= 128 ? launch_variant<HalfBits, 128>(a, stream)
                         : launch_variant<HalfBits, 256>(a, stream);
}

}  // namespace strata::cuda::kernels
