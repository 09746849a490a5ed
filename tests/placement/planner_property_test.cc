// Properties of every plan, on random trees (sizes, dtypes, buffers, ties, shared modules,
// no-split classes) and random budgets and reserves: every tensor covered exactly once, every
// budget kept (runtime reserve included), tie groups on one device, maps the checks accept,
// the same answer twice. Also the reference's crash cases (B1-B4), which must give valid maps.

#include <gtest/gtest.h>

#include <random>

#include "placement/placement_testing.h"

namespace strata::placement {
namespace {

using testing::LogCapture;
using testing::plan_problems;

constexpr const char* kClasses[] = {"Block", "Layer", "Linear", "Norm", "Container"};

class RandomTree {
 public:
  explicit RandomTree(std::uint64_t seed) : rng_(seed) {}

  std::shared_ptr<nn::Module> build() {
    params_.clear();
    modules_.clear();
    auto root = module(0);
    // Ties: bind some parameters to the tensor of another (any shape, as PyTorch allows).
    const int ties = params_.size() > 1 ? pick(0, 3) : 0;
    for (int i = 0; i < ties; ++i) {
      const auto& [from_module, from_name] = params_[pick(0, static_cast<int>(params_.size()) - 1)];
      const auto& [to_module, to_name] = params_[pick(0, static_cast<int>(params_.size()) - 1)];
      if (from_module == to_module && from_name == to_name) continue;
      to_module->bind_tensor(to_name, from_module->parameter_slot(from_name));
    }
    // Sometimes a submodule also under a second name, on the root (its tensors become tied).
    if (modules_.size() > 2 && pick(0, 4) == 0) {
      root->register_module("shared", modules_[pick(1, static_cast<int>(modules_.size()) - 1)]);
    }
    return root;
  }

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::shared_ptr<nn::Module> module(int depth) {
    auto m = std::make_shared<nn::Module>(kClasses[pick(0, 4)]);
    modules_.push_back(m);
    static constexpr DType kDtypes[] = {DType::Float32,  DType::Float32, DType::Float16,
                                        DType::BFloat16, DType::Int64,   DType::Bool};
    const int params = pick(0, 3);
    for (int i = 0; i < params; ++i) {
      const std::string name = "p" + std::to_string(i);
      m->register_parameter(name, Tensor::empty(shape(), kDtypes[pick(0, 3)], Device::meta()));
      params_.emplace_back(m.get(), name);
    }
    const int buffers = pick(0, 4) == 0 ? pick(1, 2) : 0;
    for (int i = 0; i < buffers; ++i) {
      m->register_buffer("b" + std::to_string(i),
                         Tensor::empty(shape(), kDtypes[pick(0, 5)], Device::meta()),
                         pick(0, 2) != 0);
    }
    const int children = depth >= 4 ? 0 : pick(0, depth == 0 ? 5 : 3);
    for (int i = 0; i < children; ++i)
      m->register_module("m" + std::to_string(i), module(depth + 1));
    return m;
  }

  Shape shape() {
    Shape s(static_cast<std::size_t>(pick(0, 2)));
    for (auto& d : s) d = pick(1, 24);
    return s;
  }

  std::mt19937_64 rng_;
  std::vector<std::pair<nn::Module*, std::string>> params_;
  std::vector<std::shared_ptr<nn::Module>> modules_;
};

bool offloads_any(const DevicePlan& plan) {
  return std::any_of(plan.placements.begin(), plan.placements.end(), [](const auto& entry) {
    return entry.second.is_cpu() || entry.second.is_disk();
  });
}

void expect_valid(nn::Module& model, const DevicePlan& plan, const MaxMemory& given,
                  std::optional<DType> dtype, const std::string& what) {
  EXPECT_EQ(plan_problems(model, plan.device_map, plan.max_memory, dtype), "") << what;
  EXPECT_EQ(plan_problems(model, plan.placements, plan.max_memory, dtype), "") << what;
  // The runtime reserve comes off the given budgets, nothing else does (the balanced strategies
  // lower GPU budgets further, never raise them).
  for (const auto& [device, bytes] : given) {
    EXPECT_LE(plan.max_memory.at(device) + plan.reserved.find(device).value_or(0), bytes) << what;
  }
  // What the planner booked is at least what the map puts there.
  std::map<MapDevice, std::int64_t> weights;
  for (const auto& [name, bytes] : testing::tensor_bytes(model, dtype)) {
    weights[*device_for(plan.device_map, name)] += bytes;
  }
  for (const auto& [device, bytes] : weights) {
    if (!device.is_disk()) EXPECT_LE(bytes, plan.used.find(device).value_or(0)) << what;
  }
  EXPECT_NO_THROW(check_device_map(model, plan.device_map)) << what;
  EXPECT_TRUE(check_tied_parameters_on_same_device(model, plan.device_map).empty()) << what;
}

TEST(PlannerProperties, RandomTreesBudgetsAndOptions) {
  LogCapture quiet;
  int offloading = 0, splitting = 0;
  for (std::uint64_t seed = 1; seed <= 1000; ++seed) {
    RandomTree random(seed);
    auto model = random.build();
    const ModuleSizes sizes = compute_module_sizes(*model);
    const std::int64_t total = sizes.total();
    // Random budgets, or exactly the size of some module (the edge of every fit test).
    const auto budget = [&](double most) -> std::int64_t {
      if (random.pick(0, 2) == 0 && !sizes.entries().empty()) {
        return sizes.entries()[random.pick(0, static_cast<int>(sizes.entries().size()) - 1)].second;
      }
      return std::uniform_int_distribution<std::int64_t>(
          0, static_cast<std::int64_t>(static_cast<double>(total) * most) + 1)(random.rng());
    };
    MaxMemory given;
    const int gpus = random.pick(0, 3);
    for (int g = 0; g < gpus; ++g) given.set(MapDevice(random.pick(0, 1) ? g : g + 2), budget(0.7));
    if (random.pick(0, 2) != 0) given.set("cpu", budget(1.0));
    if (random.pick(0, 5) == 0) given.set("disk", budget(1.0));

    std::vector<std::string> no_split;
    for (const char* cls : kClasses) {
      if (random.pick(0, 3) == 0) no_split.emplace_back(cls);
    }
    InferOptions options{.max_memory = given,
                         .no_split_module_classes = no_split,
                         .clean_result = random.pick(0, 1) == 1,
                         .offload_buffers = random.pick(0, 1) == 1,
                         .fallback_allocation = random.pick(0, 1) == 1};
    if (random.pick(0, 2) == 0) options.dtype = DType::Float16;
    if (random.pick(0, 1) == 1 && !given.empty()) {
      options.reserve.per_device.set(given.begin()->first, budget(0.1));
      options.reserve.per_gpu = budget(0.05);
      options.reserve.staging_slots = random.pick(0, 2);
    }
    const std::string what =
        fmt::format("seed {} budgets {} no_split [{}] fallback {}", seed, given.str(),
                    fmt::join(no_split, ","), options.fallback_allocation);
    const DevicePlan plan = plan_auto_device_map(*model, options);
    expect_valid(*model, plan, given, options.dtype, what);
    EXPECT_EQ(plan_auto_device_map(*model, options).device_map, plan.device_map) << what;
    offloading += offloads_any(plan);
    splitting += plan.placements.size() > model->direct_children().size() + 1;

    const auto strategy = static_cast<DeviceMapStrategy>(random.pick(0, 3));
    expect_valid(*model, plan_device_map(*model, strategy, options), given, options.dtype,
                 what + " strategy " + std::string(strategy_name(strategy)));
  }
  // The generator must exercise offloading and splitting, or the properties say little.
  EXPECT_GT(offloading, 250);
  EXPECT_GT(splitting, 250);
}

// Sequential of Linear(10, 10) named by `names`, with ties.
std::shared_ptr<nn::Module> linears(const std::vector<std::string>& names,
                                    const std::vector<std::vector<std::string>>& tied) {
  testing::ModuleSpecs modules;
  testing::Specs tensors;
  for (const std::string& name : names) {
    modules.push_back({name, "Linear"});
    testing::append(tensors, testing::linear(name, 10, 10));
  }
  return testing::make_tree("Sequential", modules, tensors, tied);
}

TEST(PlannerProperties, WhereTheReferenceCrashesThePlanIsValid) {
  LogCapture quiet;
  // B1: a group reached through another group's tied module (IndexError in the reference).
  auto t8 = testing::tied3(3);
  const MaxMemory b1 = {{0, 300}, {1, 500}};
  expect_valid(*t8, plan_auto_device_map(*t8, {.max_memory = b1}), b1, {}, "B1");
  // B2: "0" is a substring of "10.weight".
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) names.push_back(std::to_string(i));
  auto b2_model = linears(names, {{"1.weight", "10.weight"}});
  const MaxMemory b2 = {{0, 2000}, {1, 10000}};
  const DevicePlan b2_plan = plan_auto_device_map(*b2_model, {.max_memory = b2});
  expect_valid(*b2_model, b2_plan, b2, {}, "B2");
  EXPECT_EQ(device_for(b2_plan.device_map, "0.weight"), MapDevice(0));  // "0" is not tied
  // B3: fallback_allocation looks up a tie holder it already searched.
  auto t6 = testing::tied3(1);
  const MaxMemory b3 = {{0, 150}, {1, 0}};
  expect_valid(*t6, plan_auto_device_map(*t6, {.max_memory = b3, .fallback_allocation = true}), b3,
               {}, "B3");
  // B4: splitting a module with a direct buffer drops the buffer from the reference's map.
  testing::Specs tensors = {{"a.buf", {100}, DType::Float32, true}};
  testing::append(tensors, testing::linear("a.lin1", 10, 10));
  testing::append(tensors, testing::linear("a.lin2", 10, 10));
  testing::append(tensors, testing::linear("b", 10, 10));
  auto block = testing::make_tree(
      "Sequential", {{"a", "Block"}, {"a.lin1", "Linear"}, {"a.lin2", "Linear"}, {"b", "Linear"}},
      tensors);
  const MaxMemory b4 = {{0, 1000}, {"cpu", 100000}};
  const DevicePlan b4_plan = plan_auto_device_map(*block, {.max_memory = b4});
  expect_valid(*block, b4_plan, b4, {}, "B4");
  // The reference's other decisions stand: {"a.lin1": 0, "a.lin2": "cpu", "b": "cpu"}.
  EXPECT_EQ(device_for(b4_plan.device_map, "a.lin1.weight"), MapDevice(0));
  EXPECT_EQ(device_for(b4_plan.device_map, "a.lin2.weight"), MapDevice::cpu());
  EXPECT_EQ(device_for(b4_plan.device_map, "b.weight"), MapDevice::cpu());
}

TEST(PlannerProperties, TieChainsStayTogether) {
  // p ~ t (f), t ~ x (g), x ~ z (h): placing p drags t; the reference stops there, so x later
  // goes with z, possibly elsewhere, splitting g. Here p, t, x and z go together.
  LogCapture quiet;
  auto model = linears({"p", "z", "t", "x", "tail"},
                       {{"p.weight", "t.weight"}, {"t.bias", "x.bias"}, {"x.weight", "z.weight"}});
  for (std::int64_t gpu0 : {200, 500, 920, 1000, 1100, 1400, 2000}) {
    const MaxMemory budgets = {{0, gpu0}, {1, 1000}};
    const DevicePlan plan = plan_auto_device_map(*model, {.max_memory = budgets});
    expect_valid(*model, plan, budgets, {}, fmt::format("gpu0 {}", gpu0));
    const auto p = device_for(plan.device_map, "p.weight");
    for (const char* name : {"t.weight", "x.bias", "z.weight"}) {
      EXPECT_EQ(device_for(plan.device_map, name), p) << name << " with gpu0 " << gpu0;
    }
  }
}

}  // namespace
}  // namespace strata::placement
