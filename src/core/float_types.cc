// Scalar half and fp8 conversions. The bodies live inline in float_types.h (detail::) so that
// convert_elements and the CPU kernels can vectorise them; these are the named entry points.

#include "strata/core/float_types.h"

// The algorithms depend on IEEE arithmetic (overflow to inf, exact scaling, round to nearest).
#if defined(__FAST_MATH__)
#error "strata/core/float_types.cc must not be compiled with -ffast-math"
#endif

namespace strata {

std::uint16_t float_to_half_bits(float value) { return detail::fp16_from_fp32(value); }

float half_bits_to_float(std::uint16_t bits) { return detail::fp32_from_fp16(bits); }

std::uint8_t float_to_float8_e4m3fn_bits(float value) { return detail::fp8e4m3fn_from_fp32(value); }

float float8_e4m3fn_bits_to_float(std::uint8_t bits) { return detail::fp32_from_fp8e4m3fn(bits); }

std::uint8_t float_to_float8_e5m2_bits(float value) { return detail::fp8e5m2_from_fp32(value); }

float float8_e5m2_bits_to_float(std::uint8_t bits) { return detail::fp32_from_fp8e5m2(bits); }

}  // namespace strata
