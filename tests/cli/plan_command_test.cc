// `strata plan` on the recorded fixtures: the printed table covers every tensor of the model and
// the per-device totals add up to its size, computed here from a separately built model.

#include "plan_command.h"

#include <gtest/gtest.h>

#include <sstream>

#include "models/model_testing.h"
#include "strata/core/error.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

using placement::MapDevice;

struct Printed {
  std::vector<std::string> rows;               // first column of the explain table
  std::map<std::string, std::int64_t> totals;  // "cpu" -> bytes; "total" -> bytes
  std::string text;
};

// Parses run_plan's output: the explain table (after its "module" header, up to a blank line), then
// "total ... (N bytes)".
Printed print_plan(const PlanArgs& args) {
  std::ostringstream out;
  EXPECT_EQ(run_plan(args, out), 0);
  Printed p{{}, {}, out.str()};
  std::istringstream in(p.text);
  std::string line;
  while (std::getline(in, line) && line.rfind("module ", 0) != 0) {
  }
  while (std::getline(in, line) && !line.empty()) p.rows.push_back(line.substr(0, line.find(' ')));
  while (std::getline(in, line)) {
    const auto open = line.find('('), bytes = line.find(" bytes)");
    if (line.rfind("total", 0) == 0 && open != std::string::npos && bytes != std::string::npos) {
      p.totals["total"] = std::stoll(line.substr(open + 1, bytes - open - 1));
    }
  }
  return p;
}

std::shared_ptr<models::CausalLM> meta_model(const std::string& fixture, DType dtype) {
  auto guard = nn::init_empty_weights();
  return models::build_causal_lm(io::read_model_config(testing::model_fixture_dir(fixture)), dtype);
}

// Counted as the planner counts: floating-point buffers (inv_freq) in `dtype` too.
std::int64_t model_bytes(const std::string& fixture, DType dtype) {
  return placement::compute_module_sizes(*meta_model(fixture, dtype), {dtype, {}}).total();
}

PlanArgs args_for(const std::string& fixture, std::string max_memory, std::string dtype = "f32") {
  PlanArgs args;
  args.model_dir = testing::model_fixture_dir(fixture).string();
  args.max_memory = std::move(max_memory);
  args.dtype = std::move(dtype);
  // Predictions for a fixed machine (plan_prediction_test.cc checks them), not this one.
  args.machine =
      (std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "machine" / "h100_host.json").string();
  return args;
}

class PlanFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PlanFixtureTest, RowsCoverEveryTensorAndTotalsMatchTheModelSize) {
  // One GPU budget too small for the model, then the cpu, then disk: rows on several devices. GPU
  // indices this machine lacks are planned all the same (with a warning).
  for (const char* budget : {"cpu=1GiB", "0=40KiB,cpu=60KiB", "cpu=20KiB"}) {
    SCOPED_TRACE(budget);
    const Printed p = print_plan(args_for(GetParam(), budget));
    ASSERT_FALSE(p.rows.empty()) << p.text;
    const auto model = meta_model(GetParam(), DType::Float32);
    for (const auto& entry : model->state_dict()) {
      const std::string& name = entry.first;  // clang 14 lambdas cannot capture bindings
      const bool covered = std::any_of(p.rows.begin(), p.rows.end(), [&](const std::string& row) {
        return row == "(model)" || name == row || name.rfind(row + ".", 0) == 0;
      });
      EXPECT_TRUE(covered) << name << " is in no row of\n" << p.text;
    }
    EXPECT_EQ(p.totals.at("total"), model_bytes(GetParam(), DType::Float32)) << p.text;
  }
}

TEST_P(PlanFixtureTest, DeviceTotalsAddUpInEveryDtype) {
  for (const auto& [dtype_text, dtype] :
       {std::pair{"f32", DType::Float32}, {"bf16", DType::BFloat16}, {"f16", DType::Float16}}) {
    const auto totals = device_totals(args_for(GetParam(), "0=30KiB,cpu=50KiB", dtype_text));
    std::int64_t sum = 0;
    for (const DeviceTotal& t : totals) sum += t.bytes;
    EXPECT_EQ(sum, model_bytes(GetParam(), dtype)) << dtype_text;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PlanFixtureTest,
                         ::testing::ValuesIn(testing::model_fixture_names()));

TEST(PlanCommand, SpillsWhatDoesNotFitToTheNextDevices) {
  // llama: embedding 32 KiB, two 120.5 KiB layers, lm_head 32 KiB; each device keeps room for the
  // largest remaining layer, as in Accelerate.
  const std::int64_t size = model_bytes("llama", DType::Float32);
  PlanArgs args = args_for("llama", "0=300KiB,cpu=200KiB");
  args.strategy = "sequential";
  auto totals = device_totals(args);
  ASSERT_EQ(totals.size(), 2u);
  EXPECT_EQ(totals[0].device, MapDevice(0));
  EXPECT_EQ(totals[0].bytes, (32 << 10) + 123392);  // embed_tokens + layers.0
  EXPECT_EQ(totals[1].device, MapDevice::cpu());
  EXPECT_EQ(totals[0].bytes + totals[1].bytes, size);
  args.max_memory = "0=300KiB,cpu=150KiB";
  totals = device_totals(args);
  ASSERT_EQ(totals.size(), 2u);
  EXPECT_EQ(totals[0].device, MapDevice(0));
  EXPECT_EQ(totals[1].device, MapDevice::disk());
  EXPECT_EQ(totals[0].bytes + totals[1].bytes, size);
  // Everything fits on the cpu: one device holds it all.
  const auto one = device_totals(args_for("llama", "cpu=1GiB"));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].device, MapDevice::cpu());
  EXPECT_EQ(one[0].bytes, size);
}

TEST(PlanCommand, PrintsTheHeaderAndBudgets) {
  PlanArgs args = args_for("gpt2", "cpu=100KiB", "bf16");
  args.strategy = "sequential";
  args.no_split = "GPT2Block,GPT2MLP";
  const Printed p = print_plan(args);
  EXPECT_NE(p.text.find("(GPT2LMHeadModel), bfloat16, strategy sequential, no "
                        "split: GPT2Block, "
                        "GPT2MLP"),
            std::string::npos)
      << p.text;
  EXPECT_NE(p.text.find("100.00 KiB"), std::string::npos) << p.text;
  EXPECT_EQ(p.totals.at("total"), model_bytes("gpt2", DType::BFloat16));
}

// --experts cpu on a Qwen3-MoE fixture: every routed expert on the cpu, the rest on GPU 0, and the
// totals still add up to the model size (map entries nest: a layer on 0, its experts on the cpu).
TEST(PlanCommand, ExpertsCpuKeepsRoutedExpertsOffTheGpu) {
  PlanArgs args = args_for("qwen3_moe", "0=1GiB,cpu=1GiB");
  args.experts = "cpu";
  const auto model = meta_model("qwen3_moe", DType::Float32);
  const placement::ModuleSizes sizes =
      placement::compute_module_sizes(*model, {DType::Float32, {}});
  const std::int64_t experts =
      sizes["model.layers.0.mlp.experts"] + sizes["model.layers.1.mlp.experts"];
  const auto totals = device_totals(args);
  ASSERT_EQ(totals.size(), 2u);
  EXPECT_EQ(totals[0].device, MapDevice(0));
  EXPECT_EQ(totals[1].device, MapDevice::cpu());
  EXPECT_EQ(totals[1].bytes, experts);
  EXPECT_EQ(totals[0].bytes + totals[1].bytes, model_bytes("qwen3_moe", DType::Float32));
  const Printed p = print_plan(args);
  EXPECT_NE(p.text.find("routed experts, kept off the GPUs (--experts cpu)"), std::string::npos)
      << p.text;
  // --n-cpu-moe 1: only the first MoE block's experts leave the GPU.
  args.experts.reset();
  args.n_cpu_moe = 1;
  const auto first = device_totals(args);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[1].bytes, sizes["model.layers.0.mlp.experts"]);
  std::ostringstream out;
  args.experts = "sometimes";
  EXPECT_THROW(run_plan(args, out), InvalidArgument);
  args.experts.reset();
  args.n_cpu_moe = -1;
  EXPECT_THROW(run_plan(args, out), InvalidArgument);
}

TEST(PlanCommand, BadInputsAreErrors) {
  std::ostringstream out;
  EXPECT_THROW(run_plan(args_for("no_such_model", "cpu=1GiB"), out), InvalidArgument);
  EXPECT_THROW(run_plan(args_for("llama", "cpu=lots"), out), InvalidArgument);
  EXPECT_THROW(run_plan(args_for("llama", "cpu:1GiB"), out), InvalidArgument);
  EXPECT_THROW(run_plan(args_for("llama", "cpu=1GiB", "f99"), out), InvalidArgument);
  PlanArgs bad_strategy = args_for("llama", "cpu=1GiB");
  bad_strategy.strategy = "fastest";
  EXPECT_THROW(run_plan(bad_strategy, out), InvalidArgument);
  EXPECT_TRUE(out.str().empty()) << out.str();
}

}  // namespace
}  // namespace strata::cli
