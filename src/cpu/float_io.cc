#include "cpu/float_io.h"

#include <cstring>

#include "cpu/simd.h"

namespace strata::cpu {

void convert_row_to_float(const float* src, float* dst, std::int64_t n) {
  if (src != dst && n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}
void convert_row_to_float(const BFloat16* src, float* dst, std::int64_t n) {
  simd::kernels().bf16_to_float(src, dst, n);
}
void convert_row_to_float(const Half* src, float* dst, std::int64_t n) {
  simd::kernels().half_to_float(src, dst, n);
}

void store_row_from_float(const float* src, float* dst, std::int64_t n) {
  if (src != dst && n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}
void store_row_from_float(const float* src, BFloat16* dst, std::int64_t n) {
  simd::kernels().float_to_bf16(src, dst, n);
}
void store_row_from_float(const float* src, Half* dst, std::int64_t n) {
  simd::kernels().float_to_half(src, dst, n);
}

}  // namespace strata::cpu
