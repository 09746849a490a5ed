#include "strata/nn/attach.h"

#include <algorithm>

#include "strata/core/error.h"

namespace strata::nn {
namespace {

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string child_name(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

// The options every attached hook shares; callers set the rest.
AlignDevicesOptions hook_options(std::optional<Device> execution_device,
                                 const std::vector<std::string>& skip_keys,
                                 const std::shared_ptr<TiedParamsMap>& tied_params_map) {
  AlignDevicesOptions out;
  out.execution_device = execution_device;
  out.skip_keys = skip_keys;
  out.tied_params_map = tied_params_map;
  return out;
}

std::shared_ptr<AlignDevicesHook> make_hook(AlignDevicesOptions options) {
  return std::make_shared<AlignDevicesHook>(std::move(options));
}

// The caller's factory, else a plain AlignDevicesHook.
std::shared_ptr<AlignDevicesHook> make_hook(const AttachOptions& attach,
                                            AlignDevicesOptions options) {
  if (!attach.make_hook) return make_hook(std::move(options));
  std::shared_ptr<AlignDevicesHook> hook = attach.make_hook(std::move(options));
  STRATA_CHECK_ARG(hook != nullptr, "AttachOptions::make_hook returned a null hook");
  return hook;
}

void attach_align_recursive(Module& module, std::optional<Device> execution_device, bool offload,
                            const AttachOptions& options, const std::string& name) {
  const bool has_direct = !module.direct_parameters().empty() || !module.direct_buffers().empty();
  const bool full_offload =
      offload && contains(options.preload_module_classes, module.class_name());
  if (has_direct || full_offload) {
    AlignDevicesOptions hook =
        hook_options(execution_device, options.skip_keys, options.tied_params_map);
    hook.offload = offload;
    hook.weights_map = with_prefix(options.weights_map, name.empty() ? "" : name + ".");
    hook.offload_buffers = options.offload_buffers;
    hook.place_submodules = full_offload;
    add_hook_to_module(module, make_hook(options, std::move(hook)), /*append=*/true);
  }
  if (full_offload) return;
  for (const auto& [child, submodule] : module.direct_children()) {
    attach_align_recursive(*submodule, execution_device, offload, options, child_name(name, child));
  }
}

void attach_blocks_recursive(Module& module, const PerModule<Device>& execution_device,
                             const PerModule<bool>& offload, const AttachOptions& options,
                             const std::string& name) {
  // A scalar side only counts for the names the map side lists.
  const std::optional<Device> exec = execution_device.is_scalar() && !offload.find(name)
                                         ? std::nullopt
                                         : execution_device.find(name);
  const std::optional<bool> off =
      offload.is_scalar() && !execution_device.find(name) ? std::nullopt : offload.find(name);
  if (exec && off && !*off) {
    // Descendants the map offloads keep their tensors for their own hooks (Strata only: the
    // reference moves them to the execution device first, or fails on disk ones still on meta).
    std::vector<std::string> apart;
    for (const auto& [other, offloaded] : offload.entries()) {
      const bool below = name.empty() ? !other.empty()
                                      : other.size() > name.size() && other.starts_with(name) &&
                                            other[name.size()] == '.';
      if (below && offloaded) apart.push_back(name.empty() ? other : other.substr(name.size() + 1));
    }
    AlignDevicesOptions hook = hook_options(exec, options.skip_keys, options.tied_params_map);
    hook.io_same_device = name.empty();
    hook.offload_buffers = options.offload_buffers;
    hook.place_submodules = true;
    hook.leave_submodules = apart;
    add_hook_to_module(module, make_hook(options, std::move(hook)));
    attach_execution_device_hook(module, *exec, options.skip_keys, options.preload_module_classes,
                                 options.tied_params_map, apart);
  } else if (exec && off) {
    attach_align_recursive(module, exec, true, options, name);
    if (module.hook() == nullptr) {
      AlignDevicesOptions hook = hook_options(exec, options.skip_keys, options.tied_params_map);
      hook.io_same_device = name.empty();
      add_hook_to_module(module, make_hook(options, std::move(hook)));
    }
    attach_execution_device_hook(module, *exec, options.skip_keys, options.preload_module_classes,
                                 options.tied_params_map);
  } else if (name.empty()) {
    AlignDevicesOptions hook = hook_options(exec, options.skip_keys, options.tied_params_map);
    hook.io_same_device = true;
    add_hook_to_module(module, make_hook(options, std::move(hook)));
  }
  for (const auto& [child, submodule] : module.direct_children()) {
    attach_blocks_recursive(*submodule, execution_device, offload, options,
                            child_name(name, child));
  }
}

}  // namespace

void attach_execution_device_hook(Module& module, Device execution_device,
                                  const std::vector<std::string>& skip_keys,
                                  const std::vector<std::string>& preload_module_classes,
                                  const std::shared_ptr<TiedParamsMap>& tied_params_map,
                                  const std::vector<std::string>& leave) {
  if (module.hook() == nullptr && has_state(module)) {
    add_hook_to_module(module,
                       make_hook(hook_options(execution_device, skip_keys, tied_params_map)));
  }
  if (contains(preload_module_classes, module.class_name())) return;
  for (const auto& [child, submodule] : module.direct_children()) {
    if (contains(leave, child)) continue;
    // The names below `child`, relative to it.
    std::vector<std::string> inner;
    for (const std::string& name : leave) {
      if (name.size() > child.size() && name.starts_with(child) && name[child.size()] == '.') {
        inner.push_back(name.substr(child.size() + 1));
      }
    }
    attach_execution_device_hook(*submodule, execution_device, skip_keys, preload_module_classes,
                                 tied_params_map, inner);
  }
}

void attach_align_device_hook(Module& module, std::optional<Device> execution_device, bool offload,
                              const AttachOptions& options) {
  attach_align_recursive(module, execution_device, offload, options, options.module_name);
}

void attach_align_device_hook_on_blocks(Module& module, std::optional<Device> execution_device,
                                        bool offload, const AttachOptions& options) {
  if (!offload) {
    AlignDevicesOptions hook =
        hook_options(execution_device, options.skip_keys, options.tied_params_map);
    hook.io_same_device = true;
    hook.place_submodules = true;
    add_hook_to_module(module, make_hook(options, std::move(hook)));
    return;
  }
  attach_align_device_hook(module, execution_device, true, options);
}

void attach_align_device_hook_on_blocks(Module& module, const PerModule<Device>& execution_device,
                                        const PerModule<bool>& offload,
                                        const AttachOptions& options) {
  if (execution_device.is_scalar() && offload.is_scalar()) {
    attach_align_device_hook_on_blocks(module, execution_device.find(""), *offload.find(""),
                                       options);
    return;
  }
  attach_blocks_recursive(module, execution_device, offload, options, options.module_name);
}

}  // namespace strata::nn
