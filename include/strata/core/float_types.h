#pragma once
// Storage types for the 16- and 8-bit floating-point formats, with conversions to and from float
// that are bit-exact with PyTorch (c10::Half, c10::BFloat16, c10::Float8_e4m3fn, c10::Float8_e5m2):
// round to nearest, ties to even; subnormals kept; the NaN/overflow rules of each format.
//
// Conversions from double go through float first, as PyTorch's do (this double rounding is what
// makes a table recorded from PyTorch reproducible).

#include <cstdint>
#include <cstring>

namespace strata {

namespace detail {
inline std::uint32_t float_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}
inline float bits_float(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
}  // namespace detail

// IEEE binary16 <-> float. Overflow rounds to infinity; NaN stays NaN (quiet, sign kept).
std::uint16_t float_to_half_bits(float value);
float half_bits_to_float(std::uint16_t bits);

// bfloat16 <-> float. NaN becomes the canonical quiet NaN 0x7FC0 (as c10::BFloat16 does).
inline std::uint16_t float_to_bfloat16_bits(float value) {
  const std::uint32_t bits = detail::float_bits(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  const std::uint32_t rounding_bias = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding_bias) >> 16);
}
inline float bfloat16_bits_to_float(std::uint16_t bits) {
  return detail::bits_float(static_cast<std::uint32_t>(bits) << 16);
}

// float8_e4m3fn: no infinities; 0x7F/0xFF are NaN; max finite 448. Values that round past 448
// (and infinities) become NaN, as in PyTorch (no saturation).
std::uint8_t float_to_float8_e4m3fn_bits(float value);
float float8_e4m3fn_bits_to_float(std::uint8_t bits);

// float8_e5m2: IEEE-like (infinities, NaNs); max finite 57344; overflow rounds to infinity.
std::uint8_t float_to_float8_e5m2_bits(float value);
float float8_e5m2_bits_to_float(std::uint8_t bits);

// Inline bodies of the conversions above, for loops over many elements (the named functions
// call these; convert_elements and kernels use them so the compiler can vectorise). They mirror
// c10's algorithms and rely on IEEE float arithmetic: never compile them with -ffast-math.
namespace detail {

// Branch-free a-or-b: written with masks so that GCC keeps loops over these functions free of
// control flow (and so vectorisable) instead of sinking the float arithmetic into a branch.
inline std::uint32_t select_bits(bool condition, std::uint32_t a, std::uint32_t b) {
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(condition);
  return (a & mask) | (b & ~mask);
}

// c10::detail::fp16_ieee_from_fp32_value: the FPU does the rounding (ties to even) after the
// exponent is rebiased; NaN -> 0x7E00 with the sign kept.
inline std::uint16_t fp16_from_fp32(float value) {
  const float scale_to_inf = bits_float(239u << 23);  // 2^112
  const float scale_to_zero = bits_float(17u << 23);  // 2^-110
  const std::uint32_t w = float_bits(value);
  const std::uint32_t shl1_w = w + w;
  const std::uint32_t sign = w & 0x80000000u;
  float base = bits_float(w & 0x7FFFFFFFu) * scale_to_inf * scale_to_zero;
  std::uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bits_float((bias >> 1) + 0x07800000u) + base;
  const std::uint32_t bits = float_bits(base);
  const std::uint32_t nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
  return static_cast<std::uint16_t>((sign >> 16) |
                                    select_bits(shl1_w > 0xFF000000u, 0x7E00u, nonsign));
}

// Exact. NaN keeps its sign and payload and comes out quiet (as F16C and c10 do).
inline float fp32_from_fp16(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  const std::uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);
  const std::uint32_t inf_nan =
      0x7F800000u | (mantissa << 13) | select_bits(mantissa != 0, 0x400000u, 0u);
  // Subnormals (and zero) are mantissa * 2^-24, exact in float.
  const std::uint32_t subnormal =
      float_bits(static_cast<float>(static_cast<std::int32_t>(mantissa)) * 0x1p-24f);
  const std::uint32_t magnitude =
      select_bits(exponent == 0, subnormal, select_bits(exponent == 31, inf_nan, normal));
  return bits_float(sign | magnitude);
}

// c10::detail::fp8e4m3fn_from_fp32_value. Magnitudes >= 480 (first value past 448 after
// rounding), infinities and NaN all become NaN 0x7F with the sign kept; (464, 480) also round
// up into 0x7F. Subnormals are rounded by the FPU (adding 2^14 aligns the 2^-9 grid).
inline std::uint8_t fp8e4m3fn_from_fp32(float value) {
  constexpr std::uint32_t kNanThreshold = 1087u << 20;  // 480.0f
  constexpr std::uint32_t kDenormMagic = 141u << 23;    // 2^14
  std::uint32_t bits = float_bits(value);
  const std::uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  const std::uint32_t subnormal =
      float_bits(bits_float(bits) + bits_float(kDenormMagic)) - kDenormMagic;
  const std::uint32_t normal =
      (bits + (static_cast<std::uint32_t>(7 - 127) << 23) + 0x7FFFFu + ((bits >> 20) & 1u)) >> 20;
  const std::uint32_t magnitude = select_bits(bits >= kNanThreshold, 0x7Fu,
                                              select_bits(bits < (121u << 23), subnormal, normal));
  return static_cast<std::uint8_t>(magnitude | (sign >> 24));
}

// Exact. NaN (0x7F/0xFF) -> 0x7FF00000 with the sign (mantissa bits on top of a quiet NaN).
inline float fp32_from_fp8e4m3fn(std::uint8_t b) {
  const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  const std::uint32_t exponent = (b >> 3) & 0xFu;
  const std::uint32_t mantissa = b & 0x7u;
  const std::uint32_t normal = ((exponent + 120u) << 23) | (mantissa << 20);
  const std::uint32_t subnormal =
      float_bits(static_cast<float>(static_cast<std::int32_t>(mantissa)) * 0x1p-9f);
  const std::uint32_t magnitude =
      select_bits((b & 0x7Fu) == 0x7Fu, 0x7FF00000u, select_bits(exponent == 0, subnormal, normal));
  return bits_float(sign | magnitude);
}

// c10::detail::fp8e5m2_from_fp32_value. Magnitudes >= 65536 and infinities -> inf 0x7C,
// NaN -> 0x7F, sign kept; [61440, 65536) rounds up to inf as well.
inline std::uint8_t fp8e5m2_from_fp32(float value) {
  constexpr std::uint32_t kInfBits = 255u << 23;
  constexpr std::uint32_t kInfThreshold = 143u << 23;  // 65536.0f
  constexpr std::uint32_t kDenormMagic = 134u << 23;   // 2^7
  std::uint32_t bits = float_bits(value);
  const std::uint32_t sign = bits & 0x80000000u;
  bits ^= sign;
  const std::uint32_t subnormal =
      float_bits(bits_float(bits) + bits_float(kDenormMagic)) - kDenormMagic;
  const std::uint32_t normal =
      (bits + (static_cast<std::uint32_t>(15 - 127) << 23) + 0xFFFFFu + ((bits >> 21) & 1u)) >> 21;
  const std::uint32_t finite = select_bits(bits < (113u << 23), subnormal, normal);
  const std::uint32_t magnitude =
      select_bits(bits > kInfBits, 0x7Fu, select_bits(bits >= kInfThreshold, 0x7Cu, finite));
  return static_cast<std::uint8_t>(magnitude | (sign >> 24));
}

// Exact: e5m2 is the top byte of a binary16.
inline float fp32_from_fp8e5m2(std::uint8_t b) {
  return fp32_from_fp16(static_cast<std::uint16_t>(b << 8));
}

}  // namespace detail

// Thin value types so kernels can be templated on the element type: the storage bits plus the
// format's conversions. One template serves the four formats; each alias is a distinct type.
template <typename Bits, Bits (*kFromFloat)(float), float (*kToFloat)(Bits)>
struct PackedFloat {
  Bits bits = 0;
  PackedFloat() = default;
  explicit PackedFloat(float value) : bits(kFromFloat(value)) {}
  static PackedFloat from_bits(Bits b) {
    PackedFloat p;
    p.bits = b;
    return p;
  }
  operator float() const { return kToFloat(bits); }
};

using Half = PackedFloat<std::uint16_t, float_to_half_bits, half_bits_to_float>;
using BFloat16 = PackedFloat<std::uint16_t, float_to_bfloat16_bits, bfloat16_bits_to_float>;
using Float8E4M3FN =
    PackedFloat<std::uint8_t, float_to_float8_e4m3fn_bits, float8_e4m3fn_bits_to_float>;
using Float8E5M2 = PackedFloat<std::uint8_t, float_to_float8_e5m2_bits, float8_e5m2_bits_to_float>;

static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2);
static_assert(sizeof(Float8E4M3FN) == 1 && sizeof(Float8E5M2) == 1);

}  // namespace strata
