// quantized_linear against an independent naive implementation (ops/quantized_testing.h: codes
// packed as each producer packs them, dense weight computed from the codes, double matmul), plus
// hand-packed words whose dequantised values are written out here, and the errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "cpu/quant_kernels.h"
#include "ops/quantized_testing.h"
#include "ops/throws_naming.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

std::vector<double> sum_abs_products(const std::vector<double>& x, const std::vector<float>& w,
                                     std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (std::int64_t t = 0; t < k; ++t) s += std::abs(x[i * k + t] * w[j * k + t]);
      out[i * n + j] = s;
    }
  }
  return out;
}

// quantized_linear(x, q) on `device` equals the naive product: float32 accumulation over k terms
// (errors like sqrt(k) * 2^-24 * sum |x w|, 8x margin) plus one rounding to x's dtype. With
// `weight_rounding` r, each dequantised weight may also be rounded once, relative error r (the
// GPU's prefill path dequantises into x's dtype for cuBLAS): r * sum |x w| more.
void expect_matches_naive(const NaiveQuantized& q, std::int64_t m, DType dtype, bool with_bias,
                          std::uint64_t seed, Device device = Device::cpu(),
                          double weight_rounding = 0.0) {
  const std::int64_t n = q.weight.out_features, k = q.weight.in_features;
  const Tensor x = random_tensor({m, k}, dtype, seed);
  std::optional<Tensor> bias;
  if (with_bias) bias = random_tensor({n}, dtype, seed + 1);
  const std::vector<double> xv = x.to_doubles();
  const std::vector<double> expected =
      naive_linear(xv, q.dense, m, n, k, bias ? bias->to_doubles() : std::vector<double>{});
  const std::vector<double> scale = sum_abs_products(xv, q.dense, m, n, k);
  std::optional<Tensor> bias_on;
  if (bias) bias_on = bias->to(device);
  const Tensor y = ops::quantized_linear(x.to(device), weight_on(q.weight, device), bias_on);
  ASSERT_EQ(y.shape(), (Shape{m, n}));
  ASSERT_EQ(y.dtype(), dtype);
  ASSERT_EQ(y.device(), device);
  const std::vector<double> got = y.to(Device::cpu()).to_doubles();
  const double rounding = dtype == DType::Float32    ? 0.0
                          : dtype == DType::BFloat16 ? std::ldexp(1.0, -8)
                                                     : std::ldexp(1.0, -11);
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = 8.0 * std::sqrt(static_cast<double>(k)) * std::ldexp(1.0, -24) * scale[i] +
                       weight_rounding * scale[i] + rounding * std::abs(expected[i]) + 1e-30;
    ASSERT_LE(std::abs(got[i] - expected[i]), tol)
        << "element " << i << ": got " << got[i] << ", expected " << expected[i];
  }
}

struct RandomCase {
  std::string name;
  std::function<NaiveQuantized(NaiveQuantizer&)> make;
};

void PrintTo(const RandomCase& c, std::ostream* os) { *os << c.name; }

std::vector<RandomCase> random_cases() {
  using Q = NaiveQuantizer;
  return {
      // FP8: 128x128 blocks with ragged right and bottom edges, small blocks, per tensor, bf16
      // scales.
      {"fp8_block128_ragged", [](Q& q) { return q.fp8(300, 260, 128, 128); }},
      {"fp8_block_16x32", [](Q& q) { return q.fp8(40, 72, 16, 32); }},
      {"fp8_per_tensor", [](Q& q) { return q.fp8(33, 50, 0, 0); }},
      {"fp8_bf16_scales", [](Q& q) { return q.fp8(130, 129, 128, 128, DType::BFloat16); }},
      // AWQ: group sizes 128, 64, 32.
      {"awq_g128", [](Q& q) { return q.awq(48, 256, 128); }},
      {"awq_g64", [](Q& q) { return q.awq(24, 192, 64); }},
      {"awq_g32", [](Q& q) { return q.awq(72, 96, 32); }},
      // GPTQ: 4 and 8 bits, sym and asym, act-order g_idx, one group.
      {"gptq4_g32_sym", [](Q& q) { return q.gptq(40, 128, 4, 32, false, true); }},
      {"gptq4_g32_asym_desc_act", [](Q& q) { return q.gptq(40, 128, 4, 32, true, false); }},
      {"gptq4_g128_desc_act_ragged_groups",
       [](Q& q) { return q.gptq(16, 200, 4, 128, true, true); }},
      {"gptq4_one_group", [](Q& q) { return q.gptq(24, 64, 4, 0, false, false); }},
      {"gptq8_g64_asym", [](Q& q) { return q.gptq(20, 192, 8, 64, false, false); }},
      {"gptq8_desc_act_sym", [](Q& q) { return q.gptq(12, 96, 8, 32, true, true); }},
      // compressed-tensors: int4/int8, group/channel, sym/asym, padded words and zero points.
      {"ct4_g32_sym", [](Q& q) { return q.compressed(40, 128, 4, 32, true); }},
      {"ct4_g64_asym_padded", [](Q& q) { return q.compressed(21, 100, 4, 64, false); }},
      {"ct4_channel_sym", [](Q& q) { return q.compressed(16, 64, 4, 0, true, DType::Float32); }},
      {"ct4_channel_asym", [](Q& q) { return q.compressed(19, 72, 4, 0, false); }},
      {"ct8_g32_sym", [](Q& q) { return q.compressed(24, 96, 8, 32, true, DType::Float16); }},
      {"ct8_g32_asym", [](Q& q) { return q.compressed(13, 70, 8, 32, false); }},
      // Shapes the CPU's fused decode kernels take (whole 16-lane blocks, groups of at least 16
      // words), with ragged tails where the layout allows them.
      {"fused_awq_g128", [](Q& q) { return q.awq(256, 256, 128); }},
      {"fused_awq_g64", [](Q& q) { return q.awq(128, 192, 64); }},
      // Session 15: AWQ strips of 4 blocks and a narrower last one (6 blocks), compressed-tensors
      // sets of 4 rows and a remainder (23 rows).
      {"fused_awq_strips", [](Q& q) { return q.awq(768, 256, 64); }},
      {"fused_awq_partial_block", [](Q& q) { return q.awq(296, 256, 64); }},  // 37 words
      // Act-order GPTQ (session 15: fused, each input scaled by its group's scales).
      {"fused_gptq4_desc_act", [](Q& q) { return q.gptq(48, 512, 4, 64, true, false); }},
      {"fused_gptq8_desc_act", [](Q& q) { return q.gptq(32, 256, 8, 32, true, true); }},
      {"fused_ct4_row_sets_ragged", [](Q& q) { return q.compressed(23, 384, 4, 128, false); }},
      {"fused_gptq4_g128_sym", [](Q& q) { return q.gptq(32, 256, 4, 128, false, true); }},
      {"fused_gptq8_g64_asym", [](Q& q) { return q.gptq(48, 256, 8, 64, false, false); }},
      {"fused_gptq4_one_group", [](Q& q) { return q.gptq(16, 136, 4, 0, false, false); }},
      // GPTQ strips of 4 and 2 blocks of 16 outputs and single blocks after them.
      {"fused_gptq4_strips", [](Q& q) { return q.gptq(176, 256, 4, 64, false, false); }},
      {"fused_gptq8_strips", [](Q& q) { return q.gptq(80, 128, 8, 32, false, true); }},
      // GPTQ panels (session 8): 2 stretches of outputs (64 blocks and 1) x 4 chunks of rows, and
      // chunks inside one group.
      {"fused_gptq4_panels", [](Q& q) { return q.gptq(1040, 2048, 4, 128, false, false); }},
      {"fused_gptq4_panels_one_group", [](Q& q) { return q.gptq(1024, 1024, 4, 0, false, true); }},
      {"fused_ct4_g128_asym_ragged", [](Q& q) { return q.compressed(20, 300, 4, 128, false); }},
      {"fused_ct8_g128_sym", [](Q& q) { return q.compressed(12, 256, 8, 128, true); }},
      {"fp8_block16_64_ragged", [](Q& q) { return q.fp8(17, 264, 16, 64); }},
      {"fp8_per_tensor_wide", [](Q& q) { return q.fp8(24, 516, 0, 0); }},
  };
}

struct RandomDeviceCase {
  RandomCase format;
  Device device;
};

void PrintTo(const RandomDeviceCase& c, std::ostream* os) {
  *os << c.format.name << " on " << c.device;
}

std::vector<RandomDeviceCase> random_device_cases() {
  std::vector<RandomDeviceCase> out;
  for (const Device device : {Device::cpu(), Device::cuda(0)}) {
    for (const RandomCase& c : random_cases()) out.push_back({c, device});
  }
  return out;
}

// Every case on the cpu and on cuda:0 (skipped without a GPU).
class QuantizedLinearRandomTest : public ::testing::TestWithParam<RandomDeviceCase> {
 protected:
  void SetUp() override {
    if (!device_available(device())) GTEST_SKIP() << device() << " is not available here";
  }
  Device device() const { return GetParam().device; }
  NaiveQuantized make(std::uint64_t seed) const {
    NaiveQuantizer quantizer(seed);
    return GetParam().format.make(quantizer);
  }
};

// Decode rows: 1 and 3 (the GEMV kernels on both devices; the GPU's take up to 8).
TEST_P(QuantizedLinearRandomTest, DecodeRowsMatchNaive) {
  const NaiveQuantized q = make(11);
  for (std::int64_t m : {1, 3}) {
    expect_matches_naive(q, m, DType::Float32, m == 3, 100 + m, device());
  }
  expect_matches_naive(q, 8, DType::Float32, true, 108, device());
}

TEST_P(QuantizedLinearRandomTest, PrefillRowsMatchNaive) {
  const NaiveQuantized q = make(12);
  expect_matches_naive(q, 9, DType::Float32, true, 200, device());
}

TEST_P(QuantizedLinearRandomTest, HalfPrecisionActivations) {
  const NaiveQuantized q = make(13);
  expect_matches_naive(q, 2, DType::BFloat16, true, 300, device());
  expect_matches_naive(q, 6, DType::Float16, false, 301, device());
}

// Prefill in bf16/f16: the CPU keeps float32 weight tiles; the GPU dequantises into x's dtype
// for cuBLAS, one more rounding of each weight (docs/quantization.md).
TEST_P(QuantizedLinearRandomTest, HalfPrecisionPrefill) {
  const NaiveQuantized q = make(14);
  const bool gpu = device().is_cuda();
  expect_matches_naive(q, 12, DType::BFloat16, true, 400, device(),
                       gpu ? std::ldexp(1.0, -8) : 0.0);
  expect_matches_naive(q, 17, DType::Float16, false, 401, device(),
                       gpu ? std::ldexp(1.0, -11) : 0.0);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedLinearRandomTest,
                         ::testing::ValuesIn(random_device_cases()), [](const auto& info) {
                           return info.param.format.name +
                                  (info.param.device.is_cuda() ? "_cuda0" : "_cpu");
                         });

// The CPU's fused decode kernels (AWQ, GPTQ, compressed-tensors) in every instruction-set variant
// this machine runs (AVX-512, AVX2, baseline: the same source compiled three times), on the
// cases that take them.
TEST(QuantizedLinearFusedCpu, EveryInstructionSetVariantMatchesNaive) {
  const std::vector<std::string> variants = cpu::fused_kernel_variants();
  ASSERT_FALSE(variants.empty());
  EXPECT_EQ(variants.back(), "generic");
  for (const std::string& variant : variants) {
    cpu::pin_fused_kernel_variant(variant);
    for (const RandomCase& c : random_cases()) {
      if (c.name.rfind("fused_", 0) != 0) continue;
      // GPTQ in both walks of the packed rows (strips of every row, panels of row chunks).
      const bool gptq = c.name.rfind("fused_gptq", 0) == 0;
      for (const cpu::GptqCpuLayout layout :
           {cpu::GptqCpuLayout::Strips, cpu::GptqCpuLayout::Panels}) {
        if (!gptq && layout == cpu::GptqCpuLayout::Panels) continue;
        cpu::pin_gptq_cpu_layout(layout);
        SCOPED_TRACE(variant + " " + c.name +
                     (layout == cpu::GptqCpuLayout::Panels ? " panels" : " strips"));
        NaiveQuantizer quantizer(15);
        const NaiveQuantized q = c.make(quantizer);
        expect_matches_naive(q, 1, DType::Float32, true, 500);
        expect_matches_naive(q, 4, DType::BFloat16, false, 501);
        for (std::int64_t m : {2, 3}) expect_matches_naive(q, m, DType::Float32, true, 502 + m);
        expect_matches_naive(q, 7, DType::Float32, true, 507);  // chunks of 4 and 3 rows
      }
    }
  }
  cpu::pin_fused_kernel_variant("");
  cpu::pin_gptq_cpu_layout(std::nullopt);
}

// A row of x gets the same bits whatever rows share its call (a batched decode: one request's
// tokens do not depend on the others in its batch), through the fused kernels' 1-4 rows and
// their chunks of 4 for 5-16 rows, on every case that takes them (and FP8 on AVX-512).
TEST(QuantizedLinearFusedCpu, ARowGetsTheSameBitsInAnyBatch) {
  for (const RandomCase& c : random_cases()) {
    if (c.name.rfind("fused_", 0) != 0 && c.name.rfind("fp8_", 0) != 0) continue;
    SCOPED_TRACE(c.name);
    NaiveQuantizer quantizer(16);
    const NaiveQuantized q = c.make(quantizer);
    const std::int64_t k = q.weight.in_features;
    const Tensor x = random_tensor({11, k}, DType::Float32, 600);
    const std::vector<float> batch = ops::quantized_linear(x, q.weight).to_vector<float>();
    const std::int64_t n = q.weight.out_features;
    for (std::int64_t r : {0, 4, 10}) {
      const std::vector<float> alone =
          ops::quantized_linear(x.narrow(0, r, 1).contiguous(), q.weight).to_vector<float>();
      EXPECT_TRUE(std::equal(alone.begin(), alone.end(), batch.begin() + r * n))
          << "row " << r << " of 11";
    }
  }
}

// x = e_0 picks column 0 of the dequantised weight: y[n] = w[n, 0].
Tensor unit_row(std::int64_t k, std::int64_t hot = 0) {
  Tensor x = Tensor::zeros({1, k});
  x.set<float>({0, hot}, 1.0f);
  return x;
}

Tensor words(std::vector<std::int32_t> v, const Shape& shape) {
  return Tensor::from_vector(std::move(v), shape);
}

TEST(QuantizedLinearHandPacked, AwqPackingOrder) {
  // One input row, 8 outputs: nibble i (from the low end) of 0x76543210 is i, and AWQ stores
  // output column order[i] = 0,2,4,6,1,3,5,7 there, so outputs 0..7 read 0,4,1,5,2,6,3,7. Zero
  // point 1 in every nibble, scale 0.5: w = (q - 1) / 2.
  ops::QuantizedWeight w;
  w.format = ops::QuantFormat::AWQ;
  w.in_features = 32;
  w.out_features = 8;
  w.group_size = 32;
  std::vector<std::int32_t> q(32, 0);
  q[0] = 0x76543210;
  w.weight = words(q, {32, 1});
  w.zeros = words({0x11111111}, {1, 1});
  w.scale = Tensor::full({1, 8}, 0.5, DType::Float16);
  const Tensor y = ops::quantized_linear(unit_row(32), w);
  EXPECT_EQ(y.to_vector<float>(),
            (std::vector<float>{-0.5f, 1.5f, 0.0f, 2.0f, 0.5f, 2.5f, 1.0f, 3.0f}));
}

TEST(QuantizedLinearHandPacked, GptqZerosStoredMinusOneAndGIdx) {
  // 8 inputs in one word of output column 0: input j holds j. Zeros stored 7 -> 8. g_idx sends
  // inputs 0..3 to group 1 (scale 2) and 4..7 to group 0 (scale 1): w = (j - 8) * scale.
  ops::QuantizedWeight w;
  w.format = ops::QuantFormat::GPTQ;
  w.bits = 4;
  w.in_features = 8;
  w.out_features = 8;
  w.group_size = 4;
  w.weight = words({0x76543210, 0, 0, 0, 0, 0, 0, 0}, {1, 8});
  w.zeros = words({0x77777777, 0x77777777}, {2, 1});
  Tensor scales = Tensor::ones({2, 8}, DType::Float16);
  scales.select(0, 1).copy_(Tensor::full({8}, 2.0, DType::Float16));
  w.scale = scales;
  w.g_idx = words({1, 1, 1, 1, 0, 0, 0, 0}, {8});
  const Tensor x = Tensor::ones({1, 8});
  const Tensor y = ops::quantized_linear(x, w);
  // Column 0: 2 * (-8 - 7 - 6 - 5) + (-4 - 3 - 2 - 1) = -62. Others: codes 0 -> -8 each.
  EXPECT_EQ(y.to_vector<float>()[0], -62.0f);
  EXPECT_EQ(y.to_vector<float>()[1], 2 * 4 * -8.0f + 4 * -8.0f);
}

TEST(QuantizedLinearHandPacked, Gptq8Bit) {
  // 8-bit: 4 inputs per word; bytes 0x10, 0x20, 0x30, 0x40 with zero 0x7F + 1 = 128, scale 1.
  ops::QuantizedWeight w;
  w.format = ops::QuantFormat::GPTQ;
  w.bits = 8;
  w.in_features = 4;
  w.out_features = 4;
  w.group_size = 0;
  w.weight = words({0x40302010, 0, 0, 0}, {1, 4});
  w.zeros = words({0x7F7F7F7F}, {1, 1});
  w.scale = Tensor::ones({1, 4}, DType::Float16);
  w.g_idx = words({0, 0, 0, 0}, {4});
  const Tensor y = ops::quantized_linear(unit_row(4, 2), w);
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{0x30 - 128.0f, -128.0f, -128.0f, -128.0f}));
}

TEST(QuantizedLinearHandPacked, CompressedTensorsSymmetricOffsetAndAsymmetricZeroPoint) {
  // One output, 8 inputs: unsigned nibble j = j, stored offset 8, so symmetric w = j - 8.
  ops::QuantizedWeight w;
  w.format = ops::QuantFormat::CompressedTensors;
  w.bits = 4;
  w.in_features = 8;
  w.out_features = 1;
  w.group_size = 0;
  w.weight = words({0x76543210}, {1, 1});
  w.scale = Tensor::ones({1, 1}, DType::BFloat16);
  EXPECT_EQ(ops::quantized_linear(unit_row(8, 3), w).to_vector<float>()[0], -5.0f);
  // Zero point -6 stored as 2 (offset 8) in the low nibble: w = (3 - 8) - (2 - 8) = 1.
  w.zeros = words({0x2}, {1, 1});
  EXPECT_EQ(ops::quantized_linear(unit_row(8, 3), w).to_vector<float>()[0], 1.0f);
}

TEST(QuantizedLinearHandPacked, Fp8RaggedBlocks) {
  // 3x3 weight of 1.0 (0x38) with 2x2 blocks: scales [[1, 2], [3, 4]] cover the ragged edges.
  ops::QuantizedWeight w;
  w.format = ops::QuantFormat::FP8;
  w.in_features = 3;
  w.out_features = 3;
  w.block_out = 2;
  w.block_in = 2;
  w.weight = Tensor::from_storage(Tensor::full({3, 3}, 0x38, DType::UInt8).storage(),
                                  DType::Float8E4M3FN, {3, 3});
  w.scale = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(ops::quantized_linear(unit_row(3, 0), w).to_vector<float>(),
            (std::vector<float>{1, 1, 3}));
  EXPECT_EQ(ops::quantized_linear(unit_row(3, 2), w).to_vector<float>(),
            (std::vector<float>{2, 2, 4}));
  // Per tensor: one scale.
  w.block_out = w.block_in = 0;
  w.scale = Tensor::full({}, 0.25, DType::Float32);
  EXPECT_EQ(ops::quantized_linear(unit_row(3, 1), w).to_vector<float>(),
            (std::vector<float>{0.25f, 0.25f, 0.25f}));
}

// A caller that checked g_idx once (QuantizedLinear) says so with g_idx_sequential, and the op
// does not read g_idx again on every call: here a g_idx overwritten after the check is not seen
// (the unchecked call above it throws), and the result is the sequential layer's.
TEST(QuantizedLinearGIdx, ACheckedLayerIsNotCheckedAgainPerCall) {
  NaiveQuantizer quantizer(9);
  const NaiveQuantized q = quantizer.gptq(16, 128, 4, 32, false, false);
  const Tensor x = random_tensor({1, 128}, DType::Float32, 3);
  ops::QuantizedWeight w = q.weight;
  const std::vector<float> expected = ops::quantized_linear(x, w).to_vector<float>();
  w.g_idx = Tensor::full({128}, 4, DType::Int32);  // only groups 0..3 exist
  EXPECT_THROW(ops::quantized_linear(x, w), CheckpointError);
  w.g_idx_sequential = true;
  EXPECT_EQ(ops::quantized_linear(x, w).to_vector<float>(), expected);
}

TEST(QuantizedLinearErrors, ShapesAndDTypesNameTheTensor) {
  NaiveQuantizer quantizer(5);
  const Tensor x = Tensor::zeros({1, 128});
  {
    ops::QuantizedWeight w = quantizer.awq(16, 128, 64).weight;
    w.zeros = Tensor::zeros({1, 2}, DType::Int32);  // one group, the config says two
    EXPECT_TRUE(throws_naming<CheckpointError>([&] { ops::quantized_linear(x, w); },
                                               {"quantized_linear", "qzeros", "awq", "[1, 2]"}));
  }
  {
    ops::QuantizedWeight w = quantizer.gptq(16, 128, 4, 32, true, true).weight;
    w.g_idx = Tensor::full({128}, 4, DType::Int32);  // only groups 0..3 exist
    EXPECT_TRUE(
        throws_naming<CheckpointError>([&] { ops::quantized_linear(x, w); }, {"g_idx", "group 4"}));
    w = quantizer.gptq(16, 128, 4, 32, false, true).weight;
    w.weight = w.weight.to(DType::Int64);
    EXPECT_TRUE(
        throws_naming<CheckpointError>([&] { ops::quantized_linear(x, w); }, {"qweight", "int32"}));
  }
  {
    ops::QuantizedWeight w = quantizer.fp8(16, 128, 128, 128).weight;
    w.scale = Tensor::ones({1, 2});
    EXPECT_TRUE(throws_naming<CheckpointError>([&] { ops::quantized_linear(x, w); },
                                               {"weight_scale_inv", "fp8"}));
  }
  {
    ops::QuantizedWeight w = quantizer.compressed(16, 128, 4, 32, true).weight;
    w.bits = 3;
    EXPECT_TRUE(
        throws_naming<CheckpointError>([&] { ops::quantized_linear(x, w); }, {"num_bits 3"}));
  }
  const ops::QuantizedWeight w = quantizer.awq(16, 128, 64).weight;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        ops::quantized_linear(Tensor::zeros({1, 64}), w);
      },
      {"quantized_linear", "x"}));
  EXPECT_TRUE(throws_naming<NotSupported>(
      [&] {
        ops::quantized_linear(Tensor::zeros({1, 128}, DType::Int32), w);
      },
      {"quantized_linear"}));
}

}  // namespace
}  // namespace strata::testing
