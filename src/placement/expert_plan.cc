// Expert-aware planning (issue 17): the dense part of every block first, then the routed
// experts where room is left. See ExpertPlacement in auto_device_map.h.

#include "expert_plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "strata/core/error.h"
#include "strata/placement/module_sizes.h"

namespace strata::placement {
namespace {

bool in_classes(const nn::Module& module, const std::vector<std::string>& classes) {
  return std::find(classes.begin(), classes.end(), module.class_name()) != classes.end();
}

bool is_experts_name(std::string_view name) {
  return name == "experts" || name.ends_with(".experts");
}

// A unit of the dense fill: a no-split block (its size without its experts), or a module outside
// blocks with tensors of its own (embeddings, final norm, head).
struct Unit {
  std::string name;
  std::int64_t dense = 0;
  std::vector<std::pair<std::string, std::int64_t>> experts;  // routed-expert modules inside
};

std::int64_t direct_size(const nn::Module& module, const std::string& prefix,
                         const ModuleSizes& sizes) {
  std::int64_t total = 0;
  for (const auto& [name, t] : module.named_parameters(false, true)) {
    total += sizes[prefix.empty() ? name : prefix + "." + name];
  }
  for (const auto& [name, t] : module.named_buffers(false, true)) {
    total += sizes[prefix.empty() ? name : prefix + "." + name];
  }
  return total;
}

void collect_units(nn::Module& module, const std::string& name, const ModuleSizes& sizes,
                   const std::vector<std::string>& no_split, std::vector<Unit>& units) {
  if (in_classes(module, no_split)) {
    Unit unit{name, sizes.contains(name) ? sizes[name] : 0, {}};
    for (const auto& [inner, child] : module.named_modules()) {
      if (inner.empty() || !is_experts_name(inner)) continue;
      const std::string full = name.empty() ? inner : name + "." + inner;
      // Nested "experts" modules are covered by the outer one.
      const bool nested = std::any_of(unit.experts.begin(), unit.experts.end(), [&](const auto& e) {
        return full.starts_with(e.first + ".");
      });
      if (nested || !sizes.contains(full)) continue;
      unit.experts.emplace_back(full, sizes[full]);
      unit.dense -= sizes[full];
    }
    units.push_back(std::move(unit));
    return;
  }
  const std::int64_t own = direct_size(module, name, sizes);
  if (own > 0) units.push_back(Unit{name, own, {}});
  for (const auto& [child_name, child] : module.direct_children()) {
    collect_units(*child, name.empty() ? child_name : name + "." + child_name, sizes, no_split,
                  units);
  }
}

}  // namespace

std::vector<std::string> routed_expert_modules(nn::Module& model,
                                               const std::vector<std::string>& no_split) {
  const ModuleSizes sizes = compute_module_sizes(model);
  std::vector<Unit> units;
  collect_units(model, "", sizes, no_split, units);
  std::vector<std::string> out;
  for (const Unit& unit : units) {
    for (const auto& [name, size] : unit.experts) out.push_back(name);
  }
  return out;
}

namespace detail {

DevicePlan plan_experts_after(nn::Module& model, const MaxMemory& budgets,
                              const InferOptions& options) {
  STRATA_CHECK_ARG(!options.no_split_module_classes.empty(),
                   "expert placement needs no_split_module_classes (the blocks holding the "
                   "experts, e.g. Qwen3MoeDecoderLayer)");
  const ExpertPlacement& how = *options.experts;
  STRATA_CHECK_ARG(how.n_cpu_moe >= 0, "--n-cpu-moe {}: must not be negative", how.n_cpu_moe);
  const ModuleSizes sizes =
      compute_module_sizes(model, SizeOptions{options.dtype, options.special_dtypes});
  std::vector<Unit> units;
  collect_units(model, "", sizes, options.no_split_module_classes, units);

  std::vector<MapDevice> devices;
  std::vector<std::optional<std::int64_t>> limits;
  for (const auto& [device, bytes] : budgets) {
    if (device.is_disk() || device.is_mps()) continue;
    devices.push_back(device);
    limits.emplace_back(bytes);
  }
  devices.push_back(MapDevice::disk());
  limits.emplace_back(std::nullopt);
  std::vector<std::int64_t> used(devices.size(), 0);
  const auto fits = [&](std::size_t d, std::int64_t bytes) {
    return !limits[d] || used[d] + bytes <= *limits[d];
  };

  DevicePlan plan;
  plan.max_memory = budgets;
  // Dense parts in module order: the current device until it is full, then the next.
  std::size_t current = 0;
  std::vector<std::size_t> unit_device(units.size());
  for (std::size_t u = 0; u < units.size(); ++u) {
    while (!fits(current, units[u].dense)) ++current;
    unit_device[u] = current;
    used[current] += units[u].dense;
    plan.placements.emplace_back(units[u].name, devices[current]);
    plan.explain.push_back({units[u].name, units[u].dense, devices[current],
                            units[u].experts.empty() ? "fits" : "fits (without its experts)"});
  }
  // Experts in layer order: the first device with room, GPUs only when allowed.
  std::int64_t moe_blocks = 0;
  for (std::size_t u = 0; u < units.size(); ++u) {
    if (units[u].experts.empty()) continue;
    const bool off_gpu = how.keep_off_gpu || moe_blocks < how.n_cpu_moe;
    ++moe_blocks;
    for (const auto& [name, bytes] : units[u].experts) {
      std::size_t d = 0;
      while (d + 1 < devices.size() && ((off_gpu && devices[d].is_gpu()) || !fits(d, bytes))) {
        ++d;
      }
      used[d] += bytes;
      plan.placements.emplace_back(name, devices[d]);
      const std::string reason =
          how.keep_off_gpu ? "routed experts, kept off the GPUs (--experts cpu)"
          : off_gpu        ? fmt::format("routed experts of the first {} MoE blocks (--n-cpu-moe)",
                                         how.n_cpu_moe)
          : devices[d].is_gpu() ? "routed experts, in the room left on the GPU"
                                : "routed experts, no GPU room left";
      plan.explain.push_back({name, bytes, devices[d], reason});
      if (devices[d] != devices[unit_device[u]]) plan.device_map.emplace_back(name, devices[d]);
    }
  }
  // The map: each unit, then the experts placed apart from their block (longest prefix wins).
  DeviceMap map;
  for (std::size_t u = 0; u < units.size(); ++u)
    map.emplace_back(units[u].name, devices[unit_device[u]]);
  for (auto& entry : plan.device_map) map.push_back(std::move(entry));
  plan.device_map = std::move(map);
  for (std::size_t d = 0; d < devices.size(); ++d) {
    if (used[d] > 0) plan.used.set(devices[d], used[d]);
  }
  return plan;
}

}  // namespace detail
}  // namespace strata::placement
