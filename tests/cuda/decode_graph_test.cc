// The decode fast path (strata/models/decode_graph.h) against the module path on the recorded
// fixtures (tests/fixtures/models: llama, qwen3 with per-head q/k norms, mistral with an 8-token
// sliding window, qwen2 with q/k/v biases, smollm3 with NoPE layers and a tied head): the same
// prefill, then 24 steps fed the module path's greedy tokens, logits compared at every step while
// the cache grows twice (16 -> 32 -> 64 entries, each a re-capture), batch 1 and 3.

#include "strata/models/decode_graph.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <tuple>
#include <vector>

#include "models/model_testing.h"
#include "strata/cuda/device.h"
#include "strata/ops.h"

namespace strata {
namespace {

using testing::load_fixture_model;
using testing::load_model_fixture;
using testing::max_abs;
using testing::max_abs_diff;

constexpr std::int64_t kSteps = 24;

struct GraphCase {
  std::string fixture;
  DType dtype;
  std::int64_t batch;
};

// bfloat16: each path rounds every intermediate to bfloat16 but sums in another order (GEMV vs
// the module path's kernels, split-key vs whole-row attention), so they drift apart by a few
// bfloat16 roundings; 4% of the logit scale is the bound the bf16 parity tests hold against
// transformers (tests/models/parity_test.cc). float32: 1e-4 of the scale (kFloat32Tolerance).
double tolerance(DType dtype) { return dtype == DType::Float32 ? 1e-4 : 0.04; }

class DecodeGraphTest : public ::testing::TestWithParam<GraphCase> {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  }
  // Rows 0, 1, 0 of the fixture's prompts.
  static Tensor prompt(const testing::ModelFixture& f, std::int64_t batch) {
    Tensor ids = Tensor::empty({batch, f.prompt_ids.size(1)}, DType::Int64);
    for (std::int64_t r = 0; r < batch; ++r)
      ids.narrow(0, r, 1).copy_(f.prompt_ids.narrow(0, r % 2, 1));
    return ids;
  }
};

// Greedy ids [batch, 1] of logits [batch, 1, vocab] on the cpu.
Tensor argmax_ids(const Tensor& logits) { return ops::argmax(logits, -1).to(Device::cpu()); }

// The largest gap between the best and second-best logit over the rows' smallest such gap: a
// token may flip only where the two paths' difference can bridge it.
double smallest_margin(const Tensor& logits) {
  const Tensor f = logits.to(Device::cpu()).to(DType::Float32).contiguous();
  const std::int64_t rows = f.size(0), vocab = f.size(2);
  const std::vector<double> v = f.to_doubles();
  double margin = INFINITY;
  for (std::int64_t r = 0; r < rows; ++r) {
    double first = -INFINITY, second = -INFINITY;
    for (std::int64_t i = 0; i < vocab; ++i) {
      const double x = v[static_cast<std::size_t>(r * vocab + i)];
      if (x > first) {
        second = first;
        first = x;
      } else if (x > second) {
        second = x;
      }
    }
    margin = std::min(margin, first - second);
  }
  return margin;
}

TEST_P(DecodeGraphTest, StepsFollowTheModulePathAcrossCacheGrowth) {
  const GraphCase c = GetParam();
  const auto f = load_model_fixture(c.fixture);
  const Device gpu = Device::cuda(0);
  auto model = load_fixture_model(f, gpu, c.dtype);
  models::DecodeGraphRunner runner(*model);
  ASSERT_TRUE(runner.usable()) << runner.reason();
  models::DecodeGraphRunner eager(*model, /*use_graph=*/false);
  ASSERT_TRUE(eager.usable()) << eager.reason();
  // The step's own split-key attention in every layer instead of launch_flash_decode.
  models::DecodeGraphRunner own(*model, /*use_graph=*/true, /*flash_decode=*/false);
  ASSERT_TRUE(own.usable()) << own.reason();
  // Without programmatic dependent launch, and with the norms in the GEMVs: the same bits.
  models::DecodeGraphOptions serial_options;
  serial_options.pdl = false;
  models::DecodeGraphRunner serial(*model, serial_options);
  models::DecodeGraphOptions fused_options;
  fused_options.fused_norm = true;
  models::DecodeGraphRunner fused_norms(*model, fused_options);
  // L2 prefetches of every kind (tiny models: each takes whole tensors), in branches of the
  // graph and in its chain: hints only, the same bits.
  models::DecodeGraphOptions branch_options;
  branch_options.l2_prefetch = "o@qkv:8,gu@o:1,down@o:1/chain,qkv@down:2,o@gu:1/early,last";
  models::DecodeGraphRunner l2_branch(*model, branch_options);
  ASSERT_TRUE(l2_branch.usable()) << l2_branch.reason();
  models::DecodeGraphOptions chain_options;
  chain_options.l2_prefetch = "o@qkv:8,gu@o:1/early,qkv@down:2,down@gu:1/early,chain";
  models::DecodeGraphRunner l2_chain(*model, chain_options);
  ASSERT_TRUE(l2_chain.usable()) << l2_chain.reason();
  models::DecodeGraphOptions eager_branch_options = branch_options;
  eager_branch_options.use_graph = false;
  models::DecodeGraphRunner l2_eager(*model, eager_branch_options);
  // The norms after o_proj and down_proj in their last blocks (bf16: two launches fewer per
  // layer; float32 keeps the kernels), with the L2 branch too.
  models::DecodeGraphOptions tail_options = branch_options;
  tail_options.tail_norm = true;
  models::DecodeGraphRunner tail_norms(*model, tail_options);
  ASSERT_TRUE(tail_norms.usable()) << tail_norms.reason();
  // o_proj and down_proj split over k (bf16 at batch 1; elsewhere the default kernel): another
  // summation order, so within the module path's tolerance, not the same bits.
  models::DecodeGraphOptions split_options = tail_options;
  split_options.split_k = 4;
  models::DecodeGraphRunner split_k(*model, split_options);
  ASSERT_TRUE(split_k.usable()) << split_k.reason();

  // Without rope_kv_write in the q/k/v GEMV's store (the defaults fuse it where the layer has no
  // per-head norm and rotates whole heads: llama, mistral, qwen2, smollm3's NoPE layers too) and
  // without flash decoding's early key fetch, with the GEMVs' late trigger and down_proj's own
  // prefetch before its wait: the same bits.
  models::DecodeGraphOptions rope_options;
  rope_options.fused_rope = false;
  rope_options.flash_prefetch = false;
  setenv("STRATA_GEMV_LATE_TRIGGER", "1", 1);
  setenv("STRATA_GEMV_PREFETCH_DOWN", "1x4", 1);
  models::DecodeGraphRunner fused_rope(*model, rope_options);
  unsetenv("STRATA_GEMV_LATE_TRIGGER");
  unsetenv("STRATA_GEMV_PREFETCH_DOWN");
  ASSERT_TRUE(fused_rope.usable()) << fused_rope.reason();
  // And split-K for down_proj alone.
  setenv("STRATA_DECODE_SPLIT_K", "2x2@down", 1);
  models::DecodeGraphRunner split_down(*model, rope_options);
  unsetenv("STRATA_DECODE_SPLIT_K");
  ASSERT_TRUE(split_down.usable()) << split_down.reason();

  const Tensor ids = prompt(f, c.batch).to(gpu);
  auto module_cache = model->make_cache();
  auto graph_cache = model->make_cache();
  auto eager_cache = model->make_cache();
  auto own_cache = model->make_cache();
  auto serial_cache = model->make_cache();
  auto norms_cache = model->make_cache();
  auto branch_cache = model->make_cache();
  auto chain_cache = model->make_cache();
  auto l2_eager_cache = model->make_cache();
  auto tail_cache = model->make_cache();
  auto split_cache = model->make_cache();
  auto rope_cache = model->make_cache();
  auto split_down_cache = model->make_cache();
  Tensor next = argmax_ids(model->run(ids, module_cache, 1).logits);
  for (auto* cache :
       {&graph_cache, &eager_cache, &own_cache, &serial_cache, &norms_cache, &branch_cache,
        &chain_cache, &l2_eager_cache, &tail_cache, &split_cache, &rope_cache, &split_down_cache}) {
    model->run(ids, *cache, 1);
  }
  const double tol = tolerance(c.dtype);
  std::int64_t compared_tokens = 0;
  for (std::int64_t step = 0; step < kSteps; ++step) {
    const Tensor expected = model->run(next.to(gpu), module_cache, 1).logits;
    const std::optional<Tensor> fast = runner.step(next, *graph_cache);
    ASSERT_TRUE(fast.has_value()) << "step " << step << ": " << runner.reason();
    const std::optional<Tensor> unfused = eager.step(next, *eager_cache);
    ASSERT_TRUE(unfused.has_value()) << eager.reason();
    ASSERT_EQ(fast->shape(), expected.shape());
    const double scale = max_abs(expected), diff = max_abs_diff(*fast, expected);
    EXPECT_LE(diff, tol * scale) << "step " << step << ": max |diff| " << diff << " at scale "
                                 << scale;
    // The graph replays exactly the kernels the eager run launches.
    EXPECT_EQ(max_abs_diff(*fast, *unfused), 0.0) << "step " << step;
    const std::optional<Tensor> without_pdl = serial.step(next, *serial_cache);
    ASSERT_TRUE(without_pdl.has_value()) << serial.reason();
    EXPECT_EQ(max_abs_diff(*fast, *without_pdl), 0.0) << "PDL off, step " << step;
    const std::optional<Tensor> norms_in_gemvs = fused_norms.step(next, *norms_cache);
    ASSERT_TRUE(norms_in_gemvs.has_value()) << fused_norms.reason();
    EXPECT_EQ(max_abs_diff(*fast, *norms_in_gemvs), 0.0) << "fused norms, step " << step;
    for (auto [runner_l2, cache_l2, what] :
         {std::tuple{&l2_branch, &branch_cache, "L2 prefetch branch"},
          std::tuple{&l2_chain, &chain_cache, "L2 prefetch chain"},
          std::tuple{&l2_eager, &l2_eager_cache, "L2 prefetch, no graph"},
          std::tuple{&tail_norms, &tail_cache, "norms in the GEMVs' last blocks"},
          std::tuple{&fused_rope, &rope_cache, "rotary in the q/k/v GEMV"}}) {
      const std::optional<Tensor> prefetched = runner_l2->step(next, **cache_l2);
      ASSERT_TRUE(prefetched.has_value()) << what << ": " << runner_l2->reason();
      EXPECT_EQ(max_abs_diff(*fast, *prefetched), 0.0) << what << ", step " << step;
    }
    const std::optional<Tensor> split = split_k.step(next, *split_cache);
    ASSERT_TRUE(split.has_value()) << split_k.reason();
    EXPECT_LE(max_abs_diff(*split, expected), tol * scale) << "split-K, step " << step;
    const std::optional<Tensor> split_d = split_down.step(next, *split_down_cache);
    ASSERT_TRUE(split_d.has_value()) << split_down.reason();
    EXPECT_LE(max_abs_diff(*split_d, expected), tol * scale) << "split-K down, step " << step;
    const std::optional<Tensor> own_attention = own.step(next, *own_cache);
    ASSERT_TRUE(own_attention.has_value()) << own.reason();
    EXPECT_LE(max_abs_diff(*own_attention, expected), tol * scale)
        << "own attention, step " << step;
    // Greedy tokens agree wherever the module path's choice is not a near tie.
    if (smallest_margin(expected) > 2 * tol * scale) {
      EXPECT_EQ(argmax_ids(*fast).to_vector<std::int64_t>(),
                argmax_ids(expected).to_vector<std::int64_t>())
          << "step " << step;
      ++compared_tokens;
    }
    next = argmax_ids(expected);
  }
  // float32: the two paths differ by ~1e-6 of the scale, so nearly every step is compared. bf16
  // on these tiny random models: the top two logits are within 8% of the scale in most steps
  // (the device run compared 0 to 12 of 24), so only the logit bound above and the tokens of
  // clear steps are asserted; generate_greedy's tokens are compared in float32 below.
  if (c.dtype == DType::Float32) {
    EXPECT_GT(compared_tokens, kSteps / 2) << "too many near ties to compare tokens";
  }
  // 10 prompt tokens + 24: the cache grew from 16 to 32 and 64 entries, a capture for each.
  EXPECT_EQ(graph_cache->seq_length(0), module_cache->seq_length(0));
  EXPECT_EQ(runner.captures(), 3);
  EXPECT_EQ(eager.captures(), 0);
  for (std::int64_t l = 0; l < model->config().num_layers; ++l) {
    const Tensor k = module_cache->keys(l), v = module_cache->values(l);
    EXPECT_LE(max_abs_diff(graph_cache->keys(l), k), tol * std::max(1.0, max_abs(k))) << l;
    EXPECT_LE(max_abs_diff(graph_cache->values(l), v), tol * std::max(1.0, max_abs(v))) << l;
  }
}

// generate_greedy takes the fast path by default: in float32 its tokens equal the module path's
// (options.decode_graph = false) and transformers' recorded continuation.
TEST_P(DecodeGraphTest, GenerateGreedyTokensEqualTheModulePath) {
  const GraphCase c = GetParam();
  if (c.dtype != DType::Float32) GTEST_SKIP() << "token equality is asserted in float32";
  const auto f = load_model_fixture(c.fixture);
  auto model = load_fixture_model(f, Device::cuda(0), c.dtype);
  models::GenerationOptions options;
  options.max_new_tokens = kSteps;
  const Tensor ids = prompt(f, c.batch);
  const auto fast = models::generate_greedy(*model, ids, options);
  options.decode_graph = false;
  const auto slow = models::generate_greedy(*model, ids, options);
  EXPECT_EQ(fast.tokens.to_vector<std::int64_t>(), slow.tokens.to_vector<std::int64_t>());
  const std::int64_t recorded = f.greedy_ids.size(1);
  EXPECT_EQ(
      fast.tokens.narrow(0, 0, 1).narrow(1, 0, recorded).contiguous().to_vector<std::int64_t>(),
      f.greedy_ids.to_vector<std::int64_t>());
}

std::vector<GraphCase> cases() {
  std::vector<GraphCase> out;
  for (const char* fixture : {"llama", "qwen3", "mistral", "qwen2", "smollm3"}) {
    for (DType dtype : {DType::BFloat16, DType::Float32}) {
      for (std::int64_t batch : {1, 3}) out.push_back({fixture, dtype, batch});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecodeGraphTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) {
                           const GraphCase& c = info.param;
                           return c.fixture + "_" + testing::dtype_test_name(c.dtype) + "_b" +
                                  std::to_string(c.batch);
                         });

// Refusals keep the module path: a padded step's batch differs from the cache's, more than 8
// rows, and an id outside the vocabulary (which the module path reports as an error).
TEST(DecodeGraphRefusal, StepsItCannotRunLeaveTheCacheAlone) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA GPU on this machine";
  const auto f = load_model_fixture("llama");
  auto model = load_fixture_model(f, Device::cuda(0), DType::BFloat16);
  models::DecodeGraphRunner runner(*model);
  ASSERT_TRUE(runner.usable()) << runner.reason();
  auto cache = model->make_cache();
  model->run(f.prompt_ids.to(Device::cuda(0)), cache, 1);
  const std::int64_t before = cache->seq_length(0);
  EXPECT_FALSE(runner.step(Tensor::zeros({1, 1}, DType::Int64), *cache).has_value());
  EXPECT_NE(runner.reason().find("layer 0"), std::string::npos) << runner.reason();
  EXPECT_FALSE(runner.step(Tensor::zeros({9, 1}, DType::Int64), *cache).has_value());
  EXPECT_FALSE(runner.step(Tensor::full({2, 1}, 128.0, DType::Int64), *cache).has_value());
  EXPECT_NE(runner.reason().find("vocabulary"), std::string::npos) << runner.reason();
  EXPECT_EQ(cache->seq_length(0), before);
  EXPECT_TRUE(runner.step(Tensor::zeros({2, 1}, DType::Int64), *cache).has_value());
  EXPECT_EQ(cache->seq_length(0), before + 1);
}

}  // namespace
}  // namespace strata
