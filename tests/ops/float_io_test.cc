// The vectorised row conversions: every variant this CPU can run (AVX-512, AVX2, portable) must
// match the scalar PyTorch-exact conversions bit for bit. (The matvec kernels of the same tables:
// cpu_matvec_test.cc.)

#include "cpu/float_io.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/simd.h"
#include "ops/simd_variants.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

using cpu::simd::Kernels;

std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// Floats that exercise rounding: every bfloat16/float16 value, the midpoints between
// neighbours (ties) and their one-ulp neighbours, specials, and random bit patterns.
std::vector<float> rounding_cases() {
  std::vector<float> out;
  const auto add_bits = [&](std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    out.push_back(f);
  };
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const std::uint32_t bf = h << 16;
    for (const std::uint32_t low : {0x0000u, 0x7FFFu, 0x8000u, 0x8001u}) add_bits(bf | low);
    const float half_value = half_bits_to_float(static_cast<std::uint16_t>(h));
    out.push_back(half_value);
    out.push_back(std::nextafter(half_value, INFINITY));
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) add_bits(static_cast<std::uint32_t>(rng()));
  for (const float f : {65504.0f, 65520.0f, 65519.99f, 6.1035156e-05f, 5.9604645e-08f,
                        2.9802322e-08f, 2.9802326e-08f, INFINITY, -INFINITY, NAN, -NAN}) {
    out.push_back(f);
  }
  return out;
}

TEST(FloatIoTest, WideningIsExactForEveryValue) {
  std::vector<BFloat16> bf(0x10000);
  std::vector<Half> h(0x10000);
  for (std::uint32_t i = 0; i < 0x10000; ++i) {
    bf[i] = BFloat16::from_bits(static_cast<std::uint16_t>(i));
    h[i] = Half::from_bits(static_cast<std::uint16_t>(i));
  }
  std::vector<float> out(0x10000);
  for (const Kernels* k : runnable_variants()) {
    SCOPED_TRACE(k->name);
    // Odd offsets and lengths exercise the unaligned starts and scalar tails.
    for (const std::int64_t start : {0, 3}) {
      const std::int64_t n = 0x10000 - start - 5;
      k->bf16_to_float(bf.data() + start, out.data(), n);
      for (std::int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(bits_of(out[i]), bits_of(bfloat16_bits_to_float(bf[start + i].bits)));
      }
      k->half_to_float(h.data() + start, out.data(), n);
      for (std::int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(bits_of(out[i]), bits_of(half_bits_to_float(h[start + i].bits)))
            << "half bits " << h[start + i].bits;
      }
    }
  }
}

TEST(FloatIoTest, NarrowingRoundsLikeTheScalarConversions) {
  const std::vector<float> cases = rounding_cases();
  const auto n = static_cast<std::int64_t>(cases.size());
  std::vector<BFloat16> bf(cases.size());
  std::vector<Half> h(cases.size());
  for (const Kernels* k : runnable_variants()) {
    SCOPED_TRACE(k->name);
    k->float_to_bf16(cases.data(), bf.data(), n);
    k->float_to_half(cases.data(), h.data(), n);
    for (std::int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(bf[i].bits, float_to_bfloat16_bits(cases[i])) << "float bits " << bits_of(cases[i]);
      ASSERT_EQ(h[i].bits, float_to_half_bits(cases[i])) << "float bits " << bits_of(cases[i]);
    }
  }
}

TEST(FloatIoTest, RowHelpersUseTheBestVariant) {
  const std::vector<float> src = {1.5f, -2.25f, 3.0e-3f, 65504.0f, 1.0e6f};
  std::vector<Half> h(src.size());
  cpu::store_row_from_float(src.data(), h.data(), static_cast<std::int64_t>(src.size()));
  std::vector<float> back(src.size());
  cpu::convert_row_to_float(h.data(), back.data(), static_cast<std::int64_t>(src.size()));
  for (std::size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(h[i].bits, float_to_half_bits(src[i]));
    EXPECT_EQ(back[i], half_bits_to_float(h[i].bits));
  }
}

}  // namespace
}  // namespace strata::testing
