#pragma once
// Whole-model offload (the reference's CpuOffload and UserCpuOffloadHook): the model lives on the
// cpu and moves to the execution device at its first forward, where it stays until offload() is
// called, or until the next model in a pipeline (which names this one's hook as its previous
// hook) runs.

#include <memory>
#include <optional>
#include <string>

#include "strata/nn/hooks.h"

namespace strata::nn {

// GPU 0 when a CUDA backend with a device is registered, else the cpu. Always concrete: the
// reference's default was a bare "cuda", which never compared equal to "cuda:0", so the model
// was moved again on every forward (bug B17).
Device default_execution_device();

class UserCpuOffloadHook;

// The reference's CpuOffload hook (cpu_offload_with_hook): moves the whole module to the
// execution device at its forward, and offloads the previous model of a chain (prev_module_hook)
// back to the cpu first.
class CpuOffload : public ModelHook {
 public:
  explicit CpuOffload(std::optional<Device> execution_device = std::nullopt,
                      std::shared_ptr<UserCpuOffloadHook> prev_module_hook = nullptr);

  Device execution_device() const { return execution_device_; }

  // Moves the model to the cpu.
  void init_hook(Module& module) override;
  // Offloads the previous model if it is not on the cpu, moves this one to the execution device
  // if it is not there, and sends the inputs there (always: the reference stopped moving inputs
  // once the model was in place, B17).
  void pre_forward(Module& module, Args& args) override;
  std::string describe() const override;

 private:
  Device execution_device_;
  std::shared_ptr<UserCpuOffloadHook> prev_module_hook_;
};

// The handle a user keeps to offload a model by hand.
class UserCpuOffloadHook {
 public:
  UserCpuOffloadHook(std::shared_ptr<Module> model, std::shared_ptr<CpuOffload> hook);

  // Moves the model back to the cpu.
  void offload();
  // Removes the hook from the model (its weights stay where they are).
  void remove();

  Module& model() const { return *model_; }
  const std::shared_ptr<CpuOffload>& hook() const { return hook_; }

 private:
  std::shared_ptr<Module> model_;
  std::shared_ptr<CpuOffload> hook_;
};

}  // namespace strata::nn
