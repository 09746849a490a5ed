#pragma once
// Module: a node of the model tree. It owns ordered parameters, buffers (persistent or not) and
// children; dotted names ("layers.0.self_attn.q_proj.weight") are paths through the tree and
// double as checkpoint keys. operator() runs the attached hook around forward().
//
// Parameters and buffers live in TensorSlots. A slot is one logical tensor; tied parameters are
// one slot registered under several names, so replacing the tensor of a tied parameter (loading,
// moving, casting) updates every name at once and ties never need re-establishing. Rebinding a
// name to another slot (bind_tensor) ties or unties it.
//
// Not thread-safe: build, move and hook a tree from one thread at a time.

#include <concepts>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/nn/value.h"

namespace strata::nn {

class ModelHook;
class Module;
namespace detail {
struct HookAccess;  // lets the hook functions (hooks.cc) attach and detach hooks
}  // namespace detail

// One logical tensor, shared by every (module, name) entry bound to it.
class TensorSlot {
 public:
  explicit TensorSlot(Tensor tensor) : tensor_(std::move(tensor)) {}
  TensorSlot(const TensorSlot&) = delete;
  TensorSlot& operator=(const TensorSlot&) = delete;

  const Tensor& tensor() const { return tensor_; }
  void set(Tensor tensor) { tensor_ = std::move(tensor); }
  // How many module entries are bound to this slot; more than one means tied.
  int bindings() const { return bindings_; }

 private:
  friend class Module;
  Tensor tensor_;
  int bindings_ = 0;
};
using SlotPtr = std::shared_ptr<TensorSlot>;

// A module's own registration of a parameter or buffer.
struct TensorEntry {
  std::string name;
  SlotPtr slot;
  bool persistent = true;  // buffers only: non-persistent buffers stay out of the state dict
};

using NamedTensor = std::pair<std::string, Tensor>;
using NamedTensors = std::vector<NamedTensor>;

// A tensor found by a walk over a module tree.
struct TensorRef {
  std::string name;  // dotted, relative to the root of the walk
  Module* owner = nullptr;
  SlotPtr slot;
  bool is_buffer = false;
  bool persistent = true;

  const Tensor& tensor() const { return slot->tensor(); }
  // The name inside its owner (after the last dot).
  std::string_view local_name() const;
};

class Module {
 public:
  // `class_name` is what no_split_module_classes, preload_module_classes and skip classes match.
  explicit Module(std::string class_name);
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& class_name() const { return class_name_; }

  // ---- registration ------------------------------------------------------------------------
  // Names must be non-empty, contain no '.', and be unique among this module's parameters,
  // buffers and children; otherwise InvalidArgument naming the module class and the name.
  //
  // Registers a parameter holding `value`. Under init_empty_weights (init_on_device) the tensor
  // becomes a meta tensor of the same shape and dtype (is moved to that device).
  const Tensor& register_parameter(std::string name, Tensor value);
  // Binds `name` to an existing slot: the parameter is tied to every other name bound to it.
  void register_parameter(std::string name, SlotPtr slot);
  // A new parameter of `shape` and `dtype`, filled with `fill`. Under init_empty_weights it is a
  // meta tensor and nothing is allocated: layers create their weights through this.
  const Tensor& create_parameter(std::string name, const Shape& shape, DType dtype, double fill);
  // Buffers follow init_empty_weights only when it includes buffers.
  const Tensor& register_buffer(std::string name, Tensor value, bool persistent = true);
  const Tensor& create_buffer(std::string name, const Shape& shape, DType dtype, double fill,
                              bool persistent = true);
  template <std::derived_from<Module> M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module);

  // ---- direct members ----------------------------------------------------------------------
  bool has_parameter(std::string_view name) const;
  bool has_buffer(std::string_view name) const;
  bool has_child(std::string_view name) const;
  // Throw InvalidArgument naming the module class, the name and what exists.
  const Tensor& parameter(std::string_view name) const;
  const Tensor& buffer(std::string_view name) const;
  const SlotPtr& parameter_slot(std::string_view name) const;
  const SlotPtr& buffer_slot(std::string_view name) const;
  Module& child(std::string_view name) const;
  const std::shared_ptr<Module>& child_ptr(std::string_view name) const;
  // The entry of a direct parameter or buffer, or nullptr; `is_buffer` says which.
  const TensorEntry* find_tensor(std::string_view name, bool* is_buffer = nullptr) const;
  // Rebinds direct parameter or buffer `name` to `slot` (ties it, or unties it with a new slot).
  void bind_tensor(std::string_view name, SlotPtr slot);

  const std::vector<TensorEntry>& direct_parameters() const { return parameters_; }
  const std::vector<TensorEntry>& direct_buffers() const { return buffers_; }
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& direct_children() const {
    return children_;
  }

  // ---- walks (PyTorch's orders) ------------------------------------------------------------
  // Modules in pre-order (this module first, as ""). remove_duplicate visits a module registered
  // under several names once.
  std::vector<std::pair<std::string, Module*>> named_modules(bool remove_duplicate = true);
  std::vector<std::pair<std::string, Module*>> named_children();
  // Parameters module by module in pre-order. remove_duplicate lists a tied slot once, under
  // its first name.
  NamedTensors named_parameters(bool recurse = true, bool remove_duplicate = true) const;
  NamedTensors named_buffers(bool recurse = true, bool remove_duplicate = true) const;
  // All requested parameters first, then all requested buffers, as TensorRefs.
  std::vector<TensorRef> tensor_refs(bool parameters, bool buffers, bool recurse,
                                     bool remove_duplicate = true);
  // Parameters and persistent buffers, module by module (params then buffers), tied names
  // included: the checkpoint keys.
  NamedTensors state_dict() const;
  // The module at a dotted path ("" is this module). A missing step throws InvalidArgument
  // naming the path, the step and the children that exist there.
  Module& get_submodule(std::string_view target);

  // ---- conversion --------------------------------------------------------------------------
  // Every parameter and buffer (tied slots once). Meta tensors cannot move to a real device:
  // InvalidArgument naming the tensor.
  Module& to(Device device, bool non_blocking = false);
  // Floating-point parameters and buffers only (integer and bool tensors keep their dtype).
  Module& to(DType dtype);
  Module& to(Device device, DType dtype, bool non_blocking = false);

  // ---- forward -----------------------------------------------------------------------------
  // Runs the hook's pre_forward, forward(), then the hook's post_forward.
  Value operator()(Args args);
  // One positional argument (a tensor, or the output of another module).
  Value operator()(Value input);
  // The computation. The default throws NotSupported: containers have no forward.
  virtual Value forward(Args& args);

  // ---- hooks and extension points ----------------------------------------------------------
  // The attached hook (see hooks.h: add_hook_to_module), or nullptr.
  ModelHook* hook() const { return hook_.get(); }
  const std::shared_ptr<ModelHook>& hook_ptr() const { return hook_; }
  // True for layers whose weights LayerwiseCastingHook may store in a low-precision dtype.
  virtual bool supports_layerwise_casting() const { return false; }
  // True for a tensor whose dtype is part of its storage format (a quantized layer's fp8 weight,
  // packed codes and scales): loading with a dtype keeps the dtype the module declares for it.
  virtual bool keeps_tensor_dtype(std::string_view local_name) const { return false; }
  // Recomputes this module's non-persistent buffers (RoPE inv_freq, masks) on `device`; they are
  // not in checkpoints, so after init_empty_weights(include_buffers) they must be rebuilt. The
  // default throws NotSupported naming the buffers.
  virtual void reset_non_persistent_buffers(Device device);

 private:
  friend struct detail::HookAccess;

  void check_new_name(const std::string& name, std::string_view what) const;
  TensorEntry& add_entry(std::vector<TensorEntry>& entries, std::string name, SlotPtr slot,
                         bool persistent);
  void add_child(std::string name, std::shared_ptr<Module> module);
  [[noreturn]] void missing(std::string_view what, std::string_view name) const;
  // Pre-order over the tree; `seen` (when not null) skips modules already visited.
  template <class Fn>
  void walk(std::string& prefix, std::unordered_set<const Module*>* seen, Fn&& fn);

  std::string class_name_;
  std::vector<TensorEntry> parameters_;
  std::vector<TensorEntry> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::shared_ptr<ModelHook> hook_;
};

template <std::derived_from<Module> M>
std::shared_ptr<M> Module::register_module(std::string name, std::shared_ptr<M> module) {
  add_child(std::move(name), module);
  return module;
}

// Every tensor of `module`: parameters, then buffers (the reference's named_module_tensors).
// recurse includes the submodules; remove_non_persistent drops non-persistent buffers (each
// buffer's own flag, so a nested one is dropped and a same-named persistent one is kept).
std::vector<TensorRef> named_module_tensors(Module& module, bool include_buffers = true,
                                            bool recurse = false,
                                            bool remove_non_persistent = false);

// True when `module` or a submodule has a parameter or a persistent buffer (a non-empty
// state_dict), without building the state dict.
bool has_state(const Module& module);

// The device of the first parameter found in pre-order, or nullopt when there is none.
std::optional<Device> first_parameter_device(const Module& module);

}  // namespace strata::nn
