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
    check_map_names(model, *map);
    return *map;
  }
  return plan_for_dispatch(model, std::get<DeviceMapStrategy>(choice), options).device_map;
}

}  // namespace

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
