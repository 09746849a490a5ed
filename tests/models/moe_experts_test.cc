// The cpu experts of a decode step spread over every core (models/moe_experts.h,
// cpu/expert_gemv.h): each projection cut into blocks of output features, claimed from one queue,
// must give exactly the numbers of one product (expert_forward, the path every parity test runs),
// weighted like the combination (weigh_rows), for bfloat16, float16 and float32, one to a few
// rows, blocks that do not divide the features evenly, any block sizes; only plain weights on few
// rows are cut; bad jobs are InvalidArgument and a failing activation is rethrown (no hang).

#include "models/moe_experts.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "cpu/expert_gemv.h"
#include "models/expert_routing.h"
#include "strata/core/error.h"
#include "strata/core/tensor.h"
#include "strata/models/layers.h"
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
  ASSERT_TRUE(cpu_experts_split(sources, tensors, rows, c.threads));
  const std::vector<Tensor> got =
      cpu_experts_forward(sources, tensors, models::Activation::SiLU, rows, c.threads);
  ASSERT_EQ(got.size(), experts.size());
  std::vector<Tensor> expected;
  for (std::size_t i = 0; i < experts.size(); ++i) {
    expected.push_back(
        expert_forward(experts[i], experts[i].stored, models::Activation::SiLU, rows[i]));
    expect_same_bits(got[i], expected[i]);
  }
  // Weighted, into views of one buffer of rows (the combination's layout): weigh_rows' bits.
  std::int64_t total = 0;
  for (const Tensor& r : rows) total += r.size(0);
  const Tensor buffer = Tensor::empty({total, c.hidden}, c.dtype, Device::cpu());
  std::vector<Tensor> weights, into;
  std::int64_t at = 0;
  for (const Tensor& r : rows) {
    weights.push_back(random_tensor({r.size(0), 1}, DType::Float32, rng));
    into.push_back(buffer.narrow(0, at, r.size(0)));
    at += r.size(0);
  }
  cpu_experts_forward(sources, tensors, models::Activation::SiLU, rows, weights, into, c.threads);
  for (std::size_t i = 0; i < experts.size(); ++i) {
    const Tensor want = Tensor::empty(into[i].shape(), c.dtype, Device::cpu());
    models::detail::weigh_rows(expected[i], weights[i], want);
    expect_same_bits(into[i], want);
  }
}

TEST_P(CpuExpertsTest, AnyBlockSizeGivesTheSameBits) {
  const Case c = GetParam();
  std::mt19937 rng(11);
  std::vector<ExpertSource> experts;
  std::vector<cpu::CpuExpertJob> jobs;
  for (std::int64_t i = 0; i < c.experts; ++i) {
    experts.push_back(expert(c.hidden, c.intermediate, c.dtype, rng));
    cpu::CpuExpertJob job;
    job.x = random_tensor({c.rows, c.hidden}, c.dtype, rng);
    job.gate = experts.back().stored[0];
    job.up = experts.back().stored[1];
    job.down = experts.back().stored[2];
    jobs.push_back(job);
  }
  for (const cpu::ExpertBlocks blocks :
       {cpu::ExpertBlocks{64, 64}, cpu::ExpertBlocks{128, 192}, cpu::ExpertBlocks{1024, 4096}}) {
    for (cpu::CpuExpertJob& job : jobs) {
      job.gate_out = Tensor::empty({c.rows, c.intermediate}, c.dtype, Device::cpu());
      job.up_out = Tensor::empty({c.rows, c.intermediate}, c.dtype, Device::cpu());
      job.out = Tensor::empty({c.rows, c.hidden}, c.dtype, Device::cpu());
      job.hidden = Tensor();
    }
    cpu::cpu_experts_gemv(
        jobs,
        [&](std::size_t i) {
          jobs[i].hidden = ops::mul(
              models::apply_activation(models::Activation::SiLU, jobs[i].gate_out), jobs[i].up_out);
        },
        c.threads, blocks);
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      expect_same_bits(jobs[i].out, expert_forward(experts[i], experts[i].stored,
                                                   models::Activation::SiLU, jobs[i].x));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Moe, CpuExpertsTest,
    ::testing::Values(Case{DType::BFloat16, 8, 1, 256, 192, 16},  // 3 slices of 64 features
                      Case{DType::BFloat16, 3, 2, 320, 100, 16},  // 64 + 36
                      Case{DType::BFloat16, 1, 4, 128, 768, 5},   // 5 parts of 768: 3 blocks each
                      Case{DType::Float32, 4, 1, 256, 192, 16},
                      Case{DType::Float32, 2, 3, 96, 130, 9},
                      Case{DType::Float16, 5, 1, 192, 320, 3},       // fewer threads than experts
                      Case{DType::BFloat16, 8, 1, 2048, 768, 16}));  // Qwen3-30B-A3B's shape

TEST(CpuExperts, OnlyPlainWeightsOnFewRowsAreCut) {
  std::mt19937 rng(3);
  ExpertSource plain = expert(64, 64, DType::Float32, rng);
  const std::vector<Tensor> one_row = {random_tensor({1, 64}, DType::Float32, rng)};
  const std::vector<const std::vector<Tensor>*> one = {&plain.stored};
  EXPECT_TRUE(cpu_experts_split({&plain}, one, one_row, 2));
  EXPECT_FALSE(cpu_experts_split({&plain}, one, one_row, 1)) << "one thread: nothing to spread";
  EXPECT_TRUE(cpu_experts_split({&plain, &plain}, {&plain.stored, &plain.stored},
                                {one_row[0], one_row[0]}, 2))
      << "one queue of blocks: fewer threads than two per expert still spread";
  const std::vector<Tensor> prefill = {random_tensor({5, 64}, DType::Float32, rng)};
  EXPECT_FALSE(cpu_experts_split({&plain}, one, prefill, 16)) << "5 rows take the AMX blocking";
  ExpertSource biased = plain;
  biased.projections[1].names = {"weight", "bias"};
  EXPECT_FALSE(cpu_experts_split({&biased}, one, one_row, 16));
  const std::vector<Tensor> bf16_row = {one_row[0].to(Device::cpu(), DType::BFloat16)};
  EXPECT_FALSE(cpu_experts_split({&plain}, one, bf16_row, 16)) << "weights of another dtype";
  const std::vector<Tensor> strided = {plain.stored[0].transpose(0, 1), plain.stored[1],
                                       plain.stored[2]};
  EXPECT_FALSE(cpu_experts_split({&plain}, {&strided}, one_row, 16)) << "not contiguous";
}

TEST(CpuExperts, BadJobsAreInvalidArgument) {
  std::mt19937 rng(5);
  cpu::CpuExpertJob job;
  job.x = random_tensor({1, 64}, DType::Float32, rng);
  job.gate = random_tensor({64, 64}, DType::Float32, rng);
  job.up = job.gate;
  job.down = random_tensor({64, 64}, DType::Float32, rng);
  job.gate_out = Tensor::empty({1, 64}, DType::Float32, Device::cpu());
  job.up_out = job.gate_out;
  job.out = Tensor::empty({1, 32}, DType::Float32, Device::cpu());  // should be [1, 64]
  std::vector<cpu::CpuExpertJob> jobs{job};
  const auto noop = [](std::size_t) {};
  EXPECT_THROW(cpu::cpu_experts_gemv(jobs, noop, 4), InvalidArgument);
  jobs[0].out = Tensor::empty({1, 64}, DType::Float32, Device::cpu());
  jobs[0].weights = {1.0f, 2.0f};  // one row
  EXPECT_THROW(cpu::cpu_experts_gemv(jobs, noop, 4), InvalidArgument);
  jobs[0].weights = {};
  jobs[0].gate = random_tensor({64, 64}, DType::BFloat16, rng);
  EXPECT_THROW(cpu::cpu_experts_gemv(jobs, noop, 4), InvalidArgument);
  EXPECT_THROW(cpu::cpu_experts_gemv(jobs, noop, 4, cpu::ExpertBlocks{96, 64}), InvalidArgument);
}

TEST(CpuExperts, TheCallersWorkRunsOnceOnTheCallingThread) {
  std::mt19937 rng(13);
  std::vector<cpu::CpuExpertJob> jobs;
  std::vector<ExpertSource> experts;
  for (int i = 0; i < 4; ++i) {
    experts.push_back(expert(128, 256, DType::Float32, rng));
    cpu::CpuExpertJob job;
    job.x = random_tensor({1, 128}, DType::Float32, rng);
    job.gate = experts.back().stored[0];
    job.up = experts.back().stored[1];
    job.down = experts.back().stored[2];
    job.gate_out = Tensor::empty({1, 256}, DType::Float32, Device::cpu());
    job.up_out = Tensor::empty({1, 256}, DType::Float32, Device::cpu());
    job.out = Tensor::empty({1, 128}, DType::Float32, Device::cpu());
    jobs.push_back(job);
  }
  const auto activate = [&](std::size_t i) {
    jobs[i].hidden = ops::mul(models::apply_activation(models::Activation::SiLU, jobs[i].gate_out),
                              jobs[i].up_out);
  };
  for (const std::int64_t threads : {1, 2, 16}) {
    int runs = 0;
    std::thread::id ran_on;
    cpu::cpu_experts_gemv(jobs, activate, threads, cpu::ExpertBlocks{64, 64}, [&] {
      ++runs;
      ran_on = std::this_thread::get_id();
    });
    EXPECT_EQ(runs, 1) << threads;
    EXPECT_EQ(ran_on, std::this_thread::get_id()) << threads;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      expect_same_bits(jobs[i].out, expert_forward(experts[i], experts[i].stored,
                                                   models::Activation::SiLU, jobs[i].x));
    }
    EXPECT_THROW(cpu::cpu_experts_gemv(jobs, activate, threads, cpu::ExpertBlocks{64, 64},
                                       [] { throw NotSupported("a launch failed"); }),
                 NotSupported)
        << threads;
  }
}

TEST(CpuExperts, AFailingActivationIsRethrownWithoutWaitingForever) {
  std::mt19937 rng(9);
  std::vector<cpu::CpuExpertJob> jobs;
  for (int i = 0; i < 3; ++i) {
    cpu::CpuExpertJob job;
    job.x = random_tensor({1, 128}, DType::Float32, rng);
    job.gate = random_tensor({256, 128}, DType::Float32, rng);
    job.up = random_tensor({256, 128}, DType::Float32, rng);
    job.down = random_tensor({128, 256}, DType::Float32, rng);
    job.gate_out = Tensor::empty({1, 256}, DType::Float32, Device::cpu());
    job.up_out = Tensor::empty({1, 256}, DType::Float32, Device::cpu());
    job.out = Tensor::empty({1, 128}, DType::Float32, Device::cpu());
    jobs.push_back(job);
  }
  const auto fail_second = [&](std::size_t i) {
    if (i == 1) throw NotSupported("activation refused");
    jobs[i].hidden = ops::mul(jobs[i].gate_out, jobs[i].up_out);
  };
  for (const std::int64_t threads : {1, 4}) {
    EXPECT_THROW(cpu::cpu_experts_gemv(jobs, fail_second, threads, cpu::ExpertBlocks{64, 64}),
                 NotSupported);
  }
}

}  // namespace
}  // namespace strata::testing
