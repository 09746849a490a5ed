// Issue 8's acceptance: `strata plan` on a Llama-2-7B config (tests/fixtures/cli/llama2_7b) gives
// the maps Accelerate recorded for the same budgets ("real/llama7b/N" in
// tests/fixtures/device_map/accelerate_cases.json, a float32 tree). The tree is compared first, so
// that a difference in the model shows as such rather than as a plan mismatch.

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "cli_options.h"
#include "io/io_testing.h"
#include "plan_command.h"
#include "strata/placement/module_sizes.h"

namespace strata::cli {
namespace {

using nlohmann::json;
using placement::DeviceMap;
using placement::MapDevice;
using placement::MaxMemory;

const std::filesystem::path kFixtures = STRATA_TEST_FIXTURES_DIR;

const json& recording() {
  static const json file = [] {
    std::ifstream in(kFixtures / "device_map" / "accelerate_cases.json");
    return json::parse(in);
  }();
  return file;
}

std::vector<json> llama7b_cases(const std::string& function) {
  std::vector<json> cases;
  for (const json& c : recording().at("cases")) {
    if (c.value("model", "") == "llama7b" && c.at("function") == function) cases.push_back(c);
  }
  return cases;
}

MapDevice device_from_json(const json& value) {
  return value.is_number_integer() ? MapDevice(value.get<int>())
                                   : MapDevice(value.get<std::string>());
}

DeviceMap map_from_json(const json& pairs) {
  DeviceMap map;
  for (const json& pair : pairs) map.emplace_back(pair.at(0), device_from_json(pair.at(1)));
  return map;
}

MaxMemory budgets_from_json(const json& pairs) {
  std::vector<MaxMemory::Entry> entries;
  for (const json& pair : pairs) {
    entries.emplace_back(device_from_json(pair.at(0)), pair.at(1).get<std::int64_t>());
  }
  return MaxMemory(std::move(entries));
}

// [[0, 1347683123], ["cpu", 0]] -> "cuda:0=1347683123,cpu=0", as a user types it.
std::string max_memory_arg(const json& pairs) {
  std::vector<std::string> items;
  for (const auto& [device, bytes] : budgets_from_json(pairs)) {
    items.push_back(fmt::format("{}{}={}", device.is_gpu() ? "cuda:" : "", device.str(), bytes));
  }
  return fmt::format("{}", fmt::join(items, ","));
}

PlanArgs llama2_args(std::string max_memory, std::string strategy) {
  PlanArgs args;
  args.model_dir = (kFixtures / "cli" / "llama2_7b").string();
  args.max_memory = std::move(max_memory);
  args.dtype = "f32";  // the recorded tree is float32; the config says float16
  args.strategy = std::move(strategy);
  args.machine = (kFixtures / "machine" / "h100_host.json").string();
  return args;
}

// Modules as "name class" in pre-order; tensors as "name kind [shape] dtype", module by module,
// parameters before buffers, as the recording lists them.
struct Tree {
  std::vector<std::string> modules;
  std::vector<std::string> tensors;
};

std::string tensor_line(const std::string& name, const char* kind, const Shape& shape, DType dtype,
                        bool persistent) {
  return fmt::format("{} {} [{}] {}{}", name, kind, fmt::join(shape, ", "), dtype,
                     persistent ? "" : " non-persistent");
}

Tree recorded_tree() {
  const json& model = recording().at("models").at("llama7b");
  Tree tree;
  for (const json& m : model.at("modules")) {
    tree.modules.push_back(
        fmt::format("{} {}", m.at("name").get<std::string>(), m.at("class").get<std::string>()));
  }
  for (const json& t : model.at("tensors")) {
    const bool parameter = t.at("kind") == "parameter";
    tree.tensors.push_back(
        tensor_line(t.at("name"), parameter ? "parameter" : "buffer", t.at("shape").get<Shape>(),
                    parse_dtype(t.at("dtype").get<std::string>()), t.value("persistent", true)));
  }
  return tree;
}

Tree strata_tree(nn::Module& model) {
  Tree tree;
  for (const auto& [prefix, module] : model.named_modules()) {
    tree.modules.push_back(fmt::format("{} {}", prefix, module->class_name()));
    const std::string dotted = prefix.empty() ? "" : prefix + ".";
    for (const nn::TensorEntry& p : module->direct_parameters()) {
      const Tensor& t = p.slot->tensor();
      tree.tensors.push_back(tensor_line(dotted + p.name, "parameter", t.shape(), t.dtype(), true));
    }
    for (const nn::TensorEntry& b : module->direct_buffers()) {
      const Tensor& t = b.slot->tensor();
      tree.tensors.push_back(
          tensor_line(dotted + b.name, "buffer", t.shape(), t.dtype(), b.persistent));
    }
  }
  return tree;
}

// Names what is missing or extra; with the same lines, the order too (planning follows it).
void expect_same_lines(const std::vector<std::string>& strata,
                       const std::vector<std::string>& reference, const char* what) {
  const std::set<std::string> ours(strata.begin(), strata.end());
  const std::set<std::string> theirs(reference.begin(), reference.end());
  for (const std::string& line : theirs) {
    if (!ours.contains(line)) ADD_FAILURE() << what << " missing from Strata's model: " << line;
  }
  for (const std::string& line : ours) {
    if (!theirs.contains(line)) ADD_FAILURE() << what << " not in the recorded model: " << line;
  }
  EXPECT_EQ(strata.size(), reference.size()) << what;
  if (ours == theirs) EXPECT_EQ(strata, reference) << what << ": same entries, another order";
}

TEST(Llama2Tree, IsTheRecordedLlama7bTree) {
  const EmptyModel empty = build_empty_model(kFixtures / "cli" / "llama2_7b", "f32");
  const Tree ours = strata_tree(*empty.model);
  const Tree theirs = recorded_tree();
  expect_same_lines(ours.modules, theirs.modules, "module");
  expect_same_lines(ours.tensors, theirs.tensors, "tensor");
  EXPECT_TRUE(placement::find_tied_parameters(*empty.model).empty());
  EXPECT_TRUE(recording().at("models").at("llama7b").at("tied").empty());
  // What `strata plan` uses when --no-split is not given.
  EXPECT_EQ(empty.model->no_split_module_classes(),
            (std::vector<std::string>{"LlamaDecoderLayer"}));
}

// Every infer_auto_device_map case, as `strata plan DIR --max-memory cuda:0=N,cpu=N --dtype
// f32|bfloat16 --strategy sequential [--no-split ""] --output map.json`, the map read back as
// `strata run --device-map` reads it. GPU 1 is planned for on machines without it.
TEST(Llama2Plan, MatchesTheReferenceMapForEveryRecordedBudget) {
  testing::TempDir dir;
  int model_classes = 0, no_classes = 0;
  for (const json& c : llama7b_cases("infer_auto_device_map")) {
    SCOPED_TRACE(c.at("id").get<std::string>());
    const json& in = c.at("args");
    PlanArgs args = llama2_args(max_memory_arg(in.at("max_memory")), "sequential");
    // dtype null: the float32 tree as it is; else sizes in that dtype ("bfloat16"), as --dtype.
    if (!in.at("dtype").is_null()) args.dtype = in.at("dtype").get<std::string>();
    if (in.at("no_split_module_classes").is_null()) {
      args.no_split = "";
      ++no_classes;
    } else {
      // The model's own list, which `strata plan` uses by default.
      ASSERT_EQ(in.at("no_split_module_classes"), json::array({"LlamaDecoderLayer"}));
      ++model_classes;
    }
    args.output = (dir / "map.json").string();
    std::ostringstream out;
    ASSERT_EQ(run_plan(args, out), 0);
    const DeviceMap planned = read_device_map_file(*args.output);
    const DeviceMap expected = map_from_json(c.at("expected_device_map"));
    EXPECT_TRUE(placement::same_device_map(planned, expected))
        << "strata plan " << *args.max_memory
        << "\n  strata:    " << placement::device_map_str(planned)
        << "\n  reference: " << placement::device_map_str(expected);
  }
  EXPECT_EQ(model_classes, 60);
  EXPECT_EQ(no_classes, 60);
}

// The get_balanced_memory cases: `--strategy balanced` (`balanced_low_0` for low_zero) plans
// against the budgets the reference balanced to, and maps as the sequential plan under those.
TEST(Llama2Plan, BalancedStrategiesUseTheReferenceBudgets) {
  const std::vector<json> cases = llama7b_cases("get_balanced_memory");
  EXPECT_EQ(cases.size(), 4u);
  for (const json& c : cases) {
    SCOPED_TRACE(c.at("id").get<std::string>());
    const json& in = c.at("args");
    ASSERT_EQ(in.at("no_split_module_classes"), json::array({"LlamaDecoderLayer"}));
    const std::string strategy = in.at("low_zero").get<bool>() ? "balanced_low_0" : "balanced";
    const placement::DevicePlan plan =
        plan_checkpoint(llama2_args(max_memory_arg(in.at("max_memory")), strategy));
    EXPECT_EQ(plan.max_memory, budgets_from_json(c.at("expected_max_memory")))
        << plan.max_memory.str();
    const placement::DevicePlan sequential =
        plan_checkpoint(llama2_args(max_memory_arg(c.at("expected_max_memory")), "sequential"));
    EXPECT_TRUE(placement::same_device_map(plan.device_map, sequential.device_map))
        << placement::device_map_str(plan.device_map) << "\n"
        << placement::device_map_str(sequential.device_map);
  }
}

// A budget smaller than the 772.03 MiB kept for the largest decoder layer used to print negative
// room ("-772.03 MiB available"); the rows now state the shortfall.
TEST(Llama2Plan, ExplainRowsNeverShowNegativeRoom) {
  const std::regex negative_size("-[0-9.]+ (B|KiB|MiB|GiB)");
  const std::pair<const char*, const char*> cases[] = {
      // The cpu budget of 0 cannot hold what is kept for a layer.
      {"cuda:0=1347683123,cpu=0",
       "cpu (needs 772.03 MiB, 0 B available, 772.03 MiB short of the 772.03 MiB kept for the "
       "largest remaining layer)"},
      // Nor can GPU 0's: 'model' is split for want of room.
      {"cuda:0=300MiB,cpu=30GiB",
       "split because it needs 24.61 GiB and 0 has 0 B available, 200.00 MiB short of the "
       "500.00 MiB kept for the largest remaining layer"},
  };
  for (const auto& [budgets, expected] : cases) {
    SCOPED_TRACE(budgets);
    std::ostringstream out;
    ASSERT_EQ(run_plan(llama2_args(budgets, "sequential"), out), 0);
    EXPECT_FALSE(std::regex_search(out.str(), negative_size)) << out.str();
    EXPECT_NE(out.str().find(expected), std::string::npos) << out.str();
  }
}

}  // namespace
}  // namespace strata::cli
