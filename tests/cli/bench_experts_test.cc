// `strata bench` on a mixture-of-experts fixture whose routed experts are offloaded (to disk, the
// cpu being the execution device here): each test reports where the selected experts computed
// and the expert cache's hit rate (--expert-cache), consistently with its own counters; the cache
// options are checked by name.

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench_command.h"
#include "io/io_testing.h"
#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/core/error.h"

namespace strata::cli {
namespace {

// The MoE fixture, pp5 and tg4 at batch 1, JSON, no limits measured; every weight on the cpu.
BenchArgs moe_fixture_args(int repetitions) {
  BenchArgs args;
  args.model_dir = testing::model_fixture_dir("qwen3_moe").string();
  args.prompt_tokens = "5";
  args.decode_tokens = 4;
  args.batch = "1";
  args.repetitions = repetitions;
  args.limits = false;
  args.json = true;
  return args;
}

BenchArgs offloaded_experts_args(const testing::TempDir& tmp) {
  const auto map = tmp.path() / "map.json";
  std::ofstream(map) << R"({"": "cpu", "model.layers.*.mlp.experts": "disk"})";
  BenchArgs args = moe_fixture_args(2);
  args.device_map = map.string();
  args.offload_folder = (tmp.path() / "offload").string();
  return args;
}

TEST(BenchExperts, ReportsWhereSelectedExpertsComputedAndTheCacheHitRate) {
  testing::TempDir tmp;
  BenchArgs args = offloaded_experts_args(tmp);
  args.expert_cache = "1MiB";  // holds every expert of the fixture
  args.expert_cache_policy = "lfu";
  std::ostringstream out, err;
  ASSERT_EQ(run_bench(args, out, err), 0);
  const nlohmann::json report = nlohmann::json::parse(out.str());
  ASSERT_EQ(report.at("tests").size(), 2u);
  for (const auto& test : report.at("tests")) {
    SCOPED_TRACE(test.dump());
    const auto& experts = test.at("experts");
    const auto& cache = experts.at("cache");
    const auto hits = cache.at("hits").get<std::int64_t>();
    const auto misses = cache.at("misses").get<std::int64_t>();
    // Every offloaded expert is looked up in the cache first: hits computed from the cache,
    // misses streamed (a cpu execution device streams under auto).
    EXPECT_EQ(experts.at("cached").get<std::int64_t>(), hits);
    EXPECT_EQ(experts.at("streamed").get<std::int64_t>(), misses);
    EXPECT_EQ(experts.at("cpu").get<std::int64_t>(), 0);
    EXPECT_EQ(experts.at("resident").get<std::int64_t>(), 0);
    EXPECT_GT(hits, 0) << "warm-up and repetitions reuse the prompt's experts";
    EXPECT_DOUBLE_EQ(cache.at("hit_rate").get<double>(),
                     static_cast<double>(hits) / static_cast<double>(hits + misses));
    EXPECT_EQ(cache.at("capacity_bytes").get<std::int64_t>(), std::int64_t{1} << 20);
    EXPECT_LE(cache.at("bytes").get<std::int64_t>(), std::int64_t{1} << 20);
    // A miss is kept (an insertion, evicting or not) or streamed past the cache (bypassed).
    EXPECT_LE(cache.at("bypassed").get<std::int64_t>(), misses);
  }
  EXPECT_NE(err.str().find("cache hit rate"), std::string::npos) << err.str();
}

TEST(BenchExperts, WithoutACacheEveryMissStreamsAndOptionsAreChecked) {
  testing::TempDir tmp;
  BenchArgs args = offloaded_experts_args(tmp);
  args.expert_cache = "off";
  std::ostringstream out, err;
  ASSERT_EQ(run_bench(args, out, err), 0);
  const nlohmann::json report = nlohmann::json::parse(out.str());
  for (const auto& test : report.at("tests")) {
    EXPECT_TRUE(test.at("experts").at("cache").is_null());
    EXPECT_GT(test.at("experts").at("streamed").get<std::int64_t>(), 0);
  }
  args.expert_cache_policy = "arc";
  EXPECT_TRUE(testing::throws_naming<InvalidArgument>(
      [&] {
        std::ostringstream o, e;
        run_bench(args, o, e);
      },
      {"arc", "lru", "lfu"}));
  args.expert_cache_policy = "lru";
  args.expert_cache = "plenty";
  EXPECT_TRUE(testing::throws_naming<InvalidArgument>(
      [&] {
        std::ostringstream o, e;
        run_bench(args, o, e);
      },
      {"plenty"}));
}

TEST(BenchExperts, RandomDecodeInputsAndTheDistinctExpertsEachBlockRan) {
  testing::TempDir tmp;
  BenchArgs args = offloaded_experts_args(tmp);
  args.prompt_tokens = "0";
  args.decode_tokens = 6;
  args.decode_input = "random";
  std::ostringstream out, err;
  ASSERT_EQ(run_bench(args, out, err), 0);
  const nlohmann::json report = nlohmann::json::parse(out.str());
  EXPECT_EQ(report.at("decode_input"), "random");
  const auto config =
      nlohmann::json::parse(std::ifstream(testing::model_fixture_dir("qwen3_moe") / "config.json"));
  const auto experts = config.value("num_experts", config.value("num_local_experts", 0));
  const auto top_k = config.at("num_experts_per_tok").get<std::int64_t>();
  const auto& e = report.at("tests").at(0).at("experts");
  const auto blocks = e.at("blocks").get<std::int64_t>();
  const auto distinct = e.at("distinct_experts").get<std::int64_t>();
  EXPECT_EQ(blocks, config.at("num_hidden_layers").get<std::int64_t>());
  // Every block ran at least one token's top_k experts and at most all of them.
  EXPECT_GE(distinct, blocks * top_k);
  EXPECT_LE(distinct, blocks * experts);
  EXPECT_DOUBLE_EQ(e.at("distinct_per_block").get<double>(),
                   static_cast<double>(distinct) / static_cast<double>(blocks));
  EXPECT_NE(err.str().find("distinct per block"), std::string::npos) << err.str();

  args.decode_input = "sampled";
  EXPECT_TRUE(testing::throws_naming<InvalidArgument>(
      [&] {
        std::ostringstream o, e2;
        run_bench(args, o, e2);
      },
      {"--decode-input", "sampled", "greedy", "random"}));
}

// The MoE fixture's report with every weight on the cpu (no map).
nlohmann::json resident_report(std::string& err_text) {
  std::ostringstream out, err;
  EXPECT_EQ(run_bench(moe_fixture_args(1), out, err), 0);
  err_text = err.str();
  return nlohmann::json::parse(out.str());
}

TEST(BenchExperts, ResidentExpertsReportTheirRoutingToo) {
  // Every weight on the execution device (no map): the routing statistics (distinct experts per
  // block) are what a routing study on a cpu-only machine reads, so they are reported here too.
  std::string err;
  const nlohmann::json report = resident_report(err);
  for (const auto& test : report.at("tests")) {
    SCOPED_TRACE(test.dump());
    const auto& e = test.at("experts");
    EXPECT_GT(e.at("resident").get<std::int64_t>(), 0);
    EXPECT_EQ(e.at("cpu").get<std::int64_t>() + e.at("streamed").get<std::int64_t>() +
                  e.at("cached").get<std::int64_t>(),
              0);
    EXPECT_GT(e.at("distinct_experts").get<std::int64_t>(), 0);
  }
  EXPECT_NE(err.find("resident"), std::string::npos) << err;
}

TEST(BenchExperts, RatesCountOnlyTheExpertsTokensRun) {
  // A step reads the dense weights and the experts its tokens selected; a token's products run
  // top_k of a block's experts. Counting every expert made a cpu-only MoE decode "read" 4x the
  // host's memory rate. Expected values from the fixture's config (float32 weights).
  std::string err;
  const nlohmann::json report = resident_report(err);
  ASSERT_EQ(report.at("dtype"), "float32");
  const auto config =
      nlohmann::json::parse(std::ifstream(testing::model_fixture_dir("qwen3_moe") / "config.json"));
  const double experts = config.at("num_local_experts").get<double>();
  const double top_k = config.at("num_experts_per_tok").get<double>();
  const double hidden = config.at("hidden_size").get<double>();
  const double routed_params = config.at("num_hidden_layers").get<double>() * experts * 3 * hidden *
                               config.at("moe_intermediate_size").get<double>();
  EXPECT_DOUBLE_EQ(report.at("routed_expert_bytes").get<double>(), 4 * routed_params);
  const double weight_bytes = report.at("weight_bytes").get<double>();
  const double unselected = 1.0 - top_k / experts;
  for (const auto& test : report.at("tests")) {
    SCOPED_TRACE(test.dump());
    const double seconds = test.at("seconds").get<double>();
    if (test.at("test") == "tg4") {
      // Batch 1: every step is one token, which runs exactly top_k experts a block; of the
      // untied input embedding it reads one row.
      const double vocab = config.at("vocab_size").get<double>();
      const double step_bytes = weight_bytes - 4 * vocab * hidden - 4 * routed_params * unselected;
      EXPECT_DOUBLE_EQ(report.at("lookup_bytes").get<double>(), 4 * vocab * hidden);
      EXPECT_NEAR(test.at("weight_bytes_per_step").get<double>(), step_bytes, 1e-6 * step_bytes);
      EXPECT_NEAR(test.at("weight_read_gb_per_s").get<double>(), step_bytes / (seconds / 4) / 1e9,
                  1e-9 * step_bytes / (seconds / 4) / 1e9);
    } else {
      // Every float32 weight but the untied embedding and head, the routed experts at top_k /
      // num_experts.
      const double vocab = config.at("vocab_size").get<double>();
      const double linear = weight_bytes / 4 - 2 * vocab * hidden - routed_params * unselected;
      const double tflops = 2 * linear * 5 / seconds / 1e12;
      EXPECT_NEAR(test.at("linear_tflops").get<double>(), tflops, 1e-9 * tflops);
    }
  }
}

}  // namespace
}  // namespace strata::cli
