#pragma once
// dispatch_model (the reference's big_modeling.dispatch_model): places a model by a device map,
// with hooks that move activations between devices and stream offloaded weights (cpu, disk) to
// the main device through one PrefetchScheduler per model.
//
// Differences from the reference, all deliberate:
//   - main device = the first GPU in map order, else the cpu (the reference took the first
//     element of a set: B14);
//   - the "parameters on the meta device" warning only when something is offloaded (B15);
//   - cpu-offloaded weights are pinned once and prefetched (W1-W5); nothing is cast per forward.
//
// Moving a dispatched model with offloaded weights (Module::to) fails before anything moves: the
// offload hooks refuse it (ModelHook::check_move), InvalidArgument naming the model, the device
// and the first offloaded module. Remove the hooks first, or dispatch again.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/io/offload.h"
#include "strata/nn/module.h"
#include "strata/nn/weights_map.h"
#include "strata/placement/map_device.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

struct DispatchOptions {
  // Where offloaded blocks run and inputs go. Unset: the first GPU in the map, else the cpu.
  std::optional<Device> main_device;
  // The weights of cpu-mapped modules, by full name. Unset: the model's own tensors.
  std::optional<nn::NamedTensors> state_dict;
  // Where disk-mapped weights are (written there when it has no index.json).
  std::optional<std::filesystem::path> offload_dir;
  // An index of `offload_dir` already written by the checkpoint loader: nothing is written and
  // every disk tensor must be in it.
  std::optional<io::OffloadIndex> offload_index;
  // Where disk-mapped weights are read from when the checkpoint loader already provides them
  // (LoadCheckpointResult::disk_weights, which may view the checkpoint itself); then nothing is
  // written and offload_dir is not needed.
  std::shared_ptr<const nn::WeightsMap> disk_weights;
  bool offload_buffers = false;
  std::vector<std::string> skip_keys;
  std::vector<std::string> preload_module_classes;
  // Hooks even when the whole model is on one device (inputs then move to it).
  bool force_hooks = false;
  PrefetchOptions prefetch;
};

struct DispatchResult {
  Device main_device = Device::cpu();
  DeviceMap device_map;  // the reference's model.hf_device_map
  bool hooked = false;   // false: the model was moved to its single device
  // Null when nothing is offloaded.
  std::shared_ptr<PrefetchScheduler> scheduler;
};

// The reference's dispatch_model: every module goes to its device of `device_map`; modules mapped
// to "cpu" or "disk" keep their weights there and get hooks that stream them to the main device
// for each forward; activations follow the map. A map on a single device just moves the model.
DispatchResult dispatch_model(nn::Module& model, const DeviceMap& device_map,
                              DispatchOptions options = {});

}  // namespace strata::placement
