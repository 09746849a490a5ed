// set_module_tensor_to_device (accelerate-semantics.md §1.14) and TiedParamsMap.

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

class SetModuleTensorTest : public ExecutionDeviceTest {};

TEST_P(SetModuleTensorTest, MovesByRelativeAndFullNames) {
  ModelForTest model;
  randomize(model);
  const std::vector<double> weight = model.linear1->weight().to_doubles();
  set_module_tensor_to_device(model, "linear1.weight", device());
  EXPECT_EQ(model.linear1->weight().device(), device());
  set_module_tensor_to_device(*model.linear1, "weight", Device::meta());
  EXPECT_TRUE(model.linear1->weight().is_meta());
  EXPECT_EQ(model.linear1->weight().shape(), (Shape{4, 3}));
  // Meta to real needs a value.
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { set_module_tensor_to_device(model, "linear1.weight", device()); },
      {"linear1.weight", "meta device", "`value`", device().str()}));
  set_module_tensor_to_device(model, "linear1.weight", device(),
                              Tensor::from_doubles(weight, {4, 3}, DType::Float32));
  EXPECT_EQ(model.linear1->weight().device(), device());
  EXPECT_EQ(model.linear1->weight().to(Device::cpu()).to_doubles(), weight);
  // Buffers move the same way.
  set_module_tensor_to_device(model, "batchnorm.running_mean", device());
  EXPECT_EQ(model.batchnorm->buffer("running_mean").device(), device());
}

TEST_P(SetModuleTensorTest, DtypeRules) {
  ModelForTest model;
  randomize(model);
  // With a value and a dtype: floating values are cast (the reference test: fp16 on cpu).
  set_module_tensor_to_device(model, "linear1.weight", device(), model.linear1->weight(),
                              DType::Float16);
  EXPECT_EQ(model.linear1->weight().dtype(), DType::Float16);
  // Without a dtype the value takes the current dtype (load_state_dict semantics).
  set_module_tensor_to_device(model, "linear2.bias", device(), Tensor::ones({5}, DType::Float64));
  EXPECT_EQ(model.linear2->parameter("bias").dtype(), DType::Float32);
  // Integer and bool values are never cast to the requested dtype.
  set_module_tensor_to_device(model, "batchnorm.num_batches_tracked", device(),
                              Tensor::full({}, 7, DType::Int32), DType::Float16);
  const Tensor& tracked = model.batchnorm->buffer("num_batches_tracked");
  EXPECT_EQ(tracked.dtype(), DType::Int32);
  EXPECT_EQ(tracked.to(Device::cpu()).item(), 7.0);
  // Without a value, dtype casts floating tensors only.
  set_module_tensor_to_device(model, "batchnorm.running_var", device(), std::nullopt,
                              DType::BFloat16);
  EXPECT_EQ(model.batchnorm->buffer("running_var").dtype(), DType::BFloat16);
  set_module_tensor_to_device(model, "batchnorm.num_batches_tracked", device(), std::nullopt,
                              DType::BFloat16);
  EXPECT_EQ(model.batchnorm->buffer("num_batches_tracked").dtype(), DType::Int32);
  // To meta with a dtype: a meta tensor of that dtype.
  set_module_tensor_to_device(model, "linear2.weight", Device::meta(), std::nullopt,
                              DType::Float16);
  EXPECT_TRUE(model.linear2->weight().is_meta());
  EXPECT_EQ(model.linear2->weight().dtype(), DType::Float16);
}

STRATA_INSTANTIATE_DEVICE_TESTS(SetModuleTensorTest);

TEST(SetModuleTensorErrors, ShapeMismatchUsesTheReferenceMessage) {
  ModelForTest model;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        set_module_tensor_to_device(model, "linear1.weight", Device::cpu(), Tensor::zeros({2, 2}));
      },
      {"Trying to set a tensor of shape [2, 2] in \"linear1.weight\" (which has shape [4, 3]), "
       "this looks incorrect."}));
}

TEST(SetModuleTensorErrors, MissingSubmoduleOrTensorNamesThePath) {
  ModelForTest model;
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { set_module_tensor_to_device(model, "linear3.weight", Device::cpu()); },
      {"set_module_tensor_to_device('linear3.weight')", "'linear3'", "ModelForTest"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { set_module_tensor_to_device(model, "linear1.gamma", Device::cpu()); },
      {"'linear1.gamma'", "Linear 'linear1'", "parameter or a buffer named 'gamma'"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { set_module_tensor_to_device(model, "weight", Device::cpu()); },
      {"ModelForTest", "<root>", "'weight'"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { set_module_tensor_to_device(model, "linear1.weight", Device::cpu(), Tensor()); },
      {"linear1.weight", "undefined"}));
}

TEST(TiedParamsMapTest, ReusesTheCopyRecordedForASource) {
  ModelForTest a, b;
  const Tensor source = random_tensor({4, 3}, DType::Float32, 3);
  TiedParamsMap tied;
  tied.track(TiedParamsMap::key_of(source));
  set_module_tensor_to_device(*a.linear1, "weight", Device::cpu(), source.to(DType::Float32),
                              std::nullopt, &tied);
  // Same source, same device: the recorded tensor itself, no new copy.
  set_module_tensor_to_device(*b.linear1, "weight", Device::cpu(), source, std::nullopt, &tied);
  EXPECT_EQ(tied.copies(TiedParamsMap::key_of(source)), 1u);
  EXPECT_TRUE(a.linear1->weight().storage().is_same(b.linear1->weight().storage()));
  tied.erase(TiedParamsMap::key_of(source), Device::cpu());
  EXPECT_EQ(tied.copies(TiedParamsMap::key_of(source)), 0u);
}

TEST(TiedParamsMapTest, MetaTensorsHaveNoKey) {
  // Every meta tensor had address 0 in the reference, so they all matched one another.
  const Tensor meta = Tensor::empty({4}, DType::Float32, Device::meta());
  EXPECT_EQ(TiedParamsMap::key_of(meta), nullptr);
  TiedParamsMap tied;
  tied.track(TiedParamsMap::key_of(meta));
  EXPECT_EQ(tied.size(), 0u);
  EXPECT_FALSE(tied.record(nullptr, Device::cpu(), meta));
}

}  // namespace
}  // namespace strata::testing
