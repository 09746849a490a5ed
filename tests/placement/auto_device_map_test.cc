// infer_auto_device_map on the reference's test models. Expected maps are the reference's test
// assertions; expected trace lines are its verbose output, verbatim (accelerate-semantics.md §3.3
// and §3.4, observed on Accelerate 1.15). The recorded fixture replayed by device_map_cases covers
// many more maps; these tests pin the decisions behind them.

#include <gtest/gtest.h>

#include "placement/placement_testing.h"

namespace strata::placement {
namespace {

using testing::LogCapture;
using testing::make_tree;
using testing::model_for_test;

DevicePlan verbose_plan(nn::Module& model, InferOptions options) {
  options.verbose = true;
  LogCapture quiet;
  return plan_auto_device_map(model, options);
}

// True when each of `expected` is found in `lines`, in order (one line may hold several, and other
// lines may come between).
::testing::AssertionResult has_in_order(const std::vector<std::string>& lines,
                                        const std::vector<std::string>& expected) {
  std::size_t at = 0;
  for (const std::string& text : expected) {
    while (at < lines.size() && lines[at].find(text) == std::string::npos) ++at;
    if (at == lines.size()) {
      return ::testing::AssertionFailure() << "missing \"" << text << "\" in\n"
                                           << ::testing::PrintToString(lines);
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(InferAutoDeviceMap, T1TraceIsTheReferences) {
  auto model = model_for_test();
  const DevicePlan plan = verbose_plan(*model, {.max_memory = MaxMemory{{0, 200}, {1, 200}}});
  EXPECT_EQ(plan.device_map, (DeviceMap{{"linear1", 0}, {"batchnorm", 1}, {"linear2", 1}}));
  EXPECT_EQ(plan.trace, (std::vector<std::string>{
                            "Treating module linear1.",
                            "Putting linear1 (size=64) (available=100) on 0.",
                            "Treating module batchnorm.",
                            "Not enough space on 0 to put batchnorm (space available 36, module "
                            "size 72).",
                            "This module cannot be split, going to the next device.",
                            "Treating module batchnorm.",
                            "Putting batchnorm (size=72) (available=200) on 1.",
                            "Treating module linear2.",
                            "Putting linear2 (size=100) (available=128) on 1.",
                        }));
  EXPECT_TRUE(plan.minimum_memory.empty());
  EXPECT_EQ(plan.used.str(), "{0: 164, 1: 172}");  // the reserve stays booked on 0
}

TEST(InferAutoDeviceMap, T2ExactFit) {
  auto model = model_for_test();
  EXPECT_EQ(infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 200}, {1, 172}, {2, 200}}}),
            (DeviceMap{{"linear1", 0}, {"batchnorm", 1}, {"linear2", 1}}));
}

TEST(InferAutoDeviceMap, T3TiedModulesGoTogether) {
  testing::ModuleSpecs modules;
  testing::Specs tensors;
  testing::add_model_for_test("", modules, tensors);
  tensors[0].shape = {5, 4};  // model.linear1.weight = model.linear2.weight
  auto model = make_tree("ModelForTest", modules, tensors, {{"linear1.weight", "linear2.weight"}});
  const DevicePlan plan = verbose_plan(*model, {.max_memory = MaxMemory{{0, 200}, {1, 200}}});
  EXPECT_EQ(plan.device_map, (DeviceMap{{"", 0}}));
  EXPECT_EQ(plan.trace, (std::vector<std::string>{
                            "Treating module linear1.",
                            "  Found the relevant tied param groups [['linear1.weight', "
                            "'linear2.weight']]",
                            "  So those parameters need to be taken into account "
                            "['linear2.weight']",
                            "Putting linear1 and ['linear2'] (available=128) on 0.",
                            "Treating module batchnorm.",
                            "Putting batchnorm (size=72) (available=84) on 0.",
                        }));
}

TEST(InferAutoDeviceMap, T4T5SplitsUnlessNoSplit) {
  auto model = testing::seq3();
  const DevicePlan plan = verbose_plan(*model, {.max_memory = MaxMemory{{0, 500}, {1, 500}}});
  EXPECT_TRUE(same_device_map(
      plan.device_map,
      {{"0", 0}, {"1.linear1", 0}, {"1.batchnorm", 0}, {"1.linear2", 1}, {"2", 1}}));
  EXPECT_TRUE(has_in_order(
      plan.trace, {"Putting 0 (size=236) (available=400) on 0.",
                   "Not enough space on 0 to put 1 (space available 164, module size 236).",
                   "Splitting 1.", "Putting 1.linear1 (size=64) (available=164) on 0.",
                   "Putting 1.batchnorm (size=72) (available=100) on 0.",
                   "Not enough space on 0 to put 1.linear2 (space available 28, module size 100).",
                   "This module cannot be split, going to the next device.",
                   "Putting 1.linear2 (size=100) (available=500) on 1.",
                   "Putting 2 (size=236) (available=400) on 1."}));
  EXPECT_TRUE(
      same_device_map(infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 500}, {1, 500}},
                                                     .no_split_module_classes = {"ModelForTest"}}),
                      {{"0", 0}, {"1", 1}, {"2", 1}}));
}

TEST(InferAutoDeviceMap, T6ToT8TiedModulesAreSplitToFit) {
  const MaxMemory budgets = {{0, 400}, {1, 500}};
  auto level1 = testing::tied3(1);
  const DevicePlan t6 = verbose_plan(*level1, {.max_memory = budgets});
  EXPECT_TRUE(same_device_map(t6.device_map, {{"layer1", 0},
                                              {"layer3.linear2", 0},
                                              {"layer2", 1},
                                              {"layer3.linear1", 1},
                                              {"layer3.batchnorm", 1}}));
  EXPECT_TRUE(has_in_order(
      t6.trace,
      {"Not enough space on 0 to put layer1 and ['layer3'] (space available 300, needed "
       "size 392).",
       "Splitting layer3.", "Putting layer1 and ['layer3.linear2'] (available=300) on 0.",
       "Not enough space on 0 to put layer2 (space available 72, module size 236).",
       "Splitting layer2.",
       "Not enough space on 0 to put layer2.linear1 (space available 44, module size 64).",
       "Putting layer2.linear1 (size=64) (available=500) on 1."}));

  auto level2 = testing::tied3(2);
  const DevicePlan t7 = verbose_plan(*level2, {.max_memory = budgets});
  EXPECT_TRUE(same_device_map(t7.device_map, {{"layer1", 0},
                                              {"layer2.linear2", 0},
                                              {"layer3.linear2", 0},
                                              {"layer2.linear1", 1},
                                              {"layer2.batchnorm", 1},
                                              {"layer3.linear1", 1},
                                              {"layer3.batchnorm", 1}}));
  EXPECT_TRUE(has_in_order(
      t7.trace,
      {"Not enough space on 0 to put layer1 and ['layer2', 'layer3']", "needed size 548).",
       "Splitting layer2.", "Not enough space on 0 to put layer1 and ['layer2.linear2', 'layer3']",
       "needed size 412).", "Splitting layer3.",
       "Putting layer1 and ['layer2.linear2', 'layer3.linear2'] (available=328) on 0."}));

  // Two groups: layer2 holds a parameter of each, so it counts twice (B19, kept: conservative).
  auto level3 = testing::tied3(3);
  const DevicePlan t8 = verbose_plan(*level3, {.max_memory = budgets});
  EXPECT_TRUE(same_device_map(t8.device_map, {{"layer1", 0},
                                              {"layer2.linear1", 0},
                                              {"layer2.linear2", 0},
                                              {"layer3.linear2", 0},
                                              {"layer2.batchnorm", 1},
                                              {"layer3.linear1", 1},
                                              {"layer3.batchnorm", 1}}));
  EXPECT_TRUE(has_in_order(
      t8.trace,
      {"Not enough space on 0 to put layer1 and ['layer2', 'layer2', 'layer3']",
       "needed size 608).", "Splitting layer2.", "needed size 428).", "Splitting layer3."}));
}

TEST(InferAutoDeviceMap, T9TiesInsideOneModule) {
  auto model = make_tree(
      "Sequential",
      {{"linear1", "Linear"}, {"linear2", "Linear"}, {"linear3", "Linear"}, {"linear4", "Linear"}},
      [] {
        testing::Specs t = testing::linear("linear1", 4, 4);
        testing::append(t, testing::linear("linear2", 6, 6));
        testing::append(t, testing::linear("linear3", 4, 4));
        testing::append(t, testing::linear("linear4", 6, 6));
        return t;
      }(),
      {{"linear1.weight", "linear3.weight"}, {"linear1.bias", "linear3.bias"}});
  const DevicePlan plan = verbose_plan(*model, {.max_memory = MaxMemory{{0, 250}, {1, 400}}});
  EXPECT_TRUE(same_device_map(plan.device_map,
                              {{"linear1", 0}, {"linear2", 1}, {"linear3", 0}, {"linear4", 1}}));
  EXPECT_TRUE(has_in_order(plan.trace,
                           {"Putting linear1 and ['linear3', 'linear3'] (available=82) on 0."}));
}

TEST(InferAutoDeviceMap, T10SharedPrefixIsNotATie) {
  auto model = make_tree(
      "Model", {{"compute", "LinearModuleAndSubModule"}, {"compute.weight_submodule", "SubModule"}},
      {{"compute.weight", {8, 3}},
       {"compute.bias", {8}},
       {"compute.weight_submodule.parameter", {8, 3}}},
      {{"compute.weight", "compute.weight_submodule.parameter"}});
  const DevicePlan plan = verbose_plan(*model, {.max_memory = MaxMemory{{0, 4}, {"cpu", 96000}}});
  EXPECT_EQ(plan.device_map, (DeviceMap{{"", "cpu"}}));
  EXPECT_TRUE(has_in_order(plan.trace, {"Putting compute.weight and ['compute.weight_submodule'] "
                                        "(available=96000) on cpu."}));
  EXPECT_EQ(plan.minimum_memory.str(), "{0: 96}");
}

// T12/T13: buffers of modules offloaded to cpu stay on the GPU at run time unless offload_buffers.
std::shared_ptr<nn::Module> buffer_model(bool linear3) {
  testing::ModuleSpecs modules;
  testing::Specs tensors;
  testing::add_model_for_test("", modules, tensors);
  tensors.push_back({"linear1.test_buffer1", {10, 2}, DType::Float32, true});
  tensors.push_back({"batchnorm.test_buffer2", {10, 3}, DType::Float32, true});
  tensors.push_back({"linear2.test_buffer3", {10, 3}, DType::Float32, true});
  if (linear3) {
    modules.push_back({"linear3", "Linear"});
    testing::append(tensors, testing::linear("linear3", 4, 5));
    tensors.push_back({"linear3.test_buffer4", {10, 2}, DType::Float32, true});
  }
  return make_tree("ModelForTest", modules, tensors);
}

TEST(InferAutoDeviceMap, T12T13BufferWarning) {
  const std::string warning =
      "Current model requires {} bytes of buffer for offloaded layers, which seems does not fit "
      "any GPU's remaining memory. If you are experiencing a OOM later, please consider using "
      "offload_buffers=True.";
  const auto plan = [](nn::Module& model, MaxMemory budgets, bool offload_buffers) {
    LogCapture quiet;
    return plan_auto_device_map(
        model, {.max_memory = std::move(budgets), .offload_buffers = offload_buffers});
  };
  auto t12 = buffer_model(false);
  const DeviceMap t12_map = {{"linear1", 0}, {"batchnorm", "cpu"}, {"linear2", "cpu"}};
  const DevicePlan warned = plan(*t12, {{0, 400}, {"cpu", "1GB"}}, false);
  EXPECT_TRUE(same_device_map(warned.device_map, t12_map));
  EXPECT_EQ(warned.warnings, std::vector<std::string>{fmt::format(fmt::runtime(warning), 280)});
  const DevicePlan offloaded = plan(*t12, {{0, 400}, {"cpu", "1GB"}}, true);
  EXPECT_TRUE(same_device_map(offloaded.device_map, t12_map));
  EXPECT_TRUE(offloaded.warnings.empty());

  auto t13 = buffer_model(true);
  const DeviceMap t13_map = {
      {"linear1", 0}, {"batchnorm", 1}, {"linear2", "cpu"}, {"linear3", "cpu"}};
  const DevicePlan fits = plan(*t13, {{0, 400}, {1, 400}, {"cpu", "1GB"}}, false);
  EXPECT_TRUE(same_device_map(fits.device_map, t13_map));
  EXPECT_TRUE(fits.warnings.empty());
  const DevicePlan tight = plan(*t13, {{0, 400}, {1, 200}, {"cpu", "1GB"}}, false);
  EXPECT_TRUE(same_device_map(tight.device_map, t13_map));
  EXPECT_EQ(tight.warnings, std::vector<std::string>{fmt::format(fmt::runtime(warning), 200)});
  EXPECT_TRUE(plan(*t13, {{0, 400}, {1, 200}, {"cpu", "1GB"}}, true).warnings.empty());
}

// T14: Sequential(module=Sequential(linear1=Linear(10,4), linear2=Linear(4,4),
// linear3=Linear(4,8))).
std::shared_ptr<nn::Module> fallback_model() {
  testing::Specs tensors = testing::linear("module.linear1", 10, 4);
  testing::append(tensors, testing::linear("module.linear2", 4, 4));
  testing::append(tensors, testing::linear("module.linear3", 4, 8));
  return make_tree("Sequential",
                   {{"module", "Sequential"},
                    {"module.linear1", "Linear"},
                    {"module.linear2", "Linear"},
                    {"module.linear3", "Linear"}},
                   tensors);
}

TEST(InferAutoDeviceMap, T14FallbackAllocation) {
  auto model = fallback_model();
  const DevicePlan plain = verbose_plan(*model, {.max_memory = MaxMemory{{0, 256}}});
  EXPECT_EQ(plain.device_map, (DeviceMap{{"", "disk"}}));
  EXPECT_EQ(plain.minimum_memory.str(), "{0: 336}");
  const DevicePlan fallback =
      verbose_plan(*model, {.max_memory = MaxMemory{{0, 256}}, .fallback_allocation = true});
  EXPECT_TRUE(same_device_map(
      fallback.device_map,
      {{"module.linear1", "disk"}, {"module.linear2", 0}, {"module.linear3", "disk"}}));
  EXPECT_TRUE(fallback.minimum_memory.empty());
  EXPECT_TRUE(
      has_in_order(fallback.trace, {"Putting module.linear2 (size=80) (available=96) on 0."}));
  const auto row = std::find_if(fallback.explain.begin(), fallback.explain.end(),
                                [](const ExplainRow& r) { return r.module == "module.linear2"; });
  ASSERT_NE(row, fallback.explain.end());
  EXPECT_NE(row->reason.find("fallback_allocation"), std::string::npos) << row->reason;
}

TEST(InferAutoDeviceMap, MinimumMemoryAndCpuAsMainDevice) {
  auto model = model_for_test();
  const DevicePlan plan = verbose_plan(*model, {.max_memory = MaxMemory{{0, 100}, {"cpu", 100}}});
  EXPECT_EQ(plan.device_map, (DeviceMap{{"", "disk"}}));
  EXPECT_EQ(plan.minimum_memory.str(), "{0: 164, 'cpu': 164}");
  EXPECT_EQ(infer_auto_device_map(*model, {.max_memory = MaxMemory{{"cpu", 300}}}),
            (DeviceMap{{"", "cpu"}}));
  EXPECT_EQ(infer_auto_device_map(*model, {.max_memory = MaxMemory{{"mps", 1000}}}),
            (DeviceMap{{"", "mps"}}));
  EXPECT_EQ(infer_auto_device_map(*model, {.max_memory = MaxMemory{}}), (DeviceMap{{"", "disk"}}));
}

TEST(InferAutoDeviceMap, CleanResultFalseKeepsEveryDecision) {
  auto model = testing::seq3();
  const DevicePlan plan = plan_auto_device_map(
      *model, {.max_memory = MaxMemory{{0, 300}, {1, 300}}, .clean_result = false});
  EXPECT_EQ(plan.device_map, plan.placements);
  // The sweep's recorded (cleaned) answer for these budgets.
  EXPECT_TRUE(same_device_map(clean_device_map(plan.placements), {{"0.linear1", 0},
                                                                  {"0.batchnorm", 0},
                                                                  {"0.linear2", 1},
                                                                  {"1.linear1", 1},
                                                                  {"1.batchnorm", 1},
                                                                  {"1.linear2", "disk"},
                                                                  {"2", "disk"}}));
  EXPECT_EQ(plan_auto_device_map(*model, {.max_memory = MaxMemory{{0, 300}, {1, 300}}}).device_map,
            clean_device_map(plan.placements));
}

TEST(InferAutoDeviceMap, ExplainRowsCoverEveryDecision) {
  auto model = model_for_test();
  const DevicePlan plan =
      plan_auto_device_map(*model, {.max_memory = MaxMemory{{0, 200}, {1, 200}}});
  ASSERT_EQ(plan.explain.size(), 3u);
  EXPECT_EQ(plan.explain[1].module, "batchnorm");
  EXPECT_EQ(plan.explain[1].size, 72);
  EXPECT_EQ(plan.explain[1].device, MapDevice(1));
  EXPECT_EQ(plan.explain[1].reason,
            "does not fit on 0 (needs 72 B, 36 B available); fits: 72 B "
            "of 200 B available");
  EXPECT_EQ(plan.explain[0].reason,
            "fits: 64 B of 100 B available (100 B kept for the largest "
            "remaining layer)");
  const std::string table = explain_table(plan);
  EXPECT_NE(table.find("module      size  device  reason\n"), std::string::npos) << table;
  EXPECT_NE(table.find("\nbatchnorm   72 B  1       does not fit on 0"), std::string::npos)
      << table;
  EXPECT_TRUE(plan.trace.empty());  // not verbose
}

TEST(InferAutoDeviceMap, DtypeAndSpecialDtypesChangeTheSizes) {
  auto model = model_for_test();
  EXPECT_EQ(infer_auto_device_map(
                *model, {.max_memory = MaxMemory{{0, 150}, {1, 150}}, .dtype = DType::Float16}),
            (DeviceMap{{"", 0}}));
  EXPECT_EQ(infer_auto_device_map(*model, {.max_memory = MaxMemory{{0, 200}, {1, 200}},
                                           .special_dtypes = {{"linear2.weight", DType::Float16}}}),
            (DeviceMap{{"", 0}}));
}

TEST(InferAutoDeviceMap, SameInputSameOutput) {
  auto model = testing::tied3(3);
  const InferOptions options = {.max_memory = MaxMemory{{0, 250}, {1, 250}, {"cpu", 250}}};
  const DeviceMap first = infer_auto_device_map(*model, options);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(infer_auto_device_map(*model, options), first);
}

}  // namespace
}  // namespace strata::placement
