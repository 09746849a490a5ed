// AlignDevicesHook (accelerate-semantics.md §1.15.5, §3.9): weights and inputs on the execution
// device, offload to meta and back between forwards, offload_buffers, io_same_device, skip_keys,
// tied weights; has_offloaded_params and align_module_device (§1.15.10).

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

std::shared_ptr<AlignDevicesHook> align(AlignDevicesOptions options) {
  return std::make_shared<AlignDevicesHook>(std::move(options));
}

class AlignDevicesHookTest : public ExecutionDeviceTest {
 protected:
  void SetUp() override {
    ExecutionDeviceTest::SetUp();
    if (IsSkipped()) return;
    randomize(model_);
    x_ = random_tensor({2, 3}, DType::Float32, 42);
    expected_ = model_(x_).tensor();
    original_ = snapshot(model_);
  }
  // Every parameter is on the cpu again with its original values.
  void expect_restored() {
    for (const auto& [name, tensor] : model_.named_parameters()) {
      EXPECT_TRUE(tensor.is_cpu()) << name;
    }
    EXPECT_EQ(snapshot(model_), original_);
  }
  AlignDevicesOptions offload_options(bool offload_buffers = false) const {
    AlignDevicesOptions o;
    o.execution_device = device();
    o.offload = true;
    o.offload_buffers = offload_buffers;
    return o;
  }
  ModelForTest model_;
  Tensor x_, expected_;
  std::vector<std::pair<std::string, std::vector<double>>> original_;
};

TEST_P(AlignDevicesHookTest, MovesWeightsAtAttachAndInputsAtForward) {
  for (Module* m : std::initializer_list<Module*>{model_.linear1.get(), model_.batchnorm.get(),
                                                  model_.linear2.get()}) {
    add_hook_to_module(*m, align({.execution_device = device()}));
  }
  EXPECT_EQ(model_.linear1->weight().device(), device());
  EXPECT_EQ(model_.batchnorm->buffer("running_mean").device(), device());
  EXPECT_EQ(model_.linear2->weight().device(), device());
  const Tensor y = model_(x_).tensor();  // a cpu input
  EXPECT_EQ(y.device(), device());
  EXPECT_TRUE(same_values(y, expected_));
  // An io_same_device hook on the root brings the output back to the input's device.
  add_hook_to_module(model_, align({.io_same_device = true}));
  const Tensor back = model_(x_).tensor();
  EXPECT_TRUE(back.is_cpu());
  EXPECT_TRUE(same_values(back, expected_));
}

TEST_P(AlignDevicesHookTest, OffloadKeepsWeightsOnMetaBetweenForwards) {
  auto probe = std::make_shared<WeightProbe>("weight");
  for (Module* m : std::initializer_list<Module*>{model_.linear1.get(), model_.batchnorm.get(),
                                                  model_.linear2.get()}) {
    add_hook_to_module(*m, align(offload_options()));
  }
  add_hook_to_module(*model_.linear1, probe, /*append=*/true);
  for (const auto& [name, tensor] : model_.named_parameters())
    EXPECT_TRUE(tensor.is_meta()) << name;
  EXPECT_EQ(model_.batchnorm->buffer("running_mean").device(), device());  // buffers stay resident
  EXPECT_TRUE(has_offloaded_params(*model_.linear1));
  for (int pass = 0; pass < 2; ++pass) {
    const Tensor y = model_(x_).tensor();
    EXPECT_EQ(y.device(), device());
    EXPECT_TRUE(same_values(y, expected_)) << "pass " << pass;
    EXPECT_EQ(probe->seen.device(), device());        // loaded for the forward
    EXPECT_TRUE(model_.linear1->weight().is_meta());  // and dropped after it
  }
  for (Module* m : std::initializer_list<Module*>{model_.linear1.get(), model_.batchnorm.get(),
                                                  model_.linear2.get()}) {
    remove_hook_from_module(*m);
  }
  expect_restored();
  EXPECT_TRUE(model_.batchnorm->buffer("running_mean").is_cpu());
}

TEST_P(AlignDevicesHookTest, OffloadBuffers) {
  add_hook_to_module(*model_.batchnorm, align(offload_options(/*offload_buffers=*/true)));
  EXPECT_TRUE(model_.batchnorm->buffer("running_mean").is_meta());
  EXPECT_TRUE(model_.batchnorm->buffer("num_batches_tracked").is_meta());
  model_.linear1->to(device());
  model_.linear2->to(device());
  EXPECT_TRUE(same_values(model_(x_.to(device())).tensor(), expected_));
  EXPECT_TRUE(model_.batchnorm->buffer("running_var").is_meta());
  remove_hook_from_module(*model_.batchnorm);
  model_.to(Device::cpu());
  expect_restored();
}

TEST_P(AlignDevicesHookTest, NonPersistentBuffersStayResidentWithOffloadBuffers) {
  model_.linear1->register_buffer("mask", Tensor::ones({4}), /*persistent=*/false);
  auto hook = align(offload_options(true));
  add_hook_to_module(*model_.linear1, hook);
  EXPECT_EQ(model_.linear1->buffer("mask").device(), device());
  ASSERT_EQ(hook->offloaded_tensors().size(), 2u);
  EXPECT_EQ(hook->offloaded_tensors()[0].name, "weight");
  EXPECT_EQ(hook->offloaded_tensors()[1].name, "bias");
}

TEST_P(AlignDevicesHookTest, SkipKeysAndInputDevices) {
  // A module that reports where its inputs arrived.
  class Recorder : public Module {
   public:
    Recorder() : Module("Recorder") {}
    Value forward(Args& args) override {
      devices.clear();
      devices.push_back(args.positional[0].tensor().device());
      for (const auto& [key, value] : args.keywords) devices.push_back(value.tensor().device());
      return args.positional[0];
    }
    std::vector<Device> devices;
  } recorder;
  add_hook_to_module(recorder, align({.execution_device = device(), .skip_keys = {"keep"}}));
  Args args{Value(Tensor::ones({1}))};
  args.keywords.set("keep", Tensor::ones({1}));
  args.keywords.set("move", Tensor::ones({1}));
  (void)recorder(std::move(args));
  EXPECT_EQ(recorder.devices, (std::vector<Device>{device(), Device::cpu(), device()}));
}

TEST_P(AlignDevicesHookTest, HasOffloadedParams) {
  EXPECT_FALSE(has_offloaded_params(*model_.linear1));
  add_hook_to_module(*model_.linear2, align({.execution_device = device()}));
  EXPECT_FALSE(has_offloaded_params(*model_.linear2));
  add_hook_to_module(*model_.linear1, align(offload_options()));
  add_hook_to_module(*model_.linear1, std::make_shared<ModelHook>(), /*append=*/true);
  EXPECT_TRUE(has_offloaded_params(*model_.linear1));  // found inside the SequentialHook
}

TEST_P(AlignDevicesHookTest, OffloadedModuleRefusesToMoveAndTheTreeStaysPut) {
  add_hook_to_module(*model_.linear1, align({.execution_device = device()}));
  add_hook_to_module(*model_.batchnorm, align(offload_options()));
  // linear2 runs on the execution device too, so the forward below works with a GPU device.
  add_hook_to_module(*model_.linear2, align({.execution_device = device()}));
  const void* resident = model_.linear1->weight().data_ptr();
  const Tensor buffer = model_.batchnorm->buffer("running_mean");
  for (const Device target : {Device::cpu(), device(), Device::meta()}) {
    EXPECT_TRUE(throws_naming<InvalidArgument>(
        [&] { model_.to(target); },
        {"cannot move ModelForTest to " + target.str(), "module 'batchnorm' (BatchNorm1d)",
         "offloaded to cpu/disk", "remove_hook_from_module(model, recurse=true)", "re-dispatch"}));
  }
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { model_.batchnorm->to(device()); },
                                             {"cannot move BatchNorm1d", "module '<root>'"}));
  // Nothing moved: the resident weight, the placeholder, the resident buffer.
  EXPECT_EQ(model_.linear1->weight().data_ptr(), resident);
  EXPECT_TRUE(model_.batchnorm->parameter("weight").is_meta());
  EXPECT_EQ(model_.batchnorm->buffer("running_mean").data_ptr(), buffer.data_ptr());
  EXPECT_TRUE(same_values(model_(x_).tensor(), expected_));
  // A resident hook alone does not refuse; without the offload hook the move goes through.
  remove_hook_from_module(*model_.batchnorm);
  model_.to(Device::cpu());
  expect_restored();
  remove_hook_from_module(model_, /*recurse=*/true);
  model_.to(device());
  EXPECT_EQ(model_.batchnorm->parameter("weight").device(), device());
  EXPECT_TRUE(same_values(model_(x_.to(device())).tensor(), expected_));
}

TEST_P(AlignDevicesHookTest, AlignModuleDeviceOnAPlainModuleMovesDirectParameters) {
  {
    AlignModuleDevice aligned(*model_.batchnorm, device());
    EXPECT_EQ(model_.batchnorm->parameter("weight").device(), device());
    EXPECT_TRUE(model_.batchnorm->buffer("running_mean").is_cpu());  // buffers do not move
    EXPECT_TRUE(model_.linear1->weight().is_cpu());
  }
  expect_restored();
  AlignModuleDevice nothing(*model_.linear1);  // no device, no offload: a no-op
  EXPECT_TRUE(model_.linear1->weight().is_cpu());
}

TEST_P(AlignDevicesHookTest, AlignModuleDeviceOnloadsAnOffloadedModule) {
  attach_align_device_hook(model_, device(), /*offload=*/true);
  {
    auto aligned = align_module_device(*model_.linear1);
    EXPECT_EQ(model_.linear1->weight().device(), device());
    EXPECT_TRUE(same_values(model_.linear1->weight(),
                            Tensor::from_doubles(original_[0].second, {4, 3}, DType::Float32)));
    EXPECT_TRUE(model_.linear2->weight().is_meta());  // other modules stay offloaded
  }
  EXPECT_TRUE(model_.linear1->weight().is_meta());
  {
    AlignModuleDevice on_cpu(*model_.linear1, Device::cpu());
    EXPECT_TRUE(model_.linear1->weight().is_cpu());
  }
  EXPECT_EQ(find_hook<AlignDevicesHook>(*model_.linear1)->execution_device(), device());
}

TEST_P(AlignDevicesHookTest, TiedWeightStaysWithTheResidentModule) {
  // linear0 resident, linear2 offloaded, linear2.weight tied to linear0.weight.
  Sequential seq({std::make_shared<Linear>(4, 4), std::make_shared<Linear>(4, 4),
                  std::make_shared<Linear>(4, 4)});
  randomize(seq, 7);
  seq[2].bind_tensor("weight", seq[0].parameter_slot("weight"));
  const Tensor x = random_tensor({3, 4}, DType::Float32, 8);
  const Tensor expected = seq(x).tensor();
  const std::vector<double> tied_values = seq[0].parameter("weight").to_doubles();
  seq.to(device());
  add_hook_to_module(seq[2], align(offload_options()));
  EXPECT_EQ(seq[0].parameter("weight").device(), device());  // not stripped by the offload
  EXPECT_TRUE(seq[2].parameter("weight").is_meta());
  EXPECT_TRUE(same_values(seq(x.to(device())).tensor(), expected));
  EXPECT_EQ(seq[0].parameter("weight").device(), device());
  remove_hook_from_module(seq[2]);
  EXPECT_EQ(seq[2].parameter_slot("weight"), seq[0].parameter_slot("weight"));  // tied again
  EXPECT_EQ(seq[0].parameter("weight").device(), device());  // and still resident
  EXPECT_EQ(seq[0].parameter("weight").to(Device::cpu()).to_doubles(), tied_values);
}

TEST_P(AlignDevicesHookTest, TiedWeightOffloadedTwiceIsRetiedOnRemoval) {
  Sequential seq({std::make_shared<Linear>(4, 4), std::make_shared<Linear>(4, 4),
                  std::make_shared<Linear>(4, 4)});
  randomize(seq, 9);
  const SlotPtr tied = seq[0].parameter_slot("weight");
  seq[2].bind_tensor("weight", tied);
  const Tensor x = random_tensor({3, 4}, DType::Float32, 10);
  const Tensor expected = seq(x).tensor();
  const auto before = snapshot(seq);
  auto shared_map = std::make_shared<TiedParamsMap>();
  shared_map->track(TiedParamsMap::key_of(tied->tensor()));
  AttachOptions options;
  options.weights_map = std::make_shared<InMemoryWeightsMap>(seq.state_dict());
  options.tied_params_map = shared_map;
  attach_align_device_hook(seq, device(), /*offload=*/true, options);
  EXPECT_TRUE(tied->tensor().is_meta());  // nobody keeps the tied weight resident
  EXPECT_TRUE(same_values(seq(x).tensor(), expected));
  // Per-forward copies of tied weights are dropped after each forward.
  EXPECT_EQ(shared_map->copies(TiedParamsMap::key_of(options.weights_map->at("0.weight"))), 0u);
  remove_hook_from_submodules(seq);
  EXPECT_EQ(seq[2].parameter_slot("weight"), tied);
  EXPECT_EQ(seq[0].parameter_slot("weight"), tied);
  EXPECT_EQ(snapshot(seq), before);
}

TEST_P(AlignDevicesHookTest, Errors) {
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { add_hook_to_module(*model_.linear1, align({.offload = true})); },
      {"AlignDevicesHook", "Linear", "execution_device"}));
  model_.linear2->to(Device::meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { add_hook_to_module(*model_.linear2, align(offload_options())); },
      {"Linear", "'weight'", "meta", "weights_map"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { add_hook_to_module(*model_.linear2, align({.execution_device = device()})); },
      {"weight", "meta device", "`value`"}));
  AlignDevicesOptions bad_map = offload_options();
  bad_map.weights_map = std::make_shared<InMemoryWeightsMap>();
  add_hook_to_module(*model_.linear1, align(bad_map));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { (void)(*model_.linear1)(x_); },
                                             {"'weight'", "in-memory weights map (0 tensors)"}));
}

STRATA_INSTANTIATE_DEVICE_TESTS(AlignDevicesHookTest);

TEST(AlignDevicesHookMechanics, IoSameDeviceFollowsTheFirstInputTensor) {
  // A meta "mask" keyword (skipped, so it stays meta) is the first input tensor found; the
  // output, made on the cpu, is sent back to meta. This exercises the path on a cpu-only build.
  class MakesCpuOutput : public Module {
   public:
    MakesCpuOutput() : Module("MakesCpuOutput") {}
    Value forward(Args&) override { return ValueList{Value(Tensor::ones({2})), Value(7)}; }
  } module;
  AlignDevicesOptions options;
  options.execution_device = Device::cpu();
  options.io_same_device = true;
  options.skip_keys = {"mask"};
  add_hook_to_module(module, std::make_shared<AlignDevicesHook>(options));
  Args args;
  args.keywords.set("mask", Tensor::empty({2}, DType::Float32, Device::meta()));
  const Value out = module(std::move(args));
  EXPECT_TRUE(out.list()[0].tensor().is_meta());
  EXPECT_EQ(out.list()[1].to_int(), 7);
  EXPECT_EQ(module.hook()->describe(),
            "AlignDevicesHook(execution_device=cpu, offload=false, io_same_device=true, "
            "offload_buffers=false, place_submodules=false, skip_keys=[mask])");
}

// Which hooks a caller may compute around (a fused kernel over a module's weights): none, or a
// plain AlignDevicesHook that moves nothing for an input on its execution device.
TEST(AlignDevicesHookMechanics, HookPassesThroughOnlyWhereCallingWouldMoveNothing) {
  nn::Linear linear(4, 3);
  const Device cpu = Device::cpu(), gpu = Device::cuda(0);
  EXPECT_TRUE(hook_passes_through(linear, cpu));
  const auto with = [&](AlignDevicesOptions options) {
    remove_hook_from_module(linear);
    add_hook_to_module(linear, std::make_shared<AlignDevicesHook>(std::move(options)));
  };
  with({});
  EXPECT_TRUE(hook_passes_through(linear, cpu));
  with({.execution_device = cpu});
  EXPECT_TRUE(hook_passes_through(linear, cpu));
  EXPECT_FALSE(hook_passes_through(linear, gpu));
  with({.execution_device = cpu, .io_same_device = true});
  EXPECT_FALSE(hook_passes_through(linear, cpu));
  with({.execution_device = cpu, .offload = true});
  EXPECT_FALSE(hook_passes_through(linear, cpu));
  remove_hook_from_module(linear);  // back to its weights
  // A subclass (a prefetching hook) or any other hook does more than move.
  class Subclass : public AlignDevicesHook {};
  add_hook_to_module(linear, std::make_shared<Subclass>());
  EXPECT_FALSE(hook_passes_through(linear, cpu));
  remove_hook_from_module(linear);
  class Other : public ModelHook {};
  add_hook_to_module(linear, std::make_shared<Other>());
  EXPECT_FALSE(hook_passes_through(linear, cpu));
  add_hook_to_module(linear, std::make_shared<AlignDevicesHook>(), /*append=*/true);
  EXPECT_FALSE(hook_passes_through(linear, cpu));  // a SequentialHook
}

}  // namespace
}  // namespace strata::testing
