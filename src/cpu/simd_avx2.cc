// AVX2 + FMA + F16C variant of the kernels in simd_kernels.inc (8 floats per register).
#include <algorithm>

#include "cpu/float_io.h"
#include "cpu/simd.h"
#include "strata/core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "cpu/simd_target.h"

namespace strata::cpu::simd {
namespace {

STRATA_SIMD_TARGET_BEGIN("avx2,fma,f16c")

struct V {
  using Reg = __m256;
  static constexpr int kRegisters = 16;
  static constexpr int kWidth = 8;

  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float f) { return _mm256_set1_ps(f); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static Reg load(const BFloat16* p) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  static Reg load(const Half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static void store(BFloat16* p, Reg v) {
    // Round to nearest even on the bits (as float_to_bfloat16_bits); NaN -> 0x7FC0.
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb);
    r = _mm256_srli_epi32(r, 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), nan);
    // Every lane is <= 0xFFFF, so the saturating pack is exact.
    const __m128i packed =
        _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
  static void store(Half* p, Reg v) {
    // The hardware keeps NaN payload bits; PyTorch writes sign | 0x7E00. Canonicalise first.
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    const __m256 sign = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)));
    const __m256 quiet = _mm256_or_ps(sign, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)));
    v = _mm256_blendv_ps(v, quiet, nan);
    const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce_add(Reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

#include "cpu/simd_kernels.inc"

STRATA_SIMD_TARGET_END

}  // namespace

const Kernels* avx2_kernels() {
  static const Kernels* table = [] {
    __builtin_cpu_init();
    const bool ok =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    static const Kernels k = kernels_of<Impl>("avx2");
    return ok ? &k : nullptr;
  }();
  return table;
}

}  // namespace strata::cpu::simd

#else

namespace strata::cpu::simd {
const Kernels* avx2_kernels() { return nullptr; }
}  // namespace strata::cpu::simd

#endif
