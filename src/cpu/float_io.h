#pragma once
// Reading and writing float32 / bfloat16 / float16 elements as float, one element at a time or a
// whole row. CPU kernels compute in float32: they load their inputs with these, compute, and
// store once (one rounding to the output dtype).
//
// Every conversion is bit-exact with the scalar ones in strata/core/float_types.h (PyTorch's):
// round to nearest even, subnormals kept, PyTorch's NaN rules. The row versions are vectorised
// with runtime CPU dispatch (AVX-512 / AVX2+F16C / portable), so the binary runs on any x86-64.

#include <cstdint>
#include <type_traits>

#include "strata/core/float_types.h"

namespace strata::cpu {

// ---- one element ----------------------------------------------------------------------------
inline float load_as_float(const float* p, std::int64_t i) { return p[i]; }
inline float load_as_float(const BFloat16* p, std::int64_t i) {
  return bfloat16_bits_to_float(p[i].bits);
}
inline float load_as_float(const Half* p, std::int64_t i) { return half_bits_to_float(p[i].bits); }

// `value` rounded once to T.
template <typename T>
inline T float_to(float value) {
  if constexpr (std::is_same_v<T, float>) {
    return value;
  } else {
    return T(value);
  }
}
template <typename T>
inline void store_from_float(T* p, std::int64_t i, float value) {
  p[i] = float_to<T>(value);
}

// ---- whole rows (vectorised) ----------------------------------------------------------------
// dst[i] = float(src[i]) for i < n. src and dst must not overlap (except float -> float, which
// may alias exactly).
void convert_row_to_float(const float* src, float* dst, std::int64_t n);
void convert_row_to_float(const BFloat16* src, float* dst, std::int64_t n);
void convert_row_to_float(const Half* src, float* dst, std::int64_t n);

// dst[i] = T(src[i]) for i < n, each rounded once.
void store_row_from_float(const float* src, float* dst, std::int64_t n);
void store_row_from_float(const float* src, BFloat16* dst, std::int64_t n);
void store_row_from_float(const float* src, Half* dst, std::int64_t n);

}  // namespace strata::cpu
