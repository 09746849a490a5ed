#include "strata/nn/align_devices_hook.h"

#include <fmt/format.h>

#include <algorithm>
#include <typeinfo>
#include <unordered_map>

#include "strata/core/error.h"
#include "strata/core/logging.h"

namespace strata::nn {
namespace {

using ScopeModules = std::vector<std::pair<std::string, Module*>>;

// The modules whose own tensors a hook manages: the module, or its whole subtree.
ScopeModules scope_modules(Module& module, bool place_submodules) {
  if (place_submodules) return module.named_modules();
  return {{"", &module}};
}

// How many entries inside the scope bind each slot. A slot with more bindings than that is tied
// to a module outside the scope.
std::unordered_map<const TensorSlot*, int> scope_bindings(const ScopeModules& scope) {
  std::unordered_map<const TensorSlot*, int> counts;
  for (const auto& [prefix, module] : scope) {
    for (const TensorEntry& e : module->direct_parameters()) ++counts[e.slot.get()];
    for (const TensorEntry& e : module->direct_buffers()) ++counts[e.slot.get()];
  }
  return counts;
}

bool tied_outside(const SlotPtr& slot, const std::unordered_map<const TensorSlot*, int>& counts) {
  auto it = counts.find(slot.get());
  return slot->bindings() > (it == counts.end() ? 0 : it->second);
}

// Binds every entry in the scope that holds `shared` to `replacement`, calling `on_rebind` with
// the entry's name relative to the hooked module.
template <class Fn>
void rebind_in_scope(const ScopeModules& scope, const SlotPtr& shared, const SlotPtr& replacement,
                     Fn&& on_rebind) {
  for (const auto& [prefix, module] : scope) {
    std::vector<std::string> names;
    for (const TensorEntry& e : module->direct_parameters()) {
      if (e.slot == shared) names.push_back(e.name);
    }
    for (const TensorEntry& e : module->direct_buffers()) {
      if (e.slot == shared) names.push_back(e.name);
    }
    for (const std::string& name : names) {
      module->bind_tensor(name, replacement);
      on_rebind(prefix.empty() ? name : prefix + "." + name);
    }
  }
}

std::string device_str(std::optional<Device> device) { return device ? device->str() : "none"; }

// Runs `fn`, prefixing the message of a user-facing error with the hooked module's class.
template <class Fn>
void in_context(const Module& module, Fn&& fn) {
  const auto message = [&](const Error& e) {
    return fmt::format("AlignDevicesHook on {}: {}", module.class_name(), e.what());
  };
  try {
    fn();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(message(e));
  } catch (const CheckpointError& e) {
    throw CheckpointError(message(e));
  }
}

}  // namespace

AlignDevicesHook::AlignDevicesHook(AlignDevicesOptions options) : options_(std::move(options)) {}

std::string AlignDevicesHook::describe() const {
  std::string keys;
  for (const std::string& key : options_.skip_keys) keys += (keys.empty() ? "" : ", ") + key;
  return fmt::format(
      "AlignDevicesHook(execution_device={}, offload={}, io_same_device={}, offload_buffers={}, "
      "place_submodules={}, skip_keys=[{}])",
      device_str(options_.execution_device), options_.offload, options_.io_same_device,
      options_.offload_buffers, options_.place_submodules, keys);
}

void AlignDevicesHook::check_move(Module& module, Device device, const MoveContext& context) {
  STRATA_CHECK_ARG(!options_.offload,
                   "cannot move {} to {}: module '{}' ({}) has weights offloaded to cpu/disk by "
                   "dispatch; remove the hooks (remove_hook_from_module(model, recurse=true)) "
                   "first or re-dispatch",
                   context.model.class_name(), device,
                   context.name.empty() ? "<root>" : context.name, module.class_name());
}

// ---- init ----------------------------------------------------------------------------------

void AlignDevicesHook::init_hook(Module& module) {
  const std::optional<Device> exec = options_.execution_device;
  if (exec && exec->is_meta()) options_.tied_params_map.reset();
  in_context(module, [&] {
    if (options_.offload) {
      STRATA_CHECK_ARG(exec.has_value(),
                       "offload needs an execution_device to load the weights on");
      init_offload(module);
    } else if (exec) {
      init_resident(module);
    }
  });
}

void AlignDevicesHook::init_resident(Module& module) {
  const Device exec = *options_.execution_device;
  const ScopeModules scope = scope_modules(module, options_.place_submodules);
  const auto counts = scope_bindings(scope);
  for (const TensorRef& ref : module.tensor_refs(true, true, options_.place_submodules)) {
    const Tensor& t = ref.tensor();
    const bool left = std::any_of(options_.leave_submodules.begin(),
                                  options_.leave_submodules.end(), [&](const std::string& sub) {
                                    return ref.name.size() > sub.size() &&
                                           ref.name.starts_with(sub) && ref.name[sub.size()] == '.';
                                  });
    if (left) continue;
    // A tied weight already placed on another accelerator by another module's hook keeps its
    // place there; this module gets its own copy (the first placement moves the shared tensor).
    if (tied_outside(ref.slot, counts) && !t.is_meta() && !t.is_cpu() && t.device() != exec) {
      auto copy = std::make_shared<TensorSlot>(t.to(exec));
      rebind_in_scope(scope, ref.slot, copy, [](const std::string&) {});
      continue;
    }
    set_slot_tensor(*ref.slot, ref.name, exec, nullptr, std::nullopt,
                    options_.tied_params_map.get());
  }
}

void AlignDevicesHook::init_offload(Module& module) {
  const Device exec = *options_.execution_device;
  const bool recurse = options_.place_submodules;
  offloaded_.clear();
  original_devices_.clear();
  for (const TensorRef& ref : module.tensor_refs(true, true, recurse)) {
    original_devices_.emplace_back(ref.name, ref.tensor().device());
  }
  if (!options_.weights_map) {
    auto built = std::make_shared<InMemoryWeightsMap>();
    for (const TensorRef& ref : named_module_tensors(module, options_.offload_buffers, recurse)) {
      STRATA_CHECK_ARG(!ref.tensor().is_meta(),
                       "'{}' is on the meta device and no weights_map was given to offload it "
                       "from; load the weights first or pass a weights map",
                       ref.name);
      built->insert(ref.name, ref.tensor().to(Device::cpu()));
    }
    options_.weights_map = std::move(built);
  }

  const ScopeModules scope = scope_modules(module, recurse);
  const auto counts = scope_bindings(scope);
  TiedParamsMap* tied = options_.tied_params_map.get();
  for (const TensorRef& ref : named_module_tensors(module, options_.offload_buffers, recurse,
                                                   /*remove_non_persistent=*/true)) {
    OffloadedTensor entry{ref.name, ref.slot, nullptr, false};
    entry.tied_tracked = tied != nullptr && tied->tracked(TiedParamsMap::key_of(ref.tensor()));
    if (tied_outside(ref.slot, counts)) {
      entry.shared = ref.slot;
      entry.slot = std::make_shared<TensorSlot>(ref.tensor().to(Device::meta()));
      rebind_in_scope(scope, entry.shared, entry.slot, [&](const std::string& name) {
        rebound_.push_back(Rebinding{name, entry.shared});
      });
    } else {
      set_slot_tensor(*ref.slot, ref.name, Device::meta());
    }
    offloaded_.push_back(std::move(entry));
  }

  // Buffers that are not offloaded live on the execution device; non-persistent ones are never
  // in a weights map, so they stay there even with offload_buffers.
  for (const TensorRef& ref : module.tensor_refs(false, true, recurse)) {
    if (options_.offload_buffers && ref.persistent) continue;
    set_slot_tensor(*ref.slot, ref.name, exec, nullptr, std::nullopt, tied);
  }
}

// ---- forward -------------------------------------------------------------------------------

Tensor AlignDevicesHook::fetch(const OffloadedTensor& tensor) {
  return options_.weights_map->at(tensor.name);
}

void AlignDevicesHook::onload(Module&) {
  const Device exec = *options_.execution_device;
  TiedParamsMap* tied = options_.tied_params_map.get();
  for (const OffloadedTensor& t : offloaded_) {
    if (t.shared && t.shared->tensor().device() == exec) {
      t.slot->set(t.shared->tensor());  // the tied weight is resident here already
      continue;
    }
    const Tensor value = fetch(t);
    if (tied != nullptr) {
      const void* key = TiedParamsMap::key_of(value);
      if (t.tied_tracked) tied->track(key);
      if (tied->tracked(key) && tied->find(key, exec) == nullptr) {
        tied_copies_to_drop_.emplace_back(key, exec);
      }
    }
    set_slot_tensor(*t.slot, t.name, exec, &value, std::nullopt, tied);
  }
}

void AlignDevicesHook::release(Module&) {
  for (const OffloadedTensor& t : offloaded_) t.slot->set(t.slot->tensor().to(Device::meta()));
  if (TiedParamsMap* tied = options_.tied_params_map.get()) {
    for (const auto& [key, device] : tied_copies_to_drop_) tied->erase(key, device);
  }
  tied_copies_to_drop_.clear();
}

void AlignDevicesHook::pre_forward(Module& module, Args& args) {
  if (options_.io_same_device) input_device_ = find_device(args);
  if (options_.offload) in_context(module, [&] { onload(module); });
  send_to_device(args, options_.execution_device, options_.skip_keys);
}

void AlignDevicesHook::post_forward(Module& module, Value& output) {
  if (options_.offload) release(module);
  if (options_.io_same_device && input_device_) {
    output = send_to_device(std::move(output), input_device_, options_.skip_keys);
  }
  input_device_.reset();
}

// ---- detach --------------------------------------------------------------------------------

void AlignDevicesHook::detach_hook(Module& module) {
  if (!options_.offload) return;
  for (const Rebinding& r : rebound_) {
    const ResolvedTensor resolved = resolve_tensor(module, r.name, "AlignDevicesHook::detach_hook");
    resolved.owner->bind_tensor(resolved.entry->name, r.shared);
  }
  for (const auto& original : original_devices_) {
    const std::string& name = original.first;  // not a structured binding: the lambda uses it
    const Device device = original.second;
    if (device.is_meta()) continue;
    const ResolvedTensor resolved = resolve_tensor(module, name, "AlignDevicesHook::detach_hook");
    TensorSlot& slot = *resolved.entry->slot;
    const bool retied = std::any_of(rebound_.begin(), rebound_.end(),
                                    [&](const Rebinding& r) { return r.name == name; });
    if (retied && !slot.tensor().is_meta()) continue;  // another module keeps it resident
    const std::optional<Tensor> value = options_.weights_map->find(name);
    set_slot_tensor(slot, name, device, value ? &*value : nullptr);
  }
  rebound_.clear();
  offloaded_.clear();
  original_devices_.clear();
}

// ---- utilities -----------------------------------------------------------------------------

bool has_offloaded_params(const Module& module) {
  const AlignDevicesHook* hook = find_hook<AlignDevicesHook>(module);
  return hook != nullptr && hook->offload();
}

bool hook_passes_through(const Module& module, Device device) {
  const ModelHook* hook = module.hook();
  if (hook == nullptr) return true;
  if (typeid(*hook) != typeid(AlignDevicesHook)) return false;
  const auto& align = static_cast<const AlignDevicesHook&>(*hook);
  const AlignDevicesOptions& o = align.options();
  return !o.offload && !o.io_same_device && (!o.execution_device || *o.execution_device == device);
}

AlignModuleDevice::AlignModuleDevice(Module& module, std::optional<Device> execution_device)
    : module_(module) {
  if (has_offloaded_params(module)) {
    hook_ = find_hook<AlignDevicesHook>(module);
    saved_execution_device_ = hook_->execution_device();
    if (execution_device) hook_->set_execution_device(execution_device);
    try {
      Args none;
      hook_->pre_forward(module, none);
    } catch (...) {
      hook_->set_execution_device(saved_execution_device_);
      throw;
    }
    return;
  }
  if (!execution_device) return;
  for (const TensorRef& ref : module.tensor_refs(true, false, /*recurse=*/false)) {
    const Device original = ref.tensor().device();
    set_slot_tensor(*ref.slot, ref.name, *execution_device);
    moved_.emplace_back(ref.name, original);
  }
}

AlignModuleDevice::~AlignModuleDevice() {
  try {
    if (hook_ != nullptr) {
      Value none;
      hook_->post_forward(module_, none);
      hook_->set_execution_device(saved_execution_device_);
      return;
    }
    for (const auto& [name, device] : moved_) {
      set_slot_tensor(*module_.parameter_slot(name), name, device);
    }
  } catch (const std::exception& e) {
    log_warning(fmt::format("align_module_device({}): could not restore the weights: {}",
                            module_.class_name(), e.what()));
  }
}

}  // namespace strata::nn
