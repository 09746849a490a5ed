#pragma once
// Device helpers of the attention kernels (attention.cu, flash_decode.cu, flash_prefill.cu):
// asynchronous 16-byte copies to shared memory, half-precision packing and the sm_80+ tensor-core
// instructions (mma.sync m16n8k16, ldmatrix). Written as inline PTX because no header of the CUDA
// toolkit wraps them without CUTLASS (see docs/cuda-backend.md, "Attention").

#include <cstdint>
#include <type_traits>

#include "cuda/float_convert.cuh"

namespace strata::cuda::kernels::flash {

// log2(e): the kernels keep scores in base 2 so that exp2f (one MUFU.EX2) replaces expf.
inline constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(gmem));
}
// Copies 16 bytes when `valid`, else writes 16 zero bytes (nothing is read from `gmem`).
__device__ __forceinline__ void cp_async16_or_zero(void* smem, const void* gmem, bool valid) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(gmem),
               "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Two floats rounded to nearest-even into one register of two halves: `lo` in bits 0-15.
template <typename T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ std::uint32_t pack2<BF16Bits>(float lo, float hi) {
  std::uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <>
__device__ __forceinline__ std::uint32_t pack2<HalfBits>(float lo, float hi) {
  std::uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The two halves of a 32-bit word widened (bf16: a shift; f16: the hardware conversion).
template <typename T>
__device__ __forceinline__ void unpack2(std::uint32_t w, float& lo, float& hi);
template <>
__device__ __forceinline__ void unpack2<BF16Bits>(std::uint32_t w, float& lo, float& hi) {
  lo = __uint_as_float(w << 16);
  hi = __uint_as_float(w & 0xFFFF0000u);
}
template <>
__device__ __forceinline__ void unpack2<HalfBits>(std::uint32_t w, float& lo, float& hi) {
  const auto l = static_cast<unsigned short>(w & 0xFFFFu);
  const auto h = static_cast<unsigned short>(w >> 16);
  asm("cvt.f32.f16 %0, %1;" : "=f"(lo) : "h"(l));
  asm("cvt.f32.f16 %0, %1;" : "=f"(hi) : "h"(h));
}

// Eight 16-bit values of a 16-byte load widened.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& w, float (&out)[8]) {
  unpack2<T>(w.x, out[0], out[1]);
  unpack2<T>(w.y, out[2], out[3]);
  unpack2<T>(w.z, out[4], out[5]);
  unpack2<T>(w.w, out[6], out[7]);
}

// 2^x by the special-function unit alone (ex2.approx.ftz: about 2 ulp, results below 2^-126
// flushed to zero, 2^-inf = 0), without exp2f's rescaling for subnormal results: softmax weights
// that small do not change a float32 sum.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// d += a (16x16, row major) * b (16x8, column major), float32 accumulators. Fragment layouts are
// PTX's for mma.m16n8k16 (a: 4 registers, b: 2, c/d: 4).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                          std::uint32_t b0, std::uint32_t b1) {
  if constexpr (std::is_same_v<T, BF16Bits>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Four 8x8 matrices of 16-bit elements from shared memory; lanes 8i..8i+7 give the row addresses
// of matrix i. `trans` transposes each matrix on the way (for V, stored [key][dim]).
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

}  // namespace strata::cuda::kernels::flash
