// The runtime reserve, get_balanced_memory beyond the recorded cases, and the device_map
// strategies. Balanced values follow the reference's formula (accelerate-semantics.md §1.9): for
// ModelForTest, per GPU = 236 // n + int(1.25 * int(236 / 3)) = 236 // n + 97.

#include <gtest/gtest.h>

#include "placement/balanced_memory.h"
#include "placement/placement_testing.h"
#include "strata/core/error.h"

namespace strata::placement {
namespace {

using testing::LogCapture;
using testing::model_for_test;

TEST(RuntimeReserve, ComesOffTheBudgetBeforePlanning) {
  auto model = model_for_test();
  EXPECT_EQ(infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 236}}}),
            (DeviceMap{{"", 0}}));
  const DevicePlan plan = plan_auto_device_map(
      *model, {.max_memory = MaxMemory{{0, 236}}, .reserve = {.per_device = {{0, 1}}}});
  EXPECT_EQ(plan.max_memory.str(), "{0: 235}");
  EXPECT_EQ(plan.reserved.str(), "{0: 1}");
  // The same plan as a budget lowered by hand.
  EXPECT_EQ(plan.device_map, infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 235}}}));
  EXPECT_TRUE(same_device_map(plan.device_map,
                              {{"linear1", 0}, {"batchnorm", "disk"}, {"linear2", "disk"}}));
}

TEST(RuntimeReserve, PerGpuAppliesToGpusOnly) {
  auto model = model_for_test();
  const DevicePlan plan =
      plan_auto_device_map(*model, {.max_memory = MaxMemory{{0, 300}, {1, 300}, {"cpu", 300}},
                                    .reserve = {.per_device = {{1, 20}}, .per_gpu = 50}});
  EXPECT_EQ(plan.max_memory.str(), "{0: 250, 1: 230, 'cpu': 300}");
  EXPECT_EQ(plan.reserved.str(), "{0: 50, 1: 70}");
}

TEST(RuntimeReserve, LargerThanTheBudgetLeavesNothingAndWarns) {
  auto model = model_for_test();
  LogCapture log;
  const DevicePlan plan = plan_auto_device_map(
      *model, {.max_memory = MaxMemory{{0, 100}, {"cpu", 1000}}, .reserve = {.per_gpu = 150}});
  EXPECT_EQ(plan.max_memory.str(), "{0: 0, 'cpu': 1000}");
  EXPECT_EQ(plan.reserved.str(), "{0: 100}");
  EXPECT_TRUE(log.warned("runtime reserve for 0"));
  EXPECT_EQ(plan.device_map, (DeviceMap{{"", "cpu"}}));
}

TEST(RuntimeReserve, RejectsDevicesWithoutBudgetAndNegativeValues) {
  auto model = model_for_test();
  try {
    plan_auto_device_map(*model,
                         {.max_memory = MaxMemory{{0, 100}}, .reserve = {.per_device = {{1, 10}}}});
    ADD_FAILURE() << "accepted a reserve on a device without budget";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("device 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      plan_auto_device_map(*model, {.max_memory = MaxMemory{{0, 100}}, .reserve = {.per_gpu = -1}}),
      InvalidArgument);
}

TEST(RuntimeReserve, StagingSlotsOnlyWhenSomethingIsOffloaded) {
  auto model = model_for_test();
  const RuntimeReserve staging = {.staging_slots = 1};
  const DevicePlan resident =
      plan_auto_device_map(*model, {.max_memory = MaxMemory{{0, 1000}}, .reserve = staging});
  EXPECT_EQ(resident.device_map, (DeviceMap{{"", 0}}));
  EXPECT_TRUE(resident.reserved.empty());
  // Without the slot: linear1 on 0, the rest on cpu. One slot of the largest unit (linear2,
  // 100 B) leaves GPU 0 with 100 B, all of it kept for the largest layer: everything on cpu.
  EXPECT_TRUE(same_device_map(
      infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 200}, {"cpu", 1000}}}),
      {{"linear1", 0}, {"batchnorm", "cpu"}, {"linear2", "cpu"}}));
  const DevicePlan offloaded = plan_auto_device_map(
      *model, {.max_memory = MaxMemory{{0, 200}, {"cpu", 1000}}, .reserve = staging});
  EXPECT_EQ(offloaded.reserved.str(), "{0: 100}");
  EXPECT_EQ(offloaded.max_memory.str(), "{0: 100, 'cpu': 1000}");
  EXPECT_EQ(offloaded.device_map, (DeviceMap{{"", "cpu"}}));
}

TEST(GetBalancedMemory, NonContiguousGpusWithLowZero) {
  auto model = model_for_test();
  // The reference raises KeyError(1) here (B7); the other GPUs hold what they can.
  EXPECT_EQ(get_balanced_memory(
                *model, {.max_memory = MaxMemory{{0, 300}, {2, 300}, {3, 300}}, .low_zero = true})
                .str(),
            "{0: 0, 2: 215, 3: 300}");
  // No GPU 0 at all: the first GPU plays its part.
  EXPECT_EQ(
      get_balanced_memory(*model, {.max_memory = MaxMemory{{1, 300}, {2, 300}}, .low_zero = true})
          .str(),
      "{1: 0, 2: 300}");
}

TEST(GetBalancedMemory, ALoneMeasuredGpuKeepsTenPercent) {
  auto model = model_for_test();
  const detail::PlanTree tree(*model, {});
  const MaxMemory budgets = {{0, 1000}, {"cpu", 5000}};
  EXPECT_EQ(detail::balance_budgets(tree, budgets, {}, false, /*measured=*/true).str(),
            "{0: 900, 'cpu': 5000}");
  EXPECT_EQ(detail::balance_budgets(tree, budgets, {}, false, /*measured=*/false), budgets);
  EXPECT_EQ(detail::balance_budgets(tree, {{"cpu", 5000}}, {}, true, true).str(), "{'cpu': 5000}");
}

TEST(DeviceMapStrategy, NamesRoundTripAndUnknownNamesAreRejected) {
  for (const char* name : {"auto", "balanced", "balanced_low_0", "sequential"}) {
    EXPECT_EQ(strategy_name(parse_device_map_strategy(name)), name);
  }
  try {
    parse_device_map_strategy("Auto");
    ADD_FAILURE() << "accepted 'Auto'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("balanced_low_0"), std::string::npos) << e.what();
  }
}

TEST(DeviceMapStrategy, BalancedStrategiesPlanOnBalancedBudgets) {
  auto model = model_for_test();
  const MaxMemory two = {{0, 300}, {1, 300}};
  for (DeviceMapStrategy strategy : {DeviceMapStrategy::Auto, DeviceMapStrategy::Balanced}) {
    const DevicePlan plan = plan_device_map(*model, strategy, {.max_memory = two});
    EXPECT_EQ(plan.max_memory.str(), "{0: 215, 1: 300}");
    EXPECT_EQ(plan.device_map,
              infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 215}, {1, 300}}}));
  }
  const DevicePlan low0 = plan_device_map(*model, DeviceMapStrategy::BalancedLow0,
                                          {.max_memory = MaxMemory{{0, 300}, {1, 300}, {2, 300}}});
  EXPECT_EQ(low0.max_memory.str(), "{0: 0, 1: 215, 2: 300}");
  const DevicePlan sequential =
      plan_device_map(*model, DeviceMapStrategy::Sequential, {.max_memory = two});
  EXPECT_EQ(sequential.max_memory, two);
  EXPECT_EQ(sequential.device_map, infer_auto_device_map(*model, {.max_memory = two}));
  // The runtime reserve comes off before balancing.
  const DevicePlan reserved = plan_device_map(*model, DeviceMapStrategy::Balanced,
                                              {.max_memory = two, .reserve = {.per_gpu = 50}});
  EXPECT_EQ(reserved.max_memory.str(), "{0: 215, 1: 250}");
  EXPECT_EQ(reserved.reserved.str(), "{0: 50, 1: 50}");
}

}  // namespace
}  // namespace strata::placement
