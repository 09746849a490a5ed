// Dequantise a tile of output rows of a quantized weight into a dense row-major matrix of the
// activation dtype: the prefill path multiplies x by such tiles with cuBLAS, whose reuse of each
// tile over the rows of x hides the dequantisation (docs/quantization.md).
//
// - FP8 and compressed-tensors pack along the inputs, like the tile: a thread turns 8 fp8 bytes
//   or one packed word into consecutive outputs of one row (16-byte stores in bf16/f16).
// - AWQ and GPTQ pack along the outputs: a block dequantises a 64 x 64 tile through shared memory,
//   reading the packed words along the outputs (coalesced) and writing the tile along the inputs.
// - Other shapes (k not a multiple of 8, ragged groups) take the element-wise kernel.

#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "cuda/quant_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kTile = 64;  // AWQ/GPTQ tiles: 64 outputs x 64 inputs

// Index arithmetic in 32 bits (tiles hold at most 16 Mi weights; n, k < 2^31): a 64-bit division
// costs ~100 instructions, several per 8 weights made these kernels compute-bound.
__device__ __forceinline__ unsigned udiv(std::int64_t a, std::int64_t b) {
  return static_cast<unsigned>(a) / static_cast<unsigned>(b);
}

template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&v)[8]) {
  if constexpr (std::is_same_v<T, float>) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    std::uint32_t u[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      u[i] = static_cast<std::uint32_t>(from_float<T>(v[2 * i]).bits) |
             (static_cast<std::uint32_t>(from_float<T>(v[2 * i + 1]).bits) << 16);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(u[0], u[1], u[2], u[3]);
  }
}

template <typename T>
__global__ void dequantize_rows_kernel(QuantWeight w, std::int64_t n0, std::int64_t count, T* dst) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const std::int64_t n = n0 + i / w.k, kk = i % w.k;
    dst[i] = from_float<T>(dequantize_one(w, n, kk));
  }
}

// FP8: 8 inputs per thread (k % 8 == 0, block_in % 8 == 0).
template <typename T>
__global__ void fp8_rows_kernel(QuantWeight w, std::int64_t n0, std::int64_t rows, T* dst) {
  const std::int64_t per_row = w.k / 8;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * per_row) return;
  const unsigned row = udiv(i, per_row);
  const std::int64_t n = n0 + row, kk = (i - static_cast<std::int64_t>(row) * per_row) * 8;
  const uint2 b = __ldg(
      reinterpret_cast<const uint2*>(static_cast<const std::uint8_t*>(w.weight) + n * w.k + kk));
  const auto* scale = static_cast<const float*>(w.scale);
  const float s = w.block_out == 0 ? __ldg(scale)
                                   : __ldg(scale +
                                           static_cast<std::int64_t>(udiv(n, w.block_out)) *
                                               udiv(w.k + w.block_in - 1, w.block_in) +
                                           udiv(kk, w.block_in));
  float v[8];
  const std::uint32_t parts[2] = {b.x, b.y};
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(
        static_cast<__nv_fp8x2_storage_t>(parts[p] & 0xFFFFu), __NV_E4M3);
    const __half2_raw hi =
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(parts[p] >> 16), __NV_E4M3);
    v[4 * p + 0] = fp32_from_fp16(lo.x) * s;
    v[4 * p + 1] = fp32_from_fp16(lo.y) * s;
    v[4 * p + 2] = fp32_from_fp16(hi.x) * s;
    v[4 * p + 3] = fp32_from_fp16(hi.y) * s;
  }
  store8<T>(dst + (n - n0) * w.k + kk, v);
}

// compressed-tensors: 8 inputs per thread (int4: one word, int8: two; k % 8 == 0 and no word
// straddles a group).
template <int BITS, typename T>
__global__ void compressed_rows_kernel(QuantWeight w, std::int64_t n0, std::int64_t rows, T* dst) {
  constexpr int kPer = 32 / BITS;
  constexpr std::uint32_t kMask = (1u << BITS) - 1;
  const std::int64_t per_row = w.k / 8, packed_cols = w.k / kPer;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * per_row) return;
  const unsigned row = udiv(i, per_row);
  const std::int64_t n = n0 + row, kk = (i - static_cast<std::int64_t>(row) * per_row) * 8;
  const auto* words = static_cast<const std::int32_t*>(w.weight) + n * packed_cols + kk / kPer;
  float v[8];
#pragma unroll
  for (int h = 0; h < 8 / kPer; ++h) {
    const std::int64_t gi = w.groups == 1 ? 0 : udiv(kk + h * kPer, w.group);
    const float z = w.zeros != nullptr
                        ? static_cast<float>(field_of(w.zeros, (n / kPer) * w.groups + gi,
                                                      static_cast<int>(n % kPer) * BITS, kMask))
                        : static_cast<float>(1u << (BITS - 1));
    const float s = load_scale(w.scale, w.scale_type, n * w.groups + gi);
    const auto word = static_cast<std::uint32_t>(__ldg(words + h));
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      v[h * kPer + j] = (static_cast<float>((word >> (BITS * j)) & kMask) - z) * s;
    }
  }
  store8<T>(dst + (n - n0) * w.k + kk, v);
}

// AWQ / GPTQ: one 64 x 64 tile per block, 256 threads. Phase 1 reads packed words along the
// outputs and writes floats to tile[output][input]; phase 2 writes 8 inputs per store.
template <typename T>
__device__ __forceinline__ void write_tile(const float (&tile)[kTile][kTile + 1], std::int64_t n0,
                                           std::int64_t tn, std::int64_t tk, std::int64_t n1,
                                           std::int64_t k, T* dst) {
  for (int e = threadIdx.x; e < kTile * kTile / 8; e += blockDim.x) {
    const int ln = e / (kTile / 8), lk = (e % (kTile / 8)) * 8;
    const std::int64_t n = tn + ln, kk = tk + lk;
    if (n >= n1 || kk >= k) continue;
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = tile[ln][lk + j];
    store8<T>(dst + (n - n0) * k + kk, v);
  }
}

template <typename T>
__global__ void __launch_bounds__(256)
    awq_tile_kernel(QuantWeight w, std::int64_t n0, std::int64_t n1, T* dst) {
  __shared__ float tile[kTile][kTile + 1];
  const std::int64_t tn = n0 + static_cast<std::int64_t>(blockIdx.x) * kTile;
  const std::int64_t tk = static_cast<std::int64_t>(blockIdx.y) * kTile;
  const std::int64_t words = w.n / 8;
  const auto* qweight = static_cast<const std::int32_t*>(w.weight);
  // 8 words (64 outputs) x 64 inputs.
  for (int e = threadIdx.x; e < kTile * 8; e += blockDim.x) {
    const int lw = e % 8, lk = e / 8;
    const std::int64_t kk = tk + lk, c = tn / 8 + lw;
    if (kk >= w.k || c * 8 >= n1) continue;
    const std::int64_t gi = udiv(kk, w.group);
    const auto word = static_cast<std::uint32_t>(__ldg(qweight + kk * words + c));
    const auto zw = static_cast<std::uint32_t>(__ldg(w.zeros + gi * words + c));
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int shift = awq_shift(j);
      const float q = static_cast<float>((word >> shift) & 0xFu);
      const float z = static_cast<float>((zw >> shift) & 0xFu);
      tile[lw * 8 + j][lk] = (q - z) * load_scale(w.scale, w.scale_type, gi * w.n + c * 8 + j);
    }
  }
  __syncthreads();
  write_tile<T>(tile, n0, tn, tk, n1, w.k, dst);
}

template <int BITS, typename T>
__global__ void __launch_bounds__(256)
    gptq_tile_kernel(QuantWeight w, std::int64_t n0, std::int64_t n1, T* dst) {
  constexpr int kPer = 32 / BITS;
  constexpr std::uint32_t kMask = (1u << BITS) - 1;
  __shared__ float tile[kTile][kTile + 1];
  const std::int64_t tn = n0 + static_cast<std::int64_t>(blockIdx.x) * kTile;
  const std::int64_t tk = static_cast<std::int64_t>(blockIdx.y) * kTile;
  const auto* qweight = static_cast<const std::int32_t*>(w.weight);
  const std::int64_t zero_words = w.n / kPer;
  // 64 outputs x (64 / kPer) packed rows.
  for (int e = threadIdx.x; e < kTile * (kTile / kPer); e += blockDim.x) {
    const int ln = e % kTile, lr = e / kTile;
    const std::int64_t n = tn + ln, pr = tk / kPer + lr;
    if (n >= n1 || pr * kPer >= w.k) continue;
    const auto word = static_cast<std::uint32_t>(__ldg(qweight + pr * w.n + n));
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const std::int64_t gi =
          w.g_idx_sequential ? udiv(pr * kPer + j, w.group) : gptq_group(w, pr * kPer + j);
      const float z = static_cast<float>(
          field_of(w.zeros, gi * zero_words + n / kPer, static_cast<int>(n % kPer) * BITS, kMask) +
          1);
      tile[ln][lr * kPer + j] = (static_cast<float>((word >> (BITS * j)) & kMask) - z) *
                                load_scale(w.scale, w.scale_type, gi * w.n + n);
    }
  }
  __syncthreads();
  write_tile<T>(tile, n0, tn, tk, n1, w.k, dst);
}

template <typename T>
cudaError_t dequantize(const QuantWeight& w, std::int64_t n0, std::int64_t n1, T* dst,
                       cudaStream_t stream) {
  const std::int64_t rows = n1 - n0;
  // Every fast kernel stores 8 consecutive inputs of a row with one 16/32-byte store.
  const bool fast = w.k % 8 == 0 && aligned16(dst) && aligned16(w.weight);
  if (fast && w.kind == QuantKind::FP8 && (w.block_out == 0 || w.block_in % 8 == 0)) {
    fp8_rows_kernel<T><<<grid_for(rows * (w.k / 8)), kThreads, 0, stream>>>(w, n0, rows, dst);
    return launched();
  }
  if (fast && w.kind == QuantKind::Compressed && (w.groups == 1 || w.group % 8 == 0)) {
    if (w.bits == 4) {
      compressed_rows_kernel<4, T>
          <<<grid_for(rows * (w.k / 8)), kThreads, 0, stream>>>(w, n0, rows, dst);
    } else {
      compressed_rows_kernel<8, T>
          <<<grid_for(rows * (w.k / 8)), kThreads, 0, stream>>>(w, n0, rows, dst);
    }
    return launched();
  }
  const dim3 tiles(static_cast<unsigned>((rows + kTile - 1) / kTile),
                   static_cast<unsigned>((w.k + kTile - 1) / kTile));
  // AWQ tiles start on whole words: n0 is a multiple of 8 (the host's tile rows are).
  if (fast && w.kind == QuantKind::AWQ && n0 % 8 == 0) {
    awq_tile_kernel<T><<<tiles, 256, 0, stream>>>(w, n0, n1, dst);
    return launched();
  }
  if (fast && w.kind == QuantKind::GPTQ) {
    if (w.bits == 4) {
      gptq_tile_kernel<4, T><<<tiles, 256, 0, stream>>>(w, n0, n1, dst);
    } else {
      gptq_tile_kernel<8, T><<<tiles, 256, 0, stream>>>(w, n0, n1, dst);
    }
    return launched();
  }
  const std::int64_t count = rows * w.k;
  dequantize_rows_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(w, n0, count, dst);
  return launched();
}

}  // namespace

cudaError_t quant_dequantize_rows(const QuantWeight& w, std::int64_t n0, std::int64_t n1, void* dst,
                                  Type type, cudaStream_t stream) {
  if (n1 <= n0 || w.k == 0) return cudaSuccess;
  return dispatch_float(type, [&](auto tag) {
    using T = decltype(tag);
    return dequantize<T>(w, n0, n1, static_cast<T*>(dst), stream);
  });
}

}  // namespace strata::cuda::kernels
