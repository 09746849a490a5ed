// `strata plan` on the published Gemma configs (gemma-2-9b, gemma-3-27b-it's text config): the
// map spreads the model over the budgets and its per-device bytes add up to the size transformers
// and Accelerate give the same config on the meta device (param_bytes.json, recorded by
// tests/fixtures/tools/record_gemma_fixtures.py on the device machine).

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "models/model_testing.h"
#include "plan_command.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

class PlanPublishedGemma : public ::testing::TestWithParam<std::string> {};

TEST_P(PlanPublishedGemma, MapAddsUpToTransformersSize) {
  const auto dir = testing::model_fixture_dir(GetParam());
  PlanArgs args;
  args.model_dir = dir.string();
  args.max_memory = "0=12GiB,1=12GiB,cpu=64GiB";
  args.dtype = "bf16";
  const std::vector<DeviceTotal> totals = device_totals(args);
  EXPECT_GE(totals.size(), 2u);  // neither model fits one 12 GiB budget
  std::int64_t sum = 0;
  for (const DeviceTotal& t : totals) sum += t.bytes;

  std::int64_t expected = 0;
  {
    auto guard = nn::init_empty_weights();
    auto model = models::build_causal_lm(io::read_model_config(dir), DType::BFloat16);
    expected = placement::compute_module_sizes(*model, {DType::BFloat16, {}}).total();
  }
  EXPECT_EQ(sum, expected);
  const auto recorded = dir / "param_bytes.json";
  if (!std::filesystem::exists(recorded)) GTEST_SKIP() << recorded << " not recorded yet";
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(recorded));
  if (!j.contains("accelerate_module_sizes_bf16")) GTEST_SKIP() << "no Accelerate sizes recorded";
  EXPECT_EQ(sum, j.at("accelerate_module_sizes_bf16").at("").get<std::int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Published, PlanPublishedGemma,
                         ::testing::Values("gemma2_9b_config", "gemma3_27b_text_config"));

}  // namespace
}  // namespace strata::cli
