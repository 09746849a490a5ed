#pragma once
// The seed-shaped big-model API in one place (Accelerate's big_modeling / hooks / utils names).
// The definitions live in strata::nn (module tree and hooks); later layers (placement: device
// maps, dispatch, offload; io: checkpoints) add their entry points here.

#include "strata/nn/align_devices_hook.h"
#include "strata/nn/attach.h"
#include "strata/nn/cpu_offload_hook.h"
#include "strata/nn/hooks.h"
#include "strata/nn/init.h"
#include "strata/nn/layers.h"
#include "strata/nn/layerwise_casting.h"
#include "strata/nn/module.h"
#include "strata/nn/tensor_placement.h"
#include "strata/nn/value.h"
#include "strata/nn/weights_map.h"

namespace strata {

// ---- empty initialisation ---------------------------------------------------------------------
using nn::init_empty_weights;
using nn::init_on_device;
using nn::InitEmptyWeights;
using nn::InitOnDevice;
using nn::materialize_non_persistent_buffers;

// ---- hooks ------------------------------------------------------------------------------------
using nn::AlignDevicesHook;
using nn::AlignDevicesOptions;
using nn::CpuOffload;
using nn::LayerwiseCastingHook;
using nn::ModelHook;
using nn::SequentialHook;
using nn::UserCpuOffloadHook;

// ---- adding and removing hooks ----------------------------------------------------------------
using nn::add_hook_to_module;
using nn::attach_align_device_hook;
using nn::attach_align_device_hook_on_blocks;
using nn::attach_execution_device_hook;
using nn::attach_layerwise_casting_hooks;
using nn::AttachOptions;
using nn::LayerwiseCastingOptions;
using nn::PerModule;
using nn::remove_hook_from_module;
using nn::remove_hook_from_submodules;

// ---- utilities --------------------------------------------------------------------------------
using nn::AlignModuleDevice;
using nn::find_device;
using nn::has_offloaded_params;
using nn::named_module_tensors;
using nn::send_to_device;
using nn::set_module_tensor_to_device;
using nn::TiedParamsMap;

// align_module_device(module, device) as in the reference; keep the guard alive for the scope:
// `auto aligned = strata::align_module_device(module);`
[[nodiscard]] inline nn::AlignModuleDevice align_module_device(
    nn::Module& module, std::optional<Device> execution_device = std::nullopt) {
  return nn::AlignModuleDevice(module, execution_device);
}

}  // namespace strata
#include "strata/placement/placement.h"  // memory planning: strata::placement
