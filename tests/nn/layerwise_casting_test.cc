// LayerwiseCastingHook and attach_layerwise_casting_hooks (accelerate-semantics.md §1.15.9):
// weights stored in float8_e4m3fn, computed in bfloat16; skip patterns and classes.

#include <cmath>

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

bool cast_hooked(Module& root, std::string_view name) {
  return find_hook<LayerwiseCastingHook>(root.get_submodule(name)) != nullptr;
}

class LayerwiseCastingTest : public ExecutionDeviceTest {};

TEST_P(LayerwiseCastingTest, StoresFp8AndComputesBf16) {
  ModelForTest model, manual;
  randomize(model, 3);
  randomize(manual, 3);
  model.to(device());
  attach_layerwise_casting_hooks(model, DType::Float8E4M3FN, DType::BFloat16);
  EXPECT_EQ(model.linear1->weight().dtype(), DType::Float8E4M3FN);
  EXPECT_EQ(model.linear2->parameter("bias").dtype(), DType::Float8E4M3FN);
  EXPECT_EQ(model.batchnorm->parameter("weight").dtype(), DType::Float32);  // not a cast layer
  const Tensor stored = model.linear1->weight();
  auto probe = std::make_shared<WeightProbe>("weight");
  add_hook_to_module(*model.linear1, probe, /*append=*/true);

  const Tensor x = random_tensor({4, 3}, DType::BFloat16, 11).to(device());
  const Tensor y = model(x).tensor();
  EXPECT_EQ(probe->seen.dtype(), DType::BFloat16);  // computed in bf16
  EXPECT_EQ(y.dtype(), DType::BFloat16);
  EXPECT_EQ(model.linear1->weight().dtype(), DType::Float8E4M3FN);           // stored in fp8 again
  EXPECT_TRUE(model.linear1->weight().storage().is_same(stored.storage()));  // not re-cast

  // The same computation by hand: fp8-rounded weights held in bf16, no hooks. Bit-identical.
  for (Linear* linear : {manual.linear1.get(), manual.linear2.get()}) {
    for (const TensorEntry& e : linear->direct_parameters()) {
      e.slot->set(e.slot->tensor().to(DType::Float8E4M3FN).to(DType::BFloat16));
    }
  }
  manual.to(device());
  EXPECT_TRUE(same_values(y, manual(x).tensor(), {0, 0}));
}

TEST_P(LayerwiseCastingTest, OutputWithinTheFp8BoundOfAnUncastRun) {
  constexpr int kIn = 64, kOut = 16, kRows = 4;
  Linear linear(kIn, kOut);
  randomize(linear, 5);
  linear.register_buffer("steps", Tensor::zeros({1}, DType::Int64));
  const std::vector<double> w = linear.weight().to_doubles(),
                            b = linear.parameter("bias").to_doubles();
  const Tensor x = random_tensor({kRows, kIn}, DType::BFloat16, 6);  // exact in bf16
  const std::vector<double> xv = x.to_doubles();
  linear.to(device());
  attach_layerwise_casting_hooks(linear, DType::Float8E4M3FN, DType::BFloat16);  // a bare root
  EXPECT_EQ(linear.buffer("steps").dtype(), DType::Int64);  // integer tensors are never cast
  const std::vector<double> y = linear(x.to(device())).tensor().to(Device::cpu()).to_doubles();
  // fp8 e4m3 keeps 3 mantissa bits: a weight moves by at most 2^-4 of itself, or 2^-10 in the
  // subnormal range. The bf16 output adds one rounding of 2^-9 (2^-8 leaves room for it).
  int checked = 0;
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < kOut; ++j) {
      double exact = b[j], bound = std::ldexp(std::abs(b[j]), -4) + std::ldexp(1.0, -10);
      for (int k = 0; k < kIn; ++k) {
        exact += xv[i * kIn + k] * w[j * kIn + k];
        bound += std::abs(xv[i * kIn + k]) *
                 (std::ldexp(std::abs(w[j * kIn + k]), -4) + std::ldexp(1.0, -10));
      }
      bound += std::ldexp(std::abs(exact), -8) + 1e-6;
      EXPECT_LE(std::abs(y[i * kOut + j] - exact), bound) << "row " << i << " col " << j;
      ++checked;
    }
  }
  EXPECT_EQ(checked, kRows * kOut);
}

STRATA_INSTANTIATE_DEVICE_TESTS(LayerwiseCastingTest);

std::shared_ptr<Module> named_tree() {
  auto root = std::make_shared<Module>("Root");
  root->register_module("q_proj", std::make_shared<Linear>(2, 2));
  root->register_module("pos_embed", std::make_shared<Linear>(2, 2));
  root->register_module("final_norm", std::make_shared<Module>("NormBlock"))
      ->register_module("scale", std::make_shared<Linear>(2, 2));
  root->register_module("proj_out", std::make_shared<Linear>(2, 2));
  auto block = root->register_module("block", std::make_shared<Module>("Block"));
  block->register_module("proj_out", std::make_shared<Linear>(2, 2));
  block->register_module("attn", std::make_shared<Linear>(2, 2));
  root->register_module("head", std::make_shared<Linear>(2, 2));
  root->register_module("embed_tokens", std::make_shared<Embedding>(4, 2));
  root->register_module("norm", std::make_shared<RMSNorm>(2));
  return root;
}

TEST(LayerwiseCastingAttach, DefaultsSkipNormsEmbeddingsAndPositions) {
  auto tree = named_tree();
  attach_layerwise_casting_hooks(*tree, DType::Float8E4M3FN, DType::BFloat16);
  for (const char* cast : {"q_proj", "block.proj_out", "block.attn", "head"}) {
    EXPECT_TRUE(cast_hooked(*tree, cast)) << cast;
  }
  for (const char* kept : {"pos_embed", "final_norm.scale", "proj_out", "embed_tokens", "norm"}) {
    EXPECT_FALSE(cast_hooked(*tree, kept)) << kept;
  }
  EXPECT_EQ(tree->get_submodule("norm").parameter("weight").dtype(), DType::Float32);
  EXPECT_EQ(tree->get_submodule("embed_tokens").parameter("weight").dtype(), DType::Float32);
}

TEST(LayerwiseCastingAttach, ASingleStringIsOnePattern) {
  auto tree = named_tree();
  LayerwiseCastingOptions options;
  options.skip_modules_pattern = "head";  // the reference skipped every name containing h, e, a, d
  attach_layerwise_casting_hooks(*tree, DType::Float8E4M3FN, DType::BFloat16, options);
  EXPECT_FALSE(cast_hooked(*tree, "head"));
  for (const char* cast : {"block.attn", "pos_embed", "final_norm.scale", "q_proj"}) {
    EXPECT_TRUE(cast_hooked(*tree, cast)) << cast;
  }
}

TEST(LayerwiseCastingAttach, EmptyPatternsAndSkipClasses) {
  auto everything = named_tree();
  LayerwiseCastingOptions none;
  none.skip_modules_pattern = std::vector<std::string>{};
  attach_layerwise_casting_hooks(*everything, DType::Float8E4M3FN, DType::BFloat16, none);
  for (const char* cast : {"pos_embed", "final_norm.scale", "proj_out", "head"}) {
    EXPECT_TRUE(cast_hooked(*everything, cast)) << cast;
  }
  auto tree = named_tree();
  LayerwiseCastingOptions classes;
  classes.skip_modules_classes = {"Block"};
  attach_layerwise_casting_hooks(*tree, DType::Float8E4M3FN, DType::BFloat16, classes);
  EXPECT_FALSE(cast_hooked(*tree, "block.attn"));
  EXPECT_TRUE(cast_hooked(*tree, "q_proj"));
}

TEST(LayerwiseCastingAttach, Errors) {
  auto tree = named_tree();
  LayerwiseCastingOptions bad;
  bad.skip_modules_pattern = "(unclosed";
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { attach_layerwise_casting_hooks(*tree, DType::Float8E4M3FN, DType::BFloat16, bad); },
      {"'(unclosed'", "regular expression"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [] { LayerwiseCastingHook(DType::Int8, DType::BFloat16); }, {"int8", "floating-point"}));
}

}  // namespace
}  // namespace strata::testing
