#include "strata/nn/tensor_placement.h"

#include <string>

#include "strata/core/error.h"

namespace strata::nn {

// ---- TiedParamsMap -------------------------------------------------------------------------

const void* TiedParamsMap::key_of(const Tensor& tensor) {
  if (!tensor.defined() || tensor.is_meta() || tensor.numel() == 0) return nullptr;
  return tensor.data_ptr();
}

void TiedParamsMap::track(const void* key) {
  if (key != nullptr) map_.try_emplace(key);
}

const Tensor* TiedParamsMap::find(const void* key, Device device) const {
  if (key == nullptr) return nullptr;
  auto it = map_.find(key);
  if (it == map_.end()) return nullptr;
  auto copy = it->second.find(device);
  return copy == it->second.end() ? nullptr : &copy->second;
}

bool TiedParamsMap::record(const void* key, Device device, const Tensor& tensor) {
  if (key == nullptr) return false;
  auto it = map_.find(key);
  if (it == map_.end()) return false;
  return it->second.try_emplace(device, tensor).second;
}

void TiedParamsMap::erase(const void* key, Device device) {
  auto it = map_.find(key);
  if (it != map_.end()) it->second.erase(device);
}

std::size_t TiedParamsMap::copies(const void* key) const {
  auto it = map_.find(key);
  return it == map_.end() ? 0 : it->second.size();
}

// ---- placement -----------------------------------------------------------------------------

ResolvedTensor resolve_tensor(Module& module, std::string_view tensor_name,
                              std::string_view caller) {
  const std::size_t dot = tensor_name.rfind('.');
  const std::string_view path = dot == std::string_view::npos ? "" : tensor_name.substr(0, dot);
  const std::string_view leaf =
      dot == std::string_view::npos ? tensor_name : tensor_name.substr(dot + 1);
  Module* owner = nullptr;
  try {
    owner = &module.get_submodule(path);
  } catch (const InvalidArgument& e) {
    STRATA_THROW(InvalidArgument, "{}('{}'): {}", caller, tensor_name, e.what());
  }
  ResolvedTensor out;
  out.owner = owner;
  out.entry = owner->find_tensor(leaf, &out.is_buffer);
  STRATA_CHECK_ARG(out.entry != nullptr,
                   "{}('{}'): {} '{}' does not have a parameter or a buffer named '{}'", caller,
                   tensor_name, owner->class_name(), path.empty() ? "<root>" : path, leaf);
  return out;
}

void set_slot_tensor(TensorSlot& slot, std::string_view name, Device device, const Tensor* value,
                     std::optional<DType> dtype, TiedParamsMap* tied_params_map,
                     bool non_blocking) {
  const Tensor old = slot.tensor();
  const void* value_key = value != nullptr ? TiedParamsMap::key_of(*value) : nullptr;
  const void* old_key = TiedParamsMap::key_of(old);
  if (tied_params_map != nullptr) {
    const Tensor* copy = tied_params_map->find(value_key, device);
    if (copy == nullptr) copy = tied_params_map->find(old_key, device);
    if (copy != nullptr) {
      slot.set(*copy);
      return;
    }
  }
  Tensor placed;
  if (value != nullptr) {
    STRATA_CHECK_ARG(value->defined(),
                     "set_module_tensor_to_device: the value for '{}' is undefined", name);
    STRATA_CHECK_ARG(value->shape() == old.shape(),
                     "Trying to set a tensor of shape {} in \"{}\" (which has shape {}), this "
                     "looks incorrect.",
                     shape_str(value->shape()), name, shape_str(old.shape()));
    // Integer and bool values keep their dtype when a dtype is asked for.
    const DType target = !dtype                              ? old.dtype()
                         : is_floating_point(value->dtype()) ? *dtype
                                                             : value->dtype();
    placed = value->to(device, target, non_blocking);
  } else {
    STRATA_CHECK_ARG(!old.is_meta() || device.is_meta(),
                     "{} is on the meta device, we need a `value` to put in on {}. Load its "
                     "weights (or pass the tensor as `value`) first",
                     name, device);
    const DType target = dtype && is_floating_point(old.dtype()) ? *dtype : old.dtype();
    placed = old.to(device, target, non_blocking);
  }
  slot.set(placed);
  if (tied_params_map != nullptr) {
    if (tied_params_map->tracked(old_key)) {
      tied_params_map->record(old_key, device, placed);
    } else if (tied_params_map->tracked(value_key)) {
      tied_params_map->record(value_key, device, placed);
    }
  }
}

void set_module_tensor_to_device(Module& module, std::string_view tensor_name, Device device,
                                 const std::optional<Tensor>& value, std::optional<DType> dtype,
                                 TiedParamsMap* tied_params_map, bool non_blocking) {
  const ResolvedTensor resolved =
      resolve_tensor(module, tensor_name, "set_module_tensor_to_device");
  set_slot_tensor(*resolved.entry->slot, tensor_name, device, value ? &*value : nullptr, dtype,
                  tied_params_map, non_blocking);
}

}  // namespace strata::nn
