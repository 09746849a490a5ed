#pragma once
// Tensor-core pieces of the decode GEMVs of quant_gemv_tc.cu (the int4 formats, FP8): an int4 code
// pair made a bf16 pair minus its zero point in two SIMT instructions, and mma.sync m16n8k16
// (bf16 inputs, float32 accumulation) for the multiply-adds.
//  - ((word >> 4s) & 0x000F000F) | 0x43004300 is the bf16 pair (128 + q_s, 128 + q_{s+4}) (a LOP3);
//    one bf16x2 subtraction of (128 + z) leaves (q - z) exactly (small integers are exact in
//    bf16; z <= 16 keeps 128 + z inside the 7-bit mantissa).
//  - the inputs of one mma need not be consecutive: the pairs (j, j + 4) the LOP3 yields are
//    matched by the same pairs of x, one PRMT each (x_pairs).

#include <cuda_bf16.h>

#include <cstdint>

namespace strata::cuda::kernels {
namespace {

__device__ __forceinline__ std::uint32_t part_of_uint4(const uint4& v, int q) {
  return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w;
}

// d += A B: A 16 x 16 bf16 (a0..a3), B 16 x 8 bf16 (b0, b1), d 16 x 8 float32 (PTX fragments).
__device__ __forceinline__ void mma_bf16(float (&d)[4], std::uint32_t a0, std::uint32_t a1,
                                         std::uint32_t a2, std::uint32_t a3, std::uint32_t b0,
                                         std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The bf16 pair (128 + z, 128 + z) that pair_minus subtracts (0 <= z <= 16).
__device__ __forceinline__ std::uint32_t bf16_zero_pair(std::uint32_t z) {
  return (0x4300u + z) * 0x00010001u;
}

// bf16 pair (q_s - z, q_{s+4} - z) of word w; zz = bf16_zero_pair(z).
__device__ __forceinline__ std::uint32_t pair_minus(std::uint32_t w, int s, std::uint32_t zz) {
  const std::uint32_t p = ((w >> (4 * s)) & 0x000F000Fu) | 0x43004300u;
  __nv_bfloat162 a, b;
  static_assert(sizeof(a) == 4);
  a = *reinterpret_cast<const __nv_bfloat162*>(&p);
  b = *reinterpret_cast<const __nv_bfloat162*>(&zz);
  const __nv_bfloat162 d = __hsub2(a, b);
  return *reinterpret_cast<const std::uint32_t*>(&d);
}

// The bf16 pairs (x0, x4), (x1, x5), (x2, x6), (x3, x7) of 8 consecutive bf16 inputs: the B
// operands that meet pair_minus's pairs of one word (s = 0..3).
__device__ __forceinline__ void x_pairs(const uint4& xv, std::uint32_t (&xb)[4]) {
  xb[0] = __byte_perm(xv.x, xv.z, 0x5410);
  xb[1] = __byte_perm(xv.x, xv.z, 0x7632);
  xb[2] = __byte_perm(xv.y, xv.w, 0x5410);
  xb[3] = __byte_perm(xv.y, xv.w, 0x7632);
}

// The float8_e4m3fn bytes 2p and 2p + 2 of word w (p = 0, 1) as a bf16 pair equal to their values
// times 2^-120 exactly: the 7 magnitude bits moved to bf16 bits 4..10 make the e4m3 exponent the
// low bits of bf16's (bias 127 against 7), the sign bit moves to bit 15; e4m3 subnormals become
// bf16 subnormals of the same scaled value. (The NaN code 0x7F reads as 480 * 2^-120: weights
// are never NaN.)
template <int P>
__device__ __forceinline__ std::uint32_t fp8_pair_bf16(std::uint32_t w) {
  const std::uint32_t b = P == 0 ? w : w >> 8;  // bytes 2P, 2P + 2 at bits 0..7, 16..23
  return ((b << 4) & 0x07F007F0u) | ((b << 8) & 0x80008000u);
}

// The bf16 pair x * 2^64 (exact: a power of two, activations are far below 2^64).
__device__ __forceinline__ std::uint32_t bf16_pair_times_2_64(std::uint32_t x) {
  __nv_bfloat162 a, m;
  const std::uint32_t two64 = 0x5F805F80u;
  a = *reinterpret_cast<const __nv_bfloat162*>(&x);
  m = *reinterpret_cast<const __nv_bfloat162*>(&two64);
  const __nv_bfloat162 p = __hmul2(a, m);
  return *reinterpret_cast<const std::uint32_t*>(&p);
}

}  // namespace
}  // namespace strata::cuda::kernels
