#pragma once
// Device conversions between float and the 16/8-bit formats, bit-exact with PyTorch: the same
// c10 algorithms as include/strata/core/float_types.h (which the CPU path uses and which is
// proven against a table recorded from PyTorch), with the CUDA bit-cast intrinsics. They rely on
// IEEE float arithmetic: never build these kernels with --use_fast_math or flush-to-zero.

#include <cstdint>

namespace strata::cuda::kernels {

__device__ __forceinline__ std::uint32_t sel(bool c, std::uint32_t a, std::uint32_t b) {
  return c ? a : b;
}

__device__ __forceinline__ std::uint16_t fp16_from_fp32(float value) {
  const float scale_to_inf = __uint_as_float(239u << 23);
  const float scale_to_zero = __uint_as_float(17u << 23);
  const std::uint32_t w = __float_as_uint(value);
  const std::uint32_t shl1_w = w + w;
  const std::uint32_t sign = w & 0x80000000u;
  float base = __fmul_rn(__fmul_rn(__uint_as_float(w & 0x7FFFFFFFu), scale_to_inf), scale_to_zero);
  std::uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = __fadd_rn(__uint_as_float((bias >> 1) + 0x07800000u), base);
  const std::uint32_t bits = __float_as_uint(base);
  const std::uint32_t nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
  return static_cast<std::uint16_t>((sign >> 16) | sel(shl1_w > 0xFF000000u, 0x7E00u, nonsign));
}

__device__ __forceinline__ float fp32_from_fp16(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  std::uint32_t magnitude;
  if (exponent == 0) {
    magnitude = __float_as_uint(__fmul_rn(static_cast<float>(mantissa), 0x1p-24f));
  } else if (exponent == 31) {
    magnitude = 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x400000u : 0u);
  } else {
    magnitude = ((exponent + 112u) << 23) | (mantissa << 13);
  }
  return __uint_as_float(sign | magnitude);
}

__device__ __forceinline__ std::uint16_t bf16_from_fp32(float value) {
  const std::uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  const std::uint32_t rounding_bias = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding_bias) >> 16);
}

__device__ __forceinline__ float fp32_from_bf16(std::uint16_t b) {
  return __uint_as_float(static_cast<std::uint32_t>(b) << 16);
}

__device__ __forceinline__ std::uint8_t fp8e4m3fn_from_fp32(float value) {
  constexpr std::uint32_t kNanThreshold = 1087u << 20;
  constexpr std::uint32_t kDenormMagic = 141u << 23;
  std::uint32_t bits = __float_as_uint(value);
  const std::uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  std::uint32_t magnitude;
  if (bits >= kNanThreshold) {
    magnitude = 0x7Fu;
  } else if (bits < (121u << 23)) {
    magnitude =
        __float_as_uint(__fadd_rn(__uint_as_float(bits), __uint_as_float(kDenormMagic))) -
        kDenormMagic;
  } else {
    magnitude =
        (bits + (static_cast<std::uint32_t>(7 - 127) << 23) + 0x7FFFFu + ((bits >> 20) & 1u)) >>
        20;
  }
  return static_cast<std::uint8_t>(magnitude | (sign >> 24));
}

__device__ __forceinline__ float fp32_from_fp8e4m3fn(std::uint8_t b) {
  const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  const std::uint32_t exponent = (b >> 3) & 0xFu;
  const std::uint32_t mantissa = b & 0x7u;
  std::uint32_t magnitude;
  if ((b & 0x7Fu) == 0x7Fu) {
    magnitude = 0x7FF00000u;
  } else if (exponent == 0) {
    magnitude = __float_as_uint(__fmul_rn(static_cast<float>(mantissa), 0x1p-9f));
  } else {
    magnitude = ((exponent + 120u) << 23) | (mantissa << 20);
  }
  return __uint_as_float(sign | magnitude);
}

__device__ __forceinline__ std::uint8_t fp8e5m2_from_fp32(float value) {
  constexpr std::uint32_t kInfBits = 255u << 23;
  constexpr std::uint32_t kInfThreshold = 143u << 23;
  constexpr std::uint32_t kDenormMagic = 134u << 23;
  std::uint32_t bits = __float_as_uint(value);
  const std::uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  std::uint32_t magnitude;
  if (bits > kInfBits) {
    magnitude = 0x7Fu;
  } else if (bits >= kInfThreshold) {
    magnitude = 0x7Cu;
  } else if (bits < (113u << 23)) {
    magnitude =
        __float_as_uint(__fadd_rn(__uint_as_float(bits), __uint_as_float(kDenormMagic))) -
        kDenormMagic;
  } else {
    magnitude =
        (bits + (static_cast<std::uint32_t>(15 - 127) << 23) + 0xFFFFFu + ((bits >> 21) & 1u)) >>
        21;
  }
  return static_cast<std::uint8_t>(magnitude | (sign >> 24));
}

__device__ __forceinline__ float fp32_from_fp8e5m2(std::uint8_t b) {
  return fp32_from_fp16(static_cast<std::uint16_t>(b << 8));
}

// Storage types on the device: the bits, so loads and stores never go through __half's rounding.
struct HalfBits {
  std::uint16_t bits;
};
struct BF16Bits {
  std::uint16_t bits;
};
struct E4M3Bits {
  std::uint8_t bits;
};
struct E5M2Bits {
  std::uint8_t bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(HalfBits v) { return fp32_from_fp16(v.bits); }
__device__ __forceinline__ float to_float(BF16Bits v) { return fp32_from_bf16(v.bits); }
__device__ __forceinline__ float to_float(E4M3Bits v) { return fp32_from_fp8e4m3fn(v.bits); }
__device__ __forceinline__ float to_float(E5M2Bits v) { return fp32_from_fp8e5m2(v.bits); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ HalfBits from_float<HalfBits>(float v) {
  return HalfBits{fp16_from_fp32(v)};
}
template <>
__device__ __forceinline__ BF16Bits from_float<BF16Bits>(float v) {
  return BF16Bits{bf16_from_fp32(v)};
}

}  // namespace strata::cuda::kernels
