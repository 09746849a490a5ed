// Decode-time quantized GEMV (up to kQuantMaxRows rows of x): the packed words and scales are read
// once, in registers, and dequantised on the fly; accumulation in float32, one rounding to the
// output dtype (docs/quantization.md).
//
// - FP8 and compressed-tensors store each output's inputs contiguously: one warp per output row,
//   lanes stride along the row (16-byte loads for fp8, 4-byte words for int4/int8).
// - AWQ and GPTQ pack along the outputs: one thread per output word column (AWQ: 8 outputs) or
//   output (GPTQ); the 8 warps of a block and a grid dimension split the inputs by scale group,
//   partial sums go through shared memory and a float32 workspace, reduced in a fixed order.
// Integer codes become floats by the exponent trick: the bits of 2^23 + q, minus 2^23 + z, is
// exactly q - z (no int-to-float conversion, which is slow on the GPU).

#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/quant_common.cuh"

namespace strata::cuda::kernels {
namespace {

constexpr int kWarps = 8;             // warps per block
constexpr float kMagic = 8388608.0f;  // 2^23
constexpr std::uint32_t kMagicBits = 0x4B000000u;

__device__ __forceinline__ float code_minus(std::uint32_t code, float magic_plus_zero) {
  return __uint_as_float(kMagicBits | code) - magic_plus_zero;
}

__device__ __forceinline__ void store_out(void* out, Type type, std::int64_t i, float v) {
  switch (type) {
    case Type::BFloat16:
      static_cast<BF16Bits*>(out)[i] = from_float<BF16Bits>(v);
      break;
    case Type::Float16:
      static_cast<HalfBits*>(out)[i] = from_float<HalfBits>(v);
      break;
    default:
      static_cast<float*>(out)[i] = v;
      break;
  }
}

template <int R>
__device__ __forceinline__ void warp_reduce_store(float (&acc)[R], const QuantWeight& w,
                                                  std::int64_t n, std::int64_t rows,
                                                  const void* bias, void* out, Type out_type) {
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
  if ((threadIdx.x & 31) != 0) return;
  const float b = bias != nullptr ? load_scale(bias, out_type, n) : 0.0f;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r < rows) store_out(out, out_type, r * w.n + n, acc[r] + b);
  }
}

// ---- FP8: warp per output row -----------------------------------------------------------------
template <int R>
__global__ void __launch_bounds__(kWarps * 32)
    fp8_gemv_kernel(QuantWeight w, const float* __restrict__ x, std::int64_t xs, std::int64_t rows,
                    const void* bias, void* out, Type out_type, bool vector_path) {
  const int lane = threadIdx.x & 31;
  const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= w.n) return;
  float acc[R] = {};
  const auto* bytes = static_cast<const std::uint8_t*>(w.weight) + n * w.k;
  if (vector_path) {
    // k % 16 == 0 and every 16 inputs share one block scale (block_in % 16 == 0).
    const auto* row = reinterpret_cast<const uint4*>(bytes);
    const auto* scale = static_cast<const float*>(w.scale);
    const std::int64_t chunks = w.k / 16;
    const std::int64_t scale_cols = w.block_out ? (w.k + w.block_in - 1) / w.block_in : 0;
    const float* srow = w.block_out ? scale + (n / w.block_out) * scale_cols : scale;
#pragma unroll 2
    for (std::int64_t c = lane; c < chunks; c += 32) {
      const uint4 v = __ldg(row + c);
      const float s = w.block_out ? __ldg(srow + (c * 16) / w.block_in) : 1.0f;
      float wv[16];
      const std::uint32_t parts[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>(parts[p] & 0xFFFFu), __NV_E4M3);
        const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>(parts[p] >> 16), __NV_E4M3);
        wv[4 * p + 0] = fp32_from_fp16(lo.x);
        wv[4 * p + 1] = fp32_from_fp16(lo.y);
        wv[4 * p + 2] = fp32_from_fp16(hi.x);
        wv[4 * p + 3] = fp32_from_fp16(hi.y);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const auto* xp = reinterpret_cast<const float4*>(x + r * xs + c * 16);
        float part = 0.0f;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float4 xv = __ldg(xp + q);
          part = fmaf(wv[4 * q + 0], xv.x, part);
          part = fmaf(wv[4 * q + 1], xv.y, part);
          part = fmaf(wv[4 * q + 2], xv.z, part);
          part = fmaf(wv[4 * q + 3], xv.w, part);
        }
        acc[r] = fmaf(part, s, acc[r]);
      }
    }
    if (!w.block_out) {
      const float s = __ldg(scale);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] *= s;
    }
  } else {
    for (std::int64_t kk = lane; kk < w.k; kk += 32) {
      const float v = dequantize_one(w, n, kk);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = fmaf(v, __ldg(x + r * xs + kk), acc[r]);
    }
  }
  warp_reduce_store<R>(acc, w, n, rows, bias, out, out_type);
}

// ---- compressed-tensors: warp per output row, one word per lane step ---------------------------
template <int R, int BITS>
__global__ void __launch_bounds__(kWarps * 32)
    compressed_gemv_kernel(QuantWeight w, const float* __restrict__ x, std::int64_t xs,
                           std::int64_t rows, const void* bias, void* out, Type out_type) {
  constexpr int kPer = 32 / BITS;
  constexpr std::uint32_t kMask = (1u << BITS) - 1;
  const int lane = threadIdx.x & 31;
  const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= w.n) return;
  float acc[R] = {};
  const std::int64_t packed_cols = (w.k + kPer - 1) / kPer;
  const auto* row = static_cast<const std::int32_t*>(w.weight) + n * packed_cols;
  const int zshift = static_cast<int>(n % kPer) * BITS;
  // The host routes here only when no word straddles two groups (group % kPer == 0 or one group).
#pragma unroll 4
  for (std::int64_t c = lane; c < packed_cols; c += 32) {
    const auto word = static_cast<std::uint32_t>(__ldg(row + c));
    const std::int64_t gi = w.groups == 1 ? 0 : (c * kPer) / w.group;
    const float z =
        w.zeros != nullptr
            ? static_cast<float>(field_of(w.zeros, (n / kPer) * w.groups + gi, zshift, kMask))
            : static_cast<float>(1u << (BITS - 1));
    const float s = load_scale(w.scale, w.scale_type, n * w.groups + gi);
    const float mz = kMagic + z;
    float t[kPer];
#pragma unroll
    for (int j = 0; j < kPer; ++j) t[j] = code_minus((word >> (BITS * j)) & kMask, mz);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float* xp = x + r * xs + c * kPer;  // zero past k: padded codes add nothing
      float part = 0.0f;
#pragma unroll
      for (int j = 0; j < kPer; ++j) part = fmaf(t[j], __ldg(xp + j), part);
      acc[r] = fmaf(part, s, acc[r]);
    }
  }
  warp_reduce_store<R>(acc, w, n, rows, bias, out, out_type);
}

// Generic row kernel (any format, any shape): the slow path for layouts the fast kernels skip.
template <int R>
__global__ void __launch_bounds__(kWarps * 32)
    generic_gemv_kernel(QuantWeight w, const float* __restrict__ x, std::int64_t xs,
                        std::int64_t rows, const void* bias, void* out, Type out_type) {
  const int lane = threadIdx.x & 31;
  const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= w.n) return;
  float acc[R] = {};
  for (std::int64_t kk = lane; kk < w.k; kk += 32) {
    const float v = dequantize_one(w, n, kk);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(v, __ldg(x + r * xs + kk), acc[r]);
  }
  warp_reduce_store<R>(acc, w, n, rows, bias, out, out_type);
}

// ---- AWQ: thread per word column (8 outputs), blocks of 32 columns x 8 group slices ------------
// Partial sums of output `col` for row r of split s go to ws[(s * rows + r) * n + col].
template <int R, int COLS>
__device__ __forceinline__ void block_reduce_to_workspace(float (&acc)[R][COLS], std::int64_t col0,
                                                          std::int64_t n, std::int64_t rows,
                                                          float* ws) {
  __shared__ float red[kWarps][32 * COLS];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int t = ty * 32 + tx;
  // Unrolled with a uniform test, so acc stays in registers (a runtime-bounded loop would index
  // it dynamically and put it in local memory).
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
#pragma unroll
    for (int j = 0; j < COLS; ++j) red[ty][tx * COLS + j] = acc[r][j];
    __syncthreads();
    for (int o = t; o < 32 * COLS; o += 32 * kWarps) {
      float sum = 0.0f;
#pragma unroll
      for (int y = 0; y < kWarps; ++y) sum += red[y][o];
      const std::int64_t col = col0 + o;
      if (col < n) ws[(static_cast<std::int64_t>(blockIdx.y) * rows + r) * n + col] = sum;
    }
    __syncthreads();
  }
}

template <int R>
__global__ void __launch_bounds__(kWarps * 32)
    awq_gemv_kernel(QuantWeight w, const float* __restrict__ x, std::int64_t xs, std::int64_t rows,
                    float* ws) {
  const std::int64_t words = w.n / 8;
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float acc[R][8] = {};
  if (c < words) {
    const auto* qweight = static_cast<const std::int32_t*>(w.weight);
    for (std::int64_t u = static_cast<std::int64_t>(blockIdx.y) * kWarps + threadIdx.y;
         u < w.groups; u += static_cast<std::int64_t>(gridDim.y) * kWarps) {
      const auto zw = static_cast<std::uint32_t>(__ldg(w.zeros + u * words + c));
      float mz[8], s[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        mz[j] = kMagic + static_cast<float>((zw >> awq_shift(j)) & 0xFu);
        s[j] = load_scale(w.scale, w.scale_type, u * w.n + c * 8 + j);
      }
      float part[R][8] = {};
      const std::int64_t k0 = u * w.group;
#pragma unroll 4
      for (std::int64_t kk = k0; kk < k0 + w.group; ++kk) {
        const auto word = static_cast<std::uint32_t>(__ldg(qweight + kk * words + c));
        float t[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) t[j] = code_minus((word >> awq_shift(j)) & 0xFu, mz[j]);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float xv = __ldg(x + r * xs + kk);
#pragma unroll
          for (int j = 0; j < 8; ++j) part[r][j] = fmaf(t[j], xv, part[r][j]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r][j] = fmaf(part[r][j], s[j], acc[r][j]);
      }
    }
  }
  block_reduce_to_workspace<R, 8>(acc, static_cast<std::int64_t>(blockIdx.x) * 256, w.n, rows, ws);
}

// ---- GPTQ: thread per output column, 8 slices of groups (or packed rows) per block -------------
template <int R, int BITS>
__global__ void __launch_bounds__(kWarps * 32)
    gptq_gemv_kernel(QuantWeight w, const float* __restrict__ x, std::int64_t xs, std::int64_t rows,
                     float* ws) {
  constexpr int kPer = 32 / BITS;
  constexpr std::uint32_t kMask = (1u << BITS) - 1;
  const std::int64_t n = static_cast<std::int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float acc[R][1] = {};
  if (n < w.n) {
    const auto* qweight = static_cast<const std::int32_t*>(w.weight);
    const std::int64_t packed_rows = w.k / kPer, zero_words = w.n / kPer;
    const int zshift = static_cast<int>(n % kPer) * BITS;
    const std::int64_t first = static_cast<std::int64_t>(blockIdx.y) * kWarps + threadIdx.y;
    const std::int64_t step = static_cast<std::int64_t>(gridDim.y) * kWarps;
    if (w.g_idx_sequential) {
      // Units are groups (group % kPer == 0, checked by the host): zero and scale hoisted.
      const std::int64_t rows_per_group = w.group / kPer;
      for (std::int64_t u = first; u < w.groups; u += step) {
        const float z =
            static_cast<float>(field_of(w.zeros, u * zero_words + n / kPer, zshift, kMask) + 1);
        const float s = load_scale(w.scale, w.scale_type, u * w.n + n);
        const float mz = kMagic + z;
        float part[R] = {};
        const std::int64_t r0 = u * rows_per_group;
        const std::int64_t r1 =
            r0 + rows_per_group < packed_rows ? r0 + rows_per_group : packed_rows;
#pragma unroll 4
        for (std::int64_t pr = r0; pr < r1; ++pr) {
          const auto word = static_cast<std::uint32_t>(__ldg(qweight + pr * w.n + n));
#pragma unroll
          for (int j = 0; j < kPer; ++j) {
            const float t = code_minus((word >> (BITS * j)) & kMask, mz);
#pragma unroll
            for (int r = 0; r < R; ++r)
              part[r] = fmaf(t, __ldg(x + r * xs + pr * kPer + j), part[r]);
          }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][0] = fmaf(part[r], s, acc[r][0]);
      }
    } else {
      // Act-order g_idx: each input has its own group; units are packed rows.
      for (std::int64_t pr = first; pr < packed_rows; pr += step) {
        const auto word = static_cast<std::uint32_t>(__ldg(qweight + pr * w.n + n));
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
          const std::int64_t kk = pr * kPer + j;
          const std::int64_t gi = gptq_group(w, kk);
          const float z =
              static_cast<float>(field_of(w.zeros, gi * zero_words + n / kPer, zshift, kMask) + 1);
          const float v = code_minus((word >> (BITS * j)) & kMask, kMagic + z) *
                          load_scale(w.scale, w.scale_type, gi * w.n + n);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][0] = fmaf(v, __ldg(x + r * xs + kk), acc[r][0]);
        }
      }
    }
  }
  block_reduce_to_workspace<R, 1>(acc, static_cast<std::int64_t>(blockIdx.x) * 32, w.n, rows, ws);
}

template <typename T>
__global__ void reduce_splits_kernel(const float* __restrict__ ws, std::int64_t splits,
                                     std::int64_t rows, std::int64_t n, const T* bias, T* out) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * n) return;
  const std::int64_t col = i % n;
  float sum = 0.0f;
  for (std::int64_t s = 0; s < splits; ++s) sum += ws[s * rows * n + i];
  out[i] = from_float<T>(bias != nullptr ? sum + to_float(bias[col]) : sum);
}

// Kernel families and their split of the inputs.
bool column_kernel(const QuantWeight& w) {
  if (w.kind == QuantKind::AWQ) return true;
  return w.kind == QuantKind::GPTQ && (!w.g_idx_sequential || w.group % (32 / w.bits) == 0);
}

std::int64_t column_blocks(const QuantWeight& w) {
  const std::int64_t cols = w.kind == QuantKind::AWQ ? w.n / 8 : w.n;
  return (cols + 31) / 32;
}

std::int64_t column_splits(const QuantWeight& w, int sms) {
  const std::int64_t units =
      w.kind == QuantKind::GPTQ && !w.g_idx_sequential ? w.k / (32 / w.bits) : w.groups;
  const std::int64_t max_splits = (units + kWarps - 1) / kWarps;
  const std::int64_t want =
      (4 * static_cast<std::int64_t>(sms) + column_blocks(w) - 1) / column_blocks(w);
  return want < 1 ? 1 : (want > max_splits ? max_splits : want);
}

template <int R>
cudaError_t launch(const QuantWeight& w, const float* x, std::int64_t xs, std::int64_t rows,
                   const void* bias, void* out, Type out_type, float* ws, int sms,
                   cudaStream_t stream) {
  const auto row_blocks = static_cast<unsigned>((w.n + kWarps - 1) / kWarps);
  const dim3 row_threads(kWarps * 32);
  if (!column_kernel(w)) {
    const int per = 32 / w.bits;
    if (w.kind == QuantKind::FP8) {
      const bool vector_path = w.k % 16 == 0 && (w.block_out == 0 || w.block_in % 16 == 0) &&
                               reinterpret_cast<std::uintptr_t>(w.weight) % 16 == 0;
      fp8_gemv_kernel<R><<<row_blocks, row_threads, 0, stream>>>(w, x, xs, rows, bias, out,
                                                                 out_type, vector_path);
    } else if (w.kind == QuantKind::Compressed && (w.groups == 1 || w.group % per == 0)) {
      if (w.bits == 4) {
        compressed_gemv_kernel<R, 4>
            <<<row_blocks, row_threads, 0, stream>>>(w, x, xs, rows, bias, out, out_type);
      } else {
        compressed_gemv_kernel<R, 8>
            <<<row_blocks, row_threads, 0, stream>>>(w, x, xs, rows, bias, out, out_type);
      }
    } else {
      generic_gemv_kernel<R>
          <<<row_blocks, row_threads, 0, stream>>>(w, x, xs, rows, bias, out, out_type);
    }
    return launched();
  }
  const std::int64_t splits = column_splits(w, sms);
  const dim3 grid(static_cast<unsigned>(column_blocks(w)), static_cast<unsigned>(splits));
  const dim3 threads(32, kWarps);
  if (w.kind == QuantKind::AWQ) {
    awq_gemv_kernel<R><<<grid, threads, 0, stream>>>(w, x, xs, rows, ws);
  } else if (w.bits == 4) {
    gptq_gemv_kernel<R, 4><<<grid, threads, 0, stream>>>(w, x, xs, rows, ws);
  } else {
    gptq_gemv_kernel<R, 8><<<grid, threads, 0, stream>>>(w, x, xs, rows, ws);
  }
  if (const cudaError_t status = launched(); status != cudaSuccess) return status;
  return dispatch_float(out_type, [&](auto tag) {
    using T = decltype(tag);
    reduce_splits_kernel<T><<<grid_for(rows * w.n), kThreads, 0, stream>>>(
        ws, splits, rows, w.n, static_cast<const T*>(bias), static_cast<T*>(out));
    return launched();
  });
}

}  // namespace

std::int64_t quant_gemv_workspace_floats(const QuantWeight& w, std::int64_t rows, int sms) {
  if (!column_kernel(w)) return 0;
  return column_splits(w, sms) * rows * w.n;
}

cudaError_t quant_gemv(const QuantWeight& w, const float* x, std::int64_t x_stride,
                       std::int64_t rows, const void* bias, void* out, Type out_type,
                       float* workspace, int sms, cudaStream_t stream) {
  if (rows <= 0 || w.n == 0) return cudaSuccess;
  if (w.bits != 4 && w.bits != 8 && w.kind != QuantKind::FP8) return cudaErrorInvalidValue;
  if (rows <= 1)
    return launch<1>(w, x, x_stride, rows, bias, out, out_type, workspace, sms, stream);
  if (rows <= 2)
    return launch<2>(w, x, x_stride, rows, bias, out, out_type, workspace, sms, stream);
  if (rows <= 4)
    return launch<4>(w, x, x_stride, rows, bias, out, out_type, workspace, sms, stream);
  if (rows <= kQuantMaxRows) {
    return launch<kQuantMaxRows>(w, x, x_stride, rows, bias, out, out_type, workspace, sms, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace strata::cuda::kernels
