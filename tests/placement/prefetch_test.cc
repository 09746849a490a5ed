// The prefetch scheduler's order and bounds, observed through its trace and counters (not
// timing). A cpu execution device runs the same scheduling as a GPU, without copies.

#include "strata/placement/prefetch.h"

#include <gtest/gtest.h>

#include "strata/core/error.h"
#include "strata/nn/hooks.h"
#include "strata/nn/layers.h"
#include "strata/placement/offload.h"
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
    layers.push_back(linear);
  }
  return std::make_shared<nn::Sequential>(layers);
}

// Runs one forward and returns the trace it produced.
Trace forward_trace(nn::Module& model, PrefetchScheduler& scheduler) {
  const std::size_t before = scheduler.trace().size();
  model(strata::testing::random_tensor({2, 8}, DType::Float32, 7));
  return Trace(scheduler.trace().begin() + static_cast<std::ptrdiff_t>(before),
               scheduler.trace().end());
}

std::shared_ptr<PrefetchScheduler> offloaded(nn::Module& model, int slots) {
  cpu_offload(model, {.execution_device = Device::cpu(), .prefetch = {.staging_slots = slots}});
  auto scheduler = find_scheduler(model);
  scheduler->set_trace(true);
  return scheduler;
}

TEST(Prefetch, FirstForwardRecordsTheOrderThenTheNextBlockIsIssuedAhead) {
  auto model = linear_stack(4);
  auto scheduler = offloaded(*model, 2);
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"issue 0", "wait 0", "release 0", "issue 1", "wait 1", "release 1", "issue 2",
                   "wait 2", "release 2", "issue 3", "wait 3", "release 3"}));
  EXPECT_FALSE(scheduler->order_complete());
  // Block i+1 is issued while block i is in use; the last one prefetches the first (next call).
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"issue 0", "wait 0", "issue 1", "release 0", "wait 1", "issue 2", "release 1",
                   "wait 2", "issue 3", "release 2", "wait 3", "issue 0", "release 3"}));
  EXPECT_TRUE(scheduler->order_complete());
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"wait 0", "issue 1", "release 0", "wait 1", "issue 2", "release 1", "wait 2",
                   "issue 3", "release 2", "wait 3", "issue 0", "release 3"}));
  const PrefetchStats& stats = scheduler->stats();
  EXPECT_EQ(stats.onloads, 12);
  EXPECT_EQ(stats.prefetched, 7);
  EXPECT_EQ(stats.max_in_flight, 2);
  EXPECT_EQ(stats.casts, 0);
  const auto order = scheduler->order();
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], nn::find_hook<PrefetchHook>(model->get_submodule("0")));
  EXPECT_EQ(order[3], nn::find_hook<PrefetchHook>(model->get_submodule("3")));
}

TEST(Prefetch, OneSlotNeverPrefetches) {
  auto model = linear_stack(3);
  auto scheduler = offloaded(*model, 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(forward_trace(*model, *scheduler),
              (Trace{"issue 0", "wait 0", "release 0", "issue 1", "wait 1", "release 1",
                     "issue 2", "wait 2", "release 2"}));
  }
  EXPECT_EQ(scheduler->stats().prefetched, 0);
  EXPECT_EQ(scheduler->stats().max_in_flight, 1);
}

TEST(Prefetch, SlotsBoundWhatIsInFlight) {
  auto model = linear_stack(4);
  auto scheduler = offloaded(*model, 3);
  forward_trace(*model, *scheduler);
  EXPECT_EQ(forward_trace(*model, *scheduler),
            (Trace{"issue 0", "wait 0", "issue 1", "issue 2", "release 0", "wait 1", "issue 3",
                   "release 1", "wait 2", "issue 0", "release 2", "wait 3", "issue 1",
                   "release 3"}));
  EXPECT_EQ(scheduler->stats().max_in_flight, 3);
  EXPECT_EQ(scheduler->in_flight(), 2);  // blocks 0 and 1 wait for the next forward
}

TEST(Prefetch, OutOfOrderCallsStayCorrectAndBounded) {
  auto model = linear_stack(4);
  const Tensor input = strata::testing::random_tensor({2, 8}, DType::Float32, 3);
  const Tensor expected = model->get_submodule("2")(input).tensor();
  auto scheduler = offloaded(*model, 2);
  forward_trace(*model, *scheduler);
  forward_trace(*model, *scheduler);
  const Tensor out = model->get_submodule("2")(input).tensor();  // not what the order predicts
  EXPECT_EQ(std::memcmp(out.data_ptr(), expected.to(Device::cpu()).data_ptr(), out.nbytes()), 0);
  EXPECT_LE(scheduler->stats().max_in_flight, 2);
}

TEST(Prefetch, RemovingTheHooksRestoresTheWeights) {
  auto model = linear_stack(2);
  const Tensor weight = model->get_submodule("1").parameter("weight");
  auto scheduler = offloaded(*model, 2);
  forward_trace(*model, *scheduler);
  EXPECT_TRUE(model->get_submodule("1").parameter("weight").is_meta());
  nn::remove_hook_from_submodules(*model);
  EXPECT_EQ(model->get_submodule("1").parameter("weight").data_ptr(), weight.data_ptr());
  EXPECT_TRUE(scheduler->order().empty());
}

TEST(Prefetch, BadOptionsAreRefused) {
  EXPECT_THROW(PrefetchScheduler(Device::cpu(), {.staging_slots = 0}), InvalidArgument);
  // Braces: with parentheses the statement would declare a function (the most vexing parse).
  EXPECT_THROW(PrefetchScheduler{Device::meta()}, InvalidArgument);
}

}  // namespace
}  // namespace strata::placement
