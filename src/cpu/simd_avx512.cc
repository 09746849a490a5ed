// AVX-512 variant of the kernels in simd_kernels.inc (16 floats per register).
#include "cpu/amx.h"
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

#include <algorithm>
#include <cstdlib>

#include "cpu/simd_target.h"

namespace strata::cpu::simd {
namespace {

STRATA_SIMD_TARGET_BEGIN("avx512f,avx2,fma,f16c")

struct V {
  using Reg = __m512;
  static constexpr int kRegisters = 32;
  static constexpr int kWidth = 16;

  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float f) { return _mm512_set1_ps(f); }
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

// bfloat16 x bfloat16 with vdpbf16ps: each instruction multiplies 32 pairs and adds them pairwise
// into 16 float32 lanes, with no widening of either operand, so small batches (up to 16 rows of x
// against each weight row) stay memory-bound. The K tail is a masked load (no scalar loop).
STRATA_SIMD_TARGET_BEGIN("avx512f,avx512bw,avx512bf16,avx2,fma,f16c")

inline __m512i load_bf16_pairs(const BFloat16* p) {
  return _mm512_loadu_si512(reinterpret_cast<const void*>(p));
}
inline __m512i load_bf16_pairs(const BFloat16* p, __mmask32 mask) {
  return _mm512_maskz_loadu_epi16(mask, reinterpret_cast<const void*>(p));
}
inline __m512 dot_bf16(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

template <int M, int R>
inline void dot_tile_bf16(const BFloat16* x, std::int64_t ldx, const BFloat16* w, std::int64_t ldw,
                          std::int64_t k, float* y, std::int64_t ldy) {
  __m512 acc[M][R];
  for (int m = 0; m < M; ++m) {
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  }
  std::int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    __m512i wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_bf16_pairs(w + r * ldw + i);
    for (int m = 0; m < M; ++m) {
      const __m512i xv = load_bf16_pairs(x + m * ldx + i);
      for (int r = 0; r < R; ++r) acc[m][r] = dot_bf16(acc[m][r], xv, wv[r]);
    }
  }
  if (i < k) {  // masked lanes read as +0: they add nothing
    const __mmask32 mask = _cvtu32_mask32((1u << (k - i)) - 1u);
    __m512i wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_bf16_pairs(w + r * ldw + i, mask);
    for (int m = 0; m < M; ++m) {
      const __m512i xv = load_bf16_pairs(x + m * ldx + i, mask);
      for (int r = 0; r < R; ++r) acc[m][r] = dot_bf16(acc[m][r], xv, wv[r]);
    }
  }
  for (int m = 0; m < M; ++m) {
    for (int r = 0; r < R; ++r) y[m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
  }
}

template <int M>
void dot_tiles_bf16(const BFloat16* x, std::int64_t ldx, const BFloat16* w, std::int64_t ldw,
                    std::int64_t j0, std::int64_t j1, std::int64_t k, float* y, std::int64_t ldy) {
  std::int64_t j = j0;
  for (; j + 4 <= j1; j += 4) dot_tile_bf16<M, 4>(x, ldx, w + j * ldw, ldw, k, y + j, ldy);
  for (; j < j1; ++j) dot_tile_bf16<M, 1>(x, ldx, w + j * ldw, ldw, k, y + j, ldy);
}

// Same blocking as matvec_any (simd_kernels.inc): four x rows per pass over a block of weight
// rows that stays in L1/L2 for the next group.
void matvec_bf16_native(const BFloat16* x, std::int64_t ldx, std::int64_t m, const BFloat16* w,
                        std::int64_t ldw, std::int64_t n, std::int64_t k, float* y,
                        std::int64_t ldy) {
  STRATA_ASSERT(m >= 1 && m <= kMaxMatvecRows, "matvec called with {} rows (1..{} supported)", m,
                kMaxMatvecRows);
  const std::int64_t block =
      m <= 4 ? n : std::max<std::int64_t>(4, (std::int64_t{16} << 10) / (2 * k) / 4 * 4);
  for (std::int64_t j0 = 0; j0 < n; j0 += block) {
    const std::int64_t j1 = std::min(n, j0 + block);
    for (std::int64_t i = 0; i < m; i += 4) {
      const BFloat16* xi = x + i * ldx;
      float* yi = y + i * ldy;
      switch (std::min<std::int64_t>(4, m - i)) {
        case 1:
          dot_tiles_bf16<1>(xi, ldx, w, ldw, j0, j1, k, yi, ldy);
          break;
        case 2:
          dot_tiles_bf16<2>(xi, ldx, w, ldw, j0, j1, k, yi, ldy);
          break;
        case 3:
          dot_tiles_bf16<3>(xi, ldx, w, ldw, j0, j1, k, yi, ldy);
          break;
        default:
          dot_tiles_bf16<4>(xi, ldx, w, ldw, j0, j1, k, yi, ldy);
      }
    }
  }
}

STRATA_SIMD_TARGET_END

// AVX-512 BF16: cpuid leaf 7, sub-leaf 1, EAX bit 5 (queried directly: not every compiler's
// __builtin_cpu_supports knows the name). The OS support for the zmm state is what the avx512f
// check below already covers.
bool cpu_has_avx512_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax & (1u << 5)) != 0;
}

}  // namespace

const Kernels* avx512_kernels() {
  static const Kernels* table = [] {
    __builtin_cpu_init();
    const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                    __builtin_cpu_supports("fma") && cpu_has_f16c();
    static const Kernels k = [] {
      Kernels table = kernels_of<Impl>("avx512");
      if (cpu_has_avx512_bf16() && std::getenv("STRATA_NO_AVX512_BF16") == nullptr) {
        table.name = "avx512+bf16";
        table.matvec_bf16_native = &matvec_bf16_native;
        // AMX needs the vector kernel for its tails.
        if (std::getenv("STRATA_NO_AMX") == nullptr && amx::usable()) {
          table.name = "avx512+bf16+amx";
          table.amx_pack_x = &amx::pack_x;
          table.amx_matvec_bf16 = &amx::matvec_bf16;
        }
      }
      return table;
    }();
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
