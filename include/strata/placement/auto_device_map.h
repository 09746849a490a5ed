#pragma once
// Planning: where every module goes before a byte is loaded (Accelerate's infer_auto_device_map,
// get_balanced_memory and the "auto" / "balanced" / "balanced_low_0" / "sequential" strategies).
//
// The planner follows the reference's algorithm decision for decision, so its maps equal
// Accelerate's wherever Accelerate is right; where Accelerate crashes or splits a tie group, it
// returns a map that keeps every budget and keeps tied parameters together. It is linear in the
// number of tensors (times the tree depth). docs/placement.md lists every deviation.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "strata/core/dtype.h"
#include "strata/nn/module.h"
#include "strata/placement/map_device.h"
#include "strata/placement/memory.h"

namespace strata::placement {

// Memory held back on devices before weights are placed (beyond the reference, which plans
// weights only). The default holds back nothing, so plans equal the reference's.
struct RuntimeReserve {
  // Bytes per device: KV cache, activations, workspaces. {{0, "2GiB"}}.
  MaxMemory per_device;
  // Bytes held back on every GPU of the budgets, on top of per_device.
  std::int64_t per_gpu = 0;
  // Prefetch staging slots on the first GPU, each the size of the largest offload unit (a layer
  // or the direct tensors of a split module), on top of the one slot the reference reserves.
  // Held back only when the plan offloads something to cpu or disk.
  int staging_slots = 0;
};

// Mixture-of-experts placement by tensor role: the routed experts (modules named "experts"
// inside a no-split block, e.g. model.layers.N.mlp.experts) are planned after everything else.
// The rest of the model (attention, norms, routers, shared experts, dense MLPs, embeddings, head)
// fills the devices first, block by block, GPUs then cpu then disk; then each block's experts,
// in layer order, take the first device with room: a GPU unless kept off it, else the cpu, else
// disk. Dense parts are small next to experts (Qwen3-30B-A3B: 1.4 of 61 GB), so they stay on the
// GPU and the experts that do not fit go to host memory.
struct ExpertPlacement {
  bool keep_off_gpu = false;   // --experts cpu: no routed expert on a GPU
  std::int64_t n_cpu_moe = 0;  // llama.cpp's --n-cpu-moe: the first N MoE blocks' experts off GPUs
};

struct InferOptions {
  // Budgets per device; unset measures the machine (get_max_memory). Devices are visited in
  // order: GPUs, mps, cpu (only when listed), then disk, which takes whatever is left.
  std::optional<MaxMemory> max_memory;
  // Classes whose modules are never split across devices (residual blocks).
  std::vector<std::string> no_split_module_classes;
  // Sizes as loaded (see SizeOptions).
  std::optional<DType> dtype;
  std::unordered_map<std::string, DType> special_dtypes;
  // Records (and logs) the reference's trace: every module treated, split, placed or skipped.
  bool verbose = false;
  // Merges submodules that went to the same device into their parent (clean_device_map).
  bool clean_result = true;
  // When false, the buffers of offloaded modules stay on the execution GPU at run time; a warning
  // says when they may not fit there.
  bool offload_buffers = false;
  // When a module does not fit on an empty device, look ahead for one that does.
  bool fallback_allocation = false;
  RuntimeReserve reserve;
  // Set: plan the routed experts after the rest (ExpertPlacement) instead of the reference's
  // module-order fill. Needs no_split_module_classes (the blocks holding experts).
  std::optional<ExpertPlacement> experts;
};

// One placement decision: a module (or tensor) and where it went, with why.
struct ExplainRow {
  std::string module;
  std::int64_t size = 0;  // bytes booked for it
  MapDevice device;
  std::string reason;
};

struct DevicePlan {
  DeviceMap device_map;             // cleaned when clean_result
  DeviceMap placements;             // one entry per decision, before cleaning
  std::vector<ExplainRow> explain;  // the same decisions, explained
  std::vector<std::string> trace;   // verbose only: the reference's trace, line by line
  MaxMemory max_memory;             // budgets planned against (runtime reserve taken off)
  MaxMemory reserved;               // the runtime reserve held back per device
  MaxMemory used;                   // bytes booked per device (devices with none are absent)
  // Devices that were given up while still empty, with what they would have needed.
  MaxMemory minimum_memory;
  std::vector<std::string> warnings;  // also logged
};

// The reference's infer_auto_device_map, with the reasons and the bytes booked per device:
// modules in order fill each device of the budgets, a module that does not fit is split into its
// children unless its class is in no_split_module_classes, and disk takes what is left.
DevicePlan plan_auto_device_map(nn::Module& model, const InferOptions& options = {});
// plan_auto_device_map(...).device_map.
DeviceMap infer_auto_device_map(nn::Module& model, const InferOptions& options = {});

// The routed-expert modules of `model` in module order: modules named "experts" (last
// component) inside a module of one of `no_split` classes.
std::vector<std::string> routed_expert_modules(nn::Module& model,
                                               const std::vector<std::string>& no_split);

// The explain rows as an aligned text table (module, size, device, reason), for the CLI.
std::string explain_table(const DevicePlan& plan);

struct BalancedOptions {
  std::optional<MaxMemory> max_memory;  // unset: measured, and a lone GPU keeps 10% spare
  std::vector<std::string> no_split_module_classes;
  std::optional<DType> dtype;
  std::unordered_map<std::string, DType> special_dtypes;
  // Keep the first GPU as empty as possible (for generate's own buffers).
  bool low_zero = false;
};

// Budgets that spread the model evenly over the GPUs: each GPU but the last gets about
// model_size / num_gpus plus a margin (1.25 x the larger of a no-split block and the mean leaf
// module). cpu, disk and mps budgets are unchanged.
MaxMemory get_balanced_memory(nn::Module& model, const BalancedOptions& options = {});

enum class DeviceMapStrategy { Auto, Balanced, BalancedLow0, Sequential };
// "auto", "balanced", "balanced_low_0", "sequential"; anything else is InvalidArgument.
DeviceMapStrategy parse_device_map_strategy(std::string_view text);
std::string_view strategy_name(DeviceMapStrategy strategy);

// device_map="auto" and friends: the runtime reserve comes off the budgets, then every strategy
// but "sequential" balances them over the GPUs ("balanced_low_0" with low_zero; "auto" and
// "balanced" are the same, as in the reference), then plan_auto_device_map.
DevicePlan plan_device_map(nn::Module& model, DeviceMapStrategy strategy,
                           const InferOptions& options = {});

}  // namespace strata::placement
