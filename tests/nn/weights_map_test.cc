// InMemoryWeightsMap and prefixed views (the reference's PrefixedDataset, minus bug B12).

#include "nn/nn_testing.h"

namespace strata::testing {
namespace {

std::shared_ptr<InMemoryWeightsMap> model_map() {
  ModelForTest model;
  randomize(model);
  return std::make_shared<InMemoryWeightsMap>(model.state_dict());
}

TEST(WeightsMapTest, InMemoryLookupKeepsOrderAndReplaces) {
  auto map = model_map();
  EXPECT_EQ(map->size(), 9u);
  EXPECT_EQ(map->keys().front(), "linear1.weight");
  EXPECT_TRUE(map->contains("batchnorm.running_var"));
  EXPECT_FALSE(map->find("linear3.weight").has_value());
  map->insert("linear1.weight", Tensor::zeros({4, 3}));
  EXPECT_EQ(map->size(), 9u);
  EXPECT_EQ(map->at("linear1.weight").to_doubles(), std::vector<double>(12, 0.0));
}

TEST(WeightsMapTest, PrefixedViewSeesOnlyItsEntries) {
  std::shared_ptr<const WeightsMap> map = model_map();
  auto view = with_prefix(map, "batchnorm.");
  EXPECT_EQ(view->size(), 5u);  // the reference returned 9 (B12)
  EXPECT_EQ(view->keys(), (std::vector<std::string>{"weight", "bias", "running_mean", "running_var",
                                                    "num_batches_tracked"}));
  EXPECT_TRUE(view->find("running_mean")
                  ->storage()
                  .is_same(map->find("batchnorm.running_mean")->storage()));
  EXPECT_FALSE(view->contains("linear1.weight"));
  EXPECT_EQ(with_prefix(map, ""), map);
  EXPECT_EQ(with_prefix(nullptr, "x."), nullptr);
}

TEST(WeightsMapTest, NestedViewsFlatten) {
  auto block = std::make_shared<InMemoryWeightsMap>();
  block->insert("layers.0.mlp.weight", Tensor::ones({2}));
  auto view = with_prefix(with_prefix(block, "layers."), "0.mlp.");
  const auto* prefixed = dynamic_cast<const PrefixedWeightsMap*>(view.get());
  ASSERT_NE(prefixed, nullptr);
  EXPECT_EQ(prefixed->prefix(), "layers.0.mlp.");
  EXPECT_EQ(prefixed->inner(), block);
  EXPECT_TRUE(view->contains("weight"));
}

TEST(WeightsMapTest, MissingKeyNamesKeyAndMap) {
  auto view = with_prefix(model_map(), "linear1.");
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { (void)view->at("gamma"); },
                                             {"'gamma'", "'linear1.' view", "9 tensors"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { InMemoryWeightsMap().insert("w", Tensor()); },
                                             {"'w'", "undefined"}));
  EXPECT_TRUE(
      throws_naming<InvalidArgument>([] { PrefixedWeightsMap(nullptr, "p."); }, {"'p.'", "null"}));
}

}  // namespace
}  // namespace strata::testing
