#pragma once
// AlignDevicesHook: puts a module's weights and inputs on its execution device, and, with
// offload, keeps the weights as meta placeholders between forwards and loads them from a weights
// map for each forward. Plus has_offloaded_params and align_module_device.
//
// Tied weights: a slot shared with a module outside this hook's scope is untied locally while
// the hook is attached (the module gets a private slot, as the reference's re-wrapped
// parameter), so offloading it never strips the weight from the other module; detach_hook ties
// it again. If the shared slot already holds the weight on the execution device, onload reuses
// it instead of copying.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "strata/nn/hooks.h"
#include "strata/nn/tensor_placement.h"
#include "strata/nn/weights_map.h"

namespace strata::nn {

// What an AlignDevicesHook does (the reference's AlignDevicesHook constructor arguments).
struct AlignDevicesOptions {
  // Where inputs and weights go for the forward. Unset: inputs are left where they are.
  std::optional<Device> execution_device;
  // Keep the weights as meta placeholders between forwards; load them from weights_map for each.
  bool offload = false;
  // Send the outputs back to the device of the first input tensor.
  bool io_same_device = false;
  // Where offloaded weights are read from, keyed by names relative to the module. Unset: built
  // at init_hook from the module's own tensors, moved to the cpu.
  std::shared_ptr<const WeightsMap> weights_map;
  // Offload persistent buffers too (non-persistent ones always stay on the execution device).
  bool offload_buffers = false;
  // Manage the tensors of the whole subtree, not just the module's own.
  bool place_submodules = false;
  // With place_submodules and no offload: submodules (dotted names relative to the hooked module)
  // whose tensors stay where they are, because a hook of their own offloads them (a device map
  // that sends a block's experts to cpu or disk while the block is resident).
  std::vector<std::string> leave_submodules;
  // Keyword arguments (and dict entries) never moved between devices.
  std::vector<std::string> skip_keys;
  // Shared between hooks so tied weights are copied once per device.
  std::shared_ptr<TiedParamsMap> tied_params_map;
};

// The reference's AlignDevicesHook: before forward, moves the inputs (and, with offload, the
// module's weights from weights_map) to the execution device; after forward, sends the weights
// back to meta placeholders and, with io_same_device, the outputs to the input's device.
class AlignDevicesHook : public ModelHook {
 public:
  explicit AlignDevicesHook(AlignDevicesOptions options = {});

  const AlignDevicesOptions& options() const { return options_; }
  std::optional<Device> execution_device() const { return options_.execution_device; }
  void set_execution_device(std::optional<Device> device) { options_.execution_device = device; }
  bool offload() const { return options_.offload; }
  // After init_hook, the map built from the module when none was given.
  const std::shared_ptr<const WeightsMap>& weights_map() const { return options_.weights_map; }
  const std::shared_ptr<TiedParamsMap>& tied_params_map() const { return options_.tied_params_map; }

  void init_hook(Module& module) override;
  void pre_forward(Module& module, Args& args) override;
  void post_forward(Module& module, Value& output) override;
  void detach_hook(Module& module) override;
  // With offload, refuses every move (InvalidArgument naming the model, the device and the
  // module): its weights are meta placeholders that only the hook can fill.
  void check_move(Module& module, Device device, const MoveContext& context) override;
  // "AlignDevicesHook(execution_device=cuda:0, offload=true, io_same_device=false, ...)"
  std::string describe() const override;

  // One tensor moved in before each forward and out after it, resolved once at init_hook.
  struct OffloadedTensor {
    std::string name;           // relative to the hooked module: its key in weights_map
    SlotPtr slot;               // what the module reads during forward
    SlotPtr shared;             // the tied slot it was untied from, or null
    bool tied_tracked = false;  // its source is tracked in tied_params_map
  };
  const std::vector<OffloadedTensor>& offloaded_tensors() const { return offloaded_; }

 protected:
  // Extension points for a prefetching scheduler (see docs/nn.md). A subclass can start copies
  // ahead of time in fetch/onload and recycle staging memory in release.
  //
  // The stored value of one offloaded tensor (any device; it is converted to the placeholder's
  // dtype on the way in). Default: the weights-map lookup.
  virtual Tensor fetch(const OffloadedTensor& tensor);
  // Makes every offloaded tensor available on the execution device. Default: fetch each and copy
  // it (blocking), reusing copies recorded in tied_params_map.
  virtual void onload(Module& module);
  // Drops the execution-device copies after forward. Default: back to meta placeholders.
  virtual void release(Module& module);

 private:
  struct Rebinding {
    std::string name;  // relative to the hooked module
    SlotPtr shared;
  };
  void init_resident(Module& module);
  void init_offload(Module& module);

  AlignDevicesOptions options_;
  std::vector<OffloadedTensor> offloaded_;
  std::vector<std::pair<std::string, Device>> original_devices_;
  std::vector<Rebinding> rebound_;
  std::optional<Device> input_device_;
  std::vector<std::pair<const void*, Device>> tied_copies_to_drop_;
};

// True when the module's hook (or one inside its SequentialHook: the reference only looked at
// the hook itself) is an AlignDevicesHook with offload.
bool has_offloaded_params(const Module& module);

// True when calling `module` on a tensor already on `device` would neither move it nor its
// weights, nor do anything else around its forward: no hook, or exactly an AlignDevicesHook (not
// a subclass) without offload or io_same_device whose execution device is unset or `device` (what
// dispatch attaches to resident modules). A caller may then compute with the module's parameters
// directly (a fused kernel over two modules) with the numbers of calling it.
bool hook_passes_through(const Module& module, Device device);

// RAII form of the reference's align_module_device context manager. An offloaded module gets its
// weights loaded (on `execution_device` if given) for the guard's lifetime; otherwise, with
// `execution_device`, the module's direct parameters move there and back. Else nothing.
class AlignModuleDevice {
 public:
  explicit AlignModuleDevice(Module& module, std::optional<Device> execution_device = std::nullopt);
  ~AlignModuleDevice();
  AlignModuleDevice(const AlignModuleDevice&) = delete;
  AlignModuleDevice& operator=(const AlignModuleDevice&) = delete;

 private:
  Module& module_;
  AlignDevicesHook* hook_ = nullptr;
  std::optional<Device> saved_execution_device_;
  std::vector<std::pair<std::string, Device>> moved_;
};

}  // namespace strata::nn
