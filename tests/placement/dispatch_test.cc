// dispatch_model, cpu_offload, disk_offload, cpu_offload_with_hook: every placement gives the
// unoffloaded model's outputs, bit for bit (the same kernels run on the same device). Each test
// runs with a cpu and a cuda:0 execution device; the CUDA instances skip without a GPU backend.

#include "strata/placement/dispatch.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "placement/placement_models.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/nn/hooks.h"
#include "strata/placement/offload.h"

namespace strata::placement {
namespace {

using nn::Module;
using testing::expect_bit_identical;
using testing::randomize;
using testing::Stack;
using testing::stack_input;
using testing::Tree;
using testing::tree_input;

class DispatchTest : public testing::ExecutionDeviceTest {
 protected:
  void SetUp() override {
    ExecutionDeviceTest::SetUp();
    dir_ = std::filesystem::temp_directory_path() /
           ("strata_dispatch_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The input and the model's output for it without any hook, on the execution device.
  std::pair<Tensor, Tensor> reference(Module& model, const Tensor& input) {
    return {input, testing::unhooked_output(model, input, exec_)};
  }

  std::filesystem::path dir_;
};

TEST_P(DispatchTest, CpuOffloadMatchesUnoffloaded) {
  Stack model(4);
  randomize(model, 1);
  const auto [input, expected] = reference(model, stack_input());
  cpu_offload(model, {.execution_device = exec_});
  for (int i = 0; i < 3; ++i) {  // the first forward records the order, the next ones prefetch
    const Tensor out = model(input).tensor();
    EXPECT_TRUE(out.is_cpu()) << "outputs return to the input's device";
    expect_bit_identical(expected, out);
  }
  const auto scheduler = find_scheduler(model);
  ASSERT_NE(scheduler, nullptr);
  EXPECT_EQ(scheduler->stats().casts, 0);
  EXPECT_GT(scheduler->stats().prefetched, 0);
  EXPECT_TRUE(model.get_submodule("blocks.0.fc1").parameter("weight").is_meta());
}

TEST_P(DispatchTest, DiskOffloadMatchesUnoffloaded) {
  Stack model(3);
  randomize(model, 2);
  const auto [input, expected] = reference(model, stack_input());
  disk_offload(model, {.offload_dir = dir_, .execution_device = exec_});
  EXPECT_TRUE(std::filesystem::exists(dir_ / "index.json"));
  for (int i = 0; i < 3; ++i) expect_bit_identical(expected, model(input).tensor());
  if (exec_.is_cuda()) EXPECT_GT(find_scheduler(model)->stats().bytes_read, 0);
}

TEST_P(DispatchTest, StackSplitAcrossDevicesMatches) {
  Stack model(5);
  randomize(model, 3);
  const auto [input, expected] = reference(model, stack_input());
  const DeviceMap map = {{"blocks.0", gpu_or_cpu()}, {"blocks.1", "cpu"}, {"blocks.2", "disk"},
                         {"blocks.3", "cpu"},        {"blocks.4", "disk"}};
  const DispatchResult result = dispatch_model(model, map, {.offload_dir = dir_});
  EXPECT_EQ(result.main_device, exec_);
  EXPECT_TRUE(result.hooked);
  for (int i = 0; i < 3; ++i) expect_bit_identical(expected, model(input).tensor());
}

TEST_P(DispatchTest, TreeWithTiedHeadMatches) {
  Tree model;
  randomize(model, 4);
  const auto [input, expected] = reference(model, tree_input());
  const DeviceMap map = {{"embed", "disk"}, {"layers.0", gpu_or_cpu()}, {"layers.1", "cpu"},
                         {"norm", "disk"},  {"head", gpu_or_cpu()}};
  dispatch_model(model, map, {.offload_dir = dir_});
  for (int i = 0; i < 2; ++i) expect_bit_identical(expected, model(input).tensor());
  // The resident head keeps the real table; the offloaded embedding reads a private placeholder.
  EXPECT_FALSE(model.get_submodule("head").parameter("weight").is_meta());
  EXPECT_TRUE(model.get_submodule("embed").parameter("weight").is_meta());
}

TEST_P(DispatchTest, EverythingOnDiskRuns) {
  Tree model;
  randomize(model, 5);
  const auto [input, expected] = reference(model, tree_input());
  const DispatchResult result =
      dispatch_model(model, {{"", "disk"}}, {.main_device = exec_, .offload_dir = dir_});
  EXPECT_EQ(result.main_device, exec_);
  for (int i = 0; i < 2; ++i) expect_bit_identical(expected, model(input).tensor());
}

TEST_P(DispatchTest, SingleDeviceMovesWithoutHooks) {
  Stack model(2);
  randomize(model, 6);
  const auto [input, expected] = reference(model, stack_input());
  const DispatchResult result = dispatch_model(model, {{"", gpu_or_cpu()}});
  EXPECT_FALSE(result.hooked);
  EXPECT_EQ(model.hook(), nullptr);
  EXPECT_EQ(model.get_submodule("blocks.1.fc2").parameter("weight").device(), exec_);
  expect_bit_identical(expected, model(input.to(exec_)).tensor());
}

TEST_P(DispatchTest, ForceHooksMovesInputs) {
  Stack model(2);
  randomize(model, 7);
  const auto [input, expected] = reference(model, stack_input());
  dispatch_model(model, {{"", gpu_or_cpu()}}, {.force_hooks = true});
  const Tensor out = model(input).tensor();
  EXPECT_TRUE(out.is_cpu());
  expect_bit_identical(expected, out);
}

// Every tensor of the tree: name -> (device, data pointer), to see that nothing moved.
std::vector<std::tuple<std::string, Device, const void*>> placement_of(Module& model) {
  std::vector<std::tuple<std::string, Device, const void*>> out;
  for (const auto& [name, t] : model.state_dict()) {
    out.emplace_back(name, t.device(), t.is_meta() ? nullptr : t.data_ptr());
  }
  return out;
}

TEST_P(DispatchTest, OffloadedModelRefusesToMove) {
  Stack model(3);
  randomize(model, 8);
  const auto [input, expected] = reference(model, stack_input());
  // blocks.0 resident: an unchecked to() would move it before reaching the first placeholder.
  dispatch_model(model, {{"blocks.0", gpu_or_cpu()}, {"blocks.1", "cpu"}, {"blocks.2", "disk"}},
                 {.main_device = exec_, .offload_dir = dir_});
  const auto before = placement_of(model);
  const Device target = exec_.is_cuda() ? Device::cpu() : Device::meta();
  for (const Device device : {exec_, target}) {
    try {
      model.to(device);
      FAIL() << "to(" << device.str() << ") accepted an offloaded model";
    } catch (const InvalidArgument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("cannot move Stack to " + device.str()), std::string::npos) << what;
      // The first offloaded module (a cpu execution device keeps cpu blocks resident).
      const std::string first = exec_.is_cuda() ? "blocks.1.norm" : "blocks.2.norm";
      EXPECT_NE(what.find("module '" + first + "'"), std::string::npos) << what;
      EXPECT_NE(what.find("offloaded to cpu/disk"), std::string::npos) << what;
      EXPECT_NE(what.find("remove_hook_from_module(model, recurse=true)"), std::string::npos)
          << what;
    }
  }
  EXPECT_THROW(model.to(exec_, DType::Float16), InvalidArgument);
  EXPECT_EQ(placement_of(model), before) << "a refused move leaves every tensor where it was";
  for (int i = 0; i < 2; ++i) expect_bit_identical(expected, model(input).tensor());

  // Removing the hooks puts the offloaded weights back (detach_hook): to() works again.
  nn::remove_hook_from_module(model, /*recurse=*/true);
  EXPECT_FALSE(model.get_submodule("blocks.2.fc1").parameter("weight").is_meta());
  model.to(exec_);
  EXPECT_EQ(model.get_submodule("blocks.2.fc1").parameter("weight").device(), exec_);
  expect_bit_identical(expected, model(input.to(exec_)).tensor());
}

TEST_P(DispatchTest, InterruptedDiskOffloadIsRewritten) {
  Stack model(2);
  randomize(model, 9);
  const auto [input, expected] = reference(model, stack_input());
  // What a killed writer leaves: data files, no index.json.
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ / "blocks.0.fc1.weight.dat") << "half-written";
  disk_offload(model, {.offload_dir = dir_, .execution_device = exec_});
  expect_bit_identical(expected, model(input).tensor());
}

TEST_P(DispatchTest, CpuOffloadWithHookChains) {
  auto first = std::make_shared<Stack>(1);
  auto second = std::make_shared<Stack>(1);
  randomize(*first, 10);
  randomize(*second, 11);
  const Tensor input = stack_input();
  const auto [unused1, mid] = reference(*first, input);
  const auto [unused2, expected] = reference(*second, mid);
  const Device requested = exec_.is_cuda() ? Device::cuda() : exec_;  // "cuda": the current GPU
  auto hook1 = cpu_offload_with_hook(first, requested);
  auto hook2 = cpu_offload_with_hook(second, requested, hook1);
  EXPECT_EQ(hook1->hook()->execution_device(), exec_) << "resolved once, never moved again";
  const Tensor h = (*first)(input).tensor();
  EXPECT_EQ(nn::first_parameter_device(*first), exec_);
  const Tensor out = (*second)(h).tensor();
  EXPECT_EQ(nn::first_parameter_device(*first), Device::cpu()) << "the chain offloads model 1";
  expect_bit_identical(expected, out);
  hook2->offload();
  EXPECT_EQ(nn::first_parameter_device(*second), Device::cpu());
}

INSTANTIATE_TEST_SUITE_P(Devices, DispatchTest, ::testing::Values(Device::cpu(), Device::cuda(0)),
                         [](const auto& info) { return info.param.is_cuda() ? "cuda" : "cpu"; });

// ---- bad input -----------------------------------------------------------------------------

TEST(DispatchErrors, DiskWithoutFolderNamesTheModules) {
  Stack model(2);
  try {
    dispatch_model(model, {{"blocks.0", "cpu"}, {"blocks.1", "disk"}});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("offload_dir"), std::string::npos) << e.what();
  }
}

TEST(DispatchErrors, FolderOfAnotherModelIsRefused) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("strata_dispatch_other_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Stack small(1);
  disk_offload(small, {.offload_dir = dir, .execution_device = Device::cpu()});
  Stack bigger(2);
  EXPECT_THROW(disk_offload(bigger, {.offload_dir = dir, .execution_device = Device::cpu()}),
               CheckpointError);
  std::filesystem::remove_all(dir);
}

TEST(DispatchErrors, MainDeviceIsTheFirstGpuInMapOrder) {
  if (find_backend(DeviceType::CUDA) == nullptr) GTEST_SKIP() << "no CUDA backend";
  Stack model(2);
  randomize(model, 12);
  const DispatchResult result = dispatch_model(model, {{"blocks.0", "cpu"}, {"blocks.1", 0}});
  EXPECT_EQ(result.main_device, Device::cuda(0));
  ASSERT_NE(result.scheduler, nullptr);
}

TEST(DispatchErrors, AllCpuWithCpuMainIsNotOffloaded) {
  Stack model(2);
  randomize(model, 13);
  const DispatchResult result = dispatch_model(model, {{"", "cpu"}}, {.force_hooks = true});
  EXPECT_EQ(result.main_device, Device::cpu());
  EXPECT_EQ(result.scheduler, nullptr);  // B15: nothing offloaded, nothing meta
  EXPECT_FALSE(model.get_submodule("blocks.0.fc1").parameter("weight").is_meta());
}

}  // namespace
}  // namespace strata::placement
