#pragma once
// Device helpers shared by the decode GEMV kernels (quant_gemv.cu, quant_gemv_stream.cu): x in its
// own dtype, the exponent trick for integer codes, chunk-to-scale-column maps and the split-K
// reduction of the column kernels (AWQ, GPTQ).

#include <cstdint>
#include <type_traits>
#include <utility>

#include "cuda/quant_common.cuh"

namespace strata::cuda::kernels {
namespace {

__device__ __forceinline__ void prefetch_to_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

constexpr int kWarps = 8;             // warps per block
constexpr float kMagic = 8388608.0f;  // 2^23
constexpr std::uint32_t kMagicBits = 0x4B000000u;

__device__ __forceinline__ float code_minus(std::uint32_t code, float magic_plus_zero) {
  return __uint_as_float(kMagicBits | code) - magic_plus_zero;
}

// ---- x in its own dtype -------------------------------------------------------------------------
__device__ __forceinline__ float bf16_lo(std::uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(std::uint32_t u) {
  return __uint_as_float(u & 0xFFFF0000u);
}
__device__ __forceinline__ float f16_lo(std::uint32_t u) {
  return fp32_from_fp16(static_cast<std::uint16_t>(u & 0xFFFFu));
}
__device__ __forceinline__ float f16_hi(std::uint32_t u) {
  return fp32_from_fp16(static_cast<std::uint16_t>(u >> 16));
}

template <typename T>
__device__ __forceinline__ void widen_pairs(const std::uint32_t* u, int pairs, float* o) {
  for (int i = 0; i < pairs; ++i) {
    if constexpr (sizeof(T) == 2 && std::is_same_v<T, BF16Bits>) {
      o[2 * i] = bf16_lo(u[i]);
      o[2 * i + 1] = bf16_hi(u[i]);
    } else {
      o[2 * i] = f16_lo(u[i]);
      o[2 * i + 1] = f16_hi(u[i]);
    }
  }
}

// N (4, 8 or 16) consecutive elements of x as float32; p is aligned to N elements' bytes (up to
// 16) -- the launcher checks the base pointer and the row length.
template <int N, typename T>
__device__ __forceinline__ void load_x(const T* p, float (&o)[N]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < N / 4; ++i) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p) + i);
      o[4 * i] = v.x;
      o[4 * i + 1] = v.y;
      o[4 * i + 2] = v.z;
      o[4 * i + 3] = v.w;
    }
  } else if constexpr (N == 4) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    const std::uint32_t u[2] = {v.x, v.y};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float pair[2];
      widen_pairs<T>(u + i, 1, pair);
      o[2 * i] = pair[0];
      o[2 * i + 1] = pair[1];
    }
  } else {
#pragma unroll
    for (int h = 0; h < N / 8; ++h) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + h);
      const std::uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float pair[2];
        widen_pairs<T>(u + i, 1, pair);
        o[8 * h + 2 * i] = pair[0];
        o[8 * h + 2 * i + 1] = pair[1];
      }
    }
  }
}

template <typename T>
__device__ __forceinline__ float bias_of(const T* bias, std::int64_t n) {
  return bias != nullptr ? to_float(bias[n]) : 0.0f;
}

// Rows of x past `rows` read row 0 (valid memory) and are never stored.
__device__ __forceinline__ std::int64_t x_row(int r, std::int64_t rows) { return r < rows ? r : 0; }

// Chunk index -> scale column for the row kernels: a shift when the chunks per scale column are
// a power of two (the usual 128-input blocks and groups), else a 32-bit division. A 64-bit
// division per chunk (~100 instructions) was the FP8 and compressed-tensors kernels' bottleneck.
struct ChunkDiv {
  int shift = -1;        // log2(chunks per column), or -1
  unsigned divisor = 1;  // chunks per column
};

__device__ __forceinline__ std::int64_t column_of(std::int64_t chunk, ChunkDiv d) {
  return d.shift >= 0 ? chunk >> d.shift
                      : static_cast<std::int64_t>(static_cast<unsigned>(chunk) / d.divisor);
}

ChunkDiv chunk_div(std::int64_t chunks_per_column) {
  ChunkDiv d;
  d.divisor = static_cast<unsigned>(chunks_per_column);
  if ((chunks_per_column & (chunks_per_column - 1)) == 0) {
    d.shift = 0;
    while ((std::int64_t{1} << d.shift) < chunks_per_column) ++d.shift;
  }
  return d;
}

// ---- column kernels (AWQ, GPTQ): split-K inside the block and over grid.y ----------------------
// Each thread holds acc[R][C] (C consecutive outputs starting at col0 + threadIdx.x * C). The 8
// warps' sums are added in shared memory; with one split the block stores the outputs, else it
// writes its sums to ws[split][r][col] and the last block of the column tile (ticket) reduces.
template <int R, int C, typename T>
__device__ __forceinline__ void finish_columns(float (&acc)[R][C], const void* residual,
                                               const void* gate, std::int64_t col0, std::int64_t n,
                                               std::int64_t rows, const T* bias, T* out, float* ws,
                                               unsigned* tickets) {
  constexpr int kTile = 32 * C;
  __shared__ float red[kWarps][kTile];
  __shared__ bool last;
  const int tx = threadIdx.x, ty = threadIdx.y, t = ty * 32 + tx;
  const bool split = gridDim.y > 1;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
#pragma unroll
    for (int j = 0; j < C; ++j) red[ty][tx * C + j] = acc[r][j];
    __syncthreads();
    for (int o = t; o < kTile; o += 32 * kWarps) {
      float sum = 0.0f;
#pragma unroll
      for (int y = 0; y < kWarps; ++y) sum += red[y][o];
      const std::int64_t col = col0 + o;
      if (col < n) {
        if (split) {
          ws[(static_cast<std::int64_t>(blockIdx.y) * rows + r) * n + col] = sum;
        } else {
          store_out(out, residual, gate, r * n + col, sum + bias_of(bias, col));
        }
      }
    }
    __syncthreads();
  }
  if (!split) return;
  __threadfence();
  __syncthreads();
  if (t == 0) {
    const unsigned ticket = atomicAdd(tickets + blockIdx.x, 1u);
    last = ticket == gridDim.y - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const std::int64_t splits = gridDim.y;
  for (int o = t; o < rows * kTile; o += 32 * kWarps) {
    const std::int64_t r = o / kTile, col = col0 + o % kTile;
    if (col >= n) continue;
    float sum = 0.0f;
#pragma unroll 8
    for (std::int64_t s = 0; s < splits; ++s) sum += __ldcg(ws + (s * rows + r) * n + col);
    store_out(out, residual, gate, r * n + col, sum + bias_of(bias, col));
  }
  if (t == 0) tickets[blockIdx.x] = 0;  // ready for the next launch on this stream
}

// Units of inputs (a thread's serial stretch) never straddle a scale group.
struct Units {
  std::int64_t per_group;  // units in one scale group (sequential layouts)
  std::int64_t length;     // inputs (AWQ) or packed rows (GPTQ) per unit
  std::int64_t count;
};

// Units of a column kernel for layer w (host side).
Units column_units(const QuantWeight& w) {
  if (w.kind == QuantKind::AWQ) {
    const std::int64_t len = w.group % 32 == 0 ? 32 : w.group % 16 == 0 ? 16 : w.group;
    return {w.group / len, len, w.groups * (w.group / len)};
  }
  const int per = 32 / w.bits;
  const std::int64_t packed_rows = w.k / per;
  if (!w.g_idx_sequential) return {1, 2, packed_rows / 2};  // act-order: 2 packed rows a unit
  const std::int64_t rows_per_group = w.group / per;
  const std::int64_t len = rows_per_group % 8 == 0   ? 8
                           : rows_per_group % 4 == 0 ? 4
                                                     : rows_per_group;
  return {rows_per_group / len, len, w.groups * (rows_per_group / len)};
}

bool x_vector_ok(const void* x, std::int64_t k, Type type) {
  const std::int64_t esize = type == Type::Float32 ? 4 : 2;
  return aligned16(x) && (k * esize) % 16 == 0;
}

}  // namespace
}  // namespace strata::cuda::kernels
