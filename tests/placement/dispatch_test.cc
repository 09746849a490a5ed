// dispatch_model, cpu_offload, disk_offload, cpu_offload_with_hook: every placement gives the
// unoffloaded model's outputs, bit for bit (the same kernels run on the same device). Each test
// runs with a cpu and a cuda:0 execution device; the CUDA instances skip without a GPU backend.

#include "strata/placement/dispatch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/nn/hooks.h"
#include "strata/nn/layers.h"
#include "strata/ops.h"
#include "strata/placement/offload.h"
#include "support/op_testing.h"

namespace strata::placement {
namespace {

using nn::Args;
using nn::Module;
using nn::Value;

constexpr std::int64_t kDim = 16;

// Residual MLP block: x + fc2(gelu(fc1(norm(x)))).
class Block : public Module {
 public:
  Block() : Module("Block") {
    norm_ = register_module("norm", std::make_shared<nn::LayerNorm>(kDim));
    fc1_ = register_module("fc1", std::make_shared<nn::Linear>(kDim, 2 * kDim));
    fc2_ = register_module("fc2", std::make_shared<nn::Linear>(2 * kDim, kDim));
  }
  Value forward(Args& args) override {
    const Tensor& x = args.tensor(0, "Block");
    const Tensor h = (*fc1_)((*norm_)(x)).tensor();
    return ops::add(x, (*fc2_)(ops::gelu(h)).tensor());
  }

 private:
  std::shared_ptr<Module> norm_, fc1_, fc2_;
};

class Stack : public Module {
 public:
  explicit Stack(int n) : Module("Stack") {
    blocks_ = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < n; ++i) blocks_->push_back(std::make_shared<Block>());
  }
  Value forward(Args& args) override {
    Value x = args.positional.at(0);
    for (const auto& [name, block] : blocks_->direct_children()) x = (*block)(x);
    return x;
  }

 private:
  std::shared_ptr<nn::ModuleList> blocks_;
};

// The output head reads the embedding table (one slot bound under two names).
class TiedHead : public Module {
 public:
  explicit TiedHead(const nn::SlotPtr& table) : Module("TiedHead") {
    register_parameter("weight", table);
  }
  Value forward(Args& args) override {
    return ops::linear(args.tensor(0, "TiedHead"), parameter("weight"));
  }
};

// A transformer-like tree: embedding, two layers with an attention-like product, final norm,
// a head tied to the embedding.
class Layer : public Module {
 public:
  Layer() : Module("Layer") {
    q_ = register_module("q", std::make_shared<nn::Linear>(kDim, kDim));
    v_ = register_module("v", std::make_shared<nn::Linear>(kDim, kDim, /*bias=*/false));
    o_ = register_module("o", std::make_shared<nn::Linear>(kDim, kDim));
    mlp_ = register_module("mlp", std::make_shared<Block>());
  }
  Value forward(Args& args) override {
    const Tensor& x = args.tensor(0, "Layer");
    const Tensor attn = ops::mul((*q_)(x).tensor(), (*v_)(x).tensor());
    return (*mlp_)(ops::add(x, (*o_)(attn).tensor()));
  }

 private:
  std::shared_ptr<Module> q_, v_, o_, mlp_;
};

class Tree : public Module {
 public:
  Tree() : Module("Tree") {
    embed_ = register_module("embed", std::make_shared<nn::Embedding>(32, kDim));
    layers_ = register_module("layers", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < 2; ++i) layers_->push_back(std::make_shared<Layer>());
    norm_ = register_module("norm", std::make_shared<nn::LayerNorm>(kDim));
    head_ = register_module("head", std::make_shared<TiedHead>(embed_->parameter_slot("weight")));
  }
  Value forward(Args& args) override {
    Value x = (*embed_)(args.positional.at(0));
    for (const auto& [name, layer] : layers_->direct_children()) x = (*layer)(x);
    return (*head_)((*norm_)(x));
  }

 private:
  std::shared_ptr<Module> embed_, norm_, head_;
  std::shared_ptr<nn::ModuleList> layers_;
};

void randomize(Module& model, std::uint64_t seed) {
  for (const nn::TensorRef& ref : model.tensor_refs(true, true, true)) {
    const Tensor& t = ref.tensor();
    if (is_floating_point(t.dtype())) {
      ref.slot->set(strata::testing::random_tensor(t.shape(), t.dtype(), seed++));
    }
  }
}

void expect_bit_identical(const Tensor& expected, const Tensor& actual) {
  ASSERT_EQ(expected.shape(), actual.shape());
  ASSERT_EQ(expected.dtype(), actual.dtype());
  const Tensor e = expected.to(Device::cpu()).contiguous();
  const Tensor a = actual.to(Device::cpu()).contiguous();
  EXPECT_EQ(std::memcmp(e.data_ptr(), a.data_ptr(), e.nbytes()), 0)
      << "outputs differ: expected " << e.describe() << ", got " << a.describe();
}

class DispatchTest : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    exec_ = GetParam();
    if (exec_.is_cuda() && find_backend(DeviceType::CUDA) == nullptr) {
      GTEST_SKIP() << "no CUDA backend";
    }
    dir_ = std::filesystem::temp_directory_path() /
           ("strata_dispatch_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The stack's input and its output without any hook, on the execution device.
  template <class M>
  std::pair<Tensor, Tensor> reference(M& model, const Tensor& input) {
    model.to(exec_);
    Tensor out = model(input.to(exec_)).tensor();
    model.to(Device::cpu());
    return {input, out.to(Device::cpu())};
  }
  std::string gpu_or_cpu() const { return exec_.is_cuda() ? "0" : "cpu"; }

  Device exec_ = Device::cpu();
  std::filesystem::path dir_;
};

Tensor stack_input() { return strata::testing::random_tensor({3, kDim}, DType::Float32, 99); }
Tensor tree_input() { return Tensor::from_vector<std::int64_t>({1, 5, 31, 0, 7}, {5}); }

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
