#include "strata/placement/dispatch.h"

#include <fmt/format.h>

#include <algorithm>

#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/nn/align_devices_hook.h"
#include "strata/nn/attach.h"
#include "strata/nn/hooks.h"
#include "strata/placement/device_map_checks.h"
#include "strata/placement/offload.h"

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
  Device main;
  bool offload_cpu = false;  // cpu entries are offloaded (main is a GPU), not resident
  nn::AttachOptions attach;
  std::shared_ptr<PrefetchScheduler> scheduler;
};

const MapDevice* entry_for(const DeviceMap& map, const std::string& name) {
  for (const auto& [key, device] : map) {
    if (key == name) return &device;
  }
  return nullptr;
}

nn::AlignDevicesOptions plain_hook(Device exec, const BlockPlan& plan, bool root) {
  nn::AlignDevicesOptions hook;
  hook.execution_device = exec;
  hook.io_same_device = root;
  hook.skip_keys = plan.attach.skip_keys;
  hook.tied_params_map = plan.attach.tied_params_map;
  return hook;
}

// The dict form of attach_align_device_hook_on_blocks, with PrefetchHooks for offloaded blocks.
void attach_blocks(nn::Module& module, const DeviceMap& map, const BlockPlan& plan,
                   const std::string& name) {
  if (const MapDevice* device = entry_for(map, name)) {
    const bool offload = device->is_disk() || (device->is_cpu() && plan.offload_cpu);
    const Device exec = device->is_gpu() ? *device->device() : plan.main;
    if (!offload) {
      nn::AlignDevicesOptions hook = plain_hook(exec, plan, name.empty());
      hook.offload_buffers = plan.attach.offload_buffers;
      hook.place_submodules = true;
      nn::add_hook_to_module(module, std::make_shared<nn::AlignDevicesHook>(std::move(hook)));
    } else {
      nn::AttachOptions attach = plan.attach;
      attach.module_name = name;
      attach_prefetch_hooks(module, attach, plan.scheduler);
      if (module.hook() == nullptr) {
        nn::add_hook_to_module(
            module, std::make_shared<nn::AlignDevicesHook>(plain_hook(exec, plan, name.empty())));
      }
    }
    nn::attach_execution_device_hook(module, exec, plan.attach.skip_keys,
                                     plan.attach.preload_module_classes,
                                     plan.attach.tied_params_map);
  } else if (name.empty()) {
    nn::add_hook_to_module(
        module, std::make_shared<nn::AlignDevicesHook>(plain_hook(plan.main, plan, true)));
  }
  for (const auto& [child, submodule] : module.direct_children()) {
    attach_blocks(*submodule, map, plan, name.empty() ? child : name + "." + child);
  }
}

std::vector<std::string> names_on(const DeviceMap& map, bool (MapDevice::*is)() const) {
  std::vector<std::string> out;
  for (const auto& [name, device] : map) {
    if ((device.*is)()) out.push_back(name);
  }
  return out;
}

// The weights of the disk modules, in the offload folder (written unless it is complete).
std::shared_ptr<const nn::WeightsMap> disk_weights(nn::Module& model,
                                                   const nn::NamedTensors& state,
                                                   const std::vector<std::string>& disk,
                                                   const DispatchOptions& options) {
  if (disk.empty()) return nullptr;
  if (options.disk_weights) {
    for (const auto& [name, tensor] : extract(state, disk)) {
      STRATA_CHECK(options.disk_weights->contains(name), CheckpointError,
                   "dispatch_model({}): '{}' is mapped to disk but {} does not hold it; load "
                   "the checkpoint with the same device map",
                   model.class_name(), name, options.disk_weights->describe());
    }
    return options.disk_weights;
  }
  STRATA_CHECK_ARG(options.offload_dir.has_value(),
                   "dispatch_model({}): modules {} are mapped to \"disk\" but no offload_dir "
                   "was given; pass DispatchOptions::offload_dir",
                   model.class_name(), fmt::join(disk, ", "));
  const std::filesystem::path& dir = *options.offload_dir;
  const nn::NamedTensors tensors = extract(state, disk);
  const bool complete = std::filesystem::exists(dir / io::kOffloadIndexName);
  STRATA_CHECK(complete || !options.offload_index, CheckpointError,
               "dispatch_model({}): an offload_index was given but {} has no {}; load the "
               "checkpoint into that folder first",
               model.class_name(), dir.string(), io::kOffloadIndexName);
  if (!complete) io::offload_state_dict(dir, tensors);
  auto folder = std::make_shared<io::OffloadFolderReader>(dir);
  check_offload_folder(*folder, tensors);
  return std::make_shared<FolderWeightsMap>(std::move(folder));
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

  BlockPlan plan{result.main_device};
  plan.offload_cpu = !plan.main.is_cpu();
  const std::vector<std::string> cpu = names_on(device_map, &MapDevice::is_cpu);
  const std::vector<std::string> disk = names_on(device_map, &MapDevice::is_disk);
  const nn::NamedTensors state = model.state_dict();
  std::shared_ptr<const nn::WeightsMap> memory;
  if (plan.offload_cpu && !cpu.empty()) {
    memory = offload_weights_map(options.state_dict ? *options.state_dict : extract(state, cpu),
                                 plan.main);
  } else if (options.state_dict) {
    memory = offload_weights_map(*options.state_dict, plan.main);
  }
  auto on_disk = disk_weights(model, state, disk, options);
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
  attach_blocks(model, device_map, plan, "");
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

void check_movable(nn::Module& model) {
  for (const auto& [name, module] : model.named_modules()) {
    STRATA_CHECK_ARG(!nn::has_offloaded_params(*module),
                     "You can't move a model that has some modules offloaded to cpu or disk: "
                     "'{}' ({}) keeps its weights offloaded. Remove the hooks "
                     "(remove_hook_from_submodules) first, or dispatch again with a new map",
                     name.empty() ? "<root>" : name, module->class_name());
  }
}

}  // namespace strata::placement
