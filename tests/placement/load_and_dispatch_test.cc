// load_checkpoint_and_dispatch on a small sharded checkpoint written with the io writer: an
// empty-initialised stack of blocks, planned by every strategy or mapped explicitly (cpu + disk
// with an offload folder), gives the unoffloaded model's outputs bit for bit. Each case runs with
// a cpu and a cuda:0 execution device; the CUDA instances skip without a GPU backend.

#include "strata/placement/load_and_dispatch.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "io/io_testing.h"
#include "placement/placement_models.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/nn/init.h"

namespace strata::placement {
namespace {

namespace fs = std::filesystem;
using nn::Module;
using strata::testing::TempDir;
using testing::expect_bit_identical;
using testing::kDim;

constexpr int kBlocks = 4;

// Residual MLP blocks with a persistent buffer each: x + scale * fc2(gelu(fc1(norm(x)))).
class Stack : public testing::Stack {
 public:
  Stack() : testing::Stack(kBlocks, kDim, /*scaled=*/true) {}
};

// Random weights, saved as three shards (blocks 0-1, 2, 3) with a model.safetensors.index.json.
fs::path write_checkpoint(const fs::path& dir, Stack& model) {
  return testing::write_checkpoint(dir, model,
                                   {{"blocks.0", "blocks.1"}, {"blocks.2"}, {"blocks.3"}});
}

std::shared_ptr<Stack> empty_stack() {
  auto guard = nn::init_empty_weights();
  return std::make_shared<Stack>();
}

bool names(const DeviceMap& map, bool (MapDevice::*is)() const) {
  for (const auto& [name, device] : map) {
    if ((device.*is)()) return true;
  }
  return false;
}

// (execution device, "auto" | "balanced" | "balanced_low_0" | "sequential" | "explicit")
class LoadAndDispatchTest : public ::testing::TestWithParam<std::tuple<Device, std::string>> {
 protected:
  void SetUp() override {
    exec_ = std::get<0>(GetParam());
    if (exec_.is_cuda() && find_backend(DeviceType::CUDA) == nullptr) {
      GTEST_SKIP() << "no CUDA backend";
    }
    Stack source;
    checkpoint_ = write_checkpoint(tmp_.path(), source);
    source.to(exec_);
    input_ = strata::testing::random_tensor({3, kDim}, DType::Float32, 99);
    expected_ = source(input_.to(exec_)).tensor().to(Device::cpu());
  }
  std::string gpu_or_cpu() const { return exec_.is_cuda() ? "0" : "cpu"; }

  Device exec_ = Device::cpu();
  TempDir tmp_;
  fs::path checkpoint_;
  Tensor input_, expected_;
};

TEST_P(LoadAndDispatchTest, OutputsEqualTheUnoffloadedModel) {
  const std::string& how = std::get<1>(GetParam());
  auto model = empty_stack();
  LoadAndDispatchOptions options;
  options.no_split_module_classes = {"Block"};
  options.offload_folder = tmp_.path() / "offload";
  if (how == "explicit") {
    options.device_map = DeviceMap{{"blocks.0", gpu_or_cpu()},
                                   {"blocks.1", "cpu"},
                                   {"blocks.2", "disk"},
                                   {"blocks.3", "disk"}};
  } else {
    options.device_map = parse_device_map_strategy(how);
    // A block (4,480 bytes) on the first device after the largest-layer reserve, one on the cpu
    // with a GPU: the rest goes to disk. With GPU execution the GPU also reserves the extra
    // prefetch staging slot (one more block), hence the larger GPU budget.
    options.max_memory = exec_.is_cuda() ? MaxMemory{{0, 15000}, {"cpu", 5000}}
                                         : MaxMemory{{"cpu", 10000}};
  }
  const LoadAndDispatchResult result = load_checkpoint_and_dispatch(*model, checkpoint_, options);
  EXPECT_TRUE(result.load.missing_keys.empty());
  EXPECT_TRUE(result.load.unexpected_keys.empty());
  ASSERT_TRUE(result.dispatch.has_value());
  const DispatchResult& dispatch = *result.dispatch;
  std::string map_text;
  for (const auto& [name, device] : dispatch.device_map) {
    map_text += fmt::format("{}={} ", name, device.str());
  }
  SCOPED_TRACE(map_text);
  // Every case offloads something to disk, so the hooks and the scheduler are exercised.
  EXPECT_TRUE(names(dispatch.device_map, &MapDevice::is_disk));
  EXPECT_TRUE(
      names(dispatch.device_map, exec_.is_cuda() ? &MapDevice::is_gpu : &MapDevice::is_cpu));
  EXPECT_EQ(dispatch.main_device, exec_);
  EXPECT_TRUE(dispatch.hooked);
  ASSERT_NE(dispatch.scheduler, nullptr);
  for (int i = 0; i < 3; ++i) {  // the first forward records the order, the next ones prefetch
    const Tensor out = (*model)(input_).tensor();
    EXPECT_TRUE(out.is_cpu()) << "outputs return to the input's device";
    expect_bit_identical(expected_, out);
  }
  EXPECT_EQ(dispatch.scheduler->stats().casts, 0);
  // Offloaded weights are placeholders: the model refuses to move until the hooks are removed.
  EXPECT_THROW(model->to(exec_), InvalidArgument);
  nn::remove_hook_from_module(*model, /*recurse=*/true);
  // Disk weights were never in memory (meta since the load): reload them, then move.
  load_checkpoint_in_model(*model, checkpoint_);
  model->to(exec_);
  expect_bit_identical(expected_, (*model)(input_.to(exec_)).tensor());
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, LoadAndDispatchTest,
    ::testing::Combine(::testing::Values(Device::cpu(), Device::cuda(0)),
                       ::testing::Values("auto", "balanced", "balanced_low_0", "sequential",
                                         "explicit")),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).is_cuda() ? "cuda_" : "cpu_") +
             std::get<1>(info.param);
    });

// ---- bad input -------------------------------------------------------------------------------

class LoadAndDispatchErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    Stack source;
    checkpoint_ = write_checkpoint(tmp_.path(), source);
  }
  // The model is still empty: nothing was loaded or hooked before the error.
  static void expect_untouched(Module& model) {
    for (const auto& [name, module] : model.named_modules()) {
      EXPECT_EQ(module->hook(), nullptr) << name;
    }
    for (const auto& [name, t] : model.named_parameters()) EXPECT_TRUE(t.is_meta()) << name;
  }

  TempDir tmp_;
  fs::path checkpoint_;
};

TEST_F(LoadAndDispatchErrors, MissingCheckpointIsACheckpointErrorNamingIt) {
  auto model = empty_stack();
  const fs::path missing = tmp_.path() / "no-such-model";
  for (const bool with_map : {false, true}) {
    LoadAndDispatchOptions options;
    if (with_map) options.device_map = DeviceMap{{"", "cpu"}};
    try {
      load_checkpoint_and_dispatch(*model, missing, options);
      FAIL() << "a missing checkpoint was accepted";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
    }
    expect_untouched(*model);
  }
}

TEST_F(LoadAndDispatchErrors, MapNamingAnUnknownModuleIsRefusedBeforeLoading) {
  auto model = empty_stack();
  LoadAndDispatchOptions options;
  options.device_map = DeviceMap{{"blocks.0", "cpu"}, {"blocks.1", "cpu"}, {"blocks.2", "cpu"},
                                 {"blocks.3", "cpu"}, {"blocks.7", "cpu"}};
  try {
    load_checkpoint_and_dispatch(*model, checkpoint_, options);
    FAIL() << "a map naming blocks.7 was accepted";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'blocks.7'"), std::string::npos) << what;
    EXPECT_NE(what.find("Stack"), std::string::npos) << what;
  }
  expect_untouched(*model);
  // A map that does not cover every tensor is refused too, naming what is missing.
  options.device_map = DeviceMap{{"blocks.0", "cpu"}, {"blocks.1", "cpu"}, {"blocks.2", "cpu"}};
  try {
    load_checkpoint_and_dispatch(*model, checkpoint_, options);
    FAIL() << "a map without blocks.3 was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.3"), std::string::npos) << e.what();
  }
  expect_untouched(*model);
}

TEST_F(LoadAndDispatchErrors, DiskWeightsNeedingACopyWithoutOffloadFolder) {
  auto model = empty_stack();
  LoadAndDispatchOptions options;
  options.device_map = DeviceMap{{"blocks.0", "cpu"}, {"blocks.1", "cpu"}, {"blocks.2", "cpu"},
                                 {"blocks.3", "disk"}};
  options.dtype = DType::Float16;  // a cast: the disk weights cannot stay views of the file
  try {
    load_checkpoint_and_dispatch(*model, checkpoint_, options);
    FAIL() << "disk weights needing a copy were accepted without an offload folder";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("disk"), std::string::npos) << what;
    EXPECT_NE(what.find("offload_folder"), std::string::npos) << what;
  }
  expect_untouched(*model);
}

}  // namespace
}  // namespace strata::placement
