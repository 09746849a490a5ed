// Issue 19's acceptance for Phi-4 mini, OLMo 2 13B and SmolLM3 3B: on each published config
// (tests/fixtures/cli/<name>/config.json), the bfloat16 tree built on meta has transformers'
// tensors (names, shapes, dtypes), parameter bytes, module sizes, tied groups and
// _no_split_modules, and `strata plan` gives a map whose sizes add up to that total. The
// reference is transformers_sizes.json, recorded on the device machine by
// tests/fixtures/tools/record_phi_olmo_smollm_fixtures.py (transformers + accelerate).

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli_options.h"
#include "plan_command.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

using nlohmann::json;

const std::filesystem::path kFixtures = STRATA_TEST_FIXTURES_DIR;

json recorded(const std::string& name) {
  const auto file = kFixtures / "cli" / name / "transformers_sizes.json";
  std::ifstream in(file);
  EXPECT_TRUE(in.good()) << file << " is missing: record it with "
                         << "tests/fixtures/tools/record_phi_olmo_smollm_fixtures.py";
  return in.good() ? json::parse(in) : json::object();
}

std::string line(const std::string& name, const Shape& shape, const std::string& kind,
                 DType dtype) {
  return fmt::format("{} [{}] {} {}", name, fmt::join(shape, ", "), kind, dtype_name(dtype));
}

class RealConfigTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    reference_ = recorded(GetParam());
    ASSERT_FALSE(reference_.empty());
    empty_ = build_empty_model(kFixtures / "cli" / GetParam(), "bf16");
  }
  json reference_;
  EmptyModel empty_;
};

TEST_P(RealConfigTest, TreeIsTransformers) {
  models::CausalLM& model = *empty_.model;
  EXPECT_EQ(model.class_name(), reference_.at("class").get<std::string>());
  EXPECT_EQ(model.no_split_module_classes(),
            reference_.at("no_split_modules").get<std::vector<std::string>>());
  // Parameters (tied ones under both names) in module order, then buffers.
  std::vector<std::string> ours, theirs;
  for (const auto& [name, t] : model.named_parameters(true, /*remove_duplicate=*/false)) {
    ours.push_back(line(name, t.shape(), "parameter", t.dtype()));
  }
  std::set<std::string> persistent;
  for (const auto& [name, t] : model.state_dict()) persistent.insert(name);
  for (const auto& [name, t] : model.named_buffers()) {
    ours.push_back(line(name, t.shape(),
                        persistent.contains(name) ? "buffer" : "non-persistent buffer", t.dtype()));
  }
  for (const json& t : reference_.at("tensors")) {
    theirs.push_back(line(t.at(0).get<std::string>(), t.at(1).get<Shape>(),
                          t.at(2).get<std::string>(), parse_dtype(t.at(3).get<std::string>())));
  }
  EXPECT_EQ(ours, theirs);
  // Tied groups, each sorted.
  std::vector<std::vector<std::string>> tied;
  for (const json& group : reference_.at("tied_parameters")) {
    auto names = group.get<std::vector<std::string>>();
    std::sort(names.begin(), names.end());
    tied.push_back(names);
  }
  EXPECT_EQ(placement::find_tied_parameters(model), tied);
}

TEST_P(RealConfigTest, SizesAreTransformers) {
  models::CausalLM& model = *empty_.model;
  std::int64_t count = 0, bytes = 0;
  for (const auto& [name, t] : model.named_parameters()) {
    count += t.numel();
    bytes += t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype()));
  }
  EXPECT_EQ(count, reference_.at("parameter_count").get<std::int64_t>());
  EXPECT_EQ(bytes, reference_.at("parameter_bytes_bf16").get<std::int64_t>());
  const placement::ModuleSizes sizes =
      placement::compute_module_sizes(model, {DType::BFloat16, {}});
  for (const auto& [module, size] : reference_.at("module_sizes_bf16").items()) {
    EXPECT_EQ(sizes[module], size.get<std::int64_t>()) << "module '" << module << "'";
  }
}

TEST_P(RealConfigTest, PlanGivesAMapOfThatSize) {
  PlanArgs args;
  args.model_dir = (kFixtures / "cli" / GetParam()).string();
  args.dtype = "bf16";
  // Two GPUs and a cpu that together hold less than any of the three models (6 to 27 GB in
  // bfloat16): the map spills to disk.
  args.max_memory = "0=2GiB,1=2GiB,cpu=1GiB";
  const std::vector<DeviceTotal> totals = device_totals(args);
  std::int64_t sum = 0;
  for (const DeviceTotal& t : totals) sum += t.bytes;
  EXPECT_EQ(sum, reference_.at("module_sizes_bf16").at("").get<std::int64_t>());
  ASSERT_GE(totals.size(), 3u) << "the map spans several tiers";
  EXPECT_TRUE(totals.back().device.is_disk());
  std::ostringstream out;
  EXPECT_EQ(run_plan(args, out), 0);
  EXPECT_NE(out.str().find("model.layers.0"), std::string::npos) << out.str();
}

INSTANTIATE_TEST_SUITE_P(Issue19, RealConfigTest,
                         ::testing::Values("phi4_mini_instruct", "olmo2_1124_13b", "smollm3_3b"));

}  // namespace
}  // namespace strata::cli
