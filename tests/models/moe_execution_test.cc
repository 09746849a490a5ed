// Execution of offloaded routed experts (issue 17, docs/moe-execution.md): the block computes
// only the selected experts, on the cpu where they are stored (one activation transfer per block
// step) or streamed to the execution device, through an optional expert cache. Every mode must
// keep transformers' numbers (the recorded float32 logits and 12 greedy tokens of the MoE
// fixtures), and the counts must show which path ran. CUDA modes skip without a GPU; on the cpu
// the cache is a cpu-device cache (the mechanism is device-generic).

#include <cstdlib>
#include <cstring>

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "strata/io/checkpoint.h"
#include "strata/models/moe.h"
#include "strata/placement/auto_device_map.h"
#include "strata/placement/load_and_dispatch.h"

namespace strata::testing {
namespace {

namespace fs = std::filesystem;
using placement::MapDevice;
using placement::OffloadPolicy;

constexpr std::int64_t kStepPlusOne = -1;

struct Mode {
  std::string name;
  bool gpu = false;                           // execution device cuda:0, else the cpu
  const char* experts = "disk";               // where the routed experts live
  OffloadPolicy policy = OffloadPolicy::Cpu;  // Auto: a one-token threshold
  // Cache budget in experts; 0: none; kStepPlusOne: one decode step's experts (blocks x top_k)
  // plus one. A smaller LRU cache can never hit at decode when a block's routing repeats itself
  // (the step's other experts evict the next step's first one), a larger one could hold them all.
  std::int64_t cache_experts = 0;
};

void PrintTo(const Mode& m, std::ostream* os) { *os << m.name; }

const std::vector<Mode>& modes() {
  static const std::vector<Mode> all = {
      {"cpu_disk_policy_cpu", false, "disk", OffloadPolicy::Cpu, 0},
      {"cpu_disk_stream", false, "disk", OffloadPolicy::Stream, 0},
      {"cpu_disk_auto", false, "disk", OffloadPolicy::Auto, 0},
      {"cpu_disk_policy_cpu_cache", false, "disk", OffloadPolicy::Cpu, 1000},
      {"cpu_disk_stream_small_cache", false, "disk", OffloadPolicy::Stream, kStepPlusOne},
      {"cuda_cpu_policy_cpu", true, "cpu", OffloadPolicy::Cpu, 0},
      {"cuda_cpu_stream", true, "cpu", OffloadPolicy::Stream, 0},
      {"cuda_cpu_auto", true, "cpu", OffloadPolicy::Auto, 0},
      {"cuda_disk_policy_cpu", true, "disk", OffloadPolicy::Cpu, 0},
      {"cuda_cpu_policy_cpu_cache", true, "cpu", OffloadPolicy::Cpu, 1000},
      {"cuda_cpu_stream_small_cache", true, "cpu", OffloadPolicy::Stream, kStepPlusOne},
  };
  return all;
}

const std::vector<std::string>& moe_fixtures() {
  // DeepSeek's blocks run the same mechanism (MoeBlock): V2 (softmax, greedy), V3 (sigmoid,
  // group-limited, the correction bias) and V3 with fp8 block weights (its experts' fp8 tensors
  // and scales read as stored, against transformers' dequantised reference).
  static const std::vector<std::string> names = {"qwen3_moe",       "qwen2_moe",   "mixtral",
                                                 "qwen3_moe_fused", "deepseek_v2", "deepseek_v3",
                                                 "deepseek_v3_fp8"};
  return names;
}

// The bytes of one routed expert as the checkpoint stores them (every expert of the fixtures has
// the same shapes and dtypes): the tensors of `model.layers.L.mlp.experts.0.` of the first layer
// that has them (float32 weights; fp8 weights and their float32 scales).
std::int64_t stored_expert_bytes(const fs::path& dir) {
  const io::CheckpointReader reader(dir / "model.safetensors");
  std::int64_t bytes = 0;
  std::string prefix;
  for (const std::string& name : reader.keys()) {
    const std::size_t at = name.find(".experts.0.");
    if (at == std::string::npos || name.find("shared") != std::string::npos) continue;
    if (prefix.empty()) prefix = name.substr(0, at + 11);
    if (name.starts_with(prefix)) bytes += static_cast<std::int64_t>(reader.meta(name).nbytes());
  }
  EXPECT_GT(bytes, 0) << "no routed expert in " << dir;
  return bytes;
}

using Case = std::tuple<std::string, Mode>;

class MoeExecutionTest : public ::testing::TestWithParam<Case> {
 protected:
  const Mode& mode() const { return std::get<1>(GetParam()); }
};

TEST_P(MoeExecutionTest, SelectedExpertsKeepTransformersNumbers) {
  const Mode& m = mode();
  if (m.gpu && !device_available(Device::cuda(0))) GTEST_SKIP() << "no CUDA device";
  const ModelFixture f = load_model_fixture(std::get<0>(GetParam()));
  auto model = empty_fixture_model(f);
  placement::DeviceMap map = {{"", m.gpu ? MapDevice(0) : MapDevice::cpu()}};
  for (const std::string& experts :
       placement::routed_expert_modules(*model, model->no_split_module_classes())) {
    map.emplace_back(experts, MapDevice(m.experts));
  }
  TempDir tmp;
  placement::LoadAndDispatchOptions options;
  options.device_map = map;
  options.offload_folder = tmp.path() / "offload";
  const auto result = placement::load_checkpoint_and_dispatch(
      *model, model_fixture_dir(f.name) / "model.safetensors", options);
  ASSERT_TRUE(result.dispatch.has_value() && result.dispatch->scheduler);
  placement::PrefetchScheduler& scheduler = *result.dispatch->scheduler;
  // What auto's planner is asked for each expert: its gate projection, with the block's round
  // trip shared by the step's top_k x 3 projections.
  std::vector<std::int64_t> block_projections;
  if (m.policy == OffloadPolicy::Auto) {
    scheduler.set_offload_policy(OffloadPolicy::Auto,
                                 [&block_projections](const placement::UnitProfile& p) {
                                   block_projections.push_back(p.block_projections);
                                   return std::int64_t{1};
                                 });
  } else {
    scheduler.set_offload_policy(m.policy);
  }
  const std::vector<models::MoeBlock*> blocks = models::moe_blocks(*model);
  ASSERT_FALSE(blocks.empty());
  const std::int64_t top_k = blocks.front()->top_k();
  const std::int64_t expert_bytes = stored_expert_bytes(model_fixture_dir(f.name));
  std::shared_ptr<placement::ExpertCache> cache;
  const auto blocks_n = static_cast<std::int64_t>(blocks.size());
  const std::int64_t cache_experts =
      m.cache_experts == kStepPlusOne ? blocks_n * top_k + 1 : m.cache_experts;
  if (cache_experts > 0) {
    cache = models::attach_expert_cache(*model, cache_experts * expert_bytes);
    ASSERT_NE(cache, nullptr);
    EXPECT_EQ(cache->device(), m.gpu ? Device::cuda(0) : Device::cpu());
    // One partition of the budget per block (every block here offloads its experts).
    EXPECT_EQ(cache->partitions(), std::min(blocks_n, cache_experts));
  }

  // One token: exactly top_k experts per block compute, each on the path the policy says, and
  // only those experts' weights are read.
  model->run(f.prompt_ids.narrow(0, 0, 1).narrow(1, 0, 1));
  const models::ExpertExecutionStats one = models::expert_execution_stats(*model);
  EXPECT_EQ(one.resident, 0);
  EXPECT_EQ(one.cpu + one.streamed + one.cached, blocks_n * top_k);
  if (m.policy == OffloadPolicy::Stream) {
    EXPECT_EQ(one.cpu, 0);
    EXPECT_EQ(one.cpu_batches, 0);
    EXPECT_EQ(one.streamed_bytes, one.streamed * expert_bytes);
  } else {  // cpu, and auto at one token
    EXPECT_EQ(one.cpu, blocks_n * top_k);
    EXPECT_EQ(one.cpu_bytes, one.cpu * expert_bytes);
    EXPECT_EQ(one.cpu_batches, blocks_n) << "one activation transfer per block, not per expert";
    EXPECT_GT(one.cpu_ns, 0) << "the cpu products' time is counted";
  }
  // The blocks' host time: routing, and the expert step that contains the cpu products.
  EXPECT_GT(one.route_ns, 0);
  EXPECT_GE(one.experts_ns, one.cpu_ns);
  EXPECT_GT(one.experts_ns, 0);
  EXPECT_EQ(one.block_steps, blocks_n);
  EXPECT_LE(one.device_ns, one.experts_ns);
  // Choosing the paths, the cpu products and what follows them are disjoint parts of it.
  EXPECT_GT(one.decide_ns, 0);
  EXPECT_LE(one.decide_ns + one.cpu_ns + one.tail_ns, one.experts_ns);
  EXPECT_EQ(one.tail_ns > 0, one.cpu > 0) << "the tail is counted in steps with cpu experts";

  expect_float32_logits_match(f, model->run(f.prompt_ids).logits);
  expect_greedy_continuation_matches(f, *model);
  const models::ExpertExecutionStats all = models::expert_execution_stats(*model);
  // Behind a GPU, the decode steps of blocks with offloaded experts read their routing and
  // input with one wait (the 11 decode steps of the greedy continuation at least); on the cpu
  // nothing is staged.
  if (m.gpu) {
    EXPECT_GE(all.staged_batches, 11 * blocks_n);
  } else {
    EXPECT_EQ(all.staged_batches, 0);
  }
  if (m.policy == OffloadPolicy::Auto) {
    EXPECT_GT(all.streamed, 0) << "the prompts did not stream their experts";
    EXPECT_GT(all.cpu, blocks_n * top_k) << "the decode steps did not compute on the cpu";
    ASSERT_FALSE(block_projections.empty());
    for (const std::int64_t n : block_projections) EXPECT_EQ(n, 3 * top_k);
  }
  // Behind a GPU the streamed experts the cache does not keep copy on the copy stream (all of
  // them without a cache); the cpu has no copy engine.
  if (!m.gpu) {
    EXPECT_EQ(all.copy_streamed, 0);
  } else if (!cache) {
    EXPECT_EQ(all.copy_streamed, all.streamed);
  }
  // Behind a GPU the prompts' streamed experts (every expert here is groupable but
  // deepseek_v3_fp8's quantized ones) computed in grouped products; the cpu runs one expert after
  // another.
  if (!m.gpu || f.name == "deepseek_v3_fp8") {
    EXPECT_EQ(all.grouped, 0);
  } else if (m.policy != OffloadPolicy::Cpu) {
    EXPECT_GT(all.grouped, 0);
  }
  if (cache) {
    const placement::ExpertCacheStats s = cache->stats();
    if (m.gpu) EXPECT_EQ(all.copy_streamed, s.bypassed);
    EXPECT_EQ(s.hits, all.cached);
    EXPECT_GT(s.hits, 0);
    EXPECT_LE(s.bytes, cache_experts * expert_bytes);
    // It never holds more than its budget: every insertion past that many experts evicted one.
    EXPECT_EQ(s.entries, s.insertions - s.evictions);
    EXPECT_GE(s.evictions, s.insertions - cache_experts);
    // A second pass over the prompts finds its experts (the big cache holds them all).
    if (cache_experts >= 1000) {
      const std::int64_t before = cache->stats().misses;
      expect_float32_logits_match(f, model->run(f.prompt_ids).logits);
      EXPECT_EQ(cache->stats().misses, before);
    }
  }
}

// A prefill (a step past decode size) streams its misses without evicting the cache's experts:
// on the stream a prefill makes, every expert of every block in block order, LRU would evict each
// expert just before the next pass needs it (expert_cache.h). Decode steps still evict. The
// numbers are the uncached model's.
// On a GPU the misses the cache does not keep (and every streamed expert of a model without a
// cache) copy on the scheduler's copy stream: the numbers of the compute stream's copies (the
// model without a cache runs with STRATA_MOE_COPY_STREAM=0 first).
class MoeExpertCacheScan : public ::testing::TestWithParam<bool> {};

TEST_P(MoeExpertCacheScan, PrefillStepsKeepTheResidentExpertsDecodeStepsEvict) {
  const bool gpu = GetParam();
  if (gpu && !device_available(Device::cuda(0))) GTEST_SKIP() << "no CUDA device";
  const ModelFixture f = load_model_fixture("qwen3_moe");
  const auto load = [&](const fs::path& offload) {
    auto model = empty_fixture_model(f);
    placement::DeviceMap map = {{"", gpu ? MapDevice(0) : MapDevice::cpu()}};
    for (const std::string& experts :
         placement::routed_expert_modules(*model, model->no_split_module_classes())) {
      map.emplace_back(experts, MapDevice("disk"));
    }
    placement::LoadAndDispatchOptions options;
    options.device_map = map;
    options.offload_folder = offload;
    const auto result = placement::load_checkpoint_and_dispatch(
        *model, model_fixture_dir(f.name) / "model.safetensors", options);
    result.dispatch->scheduler->set_offload_policy(OffloadPolicy::Stream);
    return model;
  };
  const auto same = [](const Tensor& a, const Tensor& b) {
    EXPECT_EQ(a.contiguous().to_vector<float>(), b.contiguous().to_vector<float>());
  };
  TempDir tmp;
  auto cached = load(tmp.path() / "a");
  auto plain = load(tmp.path() / "b");
  const std::vector<models::MoeBlock*> blocks = models::moe_blocks(*cached);
  const auto blocks_n = static_cast<std::int64_t>(blocks.size());
  const std::int64_t top_k = blocks.front()->top_k();
  const std::int64_t experts = blocks.front()->num_experts();
  ASSERT_GT(experts, top_k + 1);
  // One decode step's experts a block, plus one.
  const auto cache = models::attach_expert_cache(
      *cached, (blocks_n * (top_k + 1)) * stored_expert_bytes(model_fixture_dir(f.name)));
  ASSERT_EQ(cache->partitions(), blocks_n);

  // A 24-token prompt (past kDecodeSizedExpertTokens) of every token id in turn.
  const std::int64_t tokens = placement::kDecodeSizedExpertTokens + 8;
  const std::int64_t vocab = f.config.vocab_size.value();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(tokens));
  for (std::int64_t i = 0; i < tokens; ++i) ids[static_cast<std::size_t>(i)] = i % vocab;
  const Tensor prompt = Tensor::from_vector(ids, {1, tokens});
  const Tensor logits = cached->run(prompt).logits;
  ::setenv("STRATA_MOE_COPY_STREAM", "0", 1);
  const Tensor compute_stream_logits = plain->run(prompt).logits;
  ::unsetenv("STRATA_MOE_COPY_STREAM");
  same(logits, compute_stream_logits);
  EXPECT_EQ(models::expert_execution_stats(*plain).copy_streamed, 0);
  models::reset_expert_execution_stats(*plain);
  same(plain->run(prompt).logits, compute_stream_logits);
  placement::ExpertCacheStats s = cache->stats();
  EXPECT_EQ(s.evictions, 0) << "a prefill evicted";
  EXPECT_EQ(s.entries, blocks_n * (top_k + 1)) << "the free room filled, block by block";
  EXPECT_GT(s.bypassed, 0) << "the prompt selected more experts than the cache holds";
  EXPECT_EQ(s.insertions + s.bypassed, s.misses);
  const models::ExpertExecutionStats with_cache = models::expert_execution_stats(*cached);
  const models::ExpertExecutionStats without = models::expert_execution_stats(*plain);
  EXPECT_EQ(with_cache.copy_streamed, gpu ? s.bypassed : 0);
  EXPECT_EQ(without.copy_streamed, gpu ? without.streamed : 0);
  // Decode-sized steps evict as before.
  for (std::int64_t i = 0; i < 6; ++i) {
    const Tensor one = Tensor::from_vector(std::vector<std::int64_t>{(7 * i + 3) % vocab}, {1, 1});
    same(cached->run(one).logits, plain->run(one).logits);
  }
  s = cache->stats();
  EXPECT_GT(s.evictions, 0) << "decode steps no longer evict";
  EXPECT_EQ(s.bypassed + s.insertions, s.misses);
}

INSTANTIATE_TEST_SUITE_P(Devices, MoeExpertCacheScan, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "cuda" : "cpu"; });

INSTANTIATE_TEST_SUITE_P(Moe, MoeExecutionTest,
                         ::testing::Combine(::testing::ValuesIn(moe_fixtures()),
                                            ::testing::ValuesIn(modes())),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param).name;
                         });

// A cpu execution device computes a decode-sized step's resident experts in the cpu experts'
// queue (moe_experts.h, resident_source): the bits of calling them one after another
// (STRATA_MOE_RESIDENT_QUEUE=0), and transformers' numbers through the greedy continuation.
// Quantized experts (deepseek_v3_fp8) are called as before.
class ResidentCpuExpertsTest : public ::testing::TestWithParam<std::string> {};

// The logits of `ids` with the queue on or off, and the blocks' counts of that run.
std::pair<Tensor, models::ExpertExecutionStats> run_resident(models::CausalLM& model,
                                                             const Tensor& ids, bool queue) {
  if (queue) {
    ::unsetenv("STRATA_MOE_RESIDENT_QUEUE");
  } else {
    ::setenv("STRATA_MOE_RESIDENT_QUEUE", "0", 1);
  }
  models::reset_expert_execution_stats(model);
  Tensor logits = model.run(ids).logits;
  ::unsetenv("STRATA_MOE_RESIDENT_QUEUE");
  return {logits, models::expert_execution_stats(model)};
}

TEST_P(ResidentCpuExpertsTest, DecodeStepsInTheQueueEqualTheExpertsCalledOneByOne) {
  const ModelFixture f = load_model_fixture(GetParam());
  const auto model = load_fixture_model(f, Device::cpu());
  const std::vector<models::MoeBlock*> blocks = models::moe_blocks(*model);
  ASSERT_FALSE(blocks.empty());
  const auto blocks_n = static_cast<std::int64_t>(blocks.size());
  const bool quantized = GetParam().ends_with("_fp8");
  // One token, and four (the most rows a queued expert takes): every routed expert is resident.
  for (const std::int64_t tokens : {std::int64_t{1}, std::int64_t{4}}) {
    SCOPED_TRACE(tokens);
    const Tensor ids = f.prompt_ids.narrow(0, 0, 1).narrow(1, 0, tokens);
    const auto [called, called_stats] = run_resident(*model, ids, false);
    const auto [queued, queued_stats] = run_resident(*model, ids, true);
    EXPECT_EQ(called_stats.cpu_ns, 0) << "STRATA_MOE_RESIDENT_QUEUE=0 calls every expert";
    EXPECT_EQ(queued_stats.cpu_ns > 0, !quantized) << "the queue computed the resident experts";
    EXPECT_EQ(queued_stats.resident, called_stats.resident);
    EXPECT_EQ(queued_stats.cpu + queued_stats.streamed + queued_stats.cached, 0);
    EXPECT_EQ(queued_stats.cpu_batches, 0) << "nothing crosses to another device";
    EXPECT_EQ(queued_stats.block_steps, blocks_n);
    const Tensor a = called.contiguous(), b = queued.contiguous();
    ASSERT_EQ(a.shape(), b.shape());
    EXPECT_EQ(0, std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()));
  }
  // The prompt (prefill: its experts are called) and the greedy continuation (decode steps: in
  // the queue) keep transformers' numbers.
  expect_float32_logits_match(f, model->run(f.prompt_ids).logits);
  expect_greedy_continuation_matches(f, *model);
}

INSTANTIATE_TEST_SUITE_P(Moe, ResidentCpuExpertsTest, ::testing::ValuesIn(moe_fixtures()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace strata::testing
