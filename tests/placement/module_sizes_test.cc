// Sizes, ties and layers. Expected values are the reference's test assertions and observed
// outputs (accelerate-semantics.md §3.2, §3.7, §1.8.4).

#include <gtest/gtest.h>

#include "placement/placement_testing.h"

namespace strata::placement {
namespace {

using testing::LogCapture;
using testing::make_tree;
using testing::model_for_test;

using Entries = std::vector<std::pair<std::string, std::int64_t>>;

TEST(ComputeModuleSizes, ModelForTestInTheReferenceOrder) {
  auto model = model_for_test();
  const ModuleSizes sizes = compute_module_sizes(*model);
  // Parameters first, then buffers; each prefix the first time it is reached.
  const Entries expected = {
      {"", 236},
      {"linear1", 64},
      {"linear1.weight", 48},
      {"linear1.bias", 16},
      {"batchnorm", 72},
      {"batchnorm.weight", 16},
      {"batchnorm.bias", 16},
      {"linear2", 100},
      {"linear2.weight", 80},
      {"linear2.bias", 20},
      {"batchnorm.running_mean", 16},
      {"batchnorm.running_var", 16},
      {"batchnorm.num_batches_tracked", 8},
  };
  EXPECT_EQ(sizes.entries(), expected);
  EXPECT_EQ(sizes.total(), 236);
  EXPECT_EQ(sizes["missing"], 0);
  EXPECT_FALSE(sizes.contains("missing"));
}

TEST(ComputeModuleSizes, DtypeNeverUpCastsAndLeavesIntegersAlone) {
  auto model = model_for_test();
  const auto total = [&](SizeOptions options) { return compute_module_sizes(*model, options); };
  // float16/bfloat16 halve every float; num_batches_tracked (int64) stays 8.
  EXPECT_EQ(total({.dtype = DType::Float16}).total(), 122);
  EXPECT_EQ(total({.dtype = DType::Float16})["batchnorm"], 40);
  EXPECT_EQ(total({.dtype = DType::BFloat16}).total(), 122);
  EXPECT_EQ(total({.dtype = DType::Float64}).total(), 236);
  EXPECT_EQ(total({.dtype = DType::Int8}).total(), 65);
  const ModuleSizes special =
      total({.dtype = DType::Float16, .special_dtypes = {{"linear2.weight", DType::Float32}}});
  EXPECT_EQ(special.total(), 162);
  EXPECT_EQ(special["linear2"], 90);
  // A half-precision model (model.half()) weighs what dtype=float16 says.
  EXPECT_EQ(compute_module_sizes(*model_for_test(DType::Float16)).total(), 122);
}

TEST(ComputeModuleSizes, UnknownSpecialDtypeNamesAreWarnedAbout) {
  auto model = model_for_test();
  LogCapture log;
  compute_module_sizes(*model, {.special_dtypes = {{"linear9.weight", DType::Float16},
                                                   {"linear2", DType::Float16}}});
  ASSERT_EQ(log.warnings.size(), 1u);
  EXPECT_TRUE(log.warned("linear2, linear9.weight"));
}

TEST(ComputeModuleSizes, TiedParametersCountOnce) {
  auto model = testing::tied3(1);
  const ModuleSizes sizes = compute_module_sizes(*model);
  EXPECT_EQ(sizes.total(), 628);
  EXPECT_EQ(sizes["layer3"], 156);
  EXPECT_EQ(sizes["layer3.linear2"], 20);
  EXPECT_FALSE(sizes.contains("layer3.linear2.weight"));
}

TEST(ComputeModuleTotalBufferSize, CountsEveryBuffer) {
  for (DType dtype : {DType::Float32, DType::Float16}) {
    testing::ModuleSpecs modules;
    testing::Specs tensors;
    testing::add_model_for_test("", modules, tensors);
    tensors.push_back({"linear1.test_buffer", {10, 10}, DType::Float32, true});
    tensors.push_back({"test_buffer2", {20, 10}, DType::Float32, true});
    for (auto& t : tensors) {
      if (t.dtype == DType::Float32) t.dtype = dtype;
    }
    auto model = make_tree("ModelForTest", modules, tensors);
    EXPECT_EQ(compute_module_total_buffer_size(*model), dtype == DType::Float32 ? 1240 : 624);
  }
}

// The reference's sequential_model(n): Linear layers named linear1..linearN (small here).
std::shared_ptr<nn::Module> sequential_model(int n,
                                             const std::vector<std::vector<std::string>>& tied) {
  testing::ModuleSpecs modules;
  testing::Specs tensors;
  for (int i = 1; i <= n; ++i) {
    const std::string name = "linear" + std::to_string(i);
    modules.push_back({name, "Linear"});
    testing::append(tensors, testing::linear(name, 2, 2));
  }
  return make_tree("Sequential", modules, tensors, tied);
}

TEST(FindTiedParameters, GroupsAreSortedAndInModuleOrder) {
  EXPECT_TRUE(find_tied_parameters(*sequential_model(4, {})).empty());
  using Groups = std::vector<std::vector<std::string>>;
  EXPECT_EQ(find_tied_parameters(*sequential_model(4, {{"linear1.weight", "linear2.weight"}})),
            (Groups{{"linear1.weight", "linear2.weight"}}));
  EXPECT_EQ(find_tied_parameters(
                *sequential_model(4, {{"linear1.weight", "linear2.weight", "linear4.weight"}})),
            (Groups{{"linear1.weight", "linear2.weight", "linear4.weight"}}));
  // linear1.weight = linear4.weight; linear2.weight = linear3.weight; linear5.weight =
  // linear2.weight
  EXPECT_EQ(find_tied_parameters(
                *sequential_model(5, {{"linear4.weight", "linear1.weight"},
                                      {"linear3.weight", "linear2.weight", "linear5.weight"}})),
            (Groups{{"linear1.weight", "linear4.weight"},
                    {"linear2.weight", "linear3.weight", "linear5.weight"}}));
}

TEST(FindTiedParameters, OneModuleUnderTwoNames) {
  // layer = nn.Linear(10, 10); nn.Sequential(layer, layer)
  auto root = std::make_shared<nn::Module>("Sequential");
  auto layer = std::make_shared<nn::Module>("Linear");
  layer->register_parameter("weight", Tensor::empty({10, 10}, DType::Float32, Device::meta()));
  layer->register_parameter("bias", Tensor::empty({10}, DType::Float32, Device::meta()));
  root->register_module("0", layer);
  root->register_module("1", layer);
  EXPECT_EQ(find_tied_parameters(*root), (std::vector<std::vector<std::string>>{
                                             {"0.weight", "1.weight"}, {"0.bias", "1.bias"}}));
  EXPECT_EQ(compute_module_sizes(*root).total(), 440);
  EXPECT_EQ(compute_module_sizes(*root)["1"], 0);
}

TEST(GetMaxLayerSize, LeavesAndNoSplitBlocks) {
  const MaxLayerSize plain = get_max_layer_size(*model_for_test());
  EXPECT_EQ(plain.bytes, 100);
  EXPECT_EQ(plain.names, std::vector<std::string>{"linear2"});
  const MaxLayerSize blocks = get_max_layer_size(*testing::seq3(), {"ModelForTest"});
  EXPECT_EQ(blocks.bytes, 236);
  EXPECT_EQ(blocks.names, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_EQ(get_max_layer_size(*testing::seq3(), {}, {.dtype = DType::Float16}).bytes, 50);
}

TEST(GetMaxLayerSize, IgnoresDirectTensorsOfModulesWithChildren) {
  // prefix_tied: compute = LinearModuleAndSubModule(3, 8) whose weight_submodule holds the same
  // weight. The reference reserves 0 here (B18), which planning keeps for parity.
  auto model = make_tree(
      "Model", {{"compute", "LinearModuleAndSubModule"}, {"compute.weight_submodule", "SubModule"}},
      {{"compute.weight", {8, 3}},
       {"compute.bias", {8}},
       {"compute.weight_submodule.parameter", {8, 3}}},
      {{"compute.weight", "compute.weight_submodule.parameter"}});
  const MaxLayerSize layer = get_max_layer_size(*model);
  EXPECT_EQ(layer.bytes, 0);
  EXPECT_EQ(layer.names, std::vector<std::string>{"compute.weight_submodule"});
}

TEST(GetMaxLayerSize, CountsTheRootsDirectTensors) {
  auto model =
      make_tree("Root", {{"small", "Linear"}},
                {{"big", {100}}, {"small.weight", {2}}, {"stats", {50}, DType::Float32, true}});
  const MaxLayerSize layer = get_max_layer_size(*model);
  EXPECT_EQ(layer.bytes, 400);
  EXPECT_EQ(layer.names, std::vector<std::string>{"big"});
}

}  // namespace
}  // namespace strata::placement
