// The GPU's one-launch quantized GEMV (src/cuda/quant_gemv.cu) against the naive quantizer's
// dense weight (tests/ops/quantized_testing.h, packed with the producers' loops) and a double
// matmul: every kernel path of every format -- the vector kernels (FP8 and compressed-tensors rows,
// AWQ 8- and 4-byte words, GPTQ 4/8-bit sequential and act-order g_idx), split-K over one block and
// over many (the ticketed last-block reduction), and the generic fallback (odd shapes, narrow
// groups, misaligned x) -- at every row count 1..8, for float32, bfloat16 and float16 x.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>

#include "cuda/cuda_ops.h"
#include "cuda/quant_fp8_gemm.h"
#include "ops/quantized_testing.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"
#include "support/op_testing.h"

namespace strata::testing {
namespace {

struct GemvCase {
  std::string name;
  std::function<NaiveQuantized(NaiveQuantizer&)> make;
};

void PrintTo(const GemvCase& c, std::ostream* os) { *os << c.name; }

std::vector<GemvCase> gemv_cases() {
  using Q = NaiveQuantizer;
  return {
      // FP8 rows: 16-byte path (128x128 blocks, per tensor, 16x16 blocks, odd row count), generic
      // path (k not a multiple of 16, blocks of 8 inputs).
      {"fp8_block128", [](Q& q) { return q.fp8(258, 1024, 128, 128); }},
      {"fp8_per_tensor", [](Q& q) { return q.fp8(77, 512, 0, 0); }},
      {"fp8_block16", [](Q& q) { return q.fp8(48, 256, 16, 16, DType::BFloat16); }},
      {"fp8_generic_k", [](Q& q) { return q.fp8(37, 200, 128, 128); }},
      {"fp8_generic_block8", [](Q& q) { return q.fp8(20, 64, 8, 8); }},
      // compressed-tensors rows: int4/int8 groups and channel, packed zero points, and the
      // generic path (group of 8 inputs, padded last word).
      {"ct4_g128_sym", [](Q& q) { return q.compressed(131, 1024, 4, 128, true); }},
      {"ct4_g32_asym", [](Q& q) { return q.compressed(64, 512, 4, 32, false); }},
      {"ct8_g64_asym", [](Q& q) { return q.compressed(70, 512, 8, 64, false); }},
      {"ct8_channel_sym", [](Q& q) { return q.compressed(33, 768, 8, 0, true); }},
      {"ct4_generic_g8", [](Q& q) { return q.compressed(24, 256, 4, 8, false); }},
      {"ct4_generic_padded", [](Q& q) { return q.compressed(40, 100, 4, 0, true); }},
      // AWQ columns: 8-byte words (even word count), 4-byte words (odd), one split and many.
      {"awq_g128_wide", [](Q& q) { return q.awq(1024, 4096, 128); }},
      {"awq_g128_odd_words", [](Q& q) { return q.awq(8 * 37, 1024, 128); }},
      {"awq_g32_one_split", [](Q& q) { return q.awq(256, 128, 32); }},
      {"awq_g64", [](Q& q) { return q.awq(512, 2048, 64); }},
      // GPTQ columns: sequential 4/8-bit (groups of 4 packed rows and of 2), one group, act-order
      // g_idx (4 and 8-bit), and the generic path (a ragged last group).
      {"gptq4_g128_sym", [](Q& q) { return q.gptq(1032, 4096, 4, 128, false, true); }},
      {"gptq4_g16_asym", [](Q& q) { return q.gptq(64, 512, 4, 16, false, false); }},
      {"gptq8_g128_asym", [](Q& q) { return q.gptq(260, 2048, 8, 128, false, false); }},
      {"gptq4_one_group", [](Q& q) { return q.gptq(128, 1024, 4, 0, false, true); }},
      {"gptq4_desc_act", [](Q& q) { return q.gptq(256, 2048, 4, 128, true, false); }},
      {"gptq8_desc_act", [](Q& q) { return q.gptq(96, 512, 8, 64, true, true); }},
      {"gptq4_generic_ragged", [](Q& q) { return q.gptq(64, 200, 4, 64, false, false); }},
      // Shaped for the tensor-core streaming kernels (quant_gemv_tc.cu, taken for bf16 x under
      // STRATA_QUANT_GEMV=tc=1 / tf=1): stages of 4, 2 and 1 steps, one tile split over many blocks
      // (the ticketed reduction), zero points, ragged compressed-tensors rows, per channel.
      {"tc_gptq4_g128_asym", [](Q& q) { return q.gptq(256, 1024, 4, 128, false, false); }},
      {"tc_gptq4_g32_sym", [](Q& q) { return q.gptq(64, 512, 4, 32, false, true); }},
      {"tc_gptq4_one_tile_long", [](Q& q) { return q.gptq(32, 4096, 4, 128, false, false); }},
      {"tc_ct4_g128_asym", [](Q& q) { return q.compressed(48, 1024, 4, 128, false); }},
      {"tc_ct4_channel_ragged", [](Q& q) { return q.compressed(40, 1536, 4, 0, true); }},
      {"tc_ct4_g256_long", [](Q& q) { return q.compressed(16, 4096, 4, 256, false); }},
      {"tc_awq_g32_one_tile_long", [](Q& q) { return q.awq(64, 4096, 32); }},
      {"tc_fp8_block128_long", [](Q& q) { return q.fp8(32, 4096, 128, 128); }},
      {"tc_fp8_per_tensor_ragged", [](Q& q) { return q.fp8(40, 1536, 0, 0); }},
      // Session 8's variants (ts=S forced splits, tk=1 cluster reduction, tr=2 compressed-tensors
      // tiles of 32 rows): one tile split 16 ways (8 in a cluster), a ragged 32-row tile.
      {"tc_gptq4_one_tile_16k", [](Q& q) { return q.gptq(32, 16384, 4, 128, false, false); }},
      // Session 14's 128-output GPTQ tiles for 1-2 rows (taken under STRATA_QUANT_GEMV=tw=1): a
      // ragged last tile (352 = 2 x 128 + 96) with 8-row stages (groups of 64), and groups of 32
      // (4-row stages) over many splits.
      {"tc_gptq4_wide_ragged_g64", [](Q& q) { return q.gptq(352, 2048, 4, 64, false, false); }},
      {"tc_gptq4_wide_g32_long", [](Q& q) { return q.gptq(160, 8192, 4, 32, false, true); }},
      // Session 15's 256-output AWQ tiles (aw=1): a ragged last tile (45 word columns = 32 + 13,
      // the last lane pair's second column past the end) in groups of 64, and groups of 32 over
      // many splits.
      {"tc_awq_wide_ragged_g64", [](Q& q) { return q.awq(360, 2048, 64); }},
      {"tc_awq_wide_g32_long", [](Q& q) { return q.awq(512, 8192, 32); }},
      {"tc_awq_g128_8k", [](Q& q) { return q.awq(128, 8192, 128); }},
      {"tc_ct4_g128_16k", [](Q& q) { return q.compressed(48, 16384, 4, 128, false); }},
      {"tc_fp8_block128_16k", [](Q& q) { return q.fp8(16, 16384, 128, 128); }},
  };
}

class QuantGemvCudaTest : public ::testing::TestWithParam<GemvCase> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
};

// got (and `again`, a second call) against the double product with the naive dense weight:
// float32 accumulation errors (8 sqrt(k) 2^-24 sum |x w|) plus one rounding of the output to
// dtype; the second call must give the same bits (the split-K tickets were reset by the first).
void expect_close_to_naive(const NaiveQuantized& q, const std::vector<double>& xv,
                           const std::vector<double>& bias, std::int64_t m, DType dtype,
                           const std::vector<double>& got, const std::vector<double>& again) {
  const std::int64_t n = q.weight.out_features, k = q.weight.in_features;
  const std::vector<double> expected = naive_linear(xv, q.dense, m, n, k, bias);
  const double rounding = dtype == DType::Float32    ? 0.0
                          : dtype == DType::BFloat16 ? std::ldexp(1.0, -8)
                                                     : std::ldexp(1.0, -11);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double sum_abs = 0.0;
      for (std::int64_t t = 0; t < k; ++t) sum_abs += std::abs(xv[i * k + t] * q.dense[j * k + t]);
      const std::size_t e = static_cast<std::size_t>(i * n + j);
      const double tol = 8.0 * std::sqrt(static_cast<double>(k)) * std::ldexp(1.0, -24) * sum_abs +
                         rounding * std::abs(expected[e]) + 1e-30;
      ASSERT_LE(std::abs(got[e] - expected[e]), tol)
          << "rows " << m << ", row " << i << ", output " << j << ": got " << got[e]
          << ", expected " << expected[e];
      ASSERT_EQ(got[e], again[e]) << "rows " << m << ", row " << i << ", output " << j;
    }
  }
}

// GPU y = x W^T + b against the naive product. `x_offset` elements in front of x make its data
// pointer misaligned for the vector loads.
void expect_gemv_matches_naive(const NaiveQuantized& q, std::int64_t m, DType dtype,
                               std::uint64_t seed, std::int64_t x_offset = 0) {
  const std::int64_t n = q.weight.out_features, k = q.weight.in_features;
  const Tensor x = random_tensor({m, k}, dtype, seed);
  const Tensor bias = random_tensor({n}, dtype, seed + 1);
  Tensor x_gpu = x.to(Device::cuda(0));
  if (x_offset > 0) {
    const Tensor big = Tensor::zeros({m * k + x_offset}, dtype, Device::cuda(0));
    big.narrow(0, x_offset, m * k).copy_(x_gpu.view({m * k}));
    x_gpu = big.narrow(0, x_offset, m * k).view({m, k});
  }
  const ops::QuantizedWeight w = weight_on(q.weight, Device::cuda(0));
  const Tensor y = ops::quantized_linear(x_gpu, w, bias.to(Device::cuda(0)));
  ASSERT_EQ(y.shape(), (Shape{m, n}));
  const std::vector<double> got = y.to(Device::cpu()).to_doubles();
  const std::vector<double> again =
      ops::quantized_linear(x_gpu, w, bias.to(Device::cuda(0))).to(Device::cpu()).to_doubles();
  expect_close_to_naive(q, x.to_doubles(), bias.to_doubles(), m, dtype, got, again);
}

TEST_P(QuantGemvCudaTest, EveryRowCountFloat32) {
  NaiveQuantizer quantizer(31);
  const NaiveQuantized q = GetParam().make(quantizer);
  for (std::int64_t m = 1; m <= 8; ++m) expect_gemv_matches_naive(q, m, DType::Float32, 10 + m);
}

TEST_P(QuantGemvCudaTest, HalfPrecisionActivations) {
  NaiveQuantizer quantizer(32);
  const NaiveQuantized q = GetParam().make(quantizer);
  for (std::int64_t m : {1, 2, 4, 7}) expect_gemv_matches_naive(q, m, DType::BFloat16, 20 + m);
  for (std::int64_t m : {1, 3, 8}) expect_gemv_matches_naive(q, m, DType::Float16, 30 + m);
}

// x whose data pointer is not 16-byte aligned takes the generic kernel (AWQ reads x by element).
TEST_P(QuantGemvCudaTest, MisalignedActivations) {
  NaiveQuantizer quantizer(33);
  const NaiveQuantized q = GetParam().make(quantizer);
  expect_gemv_matches_naive(q, 1, DType::BFloat16, 40, 1);
  expect_gemv_matches_naive(q, 5, DType::Float32, 41, 3);
}

// The opt-in cuBLASLt FP8 prefill (STRATA_FP8_PREFILL=cublaslt): per-tensor and 128 x 128 block
// weights against the naive product; the activations are rounded to fp8 (e4m3: relative error
// up to 2^-4), so the bound is 2^-4 sum |x w| on top of the bf16 output rounding.
TEST(QuantFp8PrefillCuda, CublasLtMatchesNaiveWithinActivationRounding) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  NaiveQuantizer quantizer(34);
  for (const std::int64_t block : {0, 128}) {
    const NaiveQuantized q = quantizer.fp8(256, 512, block, block, DType::Float32, 14);
    const std::int64_t m = 40, n = 256, k = 512;
    const Tensor x = random_tensor({m, k}, DType::BFloat16, 90 + block);
    const std::vector<double> xv = x.to_doubles();
    const std::vector<double> expected = naive_linear(xv, q.dense, m, n, k);
    const ops::QuantizedWeight w = weight_on(q.weight, Device::cuda(0));
    ::setenv("STRATA_FP8_PREFILL", "cublaslt", 1);
    const Tensor x_gpu = x.to(Device::cuda(0));
    const Tensor direct = Tensor::empty({m, n}, DType::BFloat16, Device::cuda(0));
    ops::QuantizedWeight wf = w;
    wf.scale = w.scale.to(DType::Float32);
    cuda::kernels::QuantWeight kw;
    kw.kind = cuda::kernels::QuantKind::FP8;
    kw.n = n;
    kw.k = k;
    kw.bits = 8;
    kw.block_out = kw.block_in = block;
    kw.weight = wf.weight.data_ptr();
    kw.scale = wf.scale.data_ptr();
    const bool ran = cuda::fp8_prefill_cublaslt(x_gpu, kw, direct);
    const std::vector<double> got = ops::quantized_linear(x_gpu, w).to(Device::cpu()).to_doubles();
    ::unsetenv("STRATA_FP8_PREFILL");
    std::printf("fp8 block %lld: cuBLASLt %s\n", static_cast<long long>(block),
                ran ? "ran" : "has no algorithm (the dequantise path ran)");
    const std::vector<double> direct_v = direct.to(Device::cpu()).to_doubles();
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        double sum_abs = 0.0;
        for (std::int64_t t = 0; t < k; ++t) {
          sum_abs += std::abs(xv[i * k + t] * q.dense[j * k + t]);
        }
        const std::size_t e = static_cast<std::size_t>(i * n + j);
        const double tol =
            std::ldexp(1.0, -4) * sum_abs + std::ldexp(1.0, -8) * std::abs(expected[e]);
        ASSERT_LE(std::abs(got[e] - expected[e]), tol)
            << "block " << block << " row " << i << " out " << j;
        if (ran) {
          ASSERT_LE(std::abs(direct_v[e] - expected[e]), tol)
              << "block " << block << " row " << i << " out " << j;
        }
      }
    }
  }
}

// q, k, v in one launch (cuda::quantized_linear_group_pdl; the tensor-core kernels' group, or one
// call after another where they do not take it): each projection against the naive product, for
// every format the kernels read, GQA-shaped (k and v narrower than q).
TEST(QuantGemvGroupCuda, QkvInOneLaunchMatchesNaive) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  using Q = NaiveQuantizer;
  const std::vector<std::pair<std::string, std::function<NaiveQuantized(Q&, std::int64_t)>>>
      formats = {
          {"gptq4", [](Q& q, std::int64_t n) { return q.gptq(n, 2048, 4, 128, false, false); }},
          {"awq", [](Q& q, std::int64_t n) { return q.awq(n, 2048, 128); }},
          {"ct4", [](Q& q, std::int64_t n) { return q.compressed(n, 2048, 4, 128, false); }},
          {"fp8", [](Q& q, std::int64_t n) { return q.fp8(n, 2048, 128, 128); }},
      };
  for (const auto& [name, make] : formats) {
    NaiveQuantizer quantizer(35);
    const std::vector<NaiveQuantized> layers = {make(quantizer, 512), make(quantizer, 128),
                                                make(quantizer, 128)};
    std::vector<ops::QuantizedWeight> weights;
    for (const NaiveQuantized& l : layers) weights.push_back(weight_on(l.weight, Device::cuda(0)));
    for (const std::int64_t m : {1, 3, 8}) {
      SCOPED_TRACE(name + " rows " + std::to_string(m));
      const Tensor x = random_tensor({m, 2048}, DType::BFloat16, 60 + m);
      const Tensor x_gpu = x.to(Device::cuda(0));
      std::vector<Tensor> bias_cpu;
      std::vector<std::optional<Tensor>> bias;
      std::vector<Tensor> out, out2;
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const std::int64_t n = layers[i].weight.out_features;
        bias_cpu.push_back(random_tensor({n}, DType::BFloat16, 70 + m + 10 * i));
        // k's projection without a bias
        bias.push_back(i == 1 ? std::nullopt
                              : std::optional<Tensor>(bias_cpu.back().to(Device::cuda(0))));
        out.push_back(Tensor::empty({m, n}, DType::BFloat16, Device::cuda(0)));
        out2.push_back(Tensor::empty({m, n}, DType::BFloat16, Device::cuda(0)));
      }
      const auto group = [&](const std::vector<Tensor>& outs) {
        std::vector<cuda::QuantizedProjection> g;
        for (std::size_t i = 0; i < layers.size(); ++i)
          g.push_back({&weights[i], &bias[i], &outs[i]});
        return g;
      };
      cuda::quantized_linear_group_pdl(x_gpu, group(out), false);
      cuda::quantized_linear_group_pdl(x_gpu, group(out2), false);
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const std::int64_t n = layers[i].weight.out_features;
        const std::vector<double> b = i == 1 ? std::vector<double>(static_cast<std::size_t>(n), 0.0)
                                             : bias_cpu[i].to_doubles();
        expect_close_to_naive(layers[i], x.to_doubles(), b, m, DType::BFloat16,
                              out[i].to(Device::cpu()).to_doubles(),
                              out2[i].to(Device::cpu()).to_doubles());
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantGemvCudaTest, ::testing::ValuesIn(gemv_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata::testing
