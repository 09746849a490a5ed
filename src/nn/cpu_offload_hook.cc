#include "strata/nn/cpu_offload_hook.h"

#include <fmt/format.h>

#include "strata/core/backend.h"
#include "strata/core/error.h"

namespace strata::nn {

Device default_execution_device() {
  const DeviceBackend* cuda = find_backend(DeviceType::CUDA);
  if (cuda != nullptr && cuda->device_count() > 0) return Device::cuda(0);
  return Device::cpu();
}

CpuOffload::CpuOffload(std::optional<Device> execution_device,
                       std::shared_ptr<UserCpuOffloadHook> prev_module_hook)
    : execution_device_(resolve_device(execution_device.value_or(default_execution_device()))),
      prev_module_hook_(std::move(prev_module_hook)) {}

void CpuOffload::init_hook(Module& module) { module.to(Device::cpu()); }

void CpuOffload::pre_forward(Module& module, Args& args) {
  if (prev_module_hook_) {
    const std::optional<Device> prev = first_parameter_device(prev_module_hook_->model());
    if (prev && !prev->is_cpu()) prev_module_hook_->offload();
  }
  const std::optional<Device> current = first_parameter_device(module);
  if (current && *current != execution_device_) module.to(execution_device_);
  send_to_device(args, execution_device_);
}

std::string CpuOffload::describe() const {
  return fmt::format("CpuOffload(execution_device={}, prev_module_hook={})", execution_device_,
                     prev_module_hook_ ? "set" : "none");
}

UserCpuOffloadHook::UserCpuOffloadHook(std::shared_ptr<Module> model,
                                       std::shared_ptr<CpuOffload> hook)
    : model_(std::move(model)), hook_(std::move(hook)) {
  STRATA_CHECK_ARG(model_ != nullptr && hook_ != nullptr,
                   "UserCpuOffloadHook: the model and the hook must not be null");
}

void UserCpuOffloadHook::offload() { hook_->init_hook(*model_); }

void UserCpuOffloadHook::remove() { remove_hook_from_module(*model_); }

}  // namespace strata::nn
