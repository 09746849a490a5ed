// `strata bench` on a fixture checkpoint: the tests it runs (pp per prompt length and batch, tg),
// what it reports for each (rates consistent with the times, the weights read per step), the
// JSON form, and its input checks. Timings themselves are not asserted (machines are noisy).

#include "bench_command.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/io_testing.h"
#include "load_bench.h"
#include "model_loading.h"
#include "models/model_testing.h"
#include "strata/core/error.h"
#include "strata/engine/machine_rates.h"
#include "strata/io/safetensors.h"

namespace strata::cli {
namespace {

BenchArgs fixture_args(const std::string& fixture) {
  BenchArgs args;
  args.model_dir = testing::model_fixture_dir(fixture).string();
  args.max_memory = "cpu=1GiB";  // everything on the cpu, GPU or not
  args.prompt_tokens = "3,7";
  args.decode_tokens = 4;
  args.batch = "1,2";
  args.repetitions = 2;
  args.limits = false;  // measured by one test only
  return args;
}

nlohmann::json bench_json(BenchArgs args) {
  args.json = true;
  std::ostringstream out, err;
  EXPECT_EQ(run_bench(args, out, err), 0);
  return nlohmann::json::parse(out.str());
}

TEST(BenchCommand, RunsEveryTestForEveryBatchAndReportsConsistentRates) {
  const nlohmann::json report = bench_json(fixture_args("llama"));
  const auto& tests = report.at("tests");
  ASSERT_EQ(tests.size(), 6u);  // per batch: pp3, pp7, tg4
  const char* names[] = {"pp3", "pp7", "tg4"};
  for (std::size_t i = 0; i < tests.size(); ++i) {
    const auto& test = tests[i];
    SCOPED_TRACE(test.dump());
    EXPECT_EQ(test.at("test"), names[i % 3]);
    EXPECT_EQ(test.at("batch").get<int>(), i < 3 ? 1 : 2);
    const double seconds = test.at("seconds").get<double>();
    ASSERT_GT(seconds, 0.0);
    EXPECT_LE(test.at("min_seconds").get<double>(), seconds);
    EXPECT_GE(test.at("max_seconds").get<double>(), seconds);
    const double tokens = test.at("batch").get<double>() * test.at("tokens").get<double>();
    EXPECT_NEAR(test.at("tokens_per_second").get<double>(), tokens / seconds,
                1e-9 * tokens / seconds);
    if (i % 3 == 2) {
      EXPECT_EQ(test.at("tokens").get<int>(), 4);
      const double step = seconds / 4;
      EXPECT_NEAR(test.at("ms_per_step").get<double>(), step * 1e3, 1e-9 * step * 1e3);
      // Every float32 weight but the untied input embedding (128 x 64), of which a step reads
      // only its tokens' rows.
      const double step_bytes = report.at("weight_bytes").get<double>() - 128 * 64 * 4;
      EXPECT_DOUBLE_EQ(test.at("weight_bytes_per_step").get<double>(), step_bytes);
      EXPECT_NEAR(test.at("weight_read_gb_per_s").get<double>(), step_bytes / step / 1e9, 1e-6);
      EXPECT_TRUE(test.at("share_of_memory_limit").is_null());  // no limits measured
    } else {
      EXPECT_FALSE(test.contains("ms_per_step"));
      // Llama fixture: 2 layers of q,k,v,o (64x64, 64x32, 64x32, 64x64) and gate,up,down (64x96)
      // plus 3 norms of 64: everything but the untied embedding and head (128 x 64 each).
      const double linear_params = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 96 + 2 * 64) + 64;
      EXPECT_NEAR(test.at("linear_tflops").get<double>(),
                  2 * linear_params * tokens / seconds / 1e12, 1e-9);
    }
  }
  EXPECT_GT(report.at("weight_bytes").get<std::uint64_t>(), 0u);
  EXPECT_EQ(report.at("dtype"), "float32");
}

TEST(BenchCommand, ComparesGenerationWithTheMemoryLimitMeasuredInTheSameRun) {
  BenchArgs args = fixture_args("llama");
  args.limits = true;
  args.prompt_tokens = "0";
  const nlohmann::json report = bench_json(args);
  const double host = report.at("limits").at("host_read_gb_s").get<double>();
  ASSERT_GT(host, 0.0);
  for (const auto& test : report.at("tests")) {
    // Every weight is on the cpu: the host's read rate is the limit.
    EXPECT_NEAR(test.at("share_of_memory_limit").get<double>(),
                test.at("weight_read_gb_per_s").get<double>() / host, 1e-9);
  }
}

TEST(BenchCommand, ReportsWhereOffloadedUnitsComputedAndTheTimedRunsPageFaults) {
  // The layers on disk (views of the checkpoint), one unit per layer, forced to the cpu: every
  // onload of a test's runs (warm-up included) is a cpu compute, nothing is copied.
  testing::TempDir tmp;
  const auto map = tmp.path() / "map.json";
  std::ofstream(map) << R"({"": "cpu", "model.layers": "disk"})";
  BenchArgs args = fixture_args("llama");
  args.max_memory.reset();
  args.device_map = map.string();
  args.offload_folder = (tmp.path() / "offload").string();
  args.offload_policy = "cpu";
  args.offload_unit = "layer";
  args.prompt_tokens = "3";
  args.batch = "1";
  const nlohmann::json report = bench_json(args);
  ASSERT_EQ(report.at("tests").size(), 2u);
  for (const auto& test : report.at("tests")) {
    SCOPED_TRACE(test.dump());
    const auto& units = test.at("offloaded_units");
    // pp3: warm-up + 2 runs of one forward over 2 layers; tg4: 3 x (prefill + 4 steps) x 2.
    const int forwards = test.at("test") == "pp3" ? 3 : 3 * 5;
    EXPECT_EQ(units.at("onloads").get<int>(), 2 * forwards);
    EXPECT_EQ(units.at("cpu_computes").get<int>(), 2 * forwards);
    EXPECT_EQ(units.at("issued").get<int>(), 0);
    EXPECT_EQ(units.at("bytes_copied").get<int>(), 0);
    EXPECT_GE(test.at("minor_faults").get<std::int64_t>(), 0);
  }
  // Nothing offloaded: no unit counters.
  const nlohmann::json resident = bench_json(fixture_args("llama"));
  EXPECT_FALSE(resident.at("tests")[0].contains("offloaded_units"));
  // Module units: each layer's 7 linears and 2 norms are units of their own.
  args.offload_unit = "module";
  const nlohmann::json modules = bench_json(args);
  EXPECT_EQ(modules.at("tests")[0].at("offloaded_units").at("onloads").get<int>(), 3 * 2 * 9);
  // The default (auto) is one unit per layer for a dense model.
  args.offload_unit = PlacementArgs{}.offload_unit;
  const nlohmann::json by_default = bench_json(args);
  EXPECT_EQ(by_default.at("tests")[0].at("offloaded_units").at("onloads").get<int>(), 3 * 2);
}

TEST(BenchCommand, OffloadUnitAutoIsALayerUnlessTheModelRoutesExperts) {
  EXPECT_EQ(PlacementArgs{}.offload_unit, "auto");
  const auto config = [](const std::string& fixture) {
    return build_empty_model(testing::model_fixture_dir(fixture).string(), std::nullopt).config;
  };
  EXPECT_EQ(offload_unit_for("auto", config("llama")), "layer");
  EXPECT_EQ(offload_unit_for("auto", config("qwen3_moe")), "module");
  EXPECT_EQ(offload_unit_for("module", config("llama")), "module");
  EXPECT_EQ(offload_unit_for("layer", config("qwen3_moe")), "layer");
  try {
    offload_unit_for("block", config("llama"));
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--offload-unit block"), std::string::npos) << e.what();
  }
}

TEST(BenchCommand, PrintsATableRowPerTest) {
  BenchArgs args = fixture_args("gpt2");
  args.batch = "3";
  args.prompt_tokens = "0";
  std::ostringstream out, err;
  ASSERT_EQ(run_bench(args, out, err), 0);
  EXPECT_NE(out.str().find("|         tg4 |     3 |"), std::string::npos) << out.str();
  EXPECT_EQ(out.str().find("pp"), std::string::npos) << out.str();
}

TEST(BenchCommand, RefusesBadOptionsBeforeLoading) {
  auto refuses = [](BenchArgs args, const std::string& needle) {
    std::ostringstream out, err;
    try {
      run_bench(args, out, err);
      ADD_FAILURE() << "accepted; expected an error naming " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  BenchArgs args = fixture_args("llama");
  args.batch = "1,0";
  refuses(args, "--batch");
  args = fixture_args("llama");
  args.prompt_tokens = "12x";
  refuses(args, "'12x' is not a whole number");
  args = fixture_args("llama");
  args.prompt_tokens = "0";
  args.decode_tokens = 0;
  refuses(args, "nothing to measure");
  args = fixture_args("llama");
  args.prompt_tokens = "100000";
  refuses(args, "max_position_embeddings");
  args = fixture_args("llama");
  args.repetitions = 0;
  refuses(args, "--repetitions");
  args = fixture_args("llama");
  args.cold = true;
  refuses(args, "--cold needs --load");
  args = fixture_args("llama");
  args.depth = -1;
  refuses(args, "--depth");
}

TEST(BenchCommand, DecodesAfterAPrefilledContextOfTheGivenDepth) {
  BenchArgs args = fixture_args("llama");
  args.prompt_tokens = "0";
  args.batch = "2";
  args.depth = 9;
  const nlohmann::json report = bench_json(args);
  ASSERT_EQ(report.at("tests").size(), 1u);
  EXPECT_EQ(report.at("tests")[0].at("test"), "tg4@d9");
  EXPECT_EQ(report.at("tests")[0].at("tokens").get<int>(), 4);
  // The context counts against the model's positions: depth + new tokens past the limit fail.
  const auto config =
      nlohmann::json::parse(std::ifstream(testing::model_fixture_dir("llama") / "config.json"));
  args.depth = config.at("max_position_embeddings").get<std::int64_t>() - 2;
  std::ostringstream out, err;
  EXPECT_THROW(run_bench(args, out, err), InvalidArgument);
}

TEST(BenchCommand, LoadReportsEachLoadNextToTheLimitsMeasuredInTheSameRun) {
  BenchArgs args = fixture_args("llama");
  args.load = true;
  const nlohmann::json report = bench_json(args);
  EXPECT_GT(report.at("page_cache_read_gb_s").get<double>(), 0.0);
  EXPECT_GE(report.at("reading_threads").get<int>(), 1);
  ASSERT_EQ(report.at("loads").size(), 1u);
  const auto& load = report.at("loads")[0];
  EXPECT_EQ(load.at("from"), "page cache");
  // Every weight of the checkpoint, in its stored dtype (float32 fixture, all on the cpu).
  std::uint64_t stored = 0;
  for (const auto& file : shard_files(args.model_dir)) {
    const auto shard = io::SafetensorsFile::open(file);  // alive for the whole loop
    for (const auto& entry : shard->entries()) stored += entry.nbytes();
  }
  EXPECT_EQ(load.at("bytes").get<std::uint64_t>(), stored);
  const double rate = load.at("gb_per_s").get<double>();
  EXPECT_NEAR(rate, static_cast<double>(stored) / load.at("seconds").get<double>() / 1e9,
              1e-9 * rate);
  const double limit = report.at("pinned_h2d_gb_s").is_null()
                           ? report.at("page_cache_read_gb_s").get<double>()
                           : std::min(report.at("pinned_h2d_gb_s").get<double>(),
                                      report.at("page_cache_read_gb_s").get<double>());
  EXPECT_NEAR(load.at("share_of_limit").get<double>(), rate / limit, 1e-9 * rate / limit);
}

TEST(BenchCommand, ReadRatesCoverEveryShardOrNameWhatFailed) {
  const auto files = shard_files(testing::model_fixture_dir("llama"));
  EXPECT_GT(engine::measure_file_read_gbps(files, 2, /*direct=*/false), 0.0);
  try {
    EXPECT_GT(engine::measure_file_read_gbps(files, 2, /*direct=*/true), 0.0);
  } catch (const IoError& e) {  // tmpfs and some overlays refuse O_DIRECT
    EXPECT_NE(std::string(e.what()).find("O_DIRECT"), std::string::npos) << e.what();
  }
  try {
    shard_files(testing::model_fixture_dir("llama").parent_path());
    ADD_FAILURE() << "a folder without shards was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace strata::cli
