// AVX-512 variant of the kernels in simd_kernels.inc (16 floats per register).
#include "cpu/float_io.h"
#include "cpu/simd.h"
#include "strata/core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsics as uninitialised
// (GCC bug 105593); the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "cpu/simd_target.h"

namespace strata::cpu::simd {
namespace {

STRATA_SIMD_TARGET_BEGIN("avx512f,avx2,fma,f16c")

struct V {
  using Reg = __m512;
  static constexpr int kRegisters = 32;
  static constexpr int kWidth = 16;

  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static Reg load(const BFloat16* p) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
  static Reg load(const Half* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static void store(BFloat16* p, Reg v) {
    // Round to nearest even on the bits (as float_to_bfloat16_bits); NaN -> 0x7FC0.
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), lsb);
    r = _mm512_srli_epi32(r, 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  static void store(Half* p, Reg v) {
    // The hardware keeps NaN payload bits; PyTorch writes sign | 0x7E00. Canonicalise first.
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN));
    const __m512i quiet = _mm512_or_si512(sign, _mm512_set1_epi32(0x7FC00000));
    v = _mm512_mask_mov_ps(v, nan, _mm512_castsi512_ps(quiet));
    const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
  }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce_add(Reg v) { return _mm512_reduce_add_ps(v); }
};

#include "cpu/simd_kernels.inc"

STRATA_SIMD_TARGET_END

}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels* table = [] {
    __builtin_cpu_init();
    const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                    __builtin_cpu_supports("fma") && cpu_has_f16c();
    static const Kernels k = kernels_of<Impl>("avx512");
    return ok ? &k : nullptr;
  }();
  return table;
}

}  // namespace strata::cpu::simd

#else

namespace strata::cpu::simd {
const Kernels* avx512_kernels() { return nullptr; }
}  // namespace strata::cpu::simd

#endif
