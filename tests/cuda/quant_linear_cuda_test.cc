// The GPU's quantized_linear against the CPU kernels on random packed weights of real layer
// shapes (7B-sized inputs, group 128; ops/quantized_linear_test.cc covers small and ragged shapes
// against a naive reference on both devices). Decode row counts take the GEMV kernels (every
// split-K and row-count instantiation), larger ones the dequantise + cuBLAS path.

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "ops/quantized_testing.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

struct GpuCase {
  std::string name;
  std::function<NaiveQuantized(NaiveQuantizer&)> make;
};

void PrintTo(const GpuCase& c, std::ostream* os) { *os << c.name; }

std::vector<GpuCase> gpu_cases() {
  using Q = NaiveQuantizer;
  return {
      {"fp8_block128", [](Q& q) { return q.fp8(768, 4096, 128, 128); }},
      {"fp8_per_tensor", [](Q& q) { return q.fp8(512, 2048, 0, 0); }},
      {"fp8_bf16_scales_ragged", [](Q& q) { return q.fp8(200, 1000, 128, 128, DType::BFloat16); }},
      {"awq_g128", [](Q& q) { return q.awq(1024, 4096, 128); }},
      {"awq_g64_narrow", [](Q& q) { return q.awq(64, 1024, 64); }},
      {"gptq4_g128_sym", [](Q& q) { return q.gptq(1024, 4096, 4, 128, false, true); }},
      {"gptq4_g128_desc_act", [](Q& q) { return q.gptq(512, 2048, 4, 128, true, false); }},
      {"gptq8_g128_asym", [](Q& q) { return q.gptq(512, 2048, 8, 128, false, false); }},
      {"ct4_g128_sym", [](Q& q) { return q.compressed(1024, 4096, 4, 128, true); }},
      {"ct4_g128_asym", [](Q& q) { return q.compressed(512, 2048, 4, 128, false); }},
      {"ct8_channel_sym", [](Q& q) { return q.compressed(512, 2048, 8, 0, true); }},
  };
}

class QuantLinearCudaTest : public ::testing::TestWithParam<GpuCase> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

// |gpu - cpu| within both sides' float32 accumulation error (8 sqrt(k) 2^-24 sum |x w|), plus
// `weight_rounding` * sum |x w| and one rounding of the output in half precision.
void expect_gpu_matches_cpu(const NaiveQuantized& q, std::int64_t m, DType dtype,
                            double weight_rounding, std::uint64_t seed) {
  const std::int64_t n = q.weight.out_features, k = q.weight.in_features;
  const Tensor x = random_tensor({m, k}, dtype, seed);
  const Tensor bias = random_tensor({n}, dtype, seed + 1);
  const Tensor cpu = ops::quantized_linear(x, q.weight, bias);
  const Tensor gpu =
      ops::quantized_linear(x.to(Device::cuda(0)), weight_on(q.weight, Device::cuda(0)),
                            bias.to(Device::cuda(0)))
          .to(Device::cpu());
  ASSERT_EQ(gpu.shape(), cpu.shape());
  const std::vector<double> a = gpu.to_doubles(), b = cpu.to_doubles(), xv = x.to_doubles();
  const double half = dtype == DType::Float32    ? 0.0
                      : dtype == DType::BFloat16 ? std::ldexp(1.0, -7)
                                                 : std::ldexp(1.0, -10);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double sum_abs = 0.0;
      for (std::int64_t t = 0; t < k; ++t) {
        sum_abs += std::abs(xv[i * k + t] * q.dense[j * k + t]);
      }
      const double tol = 16.0 * std::sqrt(static_cast<double>(k)) * std::ldexp(1.0, -24) * sum_abs +
                         weight_rounding * sum_abs + half * std::abs(b[i * n + j]) + 1e-30;
      ASSERT_LE(std::abs(a[i * n + j] - b[i * n + j]), tol)
          << "row " << i << ", output " << j << ": gpu " << a[i * n + j] << ", cpu "
          << b[i * n + j];
    }
  }
}

TEST_P(QuantLinearCudaTest, DecodeMatchesCpuKernels) {
  NaiveQuantizer quantizer(21);
  const NaiveQuantized q = GetParam().make(quantizer);
  for (std::int64_t m : {1, 2, 3, 5, 8}) expect_gpu_matches_cpu(q, m, DType::Float32, 0.0, 50 + m);
  expect_gpu_matches_cpu(q, 1, DType::BFloat16, 0.0, 60);
  expect_gpu_matches_cpu(q, 4, DType::Float16, 0.0, 61);
}

TEST_P(QuantLinearCudaTest, PrefillMatchesCpuKernels) {
  NaiveQuantizer quantizer(22);
  const NaiveQuantized q = GetParam().make(quantizer);
  expect_gpu_matches_cpu(q, 33, DType::Float32, 0.0, 70);
  expect_gpu_matches_cpu(q, 16, DType::BFloat16, std::ldexp(1.0, -8), 71);
}

// A GPTQ layer whose g_idx names a group that does not exist is a CheckpointError on the GPU
// too (the kernels clamp, the host check reports).
TEST(QuantLinearCuda, BadGIdxIsACheckpointError) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  NaiveQuantizer quantizer(23);
  ops::QuantizedWeight w =
      weight_on(quantizer.gptq(64, 256, 4, 128, false, true).weight, Device::cuda(0));
  w.g_idx = Tensor::full({256}, 2, DType::Int32).to(Device::cuda(0));
  EXPECT_THROW(ops::quantized_linear(Tensor::zeros({1, 256}).to(Device::cuda(0)), w),
               CheckpointError);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantLinearCudaTest, ::testing::ValuesIn(gpu_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata::testing
