// The execution policy of offloaded units (execution_policy.h), observed through the prefetch
// scheduler's trace and counters: units that compute on the cpu are never issued (copied), the
// streamed ones around them still are, the decision follows the tokens of the step, and the
// result is the streamed one. A cpu execution device runs the same hook path as a GPU (the moves
// are no-ops there); the CUDA parity cases are in tests/models/dispatched_parity_test.cc.

#include <gtest/gtest.h>

#include <cstring>

#include "strata/core/error.h"
#include "strata/nn/hooks.h"
#include "strata/nn/layers.h"
#include "strata/placement/offload.h"
#include "strata/placement/prefetch.h"
#include "support/op_testing.h"

namespace strata::placement {
namespace {

using Trace = std::vector<std::string>;

std::shared_ptr<nn::Sequential> linear_stack(int n) {
  std::vector<std::shared_ptr<nn::Module>> layers;
  for (int i = 0; i < n; ++i) {
    auto linear = std::make_shared<nn::Linear>(8, 8);
    linear->parameter_slot("weight")->set(
        strata::testing::random_tensor({8, 8}, DType::Float32, 100 + i));
    linear->parameter_slot("bias")->set(
        strata::testing::random_tensor({8}, DType::Float32, 50 + i));
    layers.push_back(linear);
  }
  return std::make_shared<nn::Sequential>(layers);
}

Tensor input(std::int64_t tokens) {
  return strata::testing::random_tensor({tokens, 8}, DType::Float32, 7);
}

Trace forward_trace(nn::Module& model, PrefetchScheduler& scheduler, std::int64_t tokens = 2) {
  const std::size_t before = scheduler.trace().size();
  model(input(tokens));
  return Trace(scheduler.trace().begin() + static_cast<std::ptrdiff_t>(before),
               scheduler.trace().end());
}

std::shared_ptr<PrefetchScheduler> offloaded(nn::Module& model, int slots = 2) {
  cpu_offload(model, {.execution_device = Device::cpu(), .prefetch = {.staging_slots = slots}});
  auto scheduler = find_scheduler(model);
  scheduler->set_trace(true);
  return scheduler;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

TEST(OffloadPolicy, NamesParseAndBadOnesAreRefused) {
  EXPECT_EQ(parse_offload_policy("auto"), OffloadPolicy::Auto);
  EXPECT_EQ(parse_offload_policy("stream"), OffloadPolicy::Stream);
  EXPECT_EQ(parse_offload_policy("cpu"), OffloadPolicy::Cpu);
  EXPECT_EQ(offload_policy_name(OffloadPolicy::Cpu), "cpu");
  EXPECT_EQ(execution_policy_name(ExecutionPolicy::Stream), "stream");
  try {
    parse_offload_policy("gpu");
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'gpu'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("auto"), std::string::npos) << e.what();
  }
  PrefetchScheduler scheduler(Device::cpu());
  EXPECT_THROW(scheduler.set_offload_policy(OffloadPolicy::Auto), InvalidArgument);
}

TEST(OffloadPolicy, ForcedCpuNeverIssuesAndGivesTheStreamedResult) {
  auto reference = linear_stack(3);
  const Tensor expected = (*reference)(input(2)).tensor();
  auto model = linear_stack(3);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(forward_trace(*model, *scheduler),
              (Trace{"cpu 0", "release 0", "cpu 1", "release 1", "cpu 2", "release 2"}));
  }
  EXPECT_TRUE(same_bytes((*model)(input(2)).tensor(), expected));
  const PrefetchStats& stats = scheduler->stats();
  EXPECT_EQ(stats.cpu_computes, 12);
  EXPECT_EQ(stats.onloads, 12);
  EXPECT_EQ(stats.issued, 0);
  EXPECT_EQ(stats.max_in_flight, 0);
  // Between forwards the weights are placeholders again, as with streaming.
  EXPECT_TRUE(model->get_submodule("1").parameter("weight").is_meta());
}

TEST(OffloadPolicy, AutoFollowsTheTokensOfTheStepThroughTheThreshold) {
  auto model = linear_stack(2);
  auto scheduler = offloaded(*model);
  std::vector<UnitProfile> asked;
  scheduler->set_offload_policy(OffloadPolicy::Auto, [&](const UnitProfile& profile) {
    asked.push_back(profile);
    return std::int64_t{4};
  });
  EXPECT_EQ(forward_trace(*model, *scheduler, 4),
            (Trace{"cpu 0", "release 0", "cpu 1", "release 1"}));
  EXPECT_EQ(forward_trace(*model, *scheduler, 5),
            (Trace{"issue 0", "wait 0", "issue 1", "release 0", "wait 1", "issue 0", "release 1"}));
  // Unit 0 was prefetched for a step of 5 tokens; the next step has 1: its copies are dropped.
  EXPECT_EQ(forward_trace(*model, *scheduler, 1),
            (Trace{"cpu 0", "release 0", "cpu 1", "release 1"}));
  EXPECT_EQ(scheduler->stats().evicted_for_cpu, 1);
  ASSERT_EQ(asked.size(), 2u);  // once per unit
  EXPECT_EQ(asked[0].module_class, "Linear");
  EXPECT_EQ(asked[0].bytes, (8 * 8 + 8) * 4);
  EXPECT_EQ(asked[0].file_bytes, 0);
  EXPECT_EQ(asked[0].dtype, DType::Float32);
  EXPECT_EQ(asked[0].activation_bytes_per_token, 8 * 4);
  EXPECT_EQ(scheduler->cpu_thresholds(), (std::vector<std::int64_t>{4, 4}));
}

TEST(OffloadPolicy, PrefetchSkipsUnitsThatComputeOnTheCpu) {
  auto reference = linear_stack(4);
  const Tensor expected = (*reference)(input(2)).tensor();
  auto model = linear_stack(4);
  auto scheduler = offloaded(*model);
  int calls = 0;  // units 0 and 2 (asked first and third) compute on the cpu, 1 and 3 stream
  scheduler->set_offload_policy(OffloadPolicy::Auto, [&](const UnitProfile&) {
    return (calls++ % 2 == 0) ? std::int64_t{1} << 30 : std::int64_t{0};
  });
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"cpu 0", "release 0", "issue 1", "wait 1", "release 1", "cpu 2", "release 2",
                   "issue 3", "wait 3", "release 3"}));
  // Once the order is known, the streamed unit after each one is issued ahead; cpu units never.
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"cpu 0", "issue 1", "release 0", "wait 1", "issue 3", "release 1", "cpu 2",
                   "release 2", "wait 3", "issue 1", "release 3"}));
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"cpu 0", "release 0", "wait 1", "issue 3", "release 1", "cpu 2", "release 2",
                   "wait 3", "issue 1", "release 3"}));
  EXPECT_TRUE(same_bytes((*model)(input(2)).tensor(), expected));
  EXPECT_LE(scheduler->stats().max_in_flight, 2);
}

TEST(OffloadPolicy, AlignModuleDeviceIsNotAStep) {
  // align_module_device runs the hook with no input: it wants the weights on the execution
  // device, whatever the policy.
  auto model = linear_stack(2);
  auto scheduler = offloaded(*model);
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  {
    nn::AlignModuleDevice guard(model->get_submodule("1"));
    EXPECT_FALSE(model->get_submodule("1").parameter("weight").is_meta());
  }
  EXPECT_TRUE(model->get_submodule("1").parameter("weight").is_meta());
  EXPECT_EQ(scheduler->stats().cpu_computes, 0);
  EXPECT_EQ(scheduler->stats().issued, 1);
}

TEST(OffloadPolicy, AUnitWithAHookedModuleInsideStreams) {
  auto model = linear_stack(2);
  auto scheduler = std::make_shared<PrefetchScheduler>(Device::cpu());
  scheduler->set_trace(true);
  nn::add_hook_to_module(model->get_submodule("1"), std::make_shared<nn::ModelHook>());
  nn::AlignDevicesOptions options;
  options.execution_device = Device::cpu();
  options.offload = true;
  options.place_submodules = true;
  nn::add_hook_to_module(*model, std::make_shared<PrefetchHook>(options, scheduler));
  scheduler->set_offload_policy(OffloadPolicy::Cpu);
  EXPECT_EQ(forward_trace(*model, *scheduler), (Trace{"issue 0", "wait 0", "release 0"}));
  EXPECT_EQ(scheduler->stats().cpu_computes, 0);
}

}  // namespace
}  // namespace strata::placement
