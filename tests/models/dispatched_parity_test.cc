// Parity with transformers when load_checkpoint_and_dispatch spreads a model over devices, for
// every recorded architecture (issue 8: the same numbers dispatched over cpu and disk, and over
// cuda + cpu + disk). The model is built under init_empty_weights and loaded from the fixture's
// checkpoint by an explicit map derived from its module tree, or by the planner under small
// budgets; the float32 logits of the prompts must stay within 1e-4 of the scale of transformers'
// and the 12-token greedy continuation must be identical, also for a left-padded batch. The CUDA
// placements skip themselves without enough GPUs (run the binary on the device machine); without
// any, their planner budgets are still checked to use every tier.
//
// The *_policy_* placements force the offload policy (execution_policy.h): offloaded units compute
// on the cpu where their weights are (cpu), or stream the prompt and compute every decode step on
// the cpu (auto with a one-token threshold); the numbers must not change.

#include <fmt/format.h>

#include <variant>

#include "io/io_testing.h"
#include "models/model_testing.h"
#include "strata/io/offload.h"
#include "strata/nn/layers.h"
#include "strata/placement/load_and_dispatch.h"
#include "strata/placement/module_sizes.h"

namespace strata::testing {
namespace {

namespace fs = std::filesystem;
using placement::DeviceMap;
using placement::DeviceMapStrategy;
using placement::MapDevice;
using placement::MaxMemory;
using placement::OffloadPolicy;

// An explicit map: the input embedding on `embedding`; the decoder layers round robin over
// `layers`, the last layer on the last entry; every other module round robin over `others`. A
// mixture-of-experts layer not on disk sends its last expert to disk (a block split by the map).
struct ExplicitLayout {
  MapDevice embedding;
  std::vector<MapDevice> layers;
  std::vector<MapDevice> others;
};

// A planner map: budgets for `tiers` (disk excluded) such that they take consecutive top-level
// units in module order: the first tier up to the last layer (exclusive) or up to the input
// embedding (inclusive), each later tier the next unit it can take; disk takes the rest.
struct PlannerLayout {
  DeviceMapStrategy strategy;
  std::vector<MapDevice> tiers;
  bool first_up_to_last_layer;
};

struct Placement {
  std::string name;
  int gpus;  // CUDA devices needed
  std::variant<ExplicitLayout, PlannerLayout> layout;
  // LoadAndDispatchOptions::offload_buffers, with the model built with meta buffers too
  // (init_empty_weights(include_buffers)). No fixture has persistent buffers; the non-persistent
  // ones (RoPE's inv_freq) are in no checkpoint, so they are rebuilt on the cpu before loading,
  // and stay on the execution device through dispatch.
  bool offload_buffers = false;
  // How offloaded units compute (execution_policy.h). Auto uses a threshold of one token: the
  // prompt streams, every decode step computes on the cpu, so one generation runs both.
  OffloadPolicy policy = OffloadPolicy::Stream;
  // Each offloaded decoder layer one unit (preload_module_classes = the no-split classes, as
  // `--offload-unit layer`), instead of one per module with weights.
  bool layer_units = false;
};

void PrintTo(const Placement& how, std::ostream* os) { *os << how.name; }

const std::vector<Placement>& placements() {
  const MapDevice cpu = MapDevice::cpu(), disk = MapDevice::disk(), gpu0 = 0, gpu1 = 1;
  using enum DeviceMapStrategy;
  constexpr OffloadPolicy on_cpu = OffloadPolicy::Cpu;
  constexpr OffloadPolicy per_step = OffloadPolicy::Auto;
  constexpr OffloadPolicy split = OffloadPolicy::Split;
  static const std::vector<Placement> all = {
      {"cpu_disk", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}},
      {"cpu_disk_offload_buffers", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}, true},
      {"cpu_disk_sequential", 0, PlannerLayout{Sequential, {cpu}, true}},
      {"cuda_cpu_disk", 1, ExplicitLayout{gpu0, {cpu, disk}, {disk, cpu}}},
      {"cuda_cpu_disk_auto", 1, PlannerLayout{Auto, {gpu0, cpu}, false}},
      {"two_gpus_cpu_disk", 2, ExplicitLayout{gpu0, {gpu1, disk}, {cpu, gpu1}}},
      {"two_gpus_cpu_disk_sequential", 2, PlannerLayout{Sequential, {gpu0, gpu1, cpu}, false}},
      // The cpu execution policy: on a cpu main device the hooks still take the cpu path (the
      // moves are no-ops); on a GPU the activations go to the cpu and back around each unit.
      {"cpu_disk_policy_cpu", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}, false, on_cpu},
      {"cpu_disk_policy_auto", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}, false, per_step},
      {"cuda_cpu_disk_policy_cpu", 1, ExplicitLayout{gpu0, {cpu, disk}, {disk, cpu}}, false,
       on_cpu},
      {"cuda_cpu_disk_policy_auto", 1, ExplicitLayout{gpu0, {cpu, disk}, {disk, cpu}}, false,
       per_step},
      {"cuda_cpu_disk_auto_policy_cpu", 1, PlannerLayout{Auto, {gpu0, cpu}, false}, false, on_cpu},
      // The split policy: every offloaded linear's rows [0, r) on the cpu, [r, n) streamed to
      // the execution device (on a cpu main device a view of the stored rows).
      {"cpu_disk_policy_split", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}, false, split},
      {"cuda_cpu_disk_policy_split", 1, ExplicitLayout{gpu0, {cpu, disk}, {disk, cpu}}, false,
       split},
      // Whole layers as units: the cpu policy runs attention and the KV cache on the cpu, split
      // divides the linears inside the layer (their SplitLinearHooks).
      {"cpu_disk_layer_units_policy_cpu", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}, false,
       on_cpu, true},
      {"cpu_disk_layer_units_policy_split", 0, ExplicitLayout{cpu, {cpu, disk}, {disk}}, false,
       split, true},
      {"cuda_cpu_disk_layer_units_policy_cpu", 1, ExplicitLayout{gpu0, {cpu, disk}, {disk, cpu}},
       false, on_cpu, true},
      {"cuda_cpu_disk_layer_units_policy_split", 1, ExplicitLayout{gpu0, {cpu, disk}, {disk, cpu}},
       false, split, true},
  };
  return all;
}

// The top-level units of a map, in module order: the decoder layers, and every module beside
// the path from the root to the layer list (embeddings, final norm, rotary embedding, lm_head,
// OPT's projections).
struct MapUnits {
  std::vector<std::string> all;
  std::vector<std::string> layers;
  std::string embedding;
};

std::string parent_of(const std::string& name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

MapUnits map_units(models::CausalLM& model) {
  MapUnits units;
  units.layers = decoder_layer_names(model);
  EXPECT_FALSE(units.layers.empty()) << model.class_name() << " has no decoder layer";
  if (units.layers.empty()) return units;
  const std::string list = parent_of(units.layers.front());
  const auto on_path = [&](const std::string& name) {
    return name.empty() || name == list || list.starts_with(name + ".");
  };
  for (const auto& [name, module] : model.named_modules()) {
    if (name.empty() || on_path(name) || !on_path(parent_of(name))) continue;
    units.all.push_back(name);
    if (module == &model.input_embeddings()) units.embedding = name;
  }
  return units;
}

bool is_layer(const MapUnits& units, const std::string& name) {
  return std::find(units.layers.begin(), units.layers.end(), name) != units.layers.end();
}

// Maps `target` (a module under `unit`) to `device` and the rest of `unit` to `rest`, with one
// entry per sibling along the way (the shape of a planner's split; nested entries would ask the
// resident block's hook to place the offloaded part, which the reference refuses too).
void split_block(models::CausalLM& model, DeviceMap& map, const std::string& unit,
                 const std::string& target, const MapDevice& rest, const MapDevice& device) {
  for (std::string at = unit; at != target;) {
    nn::Module& module = model.get_submodule(at);
    EXPECT_TRUE(module.direct_parameters().empty()) << at << " holds tensors";
    std::string next;
    for (const auto& [name, child] : module.direct_children()) {
      const std::string full = at + "." + name;
      if (full == target || target.starts_with(full + ".")) {
        next = full;
      } else {
        map.emplace_back(full, rest);
      }
    }
    at = next;
  }
  map.emplace_back(target, device);
}

// The last expert of a mixture-of-experts layer (Mixtral's block_sparse_moe.experts.3), or ""
// (also for fused experts, gpt-oss': one module without children).
std::string last_expert(models::CausalLM& model, const std::string& layer) {
  for (const auto& [name, module] : model.get_submodule(layer).named_modules()) {
    if ((name == "experts" || name.ends_with(".experts")) && !module->direct_children().empty()) {
      return layer + "." + name + "." + module->direct_children().back().first;
    }
  }
  return "";
}

DeviceMap explicit_map(models::CausalLM& model, const ExplicitLayout& layout) {
  const MapUnits units = map_units(model);
  const std::size_t n = units.layers.size(), k = layout.layers.size();
  DeviceMap map;
  std::size_t layer = 0, other = 0;
  for (const std::string& unit : units.all) {
    if (unit == units.embedding) {
      map.emplace_back(unit, layout.embedding);
    } else if (is_layer(units, unit)) {
      const MapDevice device = layout.layers[k - 1 - (n - 1 - layer++) % k];
      const std::string expert = device.is_disk() ? "" : last_expert(model, unit);
      if (expert.empty()) {
        map.emplace_back(unit, device);
      } else {
        split_block(model, map, unit, expert, device, MapDevice::disk());
      }
    } else {
      map.emplace_back(unit, layout.others[other++ % layout.others.size()]);
    }
  }
  return map;
}

// Budgets under which the planner fills `layout.tiers` in order with consecutive top-level units
// and leaves the rest to disk, and the tiers that get some. The planner (docs/placement.md)
// treats unit i on a main device (the first GPU, the cpu) keeping room for the largest unit
// still queued after it, r_i. A budget of exactly the group's bytes (plus r of its last unit on
// a main device) takes the group, and the next unit b does not fit when it has bytes (and r_b > 0
// on a main device: the last unit always fits once the reserve has dropped to 0). A head tied to
// the embedding has no bytes of its own and goes with it. (No prefetch staging slot is reserved:
// see resolve().)
struct PlannerBudgets {
  MaxMemory budgets;
  std::vector<MapDevice> filled;
};

PlannerBudgets planner_budgets(models::CausalLM& model, const PlannerLayout& layout) {
  const MapUnits units = map_units(model);
  const placement::SizeOptions f32{DType::Float32, {}};
  const placement::ModuleSizes module_sizes = placement::compute_module_sizes(model, f32);
  const std::size_t n = units.all.size();
  std::vector<std::int64_t> size(n), after(n + 1, 0);  // after[i]: largest unit from i on
  for (std::size_t i = n; i-- > 0;) {
    size[i] = module_sizes[units.all[i]];
    after[i] = std::max(after[i + 1], size[i]);
  }
  const auto index_of = [&](const std::string& name) {
    return static_cast<std::size_t>(std::find(units.all.begin(), units.all.end(), name) -
                                    units.all.begin());
  };
  PlannerBudgets out;
  std::size_t a = 0;  // first unit not yet given to a tier
  for (const MapDevice& tier : layout.tiers) {
    const bool main = tier.is_cpu() || tier == MapDevice(0);
    const auto boundary = [&](std::size_t b) {
      return b > a && b < n && size[b] > 0 && (!main || after[b + 1] > 0);
    };
    std::size_t b = n;
    if (tier == layout.tiers.front()) {  // the largest valid end up to the wanted one
      b = layout.first_up_to_last_layer ? index_of(units.layers.back())
                                        : index_of(units.embedding) + 1;
      while (b > a && !boundary(b)) --b;
    } else {  // the smallest valid end
      for (b = a + 1; b < n && !boundary(b); ++b) {
      }
    }
    if (!boundary(b)) {
      out.budgets.set(tier, 0);
      continue;
    }
    std::int64_t bytes = 0;
    for (std::size_t i = a; i < b; ++i) bytes += size[i];
    if (main) bytes += after[b];
    out.budgets.set(tier, bytes);
    out.filled.push_back(tier);
    a = b;
  }
  out.filled.push_back(MapDevice::disk());
  return out;
}

std::string map_text(const DeviceMap& map) {
  std::string out;
  for (const auto& [name, device] : map) out += fmt::format("{}={} ", name, device.str());
  return out;
}

bool map_uses(const DeviceMap& map, const MapDevice& device) {
  return std::any_of(map.begin(), map.end(),
                     [&](const auto& entry) { return entry.second == device; });
}

bool under(const std::string& name, const std::string& prefix) {
  return prefix.empty() || name == prefix || name.starts_with(prefix + ".");
}

// Every device an explicit layout names.
std::vector<MapDevice> layout_tiers(const ExplicitLayout& layout) {
  std::vector<MapDevice> out = {layout.embedding};
  for (const auto* list : {&layout.layers, &layout.others}) {
    for (const MapDevice& device : *list) {
      if (std::find(out.begin(), out.end(), device) == out.end()) out.push_back(device);
    }
  }
  return out;
}

// load_checkpoint_and_dispatch's options for a placement, and the tiers its map must use.
struct Resolved {
  placement::LoadAndDispatchOptions options;
  std::vector<MapDevice> tiers;
  std::vector<std::vector<std::string>> tied;  // before dispatch rebinds the offloaded names
};

Resolved resolve(models::CausalLM& model, const Placement& how) {
  Resolved out;
  out.options.dtype = DType::Float32;
  out.options.no_split_module_classes = model.no_split_module_classes();
  out.options.offload_buffers = how.offload_buffers;
  if (how.layer_units) out.options.preload_module_classes = out.options.no_split_module_classes;
  out.tied = placement::find_tied_parameters(model);
  if (const auto* layout = std::get_if<ExplicitLayout>(&how.layout)) {
    out.options.device_map = explicit_map(model, *layout);
    out.tiers = layout_tiers(*layout);
  } else {
    const auto& planner = std::get<PlannerLayout>(how.layout);
    PlannerBudgets budgets = planner_budgets(model, planner);
    out.options.device_map = planner.strategy;
    // With a GPU, the planner keeps staging_slots - 1 extra slots (a layer each) on it once
    // anything is offloaded, and plans again. With one or two layers no budget then leaves all
    // three tiers used (the pass that offloads keeps a layer's room more on the GPU than the one
    // that counts), so the planner cases copy then compute; the explicit maps prefetch.
    out.options.prefetch.staging_slots = 1;
    out.options.max_memory = std::move(budgets.budgets);
    out.tiers = std::move(budgets.filled);
  }
  return out;
}

// The planner's map under these options, as load_checkpoint_and_dispatch makes it.
DeviceMap planned_map(models::CausalLM& model, const placement::LoadAndDispatchOptions& options) {
  placement::InferOptions infer;
  infer.max_memory = options.max_memory;
  infer.no_split_module_classes = options.no_split_module_classes;
  infer.dtype = options.dtype;
  infer.reserve.staging_slots = options.prefetch.staging_slots - 1;
  return placement::plan_device_map(model, std::get<DeviceMapStrategy>(*options.device_map), infer)
      .device_map;
}

void expect_tiers_used(const DeviceMap& map, const std::vector<MapDevice>& tiers) {
  for (const MapDevice& device : tiers) {
    EXPECT_TRUE(map_uses(map, device)) << "nothing on " << device << ": " << map_text(map);
  }
}

bool under_any(const std::string& name, const DeviceMap& map, bool (MapDevice::*is)() const) {
  return std::any_of(map.begin(), map.end(), [&](const auto& entry) {
    return (entry.second.*is)() && under(name, entry.first);
  });
}

// A tied name whose weight stays in memory (under another, resident name): it is not written to
// the offload folder, and its module's hook uses the resident copy.
bool tied_to_resident(const std::string& name, const Resolved& resolved, const DeviceMap& map) {
  for (const auto& group : resolved.tied) {
    if (std::find(group.begin(), group.end(), name) == group.end()) continue;
    return std::any_of(group.begin(), group.end(), [&](const std::string& other) {
      return !under_any(other, map, &MapDevice::is_disk);
    });
  }
  return false;
}

// The placement really happened: the map uses every expected tier; every module it names is
// hooked; every parameter under a disk entry is only a meta placeholder in the model and is in
// the offload folder's index (or tied to a resident weight), so no forward can have used a copy
// left in memory.
void expect_placed(models::CausalLM& model, const Resolved& resolved,
                   const placement::LoadAndDispatchResult& result) {
  ASSERT_TRUE(result.dispatch.has_value());
  const placement::DispatchResult& dispatch = *result.dispatch;
  EXPECT_TRUE(result.load.missing_keys.empty());
  EXPECT_TRUE(result.load.unexpected_keys.empty());
  expect_tiers_used(dispatch.device_map, resolved.tiers);
  EXPECT_TRUE(dispatch.hooked);
  ASSERT_NE(dispatch.scheduler, nullptr) << "nothing was offloaded";
  for (const auto& [name, device] : dispatch.device_map) {
    EXPECT_NE(model.get_submodule(name).hook(), nullptr) << name << " has no hook";
  }
  const io::OffloadFolderReader offloaded(*resolved.options.offload_folder);
  std::int64_t in_folder = 0;
  for (const auto& [name, tensor] : model.named_parameters(true, false)) {
    if (!under_any(name, dispatch.device_map, &MapDevice::is_disk)) continue;
    EXPECT_TRUE(tensor.is_meta()) << name << " is resident on " << tensor.device();
    if (tied_to_resident(name, resolved, dispatch.device_map)) continue;
    EXPECT_TRUE(offloaded.index().contains(name)) << name << " is not in the offload folder";
    ++in_folder;
  }
  EXPECT_GT(in_folder, 0);
}

using DispatchedCase = std::tuple<std::string, Placement>;

class DispatchedParityTest : public ::testing::TestWithParam<DispatchedCase> {
 protected:
  void SetUp() override { fixture_ = load_model_fixture(std::get<0>(GetParam())); }
  const Placement& how() const { return std::get<1>(GetParam()); }

  ModelFixture fixture_;
};

TEST_P(DispatchedParityTest, LogitsAndGreedyMatchTransformers) {
  const int gpus = how().gpus;
  auto model = empty_fixture_model(fixture_, /*include_buffers=*/how().offload_buffers);
  if (how().offload_buffers) nn::materialize_non_persistent_buffers(*model, Device::cpu());
  Resolved resolved = resolve(*model, how());
  if (gpus > 0 && !device_available(Device::cuda(gpus - 1))) {
    // Planning needs no GPU: at least check that the budgets spread the model as intended.
    if (std::holds_alternative<DeviceMapStrategy>(*resolved.options.device_map)) {
      expect_tiers_used(planned_map(*model, resolved.options), resolved.tiers);
    }
    GTEST_SKIP() << gpus << " CUDA device(s) needed";
  }
  TempDir tmp;
  resolved.options.offload_folder = tmp.path() / "offload";
  const auto result = placement::load_checkpoint_and_dispatch(
      *model, model_fixture_dir(fixture_.name) / "model.safetensors", resolved.options);
  ASSERT_TRUE(result.dispatch.has_value());
  SCOPED_TRACE(map_text(result.dispatch->device_map));
  expect_placed(*model, resolved, result);
  EXPECT_EQ(result.dispatch->main_device, gpus > 0 ? Device::cuda(0) : Device::cpu());
  placement::PrefetchScheduler& scheduler = *result.dispatch->scheduler;
  if (how().policy == OffloadPolicy::Auto) {
    scheduler.set_offload_policy(OffloadPolicy::Auto,
                                 [](const placement::UnitProfile&) { return std::int64_t{1}; });
  } else {
    scheduler.set_offload_policy(how().policy);
  }

  expect_float32_logits_match(fixture_, model->run(fixture_.prompt_ids).logits);
  expect_greedy_continuation_matches(fixture_, *model);
  // The attention mask and the per-layer masks pass through every hook.
  expect_padded_batch_matches(fixture_, *model, Device::cpu());
  const placement::PrefetchStats& stats = result.dispatch->scheduler->stats();
  EXPECT_GT(stats.onloads, 0);
  EXPECT_EQ(stats.casts, 0);
  if (how().policy == OffloadPolicy::Stream) {
    EXPECT_EQ(stats.cpu_computes, 0);
  } else if (how().policy == OffloadPolicy::Split) {
    EXPECT_EQ(stats.cpu_computes, 0);
    // GPT-2's projections are Conv1D ([in, out] weights, not rows to divide) and quantized
    // projections are not split: only layers with nn::Linear must split.
    bool layers_have_linears = false;
    for (const std::string& layer : decoder_layer_names(*model)) {
      for (const auto& [name, module] : model->get_submodule(layer).named_modules()) {
        layers_have_linears |= dynamic_cast<const nn::Linear*>(module) != nullptr;
      }
    }
    if (layers_have_linears) {
      EXPECT_GT(stats.split_computes, 0) << "no unit was split";
      EXPECT_GT(stats.split_linears, 0);
    } else if (model->config().tie_word_embeddings) {
      // No Linear to split anywhere (an untied lm_head is one: deepseek_v3_fp8's layers hold
      // only fp8 FP8Linears, its head still splits).
      EXPECT_EQ(stats.split_computes, 0);
    }
  } else {
    EXPECT_GT(stats.cpu_computes, 0) << "no unit computed on the cpu";
  }
  if (how().policy == OffloadPolicy::Auto && gpus > 0) {
    EXPECT_GT(stats.issued, 0) << "the prompts did not stream";
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DispatchedParityTest,
                         ::testing::Combine(::testing::ValuesIn(model_fixture_names()),
                                            ::testing::ValuesIn(placements())),
                         [](const ::testing::TestParamInfo<DispatchedCase>& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param).name;
                         });

}  // namespace
}  // namespace strata::testing
