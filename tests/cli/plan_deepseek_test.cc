// `strata plan` on the published DeepSeek-V3 config (671B, fp8 block weights; a config-only
// folder): the model's parameters are the fp8 checkpoint's bytes computed from the config by
// tests/fixtures/tools/deepseek_v3_sizes.py (param_count.json), the plan adds up to the model's
// size under Accelerate's sizing rule, and --experts cpu keeps every routed expert off the GPU.

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "models/model_testing.h"
#include "plan_command.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

using placement::MapDevice;

TEST(PlanDeepseekV3, ExpertsOnTheCpuAndTheRestOnTheGpu) {
  const auto dir = testing::model_fixture_dir("deepseek_v3_671b_config");
  const nlohmann::json expected = nlohmann::json::parse(std::ifstream(dir / "param_count.json"));
  PlanArgs args;
  args.model_dir = dir.string();
  args.max_memory = "0=80GiB,cpu=1000GiB";
  args.dtype = "bf16";
  args.experts = "cpu";
  args.predict = false;

  auto guard = nn::init_empty_weights();
  auto model = models::build_causal_lm(io::read_model_config(dir), DType::BFloat16);
  const placement::ModuleSizes sizes =
      placement::compute_module_sizes(*model, {DType::BFloat16, {}});
  // Stored bytes, and the planner's (Accelerate's compute_module_sizes rule: a floating tensor
  // counts min(its own size, the target dtype's) per element, so the fp8 weights 1 byte and their
  // float32 block scales 2).
  std::int64_t stored = 0, planned = 0, planned_experts = 0;
  for (const nn::TensorRef& ref : model->tensor_refs(true, true, true)) {
    const Tensor& t = ref.tensor();
    const auto own = static_cast<std::int64_t>(dtype_size(t.dtype()));
    const std::int64_t plan = t.numel() * std::min<std::int64_t>(own, 2);
    if (!ref.is_buffer) stored += t.numel() * own;
    planned += plan;
    if (ref.name.find(".mlp.experts.") != std::string::npos) planned_experts += plan;
  }
  EXPECT_EQ(stored, expected.at("parameter_bytes_fp8").get<std::int64_t>());
  EXPECT_EQ(sizes.total(), planned);

  const std::vector<DeviceTotal> totals = device_totals(args);
  ASSERT_EQ(totals.size(), 2u);
  EXPECT_EQ(totals[0].device, MapDevice(0));
  EXPECT_EQ(totals[1].device, MapDevice::cpu());
  EXPECT_EQ(totals[0].bytes + totals[1].bytes, sizes.total());
  EXPECT_EQ(totals[1].bytes, planned_experts);  // every routed expert, nothing else
  std::ostringstream out;
  EXPECT_EQ(run_plan(args, out), 0);
  EXPECT_NE(out.str().find("routed experts, kept off the GPUs (--experts cpu)"), std::string::npos)
      << out.str();
}

}  // namespace
}  // namespace strata::cli
