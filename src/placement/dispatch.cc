#include "strata/placement/dispatch.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/nn/align_devices_hook.h"
#include "strata/nn/attach.h"
#include "strata/nn/hooks.h"
#include "strata/placement/device_map_checks.h"
#include "strata/placement/offload.h"
#include "strata/placement/weights_map_adapter.h"

namespace strata::placement {
namespace {

bool under(const std::string& key, const std::string& module) {
  return module.empty() || key == module ||
         (key.size() > module.size() && key.starts_with(module) && key[module.size()] == '.');
}

// The reference's extract_submodules_state_dict: the entries of `modules` and their subtrees.
nn::NamedTensors extract(const nn::NamedTensors& state, const std::vector<std::string>& modules) {
  nn::NamedTensors out;
  for (const auto& entry : state) {
    if (std::any_of(modules.begin(), modules.end(),
                    [&](const std::string& m) { return under(entry.first, m); })) {
      out.push_back(entry);
    }
  }
  return out;
}

Device main_device_of(const DeviceMap& map, const DispatchOptions& options) {
  if (options.main_device) return resolve_device(*options.main_device);
  for (const auto& [name, device] : map) {
    if (device.is_gpu()) return *device.device();  // first GPU in map order (B14)
  }
  return Device::cpu();
}

struct BlockPlan {
  Device main = Device::cpu();
  bool offload_cpu = false;  // cpu entries are offloaded (main is a GPU), not resident
  nn::AttachOptions attach;
  std::shared_ptr<PrefetchScheduler> scheduler;
};

// The dict form of nn's attach_align_device_hook_on_blocks; the scheduler's factory makes the
// offload hooks PrefetchHooks. Unlike the reference, a root the map does not name gets the main
// device as execution device (its io hook sends the inputs there too).
void attach_blocks(nn::Module& model, const DeviceMap& map, const BlockPlan& plan) {
  std::unordered_map<std::string, Device> exec;
  std::unordered_map<std::string, bool> offload;
  for (const auto& [name, device] : map) {
    exec.try_emplace(name, device.is_gpu() ? *device.device() : plan.main);
    offload.try_emplace(name, device.is_disk() || (device.is_cpu() && plan.offload_cpu));
  }
  exec.try_emplace("", plan.main);  // execution side only: an unnamed root stays an io hook
  nn::AttachOptions attach = plan.attach;
  if (plan.scheduler) attach.make_hook = prefetch_hook_factory(plan.scheduler);
  nn::attach_align_device_hook_on_blocks(model, std::move(exec), std::move(offload), attach);
}

std::vector<std::string> names_on(const DeviceMap& map, bool (MapDevice::*is)() const) {
  std::vector<std::string> out;
  for (const auto& [name, device] : map) {
    if ((device.*is)()) out.push_back(name);
  }
  return out;
}

// Tied weights that a module mapped to the main device keeps resident there (placement moves
// them there when the hooks are attached), by the slot every name of the weight shares. Their
// offloaded names read that one copy (the prefetch hook finds it on the execution device): it is
// never copied to pinned memory nor written to disk.
class ResidentTies {
 public:
  ResidentTies(nn::Module& model, const DeviceMap& map, Device main) {
    for (nn::TensorRef& ref : model.tensor_refs(true, true, true, /*remove_duplicate=*/false)) {
      const auto where = device_for(map, ref.name);
      const bool on_main =
          where && (where->is_gpu() ? *where->device() == main : where->is_cpu() && main.is_cpu());
      if (on_main) resident_.insert(ref.slot.get());
      slots_.emplace(ref.name, std::move(ref.slot));
    }
  }

  // `tensors` (offloaded names) without the resident ties, which go to `kept`.
  nn::NamedTensors split(const nn::NamedTensors& tensors, TiedSlots& kept) const {
    nn::NamedTensors stored;
    for (const auto& entry : tensors) {
      const auto it = slots_.find(entry.first);
      if (it != slots_.end() && resident_.contains(it->second.get())) {
        kept.emplace_back(entry.first, it->second);
      } else {
        stored.push_back(entry);
      }
    }
    return stored;
  }

 private:
  std::unordered_map<std::string, nn::SlotPtr> slots_;
  std::unordered_set<const nn::TensorSlot*> resident_;
};

// The weights of the disk modules, in the offload folder (written unless it is complete).
std::shared_ptr<const nn::WeightsMap> disk_weights(nn::Module& model,
                                                   const nn::NamedTensors& state,
                                                   const std::vector<std::string>& disk,
                                                   const ResidentTies& ties,
                                                   const DispatchOptions& options) {
  if (disk.empty()) return nullptr;
  if (options.disk_weights) {
    // B5: without offload_buffers the loader keeps the buffers of disk modules on the cpu.
    std::unordered_set<std::string> resident_buffers;
    if (!options.offload_buffers) {
      for (const auto& [name, buffer] : model.named_buffers(true, false)) {
        resident_buffers.insert(name);
      }
    }
    for (const auto& [name, tensor] : extract(state, disk)) {
      if (resident_buffers.contains(name)) continue;
      STRATA_CHECK(options.disk_weights->contains(name), CheckpointError,
                   "dispatch_model({}): '{}' is mapped to disk but {} does not hold it; load "
                   "the checkpoint with the same device map",
                   model.class_name(), name, options.disk_weights->describe());
    }
    return options.disk_weights;
  }
  TiedSlots kept;
  const nn::NamedTensors tensors = ties.split(extract(state, disk), kept);
  if (tensors.empty()) return with_resident(nullptr, std::move(kept));  // no folder needed
  STRATA_CHECK_ARG(options.offload_dir.has_value(),
                   "dispatch_model({}): modules {} are mapped to \"disk\" but no offload_dir "
                   "was given; pass DispatchOptions::offload_dir",
                   model.class_name(), fmt::join(disk, ", "));
  const std::filesystem::path& dir = *options.offload_dir;
  const bool complete = std::filesystem::exists(dir / io::kOffloadIndexName);
  STRATA_CHECK(complete || !options.offload_index, CheckpointError,
               "dispatch_model({}): an offload_index was given but {} has no {}; load the "
               "checkpoint into that folder first",
               model.class_name(), dir.string(), io::kOffloadIndexName);
  if (!complete) io::offload_state_dict(dir, tensors);
  auto folder = std::make_shared<io::OffloadFolderReader>(dir);
  check_offload_folder(*folder, tensors);
  return with_resident(std::make_shared<FolderWeightsMap>(std::move(folder)), std::move(kept));
}

}  // namespace

DispatchResult dispatch_model(nn::Module& model, const DeviceMap& device_map,
                              DispatchOptions options) {
  check_device_map(model, device_map);
  DispatchResult result;
  result.device_map = device_map;
  std::vector<MapDevice> devices;
  for (const auto& [name, device] : device_map) {
    STRATA_CHECK_ARG(!device.is_mps(),
                     "dispatch_model({}): '{}' is mapped to mps, which Strata cannot run; map it "
                     "to a GPU index, \"cpu\" or \"disk\"",
                     model.class_name(), name);
    if (std::find(devices.begin(), devices.end(), device) == devices.end()) {
      devices.push_back(device);
    }
  }
  result.main_device = main_device_of(device_map, options);
  const bool has_disk = std::any_of(devices.begin(), devices.end(),
                                    [](const MapDevice& d) { return d.is_disk(); });
  if (devices.size() == 1 && !has_disk && !options.force_hooks) {
    model.to(*devices.front().device());
    return result;
  }
  result.hooked = true;

  BlockPlan plan;
  plan.main = result.main_device;
  plan.offload_cpu = !plan.main.is_cpu();
  const std::vector<std::string> cpu = names_on(device_map, &MapDevice::is_cpu);
  const std::vector<std::string> disk = names_on(device_map, &MapDevice::is_disk);
  const nn::NamedTensors state = model.state_dict();
  const ResidentTies ties(model, device_map, plan.main);
  std::shared_ptr<const nn::WeightsMap> memory;
  if (plan.offload_cpu && !cpu.empty()) {
    TiedSlots kept;
    const nn::NamedTensors stored =
        ties.split(options.state_dict ? *options.state_dict : extract(state, cpu), kept);
    memory = with_resident(offload_weights_map(stored, plan.main), std::move(kept));
  } else if (options.state_dict) {
    memory = offload_weights_map(*options.state_dict, plan.main);
  }
  auto on_disk = disk_weights(model, state, disk, ties, options);
  if (memory && on_disk) {
    plan.attach.weights_map = std::make_shared<LayeredWeightsMap>(memory, on_disk);
  } else if (memory || on_disk) {
    plan.attach.weights_map = memory ? memory : on_disk;
  }
  plan.attach.offload_buffers = options.offload_buffers;
  plan.attach.skip_keys = options.skip_keys;
  plan.attach.preload_module_classes = options.preload_module_classes;
  plan.attach.tied_params_map = std::make_shared<nn::TiedParamsMap>();
  for (const auto& [name, tensor] : model.named_parameters()) {
    if (!tensor.is_meta()) plan.attach.tied_params_map->track(nn::TiedParamsMap::key_of(tensor));
  }
  const bool offloads = !disk.empty() || (plan.offload_cpu && !cpu.empty());
  if (offloads) {
    plan.scheduler = std::make_shared<PrefetchScheduler>(plan.main, options.prefetch);
  }
  attach_blocks(model, device_map, plan);
  if (offloads) {
    log_warning(fmt::format("Some parameters are on the meta device because they were offloaded "
                            "to the {}.",
                            !disk.empty() && plan.offload_cpu && !cpu.empty() ? "cpu and disk"
                            : disk.empty()                                   ? "cpu"
                                                                             : "disk"));
  }
  result.scheduler = plan.scheduler;
  return result;
}

}  // namespace strata::placement
