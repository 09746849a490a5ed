// KVCache bookkeeping, sliding-window attention over the cache, and the cache travelling through
// offload hooks (weights fetched per forward, cache left alone on the execution device).

#include <limits>

#include "models/attention.h"
#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/nn/attach.h"
#include "strata/nn/weights_map.h"
#include "strata/ops.h"

namespace strata::testing {
namespace {

using models::KVCache;

TEST(KVCache, AppendsAndReturnsTheWholeHistory) {
  KVCache cache(2);
  const Tensor k1 = random_tensor({1, 2, 3, 4}, DType::Float32, 1);
  const Tensor v1 = random_tensor({1, 2, 3, 4}, DType::Float32, 2);
  const Tensor k2 = random_tensor({1, 2, 20, 4}, DType::Float32, 3);  // grows past 16
  const Tensor v2 = random_tensor({1, 2, 20, 4}, DType::Float32, 4);
  cache.update(0, k1, v1);
  const auto [keys, values] = cache.update(0, k2, v2);
  ASSERT_EQ(keys.shape(), (Shape{1, 2, 23, 4}));
  EXPECT_EQ(cache.seq_length(0), 23);
  EXPECT_EQ(cache.seq_length(1), 0);
  EXPECT_FALSE(cache.keys(1).defined());
  EXPECT_EQ(keys.narrow(2, 0, 3).contiguous().to_vector<float>(), k1.to_vector<float>());
  EXPECT_EQ(keys.narrow(2, 3, 20).contiguous().to_vector<float>(), k2.to_vector<float>());
  EXPECT_EQ(values.narrow(2, 3, 20).contiguous().to_vector<float>(), v2.to_vector<float>());
  EXPECT_EQ(cache.device(0), Device::cpu());
  cache.clear();
  EXPECT_EQ(cache.seq_length(0), 0);
  EXPECT_EQ(cache.allocated_bytes(), 0u);
}

TEST(KVCache, ReserveSizesTheFirstAllocation) {
  KVCache cache(1, /*reserve_tokens=*/100);
  cache.update(0, Tensor::zeros({1, 2, 3, 4}), Tensor::zeros({1, 2, 3, 4}));
  EXPECT_EQ(cache.allocated_bytes(), 2u * 2 * 100 * 4 * sizeof(float));
  for (int i = 0; i < 97; ++i) {
    cache.update(0, Tensor::zeros({1, 2, 1, 4}), Tensor::zeros({1, 2, 1, 4}));
  }
  EXPECT_EQ(cache.allocated_bytes(), 2u * 2 * 100 * 4 * sizeof(float));  // no regrowth
}

TEST(KVCache, RejectsAnotherShapeOrLayer) {
  KVCache cache(2);
  cache.update(1, Tensor::zeros({1, 2, 3, 4}), Tensor::zeros({1, 2, 3, 4}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        cache.update(1, Tensor::zeros({2, 2, 1, 4}), Tensor::zeros({2, 2, 1, 4}));
      },
      {"layer 1", "batch 1", "clear()"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        cache.update(1, Tensor::zeros({1, 2, 1, 4}, DType::BFloat16),
                     Tensor::zeros({1, 2, 1, 4}, DType::BFloat16));
      },
      {"layer 1"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        cache.update(2, Tensor::zeros({1, 2, 1, 4}), Tensor::zeros({1, 2, 1, 4}));
      },
      {"layer 2", "out of range", "2 layers"}));
}

// The windowed attention (query blocks, each with its key range) against one SDPA call with the
// explicit mask: key j is visible to the query at position p when p - window < j <= p.
void check_window(std::int64_t past, std::int64_t q_len, std::int64_t window) {
  const std::int64_t k_len = past + q_len;
  const Tensor q = random_tensor({1, 4, q_len, 8}, DType::Float32, 10);
  const Tensor k = random_tensor({1, 2, k_len, 8}, DType::Float32, 11);
  const Tensor v = random_tensor({1, 2, k_len, 8}, DType::Float32, 12);
  std::vector<float> mask(static_cast<std::size_t>(q_len * k_len), 0.0f);
  for (std::int64_t i = 0; i < q_len; ++i) {
    for (std::int64_t j = 0; j < k_len; ++j) {
      const std::int64_t p = past + i;
      if (j > p || j <= p - window) {
        mask[static_cast<std::size_t>(i * k_len + j)] = -std::numeric_limits<float>::infinity();
      }
    }
  }
  ops::AttentionOptions options;
  options.mask = Tensor::from_vector(mask, {q_len, k_len});
  const Tensor expected = ops::scaled_dot_product_attention(q, k, v, options);

  KVCache cache(1);
  if (past > 0) cache.update(0, k.narrow(2, 0, past), v.narrow(2, 0, past));
  const Tensor actual =
      models::detail::causal_attention(q, k.narrow(2, past, q_len), v.narrow(2, past, q_len),
                                       &cache, 0, 1.0 / std::sqrt(8.0), window);
  EXPECT_LE(max_abs_diff(actual, expected), 1e-6)
      << "past " << past << ", q_len " << q_len << ", window " << window;
}

TEST(SlidingWindow, MatchesTheExplicitMask) {
  check_window(0, 300, 50);   // prefill over three query blocks
  check_window(0, 300, 200);  // windows wider than a block
  check_window(290, 10, 50);  // a chunk after a cached past
  check_window(299, 1, 50);   // decode: only the last `window` keys
  check_window(0, 40, 50);    // shorter than the window: plain causal
}

// Every weight offloaded to a weights map and fetched per forward (accelerate's cpu_offload
// tree): the cache passes through the hooks as an opaque object and stays where the layers ran.
class OffloadedModelTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(OffloadedModelTest, CachePassesThroughOffloadHooks) {
  const Device device = GetParam().device;
  if (!device_available(device)) GTEST_SKIP() << device << " is not available here";
  const ModelFixture f = load_model_fixture(GetParam().fixture);
  auto model = load_fixture_model(f, Device::cpu());
  nn::AttachOptions options;
  options.weights_map = std::make_shared<nn::InMemoryWeightsMap>(model->state_dict());
  nn::attach_align_device_hook(*model, device, /*offload=*/true, options);
  EXPECT_TRUE(model->lm_head().weight().is_meta());

  const Tensor logits = model->run(f.prompt_ids.to(device)).logits;
  EXPECT_LE(max_abs_diff(logits, f.logits), 1e-4 * max_abs(f.logits));
  models::GenerationOptions generation;
  generation.max_new_tokens = f.greedy_ids.size(1);
  generation.input_device = Device::cpu();  // the embedding's hook moves the ids
  const auto result = models::generate_greedy(*model, f.prompt_ids.narrow(0, 0, 1), generation);
  EXPECT_EQ(result.tokens.to_vector<std::int64_t>(), f.greedy_ids.to_vector<std::int64_t>());

  auto cache = model->make_cache();
  model->run(f.prompt_ids.to(device), cache);
  for (std::int64_t layer = 0; layer < cache->num_layers(); ++layer) {
    EXPECT_EQ(cache->device(layer), device) << "layer " << layer;
  }
  EXPECT_TRUE(model->lm_head().weight().is_meta());  // offloaded again after the forward
}

std::vector<ModelCase> offload_cases() {
  std::vector<ModelCase> out;
  for (const Device device : {Device::cpu(), Device::cuda(0)}) {
    for (const char* name :
         {"llama", "qwen3", "mixtral", "gpt2", "opt_350m_style", "gemma2", "gemma3_text"}) {
      out.push_back({name, device});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Models, OffloadedModelTest, ::testing::ValuesIn(offload_cases()),
                         model_case_name);

TEST(ModelErrors, ForwardArgumentsAreChecked) {
  const ModelFixture f = load_model_fixture("gpt2");
  auto model = load_fixture_model(f, Device::cpu());
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        model->run(Tensor::zeros({1, 65}, DType::Int64));
      },
      {"GPT2Model", "64 learned positions", "max_position_embeddings"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        model->run(Tensor::zeros({1, 3}));
      },
      {"GPT2LMHeadModel", "input_ids"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { model->run(f.prompt_ids, std::make_shared<KVCache>(1)); },
      {"layer 1", "out of range"}));
}

}  // namespace
}  // namespace strata::testing
