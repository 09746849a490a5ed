#pragma once
// load_checkpoint_and_dispatch (the reference's big_modeling.load_checkpoint_and_dispatch): plan
// a device map (a strategy or an explicit map), load the checkpoint straight onto it, dispatch.

#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "strata/placement/auto_device_map.h"
#include "strata/placement/dispatch.h"
#include "strata/placement/load_checkpoint.h"

namespace strata::placement {

struct LoadAndDispatchOptions {
  // "auto", "balanced", "balanced_low_0", "sequential" (a strategy) or an explicit map. Unset:
  // load on the cpu and do not dispatch (the reference's device_map=None).
  std::optional<std::variant<DeviceMapStrategy, DeviceMap>> device_map;
  std::optional<MaxMemory> max_memory;
  std::vector<std::string> no_split_module_classes;
  std::optional<std::filesystem::path> offload_folder;
  bool offload_buffers = false;
  std::optional<DType> dtype;
  std::vector<std::string> skip_keys;
  std::vector<std::string> preload_module_classes;
  bool force_hooks = false;
  bool strict = false;
  // Prefetch staging; with a strategy, the planner keeps staging_slots - 1 extra slots free on
  // the first GPU when it offloads anything (one slot is the reference's own reserve).
  PrefetchOptions prefetch;
  // Bytes the runtime needs on every GPU besides weights (the server's KV cache pool): held back
  // by the planner with a strategy (RuntimeReserve::per_gpu).
  std::int64_t reserve_per_gpu = 0;
  // With a strategy: plan the routed experts after the rest of the model (InferOptions::experts).
  std::optional<ExpertPlacement> experts;
  // Tensor parallelism: this rank's shards (LoadCheckpointOptions::shards).
  io::TensorShards shards;
  // Called after each tensor is placed (the CLI draws a progress bar from it).
  io::ProgressCallback progress;
};

struct LoadAndDispatchResult {
  LoadCheckpointResult load;
  std::optional<DispatchResult> dispatch;  // unset without a device map
};

// An explicit map with pattern keys ("model.layers.*.mlp.experts": a "*" component matches any
// one component, see device_for) made concrete for `model`: each pattern is replaced, where it
// stands, by every module or tensor name of the same depth it matches, except names the map
// also gives explicitly (those win). A pattern that matches nothing is an InvalidArgument naming
// it. load_checkpoint_and_dispatch does this before checking and dispatching an explicit map.
DeviceMap expand_device_map_patterns(nn::Module& model, const DeviceMap& map);

// The plan load_checkpoint_and_dispatch makes for a strategy (budgets, no-split classes, dtype and
// the prefetch staging reserve from `options`). A caller that shows the plan before loading passes
// its device_map back as the explicit map.
DevicePlan plan_for_dispatch(nn::Module& model, DeviceMapStrategy strategy,
                             const LoadAndDispatchOptions& options);

// The reference's load_checkpoint_and_dispatch: plans the device map (a strategy) or takes the
// explicit one, loads every tensor of `checkpoint` (a .safetensors file, a sharded index or a
// folder) straight to its planned place, writes disk-mapped weights to offload_folder when they
// are not read from the checkpoint itself, then dispatch_model. Bad options, a missing or
// mismatching tensor and an unknown map entry are errors naming them, before a weight is read
// wherever they can be.
LoadAndDispatchResult load_checkpoint_and_dispatch(nn::Module& model,
                                                   const std::filesystem::path& checkpoint,
                                                   const LoadAndDispatchOptions& options = {});

}  // namespace strata::placement
