#include "strata/placement/load_and_dispatch.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

#include "strata/core/error.h"

namespace strata::placement {
namespace {

// An explicit map entry naming neither a module nor a tensor is a typo: refuse it before
// anything is loaded (check_device_map only warns, as the reference ignores such entries).
void check_map_names(nn::Module& model, const DeviceMap& map) {
  std::unordered_set<std::string> known;
  for (const auto& [name, module] : model.named_modules()) known.insert(name);
  for (const auto& [name, t] : model.named_parameters(true, false)) known.insert(name);
  for (const auto& [name, t] : model.named_buffers(true, false)) known.insert(name);
  for (const auto& [name, device] : map) {
    if (known.contains(name)) continue;
    std::vector<std::string> top;
    for (const auto& [child, module] : model.direct_children()) top.push_back(child);
    STRATA_THROW(InvalidArgument,
                 "load_checkpoint_and_dispatch({}): the device map names '{}', which is neither "
                 "a module nor a tensor of the model (its top-level modules: {}); fix the name "
                 "or use a strategy such as \"auto\"",
                 model.class_name(), name, fmt::join(top, ", "));
  }
}

DeviceMap resolve_map(nn::Module& model, const std::variant<DeviceMapStrategy, DeviceMap>& choice,
                      const LoadAndDispatchOptions& options) {
  if (const auto* map = std::get_if<DeviceMap>(&choice)) {
    DeviceMap concrete = expand_device_map_patterns(model, *map);
    check_map_names(model, concrete);
    return concrete;
  }
  return plan_for_dispatch(model, std::get<DeviceMapStrategy>(choice), options).device_map;
}

}  // namespace

DeviceMap expand_device_map_patterns(nn::Module& model, const DeviceMap& map) {
  const bool any = std::any_of(
      map.begin(), map.end(), [](const auto& entry) { return is_device_map_pattern(entry.first); });
  if (!any) return map;
  std::vector<std::string> names;  // modules, then tensors, in the model's order
  for (const auto& [name, module] : model.named_modules()) names.push_back(name);
  for (const auto& [name, t] : model.named_parameters(true, false)) names.push_back(name);
  for (const auto& [name, t] : model.named_buffers(true, false)) names.push_back(name);
  std::unordered_set<std::string> explicit_names;
  for (const auto& [key, device] : map) {
    if (!is_device_map_pattern(key)) explicit_names.insert(key);
  }
  const auto depth = [](std::string_view s) { return std::count(s.begin(), s.end(), '.'); };
  DeviceMap out;
  for (const auto& [key, device] : map) {
    if (!is_device_map_pattern(key)) {
      out.emplace_back(key, device);
      continue;
    }
    std::size_t matched = 0;
    for (const std::string& name : names) {
      if (name.empty() || depth(name) != depth(key) || !device_map_key_covers(key, name)) continue;
      ++matched;
      if (!explicit_names.contains(name)) out.emplace_back(name, device);
    }
    STRATA_CHECK_ARG(matched > 0,
                     "device map pattern '{}' matches no module or tensor of {} (a '*' stands for "
                     "one dotted component, e.g. model.layers.*.mlp.experts); fix the pattern",
                     key, model.class_name());
  }
  // A name two patterns produced keeps the later entry (the one device_for would pick).
  std::unordered_set<std::string> seen;
  DeviceMap unique;
  for (auto it = out.rbegin(); it != out.rend(); ++it) {
    if (seen.insert(it->first).second) unique.push_back(*it);
  }
  std::reverse(unique.begin(), unique.end());
  return unique;
}

DevicePlan plan_for_dispatch(nn::Module& model, DeviceMapStrategy strategy,
                             const LoadAndDispatchOptions& options) {
  InferOptions infer;
  infer.max_memory = options.max_memory;
  infer.no_split_module_classes = options.no_split_module_classes;
  infer.dtype = options.dtype;
  infer.offload_buffers = options.offload_buffers;
  // The reference keeps one largest-layer slot; the scheduler's other slots are planned too.
  infer.reserve.staging_slots = std::max(0, options.prefetch.staging_slots - 1);
  infer.reserve.per_gpu = options.reserve_per_gpu;
  infer.experts = options.experts;
  return plan_device_map(model, strategy, infer);
}

LoadAndDispatchResult load_checkpoint_and_dispatch(nn::Module& model,
                                                   const std::filesystem::path& checkpoint,
                                                   const LoadAndDispatchOptions& options) {
  LoadAndDispatchResult result;
  std::optional<DeviceMap> map;
  if (options.device_map) map = resolve_map(model, *options.device_map, options);
  LoadCheckpointOptions load;
  if (map) load.device_map = *map;
  load.offload_folder = options.offload_folder;
  load.dtype = options.dtype;
  load.offload_buffers = options.offload_buffers;
  load.strict = options.strict;
  load.shards = options.shards;
  load.progress = options.progress;
  result.load = load_checkpoint_in_model(model, checkpoint, load);
  if (!map) return result;
  DispatchOptions dispatch;
  dispatch.offload_dir = options.offload_folder;
  dispatch.disk_weights = result.load.disk_weights;
  dispatch.offload_buffers = options.offload_buffers;
  dispatch.skip_keys = options.skip_keys;
  dispatch.preload_module_classes = options.preload_module_classes;
  dispatch.force_hooks = options.force_hooks;
  dispatch.prefetch = options.prefetch;
  result.dispatch = dispatch_model(model, *map, dispatch);
  return result;
}

}  // namespace strata::placement
