#pragma once
// Placing one parameter or buffer of a module tree: set_module_tensor_to_device (the reference's
// utils/modeling.py) and the map of per-device copies of tied weights that offload hooks share.

#include <cstddef>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "strata/core/tensor.h"
#include "strata/nn/module.h"

namespace strata::nn {

// Copies of tied weights per device, keyed by the data address of the (weights-map) tensor they
// were made from: the reference's tied_params_map. When several offloaded modules share a
// weight, the first to onload it on a device records its copy and the others reuse it.
class TiedParamsMap {
 public:
  // The key of a tensor: its data address. Meta, undefined and empty tensors have none
  // (nullptr) and are never matched: in the reference every meta tensor had address 0, so all
  // of them matched each other.
  static const void* key_of(const Tensor& tensor);

  // Starts tracking `key` (with no copies yet). A null key is ignored.
  void track(const void* key);
  bool tracked(const void* key) const { return key != nullptr && map_.contains(key); }
  // The copy of `key` on `device`, or nullptr.
  const Tensor* find(const void* key, Device device) const;
  // Records `tensor` as the copy of tracked `key` on `device` unless one is there already.
  // Returns whether it recorded.
  bool record(const void* key, Device device, const Tensor& tensor);
  void erase(const void* key, Device device);
  // How many devices hold a copy of `key`.
  std::size_t copies(const void* key) const;
  std::size_t size() const { return map_.size(); }

 private:
  std::unordered_map<const void*, std::unordered_map<Device, Tensor>> map_;
};

// Puts tensor `tensor_name` (a dotted path from `module`) on `device`, the reference's rules:
// - with `value`: its shape must equal the current one (InvalidArgument 'Trying to set a tensor
//   of shape [2, 2] in "weight" (which has shape [4, 3]), this looks incorrect.'); it is cast
//   to the current dtype when `dtype` is unset, else to `dtype` unless it is an integer or bool
//   tensor (those are never cast);
// - without `value`: the current tensor moves; a meta tensor cannot move to a real device
//   (InvalidArgument "... is on the meta device, we need a `value` ..."). `dtype` casts
//   floating-point tensors here too (the reference ignored it unless the target was meta);
// - with `tied_params_map`: a copy already made on `device` for the same source is reused, and
//   a new copy of a tracked source is recorded.
// The tensor is replaced in its slot, so tied names follow. A missing submodule or tensor is
// InvalidArgument naming the path.
void set_module_tensor_to_device(Module& module, std::string_view tensor_name, Device device,
                                 const std::optional<Tensor>& value = std::nullopt,
                                 std::optional<DType> dtype = std::nullopt,
                                 TiedParamsMap* tied_params_map = nullptr,
                                 bool non_blocking = false);

// The same rules on a slot already resolved (hooks resolve their tensors once, not per
// forward). `name` is only used in error messages.
void set_slot_tensor(TensorSlot& slot, std::string_view name, Device device,
                     const Tensor* value = nullptr, std::optional<DType> dtype = std::nullopt,
                     TiedParamsMap* tied_params_map = nullptr, bool non_blocking = false);

// The module that registers `tensor_name` and the entry; throws like set_module_tensor_to_device.
struct ResolvedTensor {
  Module* owner = nullptr;
  const TensorEntry* entry = nullptr;
  bool is_buffer = false;
};
ResolvedTensor resolve_tensor(Module& module, std::string_view tensor_name,
                              std::string_view caller);

}  // namespace strata::nn
