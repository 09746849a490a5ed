// The cpu experts of a decode step spread over every core (models/moe_experts.h): each
// projection cut into slices of output features must give exactly the numbers of one product
// (expert_forward, the path every parity test runs), for bfloat16 and float32, one to a few rows,
// slices that do not divide the features evenly; and only plain weights on few rows are cut.

#include "models/moe_experts.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/ops.h"

namespace strata::testing {
namespace {

using models::detail::cpu_experts_forward;
using models::detail::cpu_experts_split;
using models::detail::expert_forward;
using models::detail::ExpertSource;

Tensor random_tensor(const Shape& shape, DType dtype, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::int64_t n = 1;
  for (const std::int64_t s : shape) n *= s;
  std::vector<float> values(static_cast<std::size_t>(n));
  for (float& v : values) v = normal(rng);
  return Tensor::from_vector(values, shape).to(Device::cpu(), dtype);
}

// An offloaded expert as the block resolves it: gate, up, down weights, each its own projection.
ExpertSource expert(std::int64_t hidden, std::int64_t intermediate, DType dtype,
                    std::mt19937& rng) {
  ExpertSource s;
  s.offloaded = true;
  s.stored = {random_tensor({intermediate, hidden}, dtype, rng),
              random_tensor({intermediate, hidden}, dtype, rng),
              random_tensor({hidden, intermediate}, dtype, rng)};
  for (std::size_t i = 0; i < 3; ++i) {
    s.projections[i].names = {"weight"};
    s.projections[i].first = i;
  }
  return s;
}

void expect_same_bits(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  ASSERT_EQ(a.dtype(), b.dtype());
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  EXPECT_EQ(0, std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.nbytes()));
}

struct Case {
  DType dtype;
  std::int64_t experts, rows, hidden, intermediate, threads;
};

class CpuExpertsTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuExpertsTest, SlicesGiveTheNumbersOfOneProduct) {
  const Case c = GetParam();
  std::mt19937 rng(7);
  std::vector<ExpertSource> experts;
  std::vector<Tensor> rows;
  for (std::int64_t i = 0; i < c.experts; ++i) {
    experts.push_back(expert(c.hidden, c.intermediate, c.dtype, rng));
    rows.push_back(random_tensor({c.rows, c.hidden}, c.dtype, rng));
  }
  std::vector<const ExpertSource*> sources;
  std::vector<const std::vector<Tensor>*> tensors;
  for (const ExpertSource& s : experts) {
    sources.push_back(&s);
    tensors.push_back(&s.stored);
  }
  ASSERT_TRUE(cpu_experts_split(sources, rows, c.threads));
  const std::vector<Tensor> got =
      cpu_experts_forward(sources, tensors, models::Activation::SiLU, rows, c.threads);
  ASSERT_EQ(got.size(), experts.size());
  for (std::size_t i = 0; i < experts.size(); ++i) {
    expect_same_bits(
        got[i], expert_forward(experts[i], experts[i].stored, models::Activation::SiLU, rows[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Moe, CpuExpertsTest,
    ::testing::Values(Case{DType::BFloat16, 8, 1, 256, 192, 16},  // 3 slices of 64 features
                      Case{DType::BFloat16, 3, 2, 320, 100, 16},  // 64 + 36
                      Case{DType::BFloat16, 1, 4, 128, 768, 5},   // 5 parts of 768: 3 blocks each
                      Case{DType::Float32, 4, 1, 256, 192, 16},
                      Case{DType::Float32, 2, 3, 96, 130, 9}));

TEST(CpuExperts, OnlyPlainWeightsOnFewRowsAreCut) {
  std::mt19937 rng(3);
  ExpertSource plain = expert(64, 64, DType::Float32, rng);
  const std::vector<Tensor> one_row = {random_tensor({1, 64}, DType::Float32, rng)};
  EXPECT_TRUE(cpu_experts_split({&plain}, one_row, 2));
  EXPECT_FALSE(cpu_experts_split({&plain}, one_row, 1)) << "one thread: nothing to spread";
  EXPECT_FALSE(cpu_experts_split({&plain, &plain}, {one_row[0], one_row[0]}, 3));
  const std::vector<Tensor> prefill = {random_tensor({5, 64}, DType::Float32, rng)};
  EXPECT_FALSE(cpu_experts_split({&plain}, prefill, 16)) << "5 rows take the AMX blocking";
  ExpertSource biased = plain;
  biased.projections[1].names = {"weight", "bias"};
  EXPECT_FALSE(cpu_experts_split({&biased}, one_row, 16));
}

}  // namespace
}  // namespace strata::testing
