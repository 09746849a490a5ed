// Maps over two GPUs, the cpu and disk: the stack and the tied tree dispatched explicitly, and
// loaded with load_checkpoint_and_dispatch planned on two GPU budgets ("balanced" and
// "sequential"), give the outputs of the unoffloaded model on cuda:0 bit for bit. These skip
// unless the CUDA backend has two devices; the plans they rely on are checked everywhere.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "io/io_testing.h"
#include "placement/placement_models.h"
#include "strata/core/backend.h"
#include "strata/nn/init.h"
#include "strata/placement/dispatch.h"
#include "strata/placement/load_and_dispatch.h"

namespace strata::placement {
namespace {

namespace fs = std::filesystem;
using strata::testing::TempDir;
using testing::expect_bit_identical;
using testing::Stack;
using testing::Tree;

const Device kGpu0 = Device::cuda(0);
const Device kGpu1 = Device::cuda(1);

bool two_gpus() {
  const DeviceBackend* cuda = find_backend(DeviceType::CUDA);
  return cuda != nullptr && cuda->device_count() >= 2;
}

// The devices a map uses, in planning order, as "0", "1", "cpu", "disk".
std::vector<std::string> devices_of(const DeviceMap& map) {
  std::vector<MapDevice> devices;
  for (const auto& [name, device] : map) {
    if (std::find(devices.begin(), devices.end(), device) == devices.end()) {
      devices.push_back(device);
    }
  }
  std::sort(devices.begin(), devices.end());
  std::vector<std::string> out;
  for (const MapDevice& d : devices) out.push_back(d.str());
  return out;
}

std::string map_text(const DeviceMap& map) {
  std::string out;
  for (const auto& [name, device] : map) out += name + "=" + device.str() + " ";
  return out;
}

const std::vector<std::string> kEveryTier = {"0", "1", "cpu", "disk"};

// The fixtures of the tests that run on two GPUs (they skip elsewhere), with a temporary folder.
template <class Base>
class NeedsTwoGpus : public Base {
 protected:
  void SetUp() override {
    if (!two_gpus()) GTEST_SKIP() << "needs two CUDA devices";
  }
  TempDir tmp_;
};

// ---- the two models, loaded from a checkpoint --------------------------------------------------

// Six scaled blocks of 4,480 bytes, or the tied tree with four layers (32,640 bytes: embed/head
// 2,048, layers of 7,616, norm 128). Layers are never split: a split layer would add its input
// (on one device) to its children's outputs (on others).
enum class Model { Stack, Tree };
constexpr int kStackBlocks = 6;
constexpr int kTreeLayers = 4;

void PrintTo(Model which, std::ostream* os) { *os << (which == Model::Stack ? "stack" : "tree"); }

std::unique_ptr<nn::Module> make_model(Model which) {
  if (which == Model::Stack)
    return std::make_unique<Stack>(kStackBlocks, testing::kDim, /*scaled=*/true);
  return std::make_unique<Tree>(kTreeLayers);
}

Tensor input_for(Model which) {
  return which == Model::Stack ? testing::stack_input() : testing::tree_input();
}

std::vector<std::vector<std::string>> shards_of(Model which) {
  if (which == Model::Stack) {
    return {{"blocks.0", "blocks.1", "blocks.2"}, {"blocks.3", "blocks.4", "blocks.5"}};
  }
  return {{"embed", "layers.0", "layers.1"}, {"layers.2", "layers.3", "norm", "head"}};
}

// Budgets that leave something to each GPU, the cpu and disk (checked by TwoGpuPlans).
// The first GPU also keeps the largest layer and one prefetch staging slot free.
LoadAndDispatchOptions two_gpu_options(Model which, const std::string& strategy) {
  LoadAndDispatchOptions options;
  options.device_map = parse_device_map_strategy(strategy);
  if (which == Model::Stack) {
    options.no_split_module_classes = {"Block"};
    options.max_memory = MaxMemory{{0, 15000}, {1, 10000}, {"cpu", 10000}};
  } else {
    options.no_split_module_classes = {"Layer"};
    options.max_memory = MaxMemory{{0, 20000}, {1, 10000}, {"cpu", 16000}};
  }
  return options;
}

InferOptions infer_options(const LoadAndDispatchOptions& options) {
  InferOptions infer;
  infer.max_memory = options.max_memory;
  infer.no_split_module_classes = options.no_split_module_classes;
  infer.reserve.staging_slots = options.prefetch.staging_slots - 1;  // as the loader plans
  return infer;
}

using Case = std::tuple<Model, std::string>;  // (model, strategy)

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return ::testing::PrintToString(std::get<0>(info.param)) + "_" + std::get<1>(info.param);
}

class TwoGpuPlans : public ::testing::TestWithParam<Case> {};

// Runs everywhere: the budgets of TwoGpuLoad give a plan over both GPUs, the cpu and disk.
TEST_P(TwoGpuPlans, UseEveryTier) {
  const auto [which, strategy] = GetParam();
  std::unique_ptr<nn::Module> model;
  {
    auto guard = nn::init_empty_weights();
    model = make_model(which);
  }
  const DevicePlan plan = plan_device_map(*model, parse_device_map_strategy(strategy),
                                          infer_options(two_gpu_options(which, strategy)));
  EXPECT_EQ(devices_of(plan.device_map), kEveryTier) << map_text(plan.device_map);
}

INSTANTIATE_TEST_SUITE_P(Strategies, TwoGpuPlans,
                         ::testing::Combine(::testing::Values(Model::Stack, Model::Tree),
                                            ::testing::Values("balanced", "sequential")),
                         case_name);

using TwoGpuLoad = NeedsTwoGpus<::testing::TestWithParam<Case>>;

TEST_P(TwoGpuLoad, OutputsEqualTheUnoffloadedModelOnGpu0) {
  const auto [which, strategy] = GetParam();
  const Tensor input = input_for(which);
  const std::unique_ptr<nn::Module> source = make_model(which);
  const fs::path checkpoint = testing::write_checkpoint(tmp_.path(), *source, shards_of(which));
  const Tensor expected = testing::unhooked_output(*source, input, kGpu0);

  std::unique_ptr<nn::Module> model;
  {
    auto guard = nn::init_empty_weights();
    model = make_model(which);
  }
  LoadAndDispatchOptions options = two_gpu_options(which, strategy);
  options.offload_folder = tmp_ / "offload";
  const LoadAndDispatchResult result = load_checkpoint_and_dispatch(*model, checkpoint, options);
  EXPECT_TRUE(result.load.missing_keys.empty());
  EXPECT_TRUE(result.load.unexpected_keys.empty());
  ASSERT_TRUE(result.dispatch.has_value());
  SCOPED_TRACE(map_text(result.dispatch->device_map));
  EXPECT_EQ(devices_of(result.dispatch->device_map), kEveryTier);
  EXPECT_EQ(result.dispatch->main_device, kGpu0);
  for (int i = 0; i < 3; ++i) {  // the first forward records the order, the next ones prefetch
    const Tensor out = (*model)(input).tensor();
    EXPECT_TRUE(out.is_cpu()) << "outputs return to the input's device";
    expect_bit_identical(expected, out);
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, TwoGpuLoad,
                         ::testing::Combine(::testing::Values(Model::Stack, Model::Tree),
                                            ::testing::Values("balanced", "sequential")),
                         case_name);

// ---- explicit maps ----------------------------------------------------------------------------

using TwoGpuDispatch = NeedsTwoGpus<::testing::Test>;

TEST_F(TwoGpuDispatch, StackOverBothGpusTheCpuAndDisk) {
  Stack model(6);
  testing::randomize(model, 50);
  const Tensor input = testing::stack_input();
  const Tensor expected = testing::unhooked_output(model, input, kGpu0);
  const DeviceMap map = {{"blocks.0", 0},      {"blocks.1", 1}, {"blocks.2", "cpu"},
                         {"blocks.3", "disk"}, {"blocks.4", 1}, {"blocks.5", 0}};
  const DispatchResult result = dispatch_model(model, map, {.offload_dir = tmp_ / "offload"});
  EXPECT_EQ(result.main_device, kGpu0);
  EXPECT_EQ(model.get_submodule("blocks.1.fc1").parameter("weight").device(), kGpu1);
  EXPECT_EQ(model.get_submodule("blocks.5.fc1").parameter("weight").device(), kGpu0);
  for (int i = 0; i < 3; ++i) expect_bit_identical(expected, model(input).tensor());
}

struct TreeMap {
  std::string name;
  DeviceMap map;
  Device main;         // the first GPU in map order
  Device embed_reads;  // where the embedding and the head find the tied table in forward
  Device head_reads;
  bool one_table;  // both read the same storage (else each GPU has its copy)
};
void PrintTo(const TreeMap& c, std::ostream* os) { *os << c.name; }

std::vector<TreeMap> tree_maps() {
  return {
      // Resident on both GPUs: cuda:1 gets its own copy of the table (the reference's per-device
      // tied copies).
      {"embed_gpu0_head_gpu1",
       {{"embed", 0}, {"layers.0", 1}, {"layers.1", "cpu"}, {"norm", "disk"}, {"head", 1}},
       kGpu0,
       kGpu0,
       kGpu1,
       false},
      // The offloaded embedding runs on cuda:0 and reads the folder: the table sits on cuda:1.
      {"embed_disk_head_gpu1",
       {{"embed", "disk"}, {"layers.0", 0}, {"layers.1", 1}, {"norm", "cpu"}, {"head", 1}},
       kGpu0,
       kGpu0,
       kGpu1,
       false},
      // cuda:1 is the main device: the offloaded head runs there and reuses the resident table.
      {"embed_gpu1_head_cpu",
       {{"embed", 1}, {"layers.0", 0}, {"layers.1", "disk"}, {"norm", 1}, {"head", "cpu"}},
       kGpu1,
       kGpu1,
       kGpu1,
       true},
  };
}

using TwoGpuTree = NeedsTwoGpus<::testing::TestWithParam<TreeMap>>;

TEST_P(TwoGpuTree, TiedTreeMatchesGpu0) {
  const TreeMap& c = GetParam();
  Tree model;
  testing::randomize(model, 51);
  const Tensor input = testing::tree_input();
  const Tensor expected = testing::unhooked_output(model, input, kGpu0);
  const DispatchResult result = dispatch_model(model, c.map, {.offload_dir = tmp_ / "offload"});
  EXPECT_EQ(result.main_device, c.main);
  for (int i = 0; i < 3; ++i) {
    expect_bit_identical(expected, model(input).tensor());
    EXPECT_EQ(model.embed_seen().device(), c.embed_reads);
    EXPECT_EQ(model.head_seen().device(), c.head_reads);
    EXPECT_EQ(model.embed_seen().data_ptr() == model.head_seen().data_ptr(), c.one_table);
  }
}

INSTANTIATE_TEST_SUITE_P(Maps, TwoGpuTree, ::testing::ValuesIn(tree_maps()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace strata::placement
