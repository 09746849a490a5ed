// The sampler's CUDA kernel (src/cuda/sampling.cu): transformers' recorded cases on the GPU, and
// the same ids as the CPU backend for the same seeds (both use Philox4x32-10 and integer weights)
// on 152k and 262k vocabularies in float32 and bfloat16, with every option. Skips without a GPU.

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/sampler_fixture.h"
#include "strata/cuda/device.h"
#include "strata/engine/sampling.h"

namespace strata::engine {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine"

Tensor random_logits(std::int64_t rows, std::int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> values(static_cast<std::size_t>(rows * vocab));
  for (float& v : values) v = normal(rng);
  return Tensor::from_vector(values, {rows, vocab});
}

std::vector<SamplingParams> option_sets() {
  std::vector<SamplingParams> sets(8);
  sets[0].temperature = 0.0;  // greedy
  sets[1].do_sample = false;  // greedy + penalty
  sets[1].repetition_penalty = 1.3;
  sets[2].temperature = 0.7;  // plain sampling
  sets[3].top_k = 50;
  sets[3].temperature = 0.8;
  sets[4].top_p = 0.9;
  sets[5].min_p = 0.05;
  sets[5].temperature = 1.5;
  sets[6].top_k = 1000;
  sets[6].top_p = 0.7;
  sets[6].min_p = 0.01;
  sets[6].repetition_penalty = 1.2;
  sets[6].presence_penalty = 0.5;
  sets[6].frequency_penalty = 0.3;
  sets[7].top_p = 0.999;
  sets[7].temperature = 2.0;
  return sets;
}

TEST(SamplingCuda, RecordedTransformersCases) {
  SKIP_WITHOUT_GPU();
  for (const testing::SamplerCase& c : testing::load_sampler_cases()) {
    testing::expect_case_matches(c, Device::cuda(0));
  }
}

TEST(SamplingCuda, SameIdsAndDistributionAsTheCpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<SamplingParams> sets = option_sets();
  for (const std::int64_t vocab : {152064, 262144}) {
    for (const DType dtype : {DType::Float32, DType::BFloat16}) {
      const auto batch = static_cast<std::int64_t>(sets.size());
      const Tensor cpu_logits = random_logits(batch, vocab, static_cast<unsigned>(vocab)).to(dtype);
      const Tensor gpu_logits = cpu_logits.to(Device::cuda(0));
      std::mt19937 rng(1);
      std::vector<std::int64_t> context(300);
      for (auto& t : context) t = static_cast<std::int64_t>(rng() % vocab);
      for (std::int64_t step = 0; step < 20; ++step) {
        std::vector<SampleRow> rows;
        for (std::size_t r = 0; r < sets.size(); ++r) {
          rows.push_back({&sets[r], context, 100 + step, 77 + r});
        }
        EXPECT_EQ(sample(gpu_logits, rows), sample(cpu_logits, rows))
            << "vocab " << vocab << " " << dtype << " step " << step;
      }
      std::vector<SampleRow> rows;
      for (std::size_t r = 0; r < sets.size(); ++r) rows.push_back({&sets[r], context, 100, 5});
      const Tensor gpu = sampling_probabilities(gpu_logits, rows).to(Device::cpu());
      const Tensor cpu = sampling_probabilities(cpu_logits, rows);
      const std::vector<float> g = gpu.to_vector<float>(), c = cpu.to_vector<float>();
      std::int64_t mask_diffs = 0;
      double max_diff = 0.0;
      for (std::size_t i = 0; i < g.size(); ++i) {
        mask_diffs += (g[i] > 0.0f) != (c[i] > 0.0f);
        max_diff = std::max(max_diff, static_cast<double>(std::abs(g[i] - c[i])));
      }
      EXPECT_EQ(mask_diffs, 0) << "vocab " << vocab << " " << dtype;
      EXPECT_LT(max_diff, 1e-6) << "vocab " << vocab << " " << dtype;
    }
  }
}

// Shapes that take the kernel's other paths: a confident row (most tokens more than 32 nats below
// the top, in the open-ended bin), a row of massive ties (a boundary bin too large for shared
// memory), and cuts that fall in those bins (large top_k).
TEST(SamplingCuda, SkewedAndTiedLogitsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  constexpr std::int64_t kVocab = 152064;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> values(static_cast<std::size_t>(2 * kVocab));
  for (std::int64_t i = 0; i < kVocab; ++i) {
    values[i] = i % 150 == 0 ? 20.0f + normal(rng) : -40.0f + normal(rng);  // confident
    values[kVocab + i] = i % 97 == 0 ? 1.0f + 0.01f * static_cast<float>(i % 7) : 0.0f;  // ties
  }
  const Tensor cpu_logits = Tensor::from_vector(values, {2, kVocab});
  const Tensor gpu_logits = cpu_logits.to(Device::cuda(0));
  std::vector<SamplingParams> sets(6);
  sets[0].top_k = 100000;
  sets[1].top_k = 5000;
  sets[1].top_p = 0.99;
  sets[2].top_p = 0.5;
  sets[3].top_p = 0.999999;
  sets[4].min_p = 1e-9;
  sets[5].top_k = 2000;
  sets[5].temperature = 3.0;
  // Up to 10 generated tokens: the context holds them (the sampler checks that).
  const std::vector<std::int64_t> context = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  for (const SamplingParams& p : sets) {
    for (std::int64_t step = 0; step < 10; ++step) {
      const SampleRow rows[] = {{&p, context, step, 3}, {&p, context, step, 4}};
      EXPECT_EQ(sample(gpu_logits, rows), sample(cpu_logits, rows)) << p.describe();
    }
    const SampleRow rows[] = {{&p, context, 0, 3}, {&p, context, 0, 4}};
    const std::vector<float> g =
        sampling_probabilities(gpu_logits, rows).to(Device::cpu()).to_vector<float>();
    const std::vector<float> c = sampling_probabilities(cpu_logits, rows).to_vector<float>();
    std::int64_t mask_diffs = 0;
    for (std::size_t i = 0; i < g.size(); ++i) mask_diffs += (g[i] > 0.0f) != (c[i] > 0.0f);
    EXPECT_EQ(mask_diffs, 0) << p.describe();
  }
}

TEST(SamplingCuda, RowsDoNotDependOnTheirBatch) {
  SKIP_WITHOUT_GPU();
  const std::vector<SamplingParams> sets = option_sets();
  const auto batch = static_cast<std::int64_t>(sets.size());
  const Tensor logits = random_logits(batch, 32000, 3).to(Device::cuda(0));
  const std::vector<std::int64_t> context = {5, 9, 9, 31999, 0};
  std::vector<SampleRow> rows;
  for (std::size_t r = 0; r < sets.size(); ++r) rows.push_back({&sets[r], context, 2, 1000 + r});
  const std::vector<std::int64_t> together = sample(logits, rows);
  for (std::int64_t r = 0; r < batch; ++r) {
    EXPECT_EQ(sample(logits.narrow(0, r, 1), std::span(&rows[r], 1))[0], together[r]) << r;
  }
}

TEST(SamplingCuda, GreedyEqualsArgmaxWithTiesToTheLowestId) {
  SKIP_WITHOUT_GPU();
  SamplingParams p;
  p.do_sample = false;
  p.repetition_penalty = 1.0001;  // forces the kernel path rather than ops::argmax
  const std::vector<std::int64_t> context = {0};
  const Tensor logits = Tensor::from_vector<float>(
                            {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f, 7.0f, 7.0f, 1.0f, 0.0f}, {2, 5})
                            .to(Device::cuda(0));
  const SampleRow rows[] = {{&p, context, 0, 0}, {&p, {}, 0, 0}};
  EXPECT_EQ(sample(logits, rows), (std::vector<std::int64_t>{1, 0}));
  EXPECT_EQ(sample(logits.to(DType::Float16), rows), (std::vector<std::int64_t>{1, 0}));
}

}  // namespace
}  // namespace strata::engine
