// Flash attention for prefill (kernels.h, launch_flash_prefill): tensor cores through
// mma.sync.m16n8k16 (bf16/f16 in, float32 accumulators), online softmax in registers, no score
// matrix in global memory (FlashAttention-2's schedule).
//
// A block (4 warps) takes 64 or 128 query rows of one (batch, q head), 16 or 32 per warp (MT
// m-tiles); Q's A-fragments stay in registers. Tiles of kBlockN keys of K and V go to shared memory
// by cp.async, two stages deep (rows padded by 16 bytes: ldmatrix reads them without bank
// conflicts; columns past head_dim or v_dim and keys past k_len are zero-filled). Per tile a warp
// computes S = Q K^T (16 x kBlockN), applies scale, the end-aligned causal mask and the additive
// mask, updates its rows' running max and sum (base 2), and multiplies P (rounded to the input
// type, as FlashAttention does) by V into its float32 output fragments. Causal blocks stop at the
// last key their rows can see and run heaviest first.

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

// MT: m-tiles (16 query rows each) per warp. Every K/V fragment read from shared memory feeds MT
// mma's, so MT = 2 halves the shared-memory traffic per flop (ldmatrix.x4 moves 512 bytes in
// about the time of two m16n8k16's) at the price of registers.
template <int DMAX, int MT>
struct PrefillShape {
  static constexpr int kBlockM = 16 * MT * kPrefillWarps;  // query rows of a block
  // Keys per tile: what the registers allow (S is MT x kBlockN / 8 fragments per warp).
  static constexpr int kBlockN = DMAX <= 64 ? 64 : (DMAX <= 128 && MT == 1) ? 64 : 32;
  static constexpr int kRow = DMAX + 8;  // smem row, padded by 16 bytes
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

// Three blocks per SM where the registers allow (12 warps to hide ldmatrix and mma latency).
template <typename T, int DMAX, int MT>
__global__ void __launch_bounds__(kPrefillThreads, (MT == 1 && DMAX <= 128) ? 3 : 1)
    flash_prefill_kernel(Attention a) {
  using P = PrefillShape<DMAX, MT>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // [stage][key][kRow]
  T* v_s = k_s + P::kStages * P::kTileElems;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int quad = lane >> 2, pair = (lane & 3) * 2;  // fragment row and column pair
  const int q_tiles = static_cast<int>(gridDim.x);
  const int tile = a.causal ? q_tiles - 1 - static_cast<int>(blockIdx.x)
                            : static_cast<int>(blockIdx.x);  // causal: heavy first
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  const std::int64_t kvh = h / (a.q_heads / a.kv_heads);
  const int q_len = static_cast<int>(a.q_len), k_len = static_cast<int>(a.k_len);
  const int q0 = tile * P::kBlockM;
  const int warp_row0 = q0 + warp * 16 * MT;  // the warp's rows: [warp_row0, + 16 MT)
  const int offset = k_len - q_len;           // causal: row i sees keys <= i + offset
  // Thread rows: m-tile mt, half hf (fragment rows quad and quad + 8).
  const auto row_of = [&](int mt, int hf) { return warp_row0 + mt * 16 + hf * 8 + quad; };

  // Keys the block's rows can see: all, or up to its last row's diagonal.
  int key_end = k_len;
  if (a.causal) key_end = max(0, min(k_len, min(q_len, q0 + P::kBlockM) - 1 + offset + 1));
  const int n_tiles = (key_end + P::kBlockN - 1) / P::kBlockN;

  const T* k_g = static_cast<const T*>(a.k) + b * a.k_strides[0] + kvh * a.k_strides[1];
  const T* v_g = static_cast<const T*>(a.v) + b * a.v_strides[0] + kvh * a.v_strides[1];
  const int k_chunks = static_cast<int>(a.head_dim / 8), v_chunks = static_cast<int>(a.v_dim / 8);
  const auto load_tile = [&](int t) {
    const int key0 = t * P::kBlockN;
    T* k_dst = k_s + (t % P::kStages) * P::kTileElems;
    T* v_dst = v_s + (t % P::kStages) * P::kTileElems;
    for (int idx = tid; idx < P::kBlockN * P::kChunks; idx += kPrefillThreads) {
      const int j = idx / P::kChunks, c = idx % P::kChunks;
      const int key = key0 + j;
      const bool k_in = key < k_len && c < k_chunks, v_in = key < k_len && c < v_chunks;
      flash::cp_async16_or_zero(k_dst + j * P::kRow + c * 8,
                                k_in ? k_g + key * a.k_strides[2] + c * 8 : k_g, k_in);
      flash::cp_async16_or_zero(v_dst + j * P::kRow + c * 8,
                                v_in ? v_g + key * a.v_strides[2] + c * 8 : v_g, v_in);
    }
  };
  if (n_tiles > 0) load_tile(0);
  flash::cp_async_commit();

  // Q's A-fragments: registers {(r, k), (r + 8, k), (r, k + 8), (r + 8, k + 8)} of each 16-column
  // step, k = 16 * step + pair. Zeros past q_len and head_dim.
  std::uint32_t qa[MT][P::kKSteps][4];
  {
    const T* q_g = static_cast<const T*>(a.q) + b * a.q_strides[0] + h * a.q_strides[1];
    const auto q_pair = [&](int row, int col) -> std::uint32_t {
      if (row >= q_len || col >= a.head_dim) return 0u;
      const T* p = q_g + row * a.q_strides[2] + col;
      return static_cast<std::uint32_t>(p[0].bits) | (static_cast<std::uint32_t>(p[1].bits) << 16);
    };
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int ks = 0; ks < P::kKSteps; ++ks) {
        qa[mt][ks][0] = q_pair(row_of(mt, 0), ks * 16 + pair);
        qa[mt][ks][1] = q_pair(row_of(mt, 1), ks * 16 + pair);
        qa[mt][ks][2] = q_pair(row_of(mt, 0), ks * 16 + 8 + pair);
        qa[mt][ks][3] = q_pair(row_of(mt, 1), ks * 16 + 8 + pair);
      }
    }
  }

  float o[MT][P::kDTiles][4];
  // Running max and sum of the thread's rows; l is the thread's share (its quad adds them at the
  // end).
  float m_run[MT][2], l_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < P::kDTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.0f;
    }
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.0f;
  }
  const float scale = a.scale * kLog2e;
  const std::int64_t mask_base = b * a.mask_strides[0] + h * a.mask_strides[1];

  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) load_tile(t + 1);
    flash::cp_async_commit();
    flash::cp_async_wait<1>();  // tile t has landed
    __syncthreads();
    const T* k_t = k_s + (t % P::kStages) * P::kTileElems;
    const T* v_t = v_s + (t % P::kStages) * P::kTileElems;
    const int key0 = t * P::kBlockN;

    // S = Q K^T: ldmatrix.x4 gives the B-fragments of two n-tiles (16 keys) per k-step.
    float s[MT][P::kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < P::kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
      }
    }
    // Every k-step and d-pair of DMAX runs, past head_dim / v_dim too (zeros there): a runtime
    // exit between the unrolled steps would keep ptxas from issuing the next step's ldmatrix
    // under this step's mma's (measured: 130 TFLOP/s with such exits, H100, head dim 128).
#pragma unroll
    for (int ks = 0; ks < P::kKSteps; ++ks) {
#pragma unroll
      for (int np = 0; np < P::kNTiles / 2; ++np) {
        std::uint32_t kb[4];
        const int key = np * 16 + (lane >> 4) * 8 + (lane & 7);
        const int col = ks * 16 + ((lane >> 3) & 1) * 8;
        flash::ldmatrix_x4(kb, k_t + key * P::kRow + col);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          flash::mma_16816<T>(s[mt][2 * np], qa[mt][ks], kb[0], kb[1]);
          flash::mma_16816<T>(s[mt][2 * np + 1], qa[mt][ks], kb[2], kb[3]);
        }
      }
    }

    // Masks only where they can cut: the last tile (keys past k_len), tiles crossing the warp's
    // causal diagonal, and every tile when there is an additive mask.
    const bool ragged = key0 + P::kBlockN > k_len ||
                        (a.causal && key0 + P::kBlockN - 1 > warp_row0 + offset) ||
                        a.mask != nullptr;
    std::uint32_t pa[MT][P::kBlockN / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int row = row_of(mt, hf);
        float mx = m_run[mt][hf];
#pragma unroll
        for (int nt = 0; nt < P::kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float x = s[mt][nt][2 * hf + e] * scale;
            if (ragged) {
              const int key = key0 + nt * 8 + pair + e;
              if (key >= k_len || (a.causal && key > row + offset)) {
                x = -INFINITY;
              } else if (a.mask != nullptr && row < q_len) {
                x += mask_value<T>(a, mask_base + row * a.mask_strides[2] +
                                          static_cast<std::int64_t>(key) * a.mask_strides[3]) *
                     kLog2e;
              }
            }
            s[mt][nt][2 * hf + e] = x;
            mx = fmaxf(mx, x);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 2));
        // A row that has seen no key yet keeps max -inf: subtract 0 instead (every p is then 0).
        const float base = mx == -INFINITY ? 0.0f : mx;
        const float corr = flash::fast_exp2(m_run[mt][hf] - base);  // 0 while the max was -inf
        m_run[mt][hf] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < P::kNTiles; ++nt) {
          s[mt][nt][2 * hf] = flash::fast_exp2(s[mt][nt][2 * hf] - base);
          s[mt][nt][2 * hf + 1] = flash::fast_exp2(s[mt][nt][2 * hf + 1] - base);
          sum += s[mt][nt][2 * hf] + s[mt][nt][2 * hf + 1];
        }
        l_run[mt][hf] = l_run[mt][hf] * corr + sum;
#pragma unroll
        for (int dt = 0; dt < P::kDTiles; ++dt) {
          o[mt][dt][2 * hf] *= corr;
          o[mt][dt][2 * hf + 1] *= corr;
        }
      }
      // P's C-fragments are A-fragments once rounded to the input type.
#pragma unroll
      for (int kk = 0; kk < P::kBlockN / 16; ++kk) {
        pa[mt][kk][0] = flash::pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][kk][1] = flash::pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][kk][2] = flash::pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][kk][3] = flash::pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
    }

    // O += P V, V^T's B-fragments by ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < P::kBlockN / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < P::kDTiles / 2; ++dp) {
        std::uint32_t vb[4];
        const int key = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
        const int col = dp * 16 + (lane >> 4) * 8;
        flash::ldmatrix_x4_trans(vb, v_t + key * P::kRow + col);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          flash::mma_16816<T>(o[mt][2 * dp], pa[mt][kk], vb[0], vb[1]);
          flash::mma_16816<T>(o[mt][2 * dp + 1], pa[mt][kk], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's copy overwrites this stage
  }

  // Rows' sums over the quad, the sink, and the output rounded once.
  T* out = static_cast<T*>(a.out) + (b * a.q_heads + h) * a.q_len * a.v_dim;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = l_run[mt][hf];
      l += __shfl_xor_sync(0xFFFFFFFFu, l, 1);
      l += __shfl_xor_sync(0xFFFFFFFFu, l, 2);
      const float m = m_run[mt][hf];
      if (a.sinks != nullptr && m != -INFINITY) l += flash::fast_exp2(a.sinks[h] * kLog2e - m);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // every key masked: zeros
      const int row = row_of(mt, hf);
      if (row >= q_len) continue;
      T* out_row = out + static_cast<std::int64_t>(row) * a.v_dim;
#pragma unroll
      for (int dt = 0; dt < P::kDTiles; ++dt) {
        const int col = dt * 8 + pair;
        if (col >= a.v_dim) break;
        out_row[col] = from_float<T>(o[mt][dt][2 * hf] * inv);
        out_row[col + 1] = from_float<T>(o[mt][dt][2 * hf + 1] * inv);
      }
    }
  }
}

// The shared-memory opt-in above 48 KiB, once per (instantiation, device).
template <typename T, int DMAX, int MT>
cudaError_t launch_variant(const Attention& a, cudaStream_t stream) {
  using P = PrefillShape<DMAX, MT>;
  static std::atomic<std::uint64_t> opted_in{0};
  int device = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  const std::uint64_t bit = device < 64 ? std::uint64_t{1} << device : 0;
  if (P::kSmemBytes > 48 * 1024 && (opted_in.load(std::memory_order_acquire) & bit) == 0) {
    status = cudaFuncSetAttribute(flash_prefill_kernel<T, DMAX, MT>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(P::kSmemBytes));
    if (status != cudaSuccess) return status;
    opted_in.fetch_or(bit, std::memory_order_release);
  }
  const dim3 grid(static_cast<unsigned>((a.q_len + P::kBlockM - 1) / P::kBlockM),
                  static_cast<unsigned>(a.q_heads), static_cast<unsigned>(a.batch));
  flash_prefill_kernel<T, DMAX, MT><<<grid, kPrefillThreads, P::kSmemBytes, stream>>>(a);
  return launched();
}

template <typename T, int DMAX>
cudaError_t launch_dmax(const Attention& a, int rows_per_warp, cudaStream_t stream) {
  return rows_per_warp == 32 ? launch_variant<T, DMAX, 2>(a, stream)
                             : launch_variant<T, DMAX, 1>(a, stream);
}

template <typename T>
cudaError_t launch_type(const Attention& a, int rows_per_warp, cudaStream_t stream) {
  const std::int64_t widest = std::max(a.head_dim, a.v_dim);
  if (widest > 128) return launch_variant<T, 256, 1>(a, stream);  // registers: one m-tile
  return widest <= 64 ? launch_dmax<T, 64>(a, rows_per_warp, stream)
                      : launch_dmax<T, 128>(a, rows_per_warp, stream);
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
  if (a.kv_heads < 1 || a.q_heads % a.kv_heads != 0 || a.q_heads > 65535 || a.batch > 65535 ||
      a.q_len > 0x7FFFFFFF || a.k_len > 0x7FFFFFFF) {
    return false;
  }
  return rows_aligned16(a.k, a.k_strides) && rows_aligned16(a.v, a.v_strides);
}

cudaError_t launch_flash_prefill(const Attention& a, cudaStream_t stream, int rows_per_warp) {
  if (!flash_prefill_supported(a)) return cudaErrorInvalidValue;
  if (a.batch * a.q_heads * a.q_len == 0) return cudaSuccess;
  if (rows_per_warp == 0) rows_per_warp = kFlashPrefillRowsPerWarp;
  if (rows_per_warp != 16 && rows_per_warp != 32) return cudaErrorInvalidValue;
  return a.type == Type::BFloat16 ? launch_type<BF16Bits>(a, rows_per_warp, stream)
                                  : launch_type<HalfBits>(a, rows_per_warp, stream);
}

}  // namespace strata::cuda::kernels
