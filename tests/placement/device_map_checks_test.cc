// clean_device_map, check_device_map and the tie check. Expected values are the reference's tests
// and observed outputs (accelerate-semantics.md §1.8.6, §3.7), in Strata's deterministic order.

#include <gtest/gtest.h>

#include "placement/placement_testing.h"
#include "strata/core/error.h"

namespace strata::placement {
namespace {

using testing::LogCapture;
using testing::model_for_test;

TEST(CleanDeviceMap, MergesModulesWhoseEntriesAgree) {
  EXPECT_EQ(clean_device_map({{"a", 0}, {"b", 0}, {"c", 0}}), (DeviceMap{{"", 0}}));
  EXPECT_EQ(clean_device_map({{"a.x", 0}, {"a.y", 0}, {"b.x", 1}, {"b.y", 1}, {"c", 1}}),
            (DeviceMap{{"a", 0}, {"b", 1}, {"c", 1}}));
  EXPECT_EQ(clean_device_map({{"a.x", 0},
                              {"a.y", 0},
                              {"b.x.0", 1},
                              {"b.x.1", 1},
                              {"b.y.0", 2},
                              {"b.y.1", 2},
                              {"c", 2}}),
            (DeviceMap{{"a", 0}, {"b.x", 1}, {"b.y", 2}, {"c", 2}}));
  EXPECT_EQ(clean_device_map({{"a", 0}}), (DeviceMap{{"a", 0}}));
  EXPECT_EQ(clean_device_map({{"a.x", 0}, {"b", 0}, {"a.y", 1}}),
            (DeviceMap{{"a.x", 0}, {"b", 0}, {"a.y", 1}}));
  EXPECT_EQ(clean_device_map({}), DeviceMap{});
}

TEST(CleanDeviceMap, MergedEntryTakesThePlaceOfTheFirstItReplaces) {
  EXPECT_EQ(clean_device_map({{"c", "cpu"}, {"a.x", 0}, {"b", "disk"}, {"a.y", 0}}),
            (DeviceMap{{"c", "cpu"}, {"a", 0}, {"b", "disk"}}));
  // The reference overwrites a module's own entry with what its children agree on.
  EXPECT_EQ(clean_device_map({{"a", 1}, {"a.x", 0}, {"a.y", 0}}), (DeviceMap{{"a", 0}}));
  // "" counts as an entry of the whole model.
  EXPECT_EQ(clean_device_map({{"", 0}, {"b", 0}}), (DeviceMap{{"", 0}}));
  // "a.b" is not inside "a.bc".
  EXPECT_EQ(clean_device_map({{"a.b", 0}, {"a.bc", 1}, {"z", 1}}),
            (DeviceMap{{"a.b", 0}, {"a.bc", 1}, {"z", 1}}));
}

TEST(CleanDeviceMap, RejectsAKeyGivenTwice) {
  EXPECT_THROW(clean_device_map({{"a", 0}, {"a", 1}}), InvalidArgument);
}

TEST(CheckDeviceMap, CoverageAsInTheReference) {
  auto model = model_for_test();
  EXPECT_NO_THROW(check_device_map(*model, {{"", 0}}));
  EXPECT_NO_THROW(check_device_map(*model, {{"linear1", 0}, {"linear2", 1}, {"batchnorm", 1}}));
  try {
    check_device_map(*model, {{"linear1", 0}, {"linear2", 1}});
    ADD_FAILURE() << "accepted a map without batchnorm";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    for (const char* name : {"batchnorm.weight", "batchnorm.bias", "batchnorm.running_mean",
                             "batchnorm.num_batches_tracked", "5 tensors"}) {
      EXPECT_NE(message.find(name), std::string::npos) << message;
    }
    EXPECT_EQ(message.find("linear1.weight"), std::string::npos) << message;
  }
}

TEST(CheckDeviceMap, TensorKeysCoverAndUnknownKeysWarn) {
  auto model = model_for_test();
  LogCapture log;
  check_device_map(
      *model, {{"linear1.weight", 0}, {"linear1.bias", 0}, {"batchnorm", 1}, {"linear2", "cpu"}});
  EXPECT_TRUE(log.warnings.empty()) << log.warnings.front();
  check_device_map(*model, {{"linear1", "cpu"},
                            {"batchnorm", "cpu"},
                            {"linear2", "cpu"},
                            {"invalid_module", 0},
                            {"another_invalid", 1}});
  ASSERT_EQ(log.warnings.size(), 1u);
  EXPECT_TRUE(log.warned("device_map keys do not match any submodules"));
  EXPECT_TRUE(log.warned("invalid_module"));
  EXPECT_TRUE(log.warned("another_invalid"));
}

TEST(CheckDeviceMap, NonPersistentBuffersNeedNoEntryAndLongListsAreCut) {
  testing::Specs tensors = {{"inv_freq", {4}, DType::Float32, true, false}};
  testing::ModuleSpecs modules;
  for (int i = 0; i < 30; ++i) {
    modules.push_back({"l" + std::to_string(i), "Linear"});
    testing::append(tensors, testing::linear("l" + std::to_string(i), 2, 2));
  }
  auto model = testing::make_tree("Model", modules, tensors);
  DeviceMap all;
  for (int i = 0; i < 30; ++i) all.emplace_back("l" + std::to_string(i), 0);
  EXPECT_NO_THROW(check_device_map(*model, all));
  try {
    check_device_map(*model, {{"l0", 0}});
    ADD_FAILURE() << "accepted a map covering one layer of thirty";
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("and 38 more (58 tensors)"), std::string::npos) << message;
  }
}

TEST(CheckTiedParametersOnSameDevice, ReportsSplitGroups) {
  auto model = testing::tied3(1);
  LogCapture log;
  EXPECT_TRUE(check_tied_parameters_on_same_device(*model, {{"", 0}}).empty());
  const auto split = check_tied_parameters_on_same_device(*model, {{"layer1", 0},
                                                                   {"layer2", 0},
                                                                   {"layer3.linear1", 0},
                                                                   {"layer3.batchnorm", 0},
                                                                   {"layer3.linear2", "cpu"}});
  EXPECT_EQ(
      split,
      (std::vector<std::vector<std::string>>{{"layer1.linear2.weight", "layer3.linear2.weight"}}));
  EXPECT_TRUE(log.warned("'layer3.linear2.weight': cpu"));
  EXPECT_THROW(check_tied_parameters_on_same_device(*model, {{"layer1", 0}}), InvalidArgument);
}

}  // namespace
}  // namespace strata::placement
