// attach_execution_device_hook, attach_align_device_hook and attach_align_device_hook_on_blocks
// (accelerate-semantics.md §1.15.6-8, §1.2, §3.9, §3.12): hook trees, preload classes,
// place_submodules, removal.

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

const AlignDevicesHook* align_hook(const Module& module) {
  return find_hook<AlignDevicesHook>(module);
}

class AttachTest : public ExecutionDeviceTest {
 protected:
  void SetUp() override {
    ExecutionDeviceTest::SetUp();
    if (IsSkipped()) return;
    randomize(model_);
    randomize(unused_, 100);
    x_ = random_tensor({2, 3}, DType::Float32, 42);
    expected_ = model_(x_).tensor();
    expected_unused_ = unused_(x_).tensor();
    original_ = snapshot(model_);
  }
  ModelForTest model_;
  ModelWithUnusedSubModulesForTest unused_;
  Tensor x_, expected_, expected_unused_;
  std::vector<std::pair<std::string, std::vector<double>>> original_;
};

TEST_P(AttachTest, AlignDeviceHookOffloadAndRemoval) {
  for (bool with_map : {false, true}) {
    for (bool offload_buffers : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "weights_map " << with_map << " offload_buffers " << offload_buffers);
      AttachOptions options;
      if (with_map) options.weights_map = std::make_shared<InMemoryWeightsMap>(model_.state_dict());
      options.offload_buffers = offload_buffers;
      attach_align_device_hook(model_, device(), /*offload=*/true, options);
      EXPECT_EQ(model_.hook(), nullptr);  // no direct tensors on the root
      EXPECT_TRUE(model_.linear1->weight().is_meta());
      EXPECT_TRUE(model_.batchnorm->parameter("weight").is_meta());
      const Tensor& running_mean = model_.batchnorm->buffer("running_mean");
      if (offload_buffers) {
        EXPECT_TRUE(running_mean.is_meta());
      } else {
        EXPECT_EQ(running_mean.device(), device());
      }
      if (with_map) {
        const auto* view = dynamic_cast<const PrefixedWeightsMap*>(
            align_hook(*model_.linear2)->weights_map().get());
        ASSERT_NE(view, nullptr);
        EXPECT_EQ(view->prefix(), "linear2.");
      }
      const Tensor y = model_(x_).tensor();
      EXPECT_EQ(y.device(), device());
      EXPECT_TRUE(same_values(y, expected_));
      remove_hook_from_submodules(model_);
      EXPECT_EQ(snapshot(model_), original_);
      for (const auto& [name, tensor] : model_.state_dict()) EXPECT_TRUE(tensor.is_cpu()) << name;
    }
  }
}

TEST_P(AttachTest, CpuOffloadShapedTreeReturnsOutputsOnTheInputDevice) {
  // cpu_offload's tree (§1.2): a root io_same_device hook with no execution device, then
  // attach_align_device_hook with offload over the model.
  add_hook_to_module(
      model_, std::make_shared<AlignDevicesHook>(AlignDevicesOptions{.io_same_device = true}),
      /*append=*/true);
  AttachOptions options;
  options.weights_map = std::make_shared<InMemoryWeightsMap>(model_.state_dict());
  attach_align_device_hook(model_, device(), true, options);
  EXPECT_FALSE(align_hook(model_)->execution_device().has_value());
  EXPECT_TRUE(align_hook(*model_.batchnorm)->offload());
  const Tensor y = model_(x_).tensor();
  EXPECT_TRUE(y.is_cpu());
  EXPECT_TRUE(same_values(y, expected_));
}

TEST_P(AttachTest, PreloadClassesLoadWholeSubtrees) {
  AttachOptions options;
  options.preload_module_classes = {"ModuleWithUnusedSubModules"};
  attach_align_device_hook(unused_, device(), true, options);
  for (Module* wrapper :
       std::initializer_list<Module*>{unused_.linear1.get(), unused_.linear4.get()}) {
    ASSERT_NE(align_hook(*wrapper), nullptr);
    EXPECT_TRUE(align_hook(*wrapper)->options().place_submodules);
  }
  EXPECT_EQ(unused_.linear1->linear->hook(), nullptr);  // recursion stops at the preload class
  EXPECT_TRUE(unused_.linear1->linear->weight().is_meta());
  EXPECT_FALSE(align_hook(*unused_.batchnorm)->options().place_submodules);
  EXPECT_TRUE(same_values(unused_(x_).tensor(), expected_unused_));
  remove_hook_from_submodules(unused_);
  EXPECT_TRUE(unused_.linear3->linear->weight().is_cpu());
}

TEST_P(AttachTest, WithoutPreloadUncalledSubmodulesStayOnMeta) {
  attach_align_device_hook(unused_, device(), true);
  EXPECT_NE(unused_.linear1->linear->hook(), nullptr);
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)unused_(x_); }, {"meta"}));
}

TEST_P(AttachTest, ExecutionDeviceHookOnStatefulModulesOnly) {
  Sequential outer({std::make_shared<ReLU>()});
  auto model = std::make_shared<ModelWithUnusedSubModulesForTest>();
  outer.push_back(model);
  auto existing = std::make_shared<ModelHook>();
  add_hook_to_module(*model->linear2, existing);
  attach_execution_device_hook(outer, device(), {}, {"ModuleWithUnusedSubModules"});
  EXPECT_NE(align_hook(outer), nullptr);  // state in its subtree
  EXPECT_EQ(outer[0].hook(), nullptr);    // a ReLU holds no state
  EXPECT_NE(align_hook(*model), nullptr);
  EXPECT_EQ(model->linear2->hook_ptr(), existing);  // existing hooks are kept
  EXPECT_NE(align_hook(*model->linear1), nullptr);
  EXPECT_EQ(model->linear1->linear->hook(), nullptr);  // preload class: no recursion
  EXPECT_NE(align_hook(*model->batchnorm), nullptr);
}

TEST_P(AttachTest, OnBlocksScalarResident) {
  attach_align_device_hook_on_blocks(model_, device(), /*offload=*/false);
  const AlignDevicesHook* hook = align_hook(model_);
  ASSERT_NE(hook, nullptr);
  EXPECT_TRUE(hook->options().place_submodules);
  EXPECT_TRUE(hook->options().io_same_device);
  EXPECT_EQ(model_.linear1->hook(), nullptr);
  EXPECT_EQ(model_.batchnorm->buffer("running_var").device(), device());
  const Tensor y = model_(x_).tensor();
  EXPECT_TRUE(y.is_cpu());
  EXPECT_TRUE(same_values(y, expected_));
}

TEST_P(AttachTest, OnBlocksScalarOffloadHonoursPreloadClasses) {
  AttachOptions options;
  options.preload_module_classes = {"ModuleWithUnusedSubModules"};
  attach_align_device_hook_on_blocks(unused_, device(), /*offload=*/true, options);  // B21
  EXPECT_TRUE(align_hook(*unused_.linear2)->options().place_submodules);
  EXPECT_EQ(unused_.linear2->linear->hook(), nullptr);
  EXPECT_TRUE(same_values(unused_(x_).tensor(), expected_unused_));
}

TEST_P(AttachTest, OnBlocksPerModuleTree) {
  // dispatch_model's tree for {linear1: cpu, linear2: disk, batchnorm: cpu, linear3: 0,
  // linear4: 0} with preload classes (§3.12): offloaded blocks load from the model's map.
  const Device d = device();
  AttachOptions options;
  options.weights_map = std::make_shared<InMemoryWeightsMap>(unused_.state_dict());
  options.preload_module_classes = {"ModuleWithUnusedSubModules"};
  attach_align_device_hook_on_blocks(
      unused_,
      PerModule<Device>(
          {{"linear1", d}, {"linear2", d}, {"batchnorm", d}, {"linear3", d}, {"linear4", d}}),
      PerModule<bool>({{"linear1", true},
                       {"linear2", true},
                       {"batchnorm", true},
                       {"linear3", false},
                       {"linear4", false}}),
      options);
  const AlignDevicesHook* root = align_hook(unused_);
  ASSERT_NE(root, nullptr);
  EXPECT_TRUE(root->options().io_same_device);
  EXPECT_FALSE(root->execution_device().has_value());
  for (Module* m : std::initializer_list<Module*>{unused_.linear1.get(), unused_.linear2.get()}) {
    EXPECT_TRUE(align_hook(*m)->offload());
    EXPECT_TRUE(align_hook(*m)->options().place_submodules);
    EXPECT_EQ(dynamic_cast<const PrefixedWeightsMap*>(align_hook(*m)->weights_map().get())
                  ->prefix()
                  .substr(0, 6),
              "linear");
  }
  EXPECT_TRUE(align_hook(*unused_.batchnorm)->offload());
  for (Module* m : std::initializer_list<Module*>{unused_.linear3.get(), unused_.linear4.get()}) {
    EXPECT_FALSE(align_hook(*m)->offload());
    EXPECT_TRUE(align_hook(*m)->options().place_submodules);
    EXPECT_EQ(unused_.linear3->linear->weight().device(), d);
  }
  // The reference also hooks linear3.linear here; preload classes are honoured (issue #3415).
  EXPECT_EQ(unused_.linear3->linear->hook(), nullptr);
  const Tensor y = unused_(x_).tensor();
  EXPECT_TRUE(y.is_cpu());
  EXPECT_TRUE(same_values(y, expected_unused_));
}

TEST_P(AttachTest, OnBlocksScalarDeviceBroadcastsToOffloadNames) {
  AttachOptions options;
  options.weights_map = std::make_shared<InMemoryWeightsMap>(model_.state_dict());
  attach_align_device_hook_on_blocks(
      model_, device(),
      PerModule<bool>({{"linear1", true}, {"batchnorm", false}, {"linear2", true}}), options);
  EXPECT_FALSE(align_hook(model_)->execution_device().has_value());  // "" is not named
  EXPECT_TRUE(align_hook(*model_.linear1)->offload());
  EXPECT_FALSE(align_hook(*model_.batchnorm)->offload());
  EXPECT_TRUE(model_.linear2->weight().is_meta());
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_));
}

// What the test factory makes: a subclass, to tell its hooks from plain ones.
class MadeHook : public AlignDevicesHook {
 public:
  using AlignDevicesHook::AlignDevicesHook;
};

TEST_P(AttachTest, HookFactoryBuildsEveryAttachedHook) {
  int made = 0;
  AttachOptions options;
  options.weights_map = std::make_shared<InMemoryWeightsMap>(unused_.state_dict());
  options.make_hook = [&](AlignDevicesOptions o) -> std::shared_ptr<AlignDevicesHook> {
    ++made;
    return std::make_shared<MadeHook>(std::move(o));
  };
  const Device d = device();
  attach_align_device_hook_on_blocks(
      unused_, PerModule<Device>({{"batchnorm", d}, {"linear3", d}, {"linear4", d}}),
      PerModule<bool>({{"batchnorm", true}, {"linear3", false}, {"linear4", false}}), options);
  // The root's io hook, batchnorm (offloaded), linear3 and linear4 (resident blocks).
  EXPECT_EQ(made, 4);
  for (Module* m : std::initializer_list<Module*>{&unused_, unused_.batchnorm.get(),
                                                  unused_.linear3.get(), unused_.linear4.get()}) {
    EXPECT_NE(dynamic_cast<MadeHook*>(m->hook()), nullptr) << m->class_name();
  }
  EXPECT_TRUE(find_hook<MadeHook>(*unused_.batchnorm)->offload());
  // The execution-device hooks of resident blocks' descendants stay plain.
  ASSERT_NE(unused_.linear3->linear->hook(), nullptr);
  EXPECT_EQ(dynamic_cast<MadeHook*>(unused_.linear3->linear->hook()), nullptr);
  EXPECT_TRUE(same_values(unused_(x_).tensor(), expected_unused_));
  remove_hook_from_submodules(unused_);

  made = 0;
  options.weights_map = std::make_shared<InMemoryWeightsMap>(model_.state_dict());
  attach_align_device_hook(model_, device(), /*offload=*/true, options);
  EXPECT_EQ(made, 3);  // linear1, batchnorm, linear2
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_));
  remove_hook_from_submodules(model_);
  EXPECT_EQ(snapshot(model_), original_);

  options.make_hook = [](AlignDevicesOptions) { return std::shared_ptr<AlignDevicesHook>(); };
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { attach_align_device_hook(model_, device(), true, options); }, {"make_hook", "null"}));
}

STRATA_INSTANTIATE_DEVICE_TESTS(AttachTest);

}  // namespace
}  // namespace strata::testing
