// Fused FP8 decode on AVX-512 (docs/quantization.md, "CPU kernels"): float8_e4m3fn bytes become
// float32 in registers without a table and without denormal arithmetic. An e4m3 byte
// s eeee mmm shifted left by 7 is the half-precision number s 0eeee mmm0000000, whose value is the
// fp8 value times 2^-8 exactly (half has 5 exponent bits with bias 15, e4m3 4 with bias 7;
// e4m3 subnormals land on half subnormals with the same scaling); the sign, which the shift
// leaves in bit 14, is moved to bit 15 by adding that bit to itself. vcvtph2ps widens 16 halves to
// float32 exactly (half subnormals become normal floats), and the 2^8 goes into the block scale.
// The multiplications then only see normal floats, so no microcode assist slows them down.

#include <algorithm>
#include <cstdint>

#include "cpu/quant_kernels.h"
#include "cpu/simd_target.h"
#include "strata/core/float_types.h"
#include "strata/core/parallel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace strata::cpu {
namespace {

struct Fp8Args {
  std::int64_t n = 0, k = 0;
  std::int64_t block_out = 0, block_in = 0;  // 0: one scale
  const std::uint8_t* weight = nullptr;
  const float* scale = nullptr;
  const float* x = nullptr;  // [m, k]
  float* acc = nullptr;      // [m, n]
};

// The value of an e4m3 byte through the same half-precision route (tails of blocks).
float fp8_value(std::uint8_t b) {
  const auto a = static_cast<std::uint16_t>(b << 7);
  return half_bits_to_float(static_cast<std::uint16_t>(a + (a & 0x4000u))) * 256.0f;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
STRATA_SIMD_TARGET_BEGIN("avx512f,avx512bw,avx512vl,fma,f16c")

// 32 fp8 bytes -> two vectors of 16 float32 (each the fp8 value times 2^-8).
inline void widen32(const std::uint8_t* p, __m512& lo, __m512& hi) {
  const __m512i h = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __m512i a = _mm512_slli_epi16(h, 7);
  const __m512i bits = _mm512_add_epi16(a, _mm512_and_si512(a, _mm512_set1_epi16(0x4000)));
  lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
  hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1));
}

// NR rows from n at once, each row's work in the same order as alone: a row's multiply-adds form
// one dependent chain per 128-input block (8 of them), which one row alone waits out (4.3 G
// weights/s per core on the 2-core VM, session 15); NR rows are NR independent chains sharing x's
// loads. The rows of a set may lie in different scale block rows.
template <int M, int NR>
void fp8_row_set(const Fp8Args& a, std::int64_t n) {
  const std::int64_t bi = a.block_out ? a.block_in : a.k;
  const std::int64_t scale_cols = a.block_out ? (a.k + bi - 1) / bi : 1;
  const std::uint8_t* row[NR];
  const float* srow[NR];
  for (int h = 0; h < NR; ++h) {
    row[h] = a.weight + (n + h) * a.k;
    srow[h] = a.block_out ? a.scale + ((n + h) / a.block_out) * scale_cols : a.scale;
  }
  __m512 acc[NR][M];
  float tail[NR][M] = {};
  for (int h = 0; h < NR; ++h) {
    for (int r = 0; r < M; ++r) acc[h][r] = _mm512_setzero_ps();
  }
  for (std::int64_t bc = 0; bc < scale_cols; ++bc) {
    const std::int64_t kb = bc * bi, ke = std::min(a.k, kb + bi);
    __m512 part[NR][M];
    for (int h = 0; h < NR; ++h) {
      for (int r = 0; r < M; ++r) part[h][r] = _mm512_setzero_ps();
    }
    std::int64_t c = kb;
    for (; c + 32 <= ke; c += 32) {
      __m512 lo[NR], hi[NR];
      for (int h = 0; h < NR; ++h) widen32(row[h] + c, lo[h], hi[h]);
      for (int r = 0; r < M; ++r) {
        const float* xr = a.x + r * a.k + c;
        const __m512 x0 = _mm512_loadu_ps(xr), x1 = _mm512_loadu_ps(xr + 16);
        for (int h = 0; h < NR; ++h) {
          part[h][r] = _mm512_fmadd_ps(lo[h], x0, part[h][r]);
          part[h][r] = _mm512_fmadd_ps(hi[h], x1, part[h][r]);
        }
      }
    }
    for (int h = 0; h < NR; ++h) {
      const float s = srow[h][bc];
      const __m512 sv = _mm512_set1_ps(s * 256.0f);  // the halves are the fp8 values / 2^8
      for (int r = 0; r < M; ++r) {
        acc[h][r] = _mm512_fmadd_ps(part[h][r], sv, acc[h][r]);
        float t = 0.0f;
        for (std::int64_t i = c; i < ke; ++i) t += fp8_value(row[h][i]) * a.x[r * a.k + i];
        tail[h][r] += t * s;
      }
    }
  }
  for (int h = 0; h < NR; ++h) {
    for (int r = 0; r < M; ++r) {
      a.acc[r * a.n + n + h] = _mm512_reduce_add_ps(acc[h][r]) + tail[h][r];
    }
  }
}

template <int M>
void fp8_rows(const Fp8Args& a, std::int64_t n0, std::int64_t n1) {
  constexpr int kSet = M <= 2 ? 4 : 2;
  std::int64_t n = n0;
  for (; n + kSet <= n1; n += kSet) fp8_row_set<M, kSet>(a, n);
  for (; n < n1; ++n) fp8_row_set<M, 1>(a, n);
}

void fp8_units(const Fp8Args& a, std::int64_t m, std::int64_t n0, std::int64_t n1) {
  switch (m) {
    case 1:
      return fp8_rows<1>(a, n0, n1);
    case 2:
      return fp8_rows<2>(a, n0, n1);
    case 3:
      return fp8_rows<3>(a, n0, n1);
    default:
      return fp8_rows<4>(a, n0, n1);
  }
}

STRATA_SIMD_TARGET_END
#endif

}  // namespace

bool fused_fp8_decode_avx512(const ops::QuantizedWeight& w, const float* x, std::int64_t m,
                             float* acc) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (m < 1 || m > kFusedMaxRows || w.weight.dtype() != DType::Float8E4M3FN ||
      w.scale.dtype() != DType::Float32) {
    return false;
  }
  Fp8Args a;
  a.n = w.out_features;
  a.k = w.in_features;
  a.block_out = w.block_out;
  a.block_in = w.block_in;
  a.weight = static_cast<const std::uint8_t*>(w.weight.data_ptr());
  a.scale = w.scale.data<float>();
  a.x = x;
  a.acc = acc;
  // Tasks of about 256 KiB of fp8 bytes.
  const std::int64_t grain =
      std::max<std::int64_t>(1, (std::int64_t{256} << 10) / std::max<std::int64_t>(1, a.k));
  parallel_for(a.n, grain, [&](std::int64_t n0, std::int64_t n1) { fp8_units(a, m, n0, n1); });
  return true;
#else
  (void)w, (void)x, (void)m, (void)acc;
  return false;
#endif
}

}  // namespace strata::cpu
