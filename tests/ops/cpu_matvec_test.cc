// The CPU matrix-vector / small-batch kernels of every table this machine can run (portable,
// AVX2, AVX-512, and the AVX-512 BF16 dot-product kernel where the CPU has it) against a naive
// double-precision reference: every dtype, 1..kMaxMatvecRows rows of x, odd sizes, vector tails,
// and leading dimensions wider than the rows.

#include <cmath>
#include <string>
#include <vector>

#include "cpu/amx.h"
#include "cpu/simd.h"
#include "ops/simd_variants.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

using cpu::simd::kMaxMatvecRows;

struct MatvecCase {
  std::int64_t m, n, k;
};

// Sizes around every vector width (8, 16, 32 elements) and the kernels' blocking (4 x rows per
// pass, 4 weight rows per tile, weight blocks of 16 KiB), plus one long row.
std::vector<MatvecCase> cases() {
  std::vector<MatvecCase> out;
  for (std::int64_t m = 1; m <= kMaxMatvecRows; ++m) {
    for (const std::int64_t k : {1, 7, 31, 32, 33, 67}) out.push_back({m, 7, k});
    out.push_back({m, 13, 300});  // several weight blocks when m > 4 (300 floats = 1.2 KiB/row)
  }
  out.push_back({1, 5, 4099});
  out.push_back({kMaxMatvecRows, 6, 2053});
  out.push_back({3, 1, 16});
  return out;
}

// y = x @ w^T in double, from the values the kernel sees (x already rounded to its dtype).
template <typename X, typename W>
void expect_matches_reference(const char* what, const MatvecCase& c, const Tensor& x,
                              const Tensor& w, const std::vector<float>& y, std::int64_t ldx,
                              std::int64_t ldw, std::int64_t ldy) {
  const std::vector<double> xv = x.to_doubles(), wv = w.to_doubles();
  for (std::int64_t i = 0; i < c.m; ++i) {
    for (std::int64_t j = 0; j < c.n; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      for (std::int64_t t = 0; t < c.k; ++t) {
        sum += xv[i * ldx + t] * wv[j * ldw + t];
        abs_sum += std::abs(xv[i * ldx + t] * wv[j * ldw + t]);
      }
      // float32 accumulation: each addition rounds once (k roundings of at most 2^-24 of the
      // running magnitude), bounded by k * 2^-24 * sum |x w|; plus the final one.
      const double tol = (static_cast<double>(c.k) + 2.0) * std::ldexp(1.0, -24) * abs_sum + 1e-30;
      ASSERT_NEAR(y[i * ldy + j], sum, tol) << what << " m=" << c.m << " n=" << c.n << " k=" << c.k
                                            << " at [" << i << ", " << j << "]";
    }
    for (std::int64_t j = c.n; j < ldy; ++j) {
      ASSERT_EQ(y[i * ldy + j], -7.0f)
          << what << ": wrote past n (m=" << c.m << ", k=" << c.k << ")";
    }
  }
}

// One variant's matvec for weight type T: x float32, rows padded (ldx > k, ldw > k, ldy > n).
template <typename T>
void check_matvec(const char* what, cpu::simd::MatvecFn<T> matvec, DType dtype,
                  std::uint64_t seed) {
  for (const MatvecCase& c : cases()) {
    const std::int64_t ldx = c.k + 2, ldw = c.k + 3, ldy = c.n + 2;
    const Tensor x = random_tensor({c.m, ldx}, DType::Float32, seed++);
    const Tensor w = random_tensor({c.n, ldw}, dtype, seed++);
    std::vector<float> y(static_cast<std::size_t>(c.m * ldy), -7.0f);
    matvec(x.data<float>(), ldx, c.m, w.template data<T>(), ldw, c.n, c.k, y.data(), ldy);
    expect_matches_reference<float, T>(what, c, x, w, y, ldx, ldw, ldy);
  }
}

TEST(CpuMatvecTest, EveryVariantEveryDtypeMatchesDoubleReference) {
  for (const cpu::simd::Kernels* k : runnable_variants()) {
    SCOPED_TRACE(k->name);
    check_matvec<float>("f32", k->matvec_f32, DType::Float32, 1000);
    check_matvec<BFloat16>("bf16", k->matvec_bf16, DType::BFloat16, 2000);
    check_matvec<Half>("f16", k->matvec_f16, DType::Float16, 3000);
  }
}

TEST(CpuMatvecTest, Bf16DotProductKernelMatchesDoubleReference) {
  const cpu::simd::Kernels* avx512 = cpu::simd::avx512_kernels();
  if (avx512 == nullptr || avx512->matvec_bf16_native == nullptr) {
    GTEST_SKIP() << "this CPU has no AVX-512 BF16";
  }
  std::uint64_t seed = 4000;
  for (const MatvecCase& c : cases()) {
    const std::int64_t ldx = c.k + 5, ldw = c.k + 1, ldy = c.n + 3;
    const Tensor x = random_tensor({c.m, ldx}, DType::BFloat16, seed++);
    const Tensor w = random_tensor({c.n, ldw}, DType::BFloat16, seed++);
    std::vector<float> y(static_cast<std::size_t>(c.m * ldy), -7.0f);
    avx512->matvec_bf16_native(x.data<BFloat16>(), ldx, c.m, w.data<BFloat16>(), ldw, c.n, c.k,
                               y.data(), ldy);
    expect_matches_reference<BFloat16, BFloat16>("bf16 native", c, x, w, y, ldx, ldw, ldy);
  }
}

TEST(CpuMatvecTest, Bf16DotProductKernelIsTheDispatchedOneWhereSupported) {
  const cpu::simd::Kernels* avx512 = cpu::simd::avx512_kernels();
  if (avx512 == nullptr || avx512->matvec_bf16_native == nullptr) {
    GTEST_SKIP() << "this CPU has no AVX-512 BF16";
  }
  EXPECT_EQ(cpu::simd::kernels().matvec_bf16_native, avx512->matvec_bf16_native);
  EXPECT_EQ(std::string(cpu::simd::kernels().name).rfind("avx512+bf16", 0), 0u);
}

TEST(CpuMatvecTest, AmxKernelMatchesDoubleReference) {
  const cpu::simd::Kernels* avx512 = cpu::simd::avx512_kernels();
  if (avx512 == nullptr || avx512->amx_matvec_bf16 == nullptr) {
    GTEST_SKIP() << "this CPU (or OS) offers no AMX-BF16";
  }
  EXPECT_STREQ(avx512->name, "avx512+bf16+amx");
  std::uint64_t seed = 8000;
  std::vector<MatvecCase> amx_cases = cases();
  // Whole tiles of 16 and 32 weight rows with and without leftovers, k with and without a tail
  // past the last block of 32, fewer and more than 16 rows of x.
  for (const std::int64_t m : {1, 5, 16, 17, 40}) {  // past 16: blocks of 16 x rows
    for (const std::int64_t n : {15, 16, 32, 48, 77}) {
      for (const std::int64_t k : {32, 64, 95, 160}) amx_cases.push_back({m, n, k});
    }
  }
  for (const MatvecCase& c : amx_cases) {
    const std::int64_t ldx = c.k + 5, ldw = c.k + 1, ldy = c.n + 3;
    const Tensor x = random_tensor({c.m, ldx}, DType::BFloat16, seed++);
    const Tensor w = random_tensor({c.n, ldw}, DType::BFloat16, seed++);
    std::vector<std::uint32_t> packed(static_cast<std::size_t>(cpu::amx::packed_words(c.m, c.k)) +
                                      1);
    avx512->amx_pack_x(x.data<BFloat16>(), ldx, c.m, c.k, packed.data());
    std::vector<float> y(static_cast<std::size_t>(c.m * ldy), -7.0f);
    avx512->amx_matvec_bf16(packed.data(), x.data<BFloat16>(), ldx, c.m, w.data<BFloat16>(), ldw,
                            c.n, c.k, y.data(), ldy);
    expect_matches_reference<BFloat16, BFloat16>("bf16 amx", c, x, w, y, ldx, ldw, ldy);
  }
}

// acc += p @ v (attention's probabilities times V) for v of type T, against double sums, with
// acc starting from nonzero values (the kernel accumulates) and padded leading dimensions.
template <typename T>
void check_weighted_sum(const char* what, cpu::simd::WeightedSumFn<T> weighted_sum, DType dtype,
                        std::uint64_t seed) {
  for (const std::int64_t m : {1, 2, 3, 4, 5, 9}) {
    for (const std::int64_t d : {1, 7, 16, 63, 64, 65, 128, 130}) {
      for (const std::int64_t n : {1, 5, 128}) {
        const std::int64_t ldp = n + 3, ldv = d + 2, ldacc = d + 1;
        const Tensor p = random_tensor({m, ldp}, DType::Float32, seed++, 0.0, 1.0);
        const Tensor v = random_tensor({n, ldv}, dtype, seed++);
        const Tensor acc0 = random_tensor({m, ldacc}, DType::Float32, seed++);
        std::vector<float> acc(acc0.data<float>(), acc0.data<float>() + m * ldacc);
        weighted_sum(p.data<float>(), ldp, m, v.template data<T>(), ldv, n, d, acc.data(), ldacc);
        const std::vector<double> pv = p.to_doubles(), vv = v.to_doubles(), av = acc0.to_doubles();
        for (std::int64_t i = 0; i < m; ++i) {
          for (std::int64_t t = 0; t < ldacc; ++t) {
            if (t >= d) {  // the padding column is left alone
              ASSERT_EQ(acc[i * ldacc + t], av[i * ldacc + t]) << what << ": wrote past d";
              continue;
            }
            double sum = av[i * ldacc + t], abs_sum = std::abs(sum);
            for (std::int64_t j = 0; j < n; ++j) {
              sum += pv[i * ldp + j] * vv[j * ldv + t];
              abs_sum += std::abs(pv[i * ldp + j] * vv[j * ldv + t]);
            }
            const double tol = (static_cast<double>(n) + 2.0) * std::ldexp(1.0, -24) * abs_sum;
            ASSERT_NEAR(acc[i * ldacc + t], sum, tol)
                << what << " m=" << m << " n=" << n << " d=" << d << " at [" << i << ", " << t
                << "]";
          }
        }
      }
    }
  }
}

TEST(CpuMatvecTest, WeightedSumEveryVariantEveryDtypeMatchesDoubleReference) {
  for (const cpu::simd::Kernels* k : runnable_variants()) {
    SCOPED_TRACE(k->name);
    check_weighted_sum<float>("f32", k->weighted_sum_f32, DType::Float32, 5000);
    check_weighted_sum<BFloat16>("bf16", k->weighted_sum_bf16, DType::BFloat16, 6000);
    check_weighted_sum<Half>("f16", k->weighted_sum_f16, DType::Float16, 7000);
  }
}

}  // namespace
}  // namespace strata::testing
