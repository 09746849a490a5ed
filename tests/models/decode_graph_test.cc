// The decode fast path's refusals that need no GPU (tests/cuda/decode_graph_test.cc runs it):
// a model on the cpu, a family without a fused step and STRATA_DECODE_GRAPH=0 keep the module
// path, and generate_greedy gives the same tokens with the option on or off.

#include "strata/models/decode_graph.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "models/model_testing.h"

namespace strata {
namespace {

using testing::load_fixture_model;
using testing::load_model_fixture;

TEST(DecodeGraphRunner, ModelOnTheCpuKeepsTheModulePath) {
  const auto f = load_model_fixture("llama");
  auto model = load_fixture_model(f, Device::cpu());
  models::DecodeGraphRunner runner(*model);
  EXPECT_FALSE(runner.usable());
  EXPECT_FALSE(runner.reason().empty());
  auto cache = model->make_cache();
  model->run(f.prompt_ids, cache, 1);
  EXPECT_FALSE(runner.step(Tensor::zeros({2, 1}, DType::Int64), *cache).has_value());
  EXPECT_EQ(cache->seq_length(0), f.prompt_ids.size(1));
}

TEST(DecodeGraphRunner, OtherFamiliesSayWhy) {
  auto model = load_fixture_model(load_model_fixture("gpt2"), Device::cpu());
  models::DecodeGraphRunner runner(*model);
  EXPECT_FALSE(runner.usable());
  EXPECT_NE(runner.reason().find("not a decoder-family model"), std::string::npos)
      << runner.reason();
}

TEST(DecodeGraphRunner, EnvironmentSwitchTurnsItOff) {
  const char* saved = std::getenv("STRATA_DECODE_GRAPH");
  const std::string previous = saved != nullptr ? saved : "";
  ::setenv("STRATA_DECODE_GRAPH", "0", 1);
  EXPECT_FALSE(models::decode_graph_allowed_by_environment());
  auto model = load_fixture_model(load_model_fixture("llama"), Device::cpu());
  EXPECT_EQ(models::DecodeGraphRunner(*model).reason(), "STRATA_DECODE_GRAPH=0");
  ::setenv("STRATA_DECODE_GRAPH", "1", 1);
  EXPECT_TRUE(models::decode_graph_allowed_by_environment());
  if (saved != nullptr) {
    ::setenv("STRATA_DECODE_GRAPH", previous.c_str(), 1);
  } else {
    ::unsetenv("STRATA_DECODE_GRAPH");
  }
}

TEST(KVCacheAppend, StorageForAppendGrowsAsUpdateAndCommitCounts) {
  models::KVCache cache(1);
  const Tensor k = Tensor::ones({1, 2, 3, 4}), v = Tensor::full({1, 2, 3, 4}, 2.0, DType::Float32);
  cache.update(0, k, v);
  auto [keys, values] = cache.storage_for_append(0, 14);  // 3 + 14 > 16: grows to 32
  EXPECT_EQ(keys.shape(), (Shape{1, 2, 32, 4}));
  EXPECT_EQ(values.shape(), (Shape{1, 2, 32, 4}));
  EXPECT_EQ(cache.seq_length(0), 3);
  EXPECT_EQ(keys.narrow(2, 0, 3).contiguous().to_doubles(), k.to_doubles());
  keys.narrow(2, 3, 1).fill_(5.0);
  cache.commit_append(0, 1);
  EXPECT_EQ(cache.seq_length(0), 4);
  EXPECT_EQ(cache.keys(0).narrow(2, 3, 1).contiguous().to_doubles(), std::vector<double>(8, 5.0));
  EXPECT_THROW(cache.commit_append(0, 29), InvalidArgument);
  models::KVCache empty(1);
  EXPECT_THROW(empty.storage_for_append(0, 1), InvalidArgument);
}

}  // namespace
}  // namespace strata
