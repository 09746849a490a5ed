// `strata plan`'s predictions, KV cache and activation reserve, and JSON (plan_prediction.h,
// plan_command.h) on the recorded llama fixture with the injected constants of
// tests/fixtures/machine/h100_host.json (round numbers). The expected times are the cost model's
// formulas (cost_model.h) worked per unit here from those constants and the plan's own units.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "calibrate_command.h"
#include "io/io_testing.h"
#include "models/model_testing.h"
#include "plan_command.h"
#include "strata/core/error.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

using json = nlohmann::json;

const std::filesystem::path kMachine =
    std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "machine" / "h100_host.json";

PlanArgs llama(std::string max_memory) {
  PlanArgs args;
  args.model_dir = testing::model_fixture_dir("llama").string();
  args.max_memory = std::move(max_memory);
  args.dtype = "f32";
  args.strategy = "sequential";
  args.machine = kMachine.string();
  return args;
}

json plan_json(PlanArgs args) {
  args.json = true;
  std::ostringstream out;
  EXPECT_EQ(run_plan(args, out), 0);
  return json::parse(out.str());
}

// The fixture's constants (h100_host.json) in bytes and FLOPs per second.
constexpr double kH2d = 50e9, kHostRead = 100e9, kGemv = 100e9, kCpuFlops = 1000e9, kHbm = 3000e9,
                 kGpuFlops = 500000e9, kPageCache = 20e9, kLatency = 10e-6;

// Linear layers a split step of the unit divides: a Llama decoder layer's seven projections, the
// head's one.
double split_linears(const std::string& name) {
  if (name.starts_with("model.layers.")) return 7;
  return name == "lm_head" ? 1 : 0;
}

// The cost model's formulas (cost_model.h) summed over the units of a JSON plan, checked against
// its predictions; every unit's decode label must be the fastest side. Returns how many offloaded
// units decode on the cpu or split.
int expect_formulas(const json& plan, double element, double hidden) {
  const json& p = plan.at("predictions");
  EXPECT_TRUE(p.at("available").get<bool>()) << p.dump(2);
  const double activation = hidden * element;
  const double tokens = p.at("prefill").at("tokens").get<double>();
  double decode_stream = 0, decode_best = 0, prefill_stream = 0, decode_split = 0;
  int on_cpu = 0;
  for (const json& u : p.at("units")) {
    const std::string name = u.at("name");
    const std::string device = plan.at("device_map").at(name);
    const std::string tier = u.at("tier");
    EXPECT_EQ(tier, device == "0" ? "gpu" : device) << name;
    const double bytes = u.at("bytes").get<double>();
    const double flops = 2 * std::floor(bytes / element);
    const bool lookup = name == "model.embed_tokens";
    const auto gpu = [&](double n) {
      return lookup ? n * activation / kHbm : std::max(bytes / kHbm, flops * n / kGpuFlops);
    };
    if (tier == "gpu") {
      decode_stream += gpu(1);
      decode_best += gpu(1);
      decode_split += gpu(1);
      prefill_stream += gpu(tokens);
      EXPECT_EQ(u.at("decode"), "gpu");
      continue;
    }
    const double copy = bytes / (tier == "disk" ? kPageCache : kH2d);
    const double stream = std::max(copy, gpu(1));
    const double cpu = (lookup ? activation / kGemv : std::max(bytes / kGemv, flops / kCpuFlops)) +
                       2 * (activation / kH2d + kLatency);
    // Split: the cpu reads its share (gemv / (gemv + copy rate)) while the rest is copied; two
    // activation transfers per linear on the host's side. The fixture's constants predate the
    // op-overhead and concurrent rates: those terms are absent.
    const double linears = split_linears(name);
    const double copy_rate = tier == "disk" ? kPageCache : kH2d;
    const double share = kGemv / (kGemv + copy_rate);
    const double host = std::max(share * bytes / kGemv, share * flops / kCpuFlops) +
                        linears * 2 * (activation / kH2d + kLatency);
    const double split = linears > 0 && !lookup
                             ? std::max({host, (1 - share) * bytes / copy_rate, gpu(1)})
                             : std::numeric_limits<double>::infinity();
    decode_stream += stream;
    // Auto never splits a disk unit (its streamed rows also cost the disk workers' copy).
    const double auto_split = tier == "disk" ? std::numeric_limits<double>::infinity() : split;
    decode_best += std::min({stream, cpu, auto_split});
    decode_split += std::isfinite(split) ? split : stream;
    prefill_stream += std::max(copy, gpu(tokens));
    const char* fastest = auto_split < stream && auto_split < cpu ? "split"
                          : cpu < stream                          ? "cpu"
                                                                  : "stream";
    EXPECT_EQ(u.at("decode"), fastest) << name;
    on_cpu += u.at("decode") != "stream" ? 1 : 0;
  }
  EXPECT_NEAR(p.at("decode").at("split_ms_per_step").get<double>(), decode_split * 1e3,
              1e-9 * decode_split * 1e3);
  EXPECT_NEAR(p.at("decode").at("stream_ms_per_step").get<double>(), decode_stream * 1e3,
              1e-9 * decode_stream * 1e3);
  EXPECT_NEAR(p.at("decode").at("best_ms_per_step").get<double>(), decode_best * 1e3,
              1e-9 * decode_best * 1e3);
  EXPECT_NEAR(p.at("prefill").at("stream_seconds").get<double>(), prefill_stream,
              1e-9 * prefill_stream);
  EXPECT_LE(p.at("decode").at("best_ms_per_step").get<double>(),
            p.at("decode").at("stream_ms_per_step").get<double>());
  EXPECT_GE(p.at("prefill").at("best_tokens_per_second").get<double>(),
            p.at("prefill").at("stream_tokens_per_second").get<double>());
  return on_cpu;
}

TEST(PlanPrediction, JsonCarriesThePlanAndTheFormulas) {
  const json plan = plan_json(llama("0=300KiB,cpu=150KiB"));
  EXPECT_EQ(plan.at("schema"), "strata-plan/1");
  EXPECT_EQ(plan.at("model_class"), "LlamaForCausalLM");
  EXPECT_EQ(plan.at("dtype"), "float32");
  EXPECT_TRUE(plan.at("runtime_reserve").is_null());
  std::int64_t device_sum = 0;
  for (const json& d : plan.at("devices")) device_sum += d.at("weights_bytes").get<std::int64_t>();
  EXPECT_EQ(device_sum, plan.at("total_bytes"));

  const json& p = plan.at("predictions");
  EXPECT_EQ(p.at("machine_constants"), kMachine.string());
  EXPECT_EQ(p.at("prefill").at("tokens"), 512);
  EXPECT_EQ(p.at("decode").at("batch"), 1);
  const json& units = p.at("units");
  ASSERT_EQ(units.size(), plan.at("device_map").size());
  std::int64_t unit_sum = 0;
  for (const json& u : units) unit_sum += u.at("bytes").get<std::int64_t>();
  EXPECT_EQ(unit_sum, plan.at("total_bytes"));
  // Units of a few KiB: the PCIe latency of moving activations outweighs reading them.
  EXPECT_EQ(expect_formulas(plan, 4, 64), 0);
  // load: the checkpoint file from the page cache, the GPU part over PCIe, the cpu part copied.
  const double file = static_cast<double>(
      std::filesystem::file_size(testing::model_fixture_dir("llama") / "model.safetensors"));
  double gpu_bytes = 0, cpu_bytes = 0;
  for (const json& u : units) {
    if (u.at("tier") == "gpu") gpu_bytes += u.at("bytes").get<double>();
    if (u.at("tier") == "cpu") cpu_bytes += u.at("bytes").get<double>();
  }
  EXPECT_NEAR(p.at("load_seconds").get<double>(),
              file / kPageCache + gpu_bytes / kH2d + cpu_bytes / kHostRead, 1e-12);
}

TEST(PlanPrediction, A7BShapedModelDecodesItsCpuLayersOnTheCpu) {
  // The recorded Llama-2-7B config (no weights), bf16, 3 GiB on the GPU and the rest in cpu RAM:
  // the acceptance placement.
  PlanArgs args;
  args.model_dir = (std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "cli" / "llama2_7b").string();
  args.max_memory = "0=3GiB,cpu=100GiB";
  args.dtype = "bf16";
  args.machine = kMachine.string();
  const json plan = plan_json(args);
  const int on_cpu = expect_formulas(plan, 2, 4096);
  EXPECT_GT(on_cpu, 20);
  for (const json& u : plan.at("predictions").at("units")) {
    if (u.at("tier") == "cpu" && u.at("bytes").get<double>() > 1e8) {
      EXPECT_EQ(u.at("prefill"), "stream") << u;  // 512 tokens: the GPU's compute wins
      EXPECT_GT(u.at("cpu_max_tokens").get<std::int64_t>(), 1) << u;
    }
  }
}

// The qwen3_moe fixture planned in float32 with 1 GiB on GPU 0 and the cpu, experts placed as
// `experts` says, predicted with the constants in `machine`.
PlanArgs qwen3_moe_args(const std::string& experts, const std::filesystem::path& machine) {
  PlanArgs args;
  args.model_dir = testing::model_fixture_dir("qwen3_moe").string();
  args.max_memory = "0=1GiB,cpu=1GiB";
  args.dtype = "f32";
  args.experts = experts;
  args.machine = machine.string();
  return args;
}

// Its plan with kMachine, and its modules' float32 sizes (what the units' bytes come from).
struct Qwen3MoePlan {
  json plan;
  placement::ModuleSizes sizes;
  double total = 0;  // the units' bytes, summed
};

Qwen3MoePlan plan_qwen3_moe(const std::string& experts) {
  Qwen3MoePlan out;
  out.plan = plan_json(qwen3_moe_args(experts, kMachine));
  auto model = testing::empty_fixture_model(testing::load_model_fixture("qwen3_moe"));
  out.sizes = placement::compute_module_sizes(*model, {DType::Float32, {}});
  for (const json& u : out.plan.at("predictions").at("units")) {
    out.total += u.at("bytes").get<double>();
  }
  return out;
}

// --experts cpu: map entries nest (a layer on GPU 0, its experts on the cpu). A unit is its entry
// less the entries inside it, in bytes (so the units add up to the model once) and in ops (the
// GPU layer does not launch its offloaded experts' ops).
TEST(PlanPrediction, NestedEntriesCountOnce) {
  const auto [plan, sizes, total] = plan_qwen3_moe("cpu");
  int layers = 0;
  for (const json& u : plan.at("predictions").at("units")) {
    const std::string name = u.at("name");
    if (name.starts_with("model.layers.") && !name.ends_with(".experts")) {
      ++layers;
      EXPECT_EQ(u.at("tier"), "gpu") << name;
      EXPECT_EQ(u.at("bytes").get<std::int64_t>(), sizes[name] - sizes[name + ".mlp.experts"])
          << name;
    }
  }
  EXPECT_EQ(layers, 2);
  EXPECT_EQ(total, static_cast<double>(plan.at("total_bytes").get<std::int64_t>()));
}

// --experts auto with room for everything: the experts share their layer's GPU, and are a unit of
// their own in the prediction (a step runs only the selected experts), the layer without them.
TEST(PlanPrediction, ResidentExpertsAreAUnitOfTheirOwn) {
  const auto [plan, sizes, total] = plan_qwen3_moe("auto");
  std::map<std::string, json> units;
  for (const json& u : plan.at("predictions").at("units")) units[u.at("name")] = u;
  for (const std::string layer : {"model.layers.0", "model.layers.1"}) {
    ASSERT_TRUE(units.contains(layer + ".mlp.experts")) << plan.dump(1);
    EXPECT_EQ(units[layer + ".mlp.experts"].at("tier"), "gpu");
    EXPECT_EQ(units[layer + ".mlp.experts"].at("bytes").get<std::int64_t>(),
              sizes[layer + ".mlp.experts"]);
    EXPECT_EQ(units[layer].at("bytes").get<std::int64_t>(),
              sizes[layer] - sizes[layer + ".mlp.experts"]);
  }
  EXPECT_EQ(total, static_cast<double>(plan.at("total_bytes").get<std::int64_t>()));
}

// The MoE terms of the constants (moe-execution.md, "Cost model"): each block of offloaded
// experts pays the measured block cost once per step, reported beside the prediction.
TEST(PlanPrediction, OffloadedExpertBlocksPayTheMeasuredBlockCost) {
  testing::TempDir tmp;
  json machine = json::parse(std::ifstream(kMachine));
  machine["cpu_expert_gbps"] = 90.0;
  machine["moe_block_us"] = 45.0;
  const std::filesystem::path file = tmp.path() / "machine.json";
  std::ofstream(file) << machine.dump();
  PlanArgs args = qwen3_moe_args("cpu", file);
  const json p = plan_json(args).at("predictions");
  // Two sparse layers, their experts on the cpu.
  EXPECT_DOUBLE_EQ(p.at("experts").at("block_ms_per_step").get<double>(), 2 * 45.0 / 1e3);
  args.experts = "auto";  // everything fits the GPU: no offloaded block
  EXPECT_DOUBLE_EQ(plan_json(args).at("predictions").at("experts").at("block_ms_per_step"), 0.0);
  args.experts = "cpu";
  std::ostringstream out;
  ASSERT_EQ(run_plan(args, out), 0);
  EXPECT_NE(out.str().find("the blocks' fixed cost 0.09 ms per step"), std::string::npos)
      << out.str();
}

TEST(PlanPrediction, OnTheCpuAloneEverythingComputesThere) {
  const json p = plan_json(llama("cpu=150KiB")).at("predictions");
  ASSERT_TRUE(p.at("available").get<bool>());
  for (const json& u : p.at("units")) EXPECT_EQ(u.at("decode"), "cpu") << u.dump();
  EXPECT_EQ(p.at("decode").at("best_ms_per_step"), p.at("decode").at("stream_ms_per_step"));
}

TEST(PlanPrediction, TextShowsTheNumbersAndWhereUnitsCompute) {
  std::ostringstream out;
  ASSERT_EQ(run_plan(llama("0=300KiB,cpu=150KiB"), out), 0);
  EXPECT_NE(out.str().find("predictions (machine constants " + kMachine.string()),
            std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("ms/step best"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("tokens/s best"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("model.layers.1"), std::string::npos) << out.str();
  PlanArgs none = llama("cpu=150KiB");
  none.predict = false;
  std::ostringstream quiet;
  ASSERT_EQ(run_plan(none, quiet), 0);
  EXPECT_EQ(quiet.str().find("predictions"), std::string::npos) << quiet.str();
}

TEST(PlanPrediction, ConstantsWithoutAGpuCannotPredictAGpuPlan) {
  testing::TempDir tmp;
  json constants = json::parse(std::ifstream(kMachine));
  constants["gpu_hbm_gbps"] = 0;
  const auto file = tmp.path() / "cpu_only.json";
  std::ofstream(file) << constants.dump();
  PlanArgs args = llama("0=300KiB,cpu=150KiB");
  args.machine = file.string();
  const json p = plan_json(args).at("predictions");
  EXPECT_FALSE(p.at("available").get<bool>());
  EXPECT_NE(p.at("reason").get<std::string>().find("no GPU rates"), std::string::npos) << p;
  args.machine = (tmp.path() / "missing.json").string();
  std::ostringstream out;
  EXPECT_THROW(run_plan(args, out), IoError);
}

// KV bytes per token of the llama fixture, from its config: keys and values of every layer,
// 2 layers x 2 kv heads x head_dim 16 x float32.
constexpr std::int64_t kKvPerToken = 2 * 2 * 2 * 16 * 4;

TEST(PlanPrediction, BatchAndContextAreHeldBackAndPredictedPerStep) {
  PlanArgs args = llama("0=1GiB,cpu=1GiB");
  args.batch = 3;
  args.ctx_size = 64;
  const json plan = plan_json(args);
  const json& reserve = plan.at("runtime_reserve");
  EXPECT_EQ(reserve.at("sequences"), 3);
  EXPECT_EQ(reserve.at("ctx_size"), 64);
  EXPECT_EQ(reserve.at("kv_cache_bytes"), kKvPerToken * 3 * 64);
  // (6 x hidden + 3 x intermediate) x 4 bytes + vocab x 4 bytes of logits, per prompt token
  EXPECT_EQ(reserve.at("activation_bytes"), ((6 * 64 + 3 * 96) * 4 + 128 * 4) * 3 * 64);
  EXPECT_EQ(reserve.at("held_back_on"), "gpu");
  EXPECT_EQ(plan.at("predictions").at("decode").at("batch"), 3);
  EXPECT_EQ(plan.at("predictions").at("prefill").at("tokens"), 3 * 512);
  // The context is capped at max_position_embeddings (128).
  args.ctx_size = 4096;
  EXPECT_EQ(plan_json(args).at("runtime_reserve").at("ctx_size"), 128);
}

TEST(PlanPrediction, ABudgetThatCannotHoldTheReserveIsAnError) {
  PlanArgs args = llama("0=100KiB,cpu=1GiB");
  args.batch = 8;
  args.ctx_size = 128;
  std::ostringstream out;
  try {
    run_plan(args, out);
    FAIL() << "no error";
  } catch (const OutOfMemory& e) {
    const std::string text = e.what();
    EXPECT_NE(text.find("cuda:0 has 100.00 KiB"), std::string::npos) << text;
    EXPECT_NE(text.find("8 sequences x 128 tokens"), std::string::npos) << text;
    EXPECT_NE(text.find("--ctx-size"), std::string::npos) << text;
  }
  // Without a GPU the KV cache lives on the cpu: its budget must hold it.
  args.max_memory = "cpu=100KiB";
  try {
    run_plan(args, out);
    FAIL() << "no error";
  } catch (const OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("cpu has 100.00 KiB"), std::string::npos) << e.what();
  }
  args.max_sequences = 4;  // --batch names the same thing
  EXPECT_THROW(run_plan(args, out), InvalidArgument);
}

TEST(CalibrateCommand, MeasuresOnceThenReadsTheCache) {
  testing::TempDir tmp;
  CalibrateArgs args;
  args.cache_dir = tmp.path().string();
  args.json = true;
  std::ostringstream first, err;
  ASSERT_EQ(run_calibrate(args, first, err), 0);
  const json measured = json::parse(first.str());
  EXPECT_EQ(measured.at("schema"), "strata-machine-constants/1");
  EXPECT_GT(measured.at("host_read_gbps").get<double>(), 0);
  std::ostringstream second;
  args.json = false;
  ASSERT_EQ(run_calibrate(args, second, err), 0);
  EXPECT_NE(second.str().find("cached in"), std::string::npos) << second.str();
  EXPECT_EQ(second.str().find("measured now"), std::string::npos) << second.str();
  EXPECT_NE(second.str().find("host memory read"), std::string::npos) << second.str();
}

}  // namespace
}  // namespace strata::cli
