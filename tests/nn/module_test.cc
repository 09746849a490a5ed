// Module: registration, walks in PyTorch's orders, tied parameters, state_dict, get_submodule, to.

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

std::vector<std::string> names(const NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, tensor] : tensors) out.push_back(name);
  return out;
}

std::vector<std::string> names(const std::vector<std::pair<std::string, Module*>>& modules) {
  std::vector<std::string> out;
  for (const auto& [name, module] : modules) out.push_back(name);
  return out;
}

TEST(ModuleTest, RegistrationErrorsNameTheModuleAndTheName) {
  Linear linear(2, 2);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { linear.register_parameter("", Tensor::zeros({1})); }, {"Linear", "empty name"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { linear.register_parameter("a.b", Tensor::zeros({1})); }, {"Linear", "'a.b'", "'.'"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { linear.register_parameter("weight", Tensor::zeros({1})); },
      {"Linear", "'weight'", "already taken by a parameter"}));
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { linear.register_buffer("bias", Tensor::zeros({1})); },
                                     {"Linear", "buffer 'bias'", "already taken by a parameter"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { linear.register_module("weight", std::make_shared<ReLU>()); },
      {"Linear", "submodule 'weight'", "parameter"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { linear.register_parameter("p", Tensor()); },
                                             {"Linear", "'p'", "undefined"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { linear.register_module("child", std::shared_ptr<Module>()); },
      {"Linear", "'child'", "null"}));
  ModelForTest model;
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { model.register_buffer("linear1", Tensor::zeros({1})); },
                                     {"ModelForTest", "'linear1'", "submodule"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { model.register_parameter("tied", SlotPtr()); }, {"ModelForTest", "'tied'", "null"}));
  auto self = std::make_shared<Sequential>();
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { self->push_back(self); },
                                             {"Sequential", "own child", "'0'"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { model.linear1->bind_tensor("weight", nullptr); }, {"Linear", "'weight'", "null"}));
}

TEST(ModuleTest, MissingMembersNameWhatExists) {
  ModelForTest model;
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)model.linear1->parameter("weigth"); },
                                             {"Linear", "'weigth'", "weight, bias"}));
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { (void)model.child("linear3"); },
                                     {"ModelForTest", "'linear3'", "linear1, batchnorm, linear2"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)model.batchnorm->buffer("mean"); },
                                             {"BatchNorm1d", "'mean'", "running_mean"}));
}

TEST(ModuleTest, WalkOrdersMatchPyTorch) {
  ModelForTest model;
  EXPECT_EQ(names(model.named_parameters()),
            (std::vector<std::string>{"linear1.weight", "linear1.bias", "batchnorm.weight",
                                      "batchnorm.bias", "linear2.weight", "linear2.bias"}));
  EXPECT_EQ(names(model.named_buffers()),
            (std::vector<std::string>{"batchnorm.running_mean", "batchnorm.running_var",
                                      "batchnorm.num_batches_tracked"}));
  EXPECT_EQ(names(model.named_modules()),
            (std::vector<std::string>{"", "linear1", "batchnorm", "linear2"}));
  EXPECT_EQ(names(model.named_children()),
            (std::vector<std::string>{"linear1", "batchnorm", "linear2"}));
  EXPECT_TRUE(model.named_parameters(/*recurse=*/false).empty());
  // named_module_tensors: all parameters first, then buffers (§3.2).
  std::vector<std::string> all;
  for (const TensorRef& ref : named_module_tensors(model, true, true)) all.push_back(ref.name);
  EXPECT_EQ(all, (std::vector<std::string>{"linear1.weight", "linear1.bias", "batchnorm.weight",
                                           "batchnorm.bias", "linear2.weight", "linear2.bias",
                                           "batchnorm.running_mean", "batchnorm.running_var",
                                           "batchnorm.num_batches_tracked"}));
  EXPECT_TRUE(named_module_tensors(model).empty());  // not recursive by default
  EXPECT_EQ(named_module_tensors(*model.batchnorm, /*include_buffers=*/false).size(), 2u);
}

TEST(ModuleTest, StateDictIsModuleByModuleAndSkipsNonPersistentBuffers) {
  ModelForTest model;
  model.register_buffer("mask", Tensor::ones({4}), /*persistent=*/false);
  model.linear1->register_buffer("scale", Tensor::ones({1}));
  EXPECT_EQ(names(model.state_dict()),
            (std::vector<std::string>{
                "linear1.weight", "linear1.bias", "linear1.scale", "batchnorm.weight",
                "batchnorm.bias", "batchnorm.running_mean", "batchnorm.running_var",
                "batchnorm.num_batches_tracked", "linear2.weight", "linear2.bias"}));
  // remove_non_persistent drops each buffer by its own flag (the reference compared bare names).
  std::vector<std::string> kept;
  for (const TensorRef& ref : named_module_tensors(model, true, true, true)) {
    if (ref.is_buffer) kept.push_back(ref.name);
  }
  EXPECT_EQ(kept,
            (std::vector<std::string>{"linear1.scale", "batchnorm.running_mean",
                                      "batchnorm.running_var", "batchnorm.num_batches_tracked"}));
}

TEST(ModuleTest, SameModuleTwiceIsTiedAndDeduplicated) {
  // nn.Sequential(layer, layer): every parameter of "1" is the one of "0".
  auto layer = std::make_shared<Linear>(10, 10);
  Sequential seq({layer, layer});
  EXPECT_EQ(names(seq.named_parameters()), (std::vector<std::string>{"0.weight", "0.bias"}));
  EXPECT_EQ(names(seq.named_parameters(true, false)),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  EXPECT_EQ(names(seq.named_modules()), (std::vector<std::string>{"", "0"}));
  EXPECT_EQ(names(seq.named_modules(false)), (std::vector<std::string>{"", "0", "1"}));
  EXPECT_EQ(seq.state_dict().size(), 4u);  // checkpoint keys include tied duplicates
}

TEST(ModuleTest, TiedSlotFollowsReplacementAndRebinding) {
  Sequential seq({std::make_shared<Linear>(4, 4), std::make_shared<Linear>(4, 4),
                  std::make_shared<Linear>(4, 4)});
  const SlotPtr& shared = seq[0].parameter_slot("weight");
  seq[2].bind_tensor("weight", shared);
  EXPECT_EQ(shared->bindings(), 2);
  EXPECT_EQ(names(seq.named_parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "2.bias"}));
  // Replacing the tensor through one name changes it under both.
  set_module_tensor_to_device(seq, "2.weight", Device::cpu(),
                              Tensor::full({4, 4}, 3.0, DType::Float32));
  EXPECT_EQ(seq[0].parameter("weight").to_doubles(), std::vector<double>(16, 3.0));
  seq.to(DType::BFloat16);
  EXPECT_EQ(seq[2].parameter("weight").dtype(), DType::BFloat16);
  EXPECT_TRUE(seq[0].parameter("weight").storage().is_same(seq[2].parameter("weight").storage()));
  // Untying: a new slot for one name.
  seq[2].bind_tensor("weight", std::make_shared<TensorSlot>(Tensor::zeros({4, 4})));
  EXPECT_EQ(shared->bindings(), 1);
  EXPECT_EQ(seq[0].parameter("weight").to_doubles(), std::vector<double>(16, 3.0));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { seq[2].bind_tensor("nope", std::make_shared<TensorSlot>(Tensor::zeros({1}))); },
      {"Linear", "'nope'"}));
}

TEST(ModuleTest, BindingsDropWhenAModuleDies) {
  auto first = std::make_shared<Linear>(2, 2);
  SlotPtr slot = first->parameter_slot("weight");
  {
    Linear second(2, 2);
    second.bind_tensor("weight", slot);
    EXPECT_EQ(slot->bindings(), 2);
  }
  EXPECT_EQ(slot->bindings(), 1);
}

TEST(ModuleTest, GetSubmoduleWalksAndNamesTheMissingStep) {
  Sequential outer({std::make_shared<ModelForTest>()});
  EXPECT_EQ(&outer.get_submodule(""), &outer);
  EXPECT_EQ(outer.get_submodule("0.linear2").class_name(), "Linear");
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { (void)outer.get_submodule("0.linear9.x"); },
      {"'0.linear9.x'", "ModelForTest", "'0'", "'linear9'", "linear1, batchnorm, linear2"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { (void)outer.get_submodule("1"); },
                                             {"Sequential", "<root>", "'1'"}));
}

TEST(ModuleTest, ToCastsOnlyFloatingPointAndRefusesMetaData) {
  ModelForTest model;
  model.to(DType::Float16);
  EXPECT_EQ(model.linear1->weight().dtype(), DType::Float16);
  EXPECT_EQ(model.batchnorm->buffer("running_mean").dtype(), DType::Float16);
  EXPECT_EQ(model.batchnorm->buffer("num_batches_tracked").dtype(), DType::Int64);
  model.to(Device::meta());
  EXPECT_TRUE(model.linear2->weight().is_meta());
  EXPECT_TRUE(throws_naming<InvalidArgument>([&] { model.to(Device::cpu()); },
                                             {"ModelForTest", "'linear1.weight'", "meta"}));
}

TEST(ModuleTest, ContainersHaveNoForward) {
  ModuleList list({std::make_shared<ReLU>()});
  EXPECT_TRUE(throws_naming<NotSupported>([&] { (void)list(Tensor::zeros({1})); },
                                          {"ModuleList", "forward"}));
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([&] { (void)list[1]; }, {"ModuleList", "1", "size 1"}));
}

TEST(ModuleTest, HasStateAndFirstParameterDevice) {
  Sequential relus({std::make_shared<ReLU>()});
  EXPECT_FALSE(has_state(relus));
  EXPECT_EQ(first_parameter_device(relus), std::nullopt);
  relus[0].register_buffer("mask", Tensor::ones({1}), /*persistent=*/false);
  EXPECT_FALSE(has_state(relus));  // non-persistent buffers are not state
  ModelForTest model;
  EXPECT_TRUE(has_state(model));
  model.linear1->to(Device::meta());
  EXPECT_EQ(first_parameter_device(model), Device::meta());
}

}  // namespace
}  // namespace strata::testing
