#pragma once
// Attaching AlignDevicesHooks over a tree (the reference's attach_* functions in hooks.py):
// what cpu_offload, disk_offload and dispatch_model build their hook trees with.

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "strata/nn/align_devices_hook.h"

namespace strata::nn {

// Builds the hook for one module from the options the attach functions worked out for it.
using AlignHookFactory =
    std::function<std::shared_ptr<AlignDevicesHook>(AlignDevicesOptions options)>;

// The options the attach_* functions share (the reference's keyword arguments).
struct AttachOptions {
  // The model's weights map; each hook gets a view under its module's dotted name.
  std::shared_ptr<const WeightsMap> weights_map;
  bool offload_buffers = false;
  // The dotted name of `module` inside the model ("" for the root).
  std::string module_name;
  std::vector<std::string> skip_keys;
  // Classes whose instances load the weights of their whole subtree before their forward (for
  // modules that read a submodule's weights without calling it). Honoured by every form.
  std::vector<std::string> preload_module_classes;
  std::shared_ptr<TiedParamsMap> tied_params_map;
  // Makes every hook attach_align_device_hook and the _on_blocks forms attach (the hooks that
  // attach_execution_device_hook adds to resident descendants stay plain). Unset: a plain
  // AlignDevicesHook. The placement layer passes one that makes PrefetchHooks for offload.
  AlignHookFactory make_hook;
};

// Gives every module that has no hook yet and holds state (parameters or persistent buffers in
// its subtree) an AlignDevicesHook(execution_device); does not descend into preload classes nor
// into `leave` (dotted names relative to `module`: submodules offloaded by hooks of their own).
void attach_execution_device_hook(Module& module, Device execution_device,
                                  const std::vector<std::string>& skip_keys = {},
                                  const std::vector<std::string>& preload_module_classes = {},
                                  const std::shared_ptr<TiedParamsMap>& tied_params_map = nullptr,
                                  const std::vector<std::string>& leave = {});

// Appends an AlignDevicesHook to every module with direct parameters or buffers. With offload,
// an instance of a preload class gets one hook with place_submodules and its subtree no hooks.
void attach_align_device_hook(Module& module, std::optional<Device> execution_device,
                              bool offload = false, const AttachOptions& options = {});

// A value for every module (a scalar) or per dotted module name.
template <class T>
class PerModule {
 public:
  PerModule(T value) : scalar_(std::move(value)) {}
  PerModule(std::unordered_map<std::string, T> values) : values_(std::move(values)) {}
  PerModule(std::initializer_list<std::pair<const std::string, T>> values) : values_(values) {}

  bool is_scalar() const { return scalar_.has_value(); }
  // The named entries (none for a scalar).
  const std::unordered_map<std::string, T>& entries() const { return values_; }
  // The scalar, or the entry for `name`; nullopt when a map has no such entry.
  std::optional<T> find(const std::string& name) const {
    if (scalar_) return scalar_;
    auto it = values_.find(name);
    return it == values_.end() ? std::nullopt : std::optional<T>(it->second);
  }

 private:
  std::optional<T> scalar_;
  std::unordered_map<std::string, T> values_;
};

// One execution device and offload flag for the whole module: without offload, one hook with
// place_submodules and io_same_device on `module`; with offload, attach_align_device_hook (and,
// unlike the reference, preload_module_classes is honoured: B21).
void attach_align_device_hook_on_blocks(Module& module, std::optional<Device> execution_device,
                                        bool offload, const AttachOptions& options = {});
// Per module name (what dispatch uses); a scalar on one side applies to the other side's names.
// For each module named on both sides: resident blocks get a place_submodules hook and their
// stateful descendants plain hooks; offloaded blocks get attach_align_device_hook. The root, if
// not named, gets an io_same_device hook. options.module_name is the name of `module`.
void attach_align_device_hook_on_blocks(Module& module, const PerModule<Device>& execution_device,
                                        const PerModule<bool>& offload,
                                        const AttachOptions& options = {});

}  // namespace strata::nn
