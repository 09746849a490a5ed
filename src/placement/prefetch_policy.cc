// The execution policy of the prefetch scheduler's units (execution_policy.h): per step, a unit
// streams (PrefetchScheduler::acquire, prefetch.cc) or computes on the cpu where its weights are
// (below). The hook decides from the tokens entering the unit; the scheduler keeps the per-unit
// threshold and leaves units that compute on the cpu out of the prefetch pipeline.

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "prefetch_unit.h"
#include "strata/core/error.h"
#include "strata/nn/hooks.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

using OffloadedTensor = nn::AlignDevicesHook::OffloadedTensor;

OffloadPolicy parse_offload_policy(std::string_view text) {
  if (text == "auto") return OffloadPolicy::Auto;
  if (text == "stream") return OffloadPolicy::Stream;
  if (text == "cpu") return OffloadPolicy::Cpu;
  STRATA_THROW(InvalidArgument,
               "offload policy '{}': expected auto (chosen per step by the cost model), stream "
               "(copy offloaded weights to the GPU) or cpu (compute offloaded units on the cpu)",
               text);
}

std::string_view offload_policy_name(OffloadPolicy policy) {
  switch (policy) {
    case OffloadPolicy::Auto:
      return "auto";
    case OffloadPolicy::Stream:
      return "stream";
    case OffloadPolicy::Cpu:
      return "cpu";
  }
  return "?";
}

std::string_view execution_policy_name(ExecutionPolicy policy) {
  return policy == ExecutionPolicy::Cpu ? "cpu" : "stream";
}

// ---- scheduler side --------------------------------------------------------------------------

void PrefetchScheduler::set_offload_policy(OffloadPolicy policy, CpuTokenThreshold threshold) {
  STRATA_CHECK_ARG(policy != OffloadPolicy::Auto || threshold != nullptr,
                   "offload policy auto needs a threshold function (the cost model's "
                   "cpu_token_threshold); pass one, or choose stream or cpu");
  policy_ = policy;
  threshold_ = std::move(threshold);
  for (auto& unit : units_) unit->cpu_threshold = -1;  // asked again under the new function
}

std::vector<std::int64_t> PrefetchScheduler::cpu_thresholds() const {
  std::vector<std::int64_t> out;
  for (const auto& unit : units_) out.push_back(unit->cpu_threshold);
  return out;
}

UnitProfile PrefetchScheduler::profile(const Unit& unit) {
  UnitProfile out;
  out.module_class = unit.hook->module_class();
  out.activation_bytes_per_token = unit.activation_bytes_per_token;
  std::int64_t largest = -1;
  for (const OffloadedTensor& t : unit.hook->offloaded_tensors()) {
    const Tensor& placeholder = t.slot->tensor();
    const auto bytes = static_cast<std::int64_t>(placeholder.nbytes());
    out.bytes += bytes;
    if (bytes > largest) {
      largest = bytes;
      out.dtype = placeholder.dtype();
    }
    if (t.shared) continue;  // a tied weight resident elsewhere: read where it is
    const Tensor stored = unit.hook->stored(t);
    if (stored.is_cpu() && stored.storage().defined() && !stored.storage().owns_memory()) {
      out.file_bytes += bytes;
    }
  }
  return out;
}

ExecutionPolicy PrefetchScheduler::decide(Unit& unit, std::int64_t tokens) {
  if (!unit.cpu_capable || policy_ == OffloadPolicy::Stream) return ExecutionPolicy::Stream;
  if (policy_ == OffloadPolicy::Cpu) return ExecutionPolicy::Cpu;
  if (unit.cpu_threshold < 0)
    unit.cpu_threshold = std::max<std::int64_t>(threshold_(profile(unit)), 0);
  return tokens <= unit.cpu_threshold ? ExecutionPolicy::Cpu : ExecutionPolicy::Stream;
}

ExecutionPolicy PrefetchScheduler::begin_step(PrefetchHook& hook, std::int64_t tokens,
                                              std::int64_t activation_bytes_per_token,
                                              bool cpu_capable) {
  Unit& unit = unit_of(&hook);
  unit.cpu_capable = cpu_capable;
  if (activation_bytes_per_token > 0) unit.activation_bytes_per_token = activation_bytes_per_token;
  step_tokens_ = tokens;
  return decide(unit, tokens);
}

void PrefetchScheduler::acquire_on_cpu(PrefetchHook& hook) {
  Unit& unit = unit_of(&hook);
  record_order(unit);
  ++stats_.onloads;
  ++stats_.cpu_computes;
  if (unit.issued) {  // prefetched for a step that streamed it: its copies are not needed
    ++stats_.evicted_for_cpu;
    evict(unit);
  }
  log("cpu", unit);
  for (const OffloadedTensor& t : hook.offloaded_tensors()) {
    if (t.shared && !t.shared->tensor().is_meta()) {  // tied weight resident (on the cpu)
      t.slot->set(t.shared->tensor());
      continue;
    }
    const Tensor value = checked_source(hook, t);
    t.slot->set(value.is_cpu() ? value : value.to(Device::cpu()));
  }
  // The streamed units after this one keep coming while it computes.
  if (order_complete_ && unit.position >= 0) prefetch_after(unit);
}

// ---- hook side -------------------------------------------------------------------------------

namespace {

// Tokens in the step as the unit sees them: its first tensor input (positional, else keyword)
// is [..., features]; every leading element is a token. No tensor input: 0 (not a step: an
// align_module_device asking for the weights on the execution device).
struct StepInput {
  std::int64_t tokens = 0;
  std::int64_t bytes_per_token = 0;
};

StepInput step_input(const nn::Args& args) {
  const Tensor* first = nullptr;
  for (const nn::Value& v : args.positional) {
    if (v.is_tensor()) {
      first = &v.tensor();
      break;
    }
  }
  if (first == nullptr) {
    for (const auto& [key, v] : args.keywords) {
      if (v.is_tensor()) {
        first = &v.tensor();
        break;
      }
    }
  }
  if (first == nullptr) return {};
  if (first->dim() == 0 || first->size(-1) == 0) return {1, 0};
  const std::int64_t features = first->size(-1);
  return {std::max<std::int64_t>(first->numel() / features, 1),
          features * static_cast<std::int64_t>(first->element_size())};
}

}  // namespace

bool PrefetchHook::can_compute_on_cpu(nn::Module& module) {
  if (cpu_capable_) return *cpu_capable_;
  bool capable = true;
  // A hooked module inside would move activations to its own execution device mid-forward.
  for (const auto& [name, child] : module.named_modules()) {
    if (!name.empty() && child->hook() != nullptr) capable = false;
  }
  // A weight tied to a copy resident on a GPU would be copied back every step: stream instead.
  for (const OffloadedTensor& t : offloaded_tensors()) {
    if (t.shared && !t.shared->tensor().is_meta() && !t.shared->tensor().is_cpu()) capable = false;
  }
  cpu_capable_ = capable;
  return capable;
}

void PrefetchHook::swap_resident_to_cpu(nn::Module& module) {
  if (!resident_scanned_) {
    std::unordered_set<const nn::TensorSlot*> offloaded;
    for (const OffloadedTensor& t : offloaded_tensors()) offloaded.insert(t.slot.get());
    for (const nn::TensorRef& ref : module.tensor_refs(true, true, options().place_submodules)) {
      const Tensor& t = ref.tensor();
      if (offloaded.contains(ref.slot.get()) || t.is_meta() || t.is_cpu()) continue;
      resident_.push_back({ref.slot, t, t.to(Device::cpu())});
    }
    resident_scanned_ = true;
  }
  for (ResidentCopy& r : resident_) {
    r.original = r.slot->tensor();
    r.slot->set(r.on_cpu);
  }
}

void PrefetchHook::restore_resident() {
  for (ResidentCopy& r : resident_) {
    if (r.original.defined()) r.slot->set(r.original);
  }
}

void PrefetchHook::pre_forward(nn::Module& module, nn::Args& args) {
  if (cpu_step_) {  // the last cpu forward threw before post_forward: put things back first
    cpu_step_ = false;
    scheduler_->release(*this);
    restore_resident();
  }
  const StepInput input = step_input(args);
  if (input.tokens == 0) {
    AlignDevicesHook::pre_forward(module, args);
    return;
  }
  const ExecutionPolicy policy = scheduler_->begin_step(*this, input.tokens, input.bytes_per_token,
                                                        can_compute_on_cpu(module));
  if (policy != ExecutionPolicy::Cpu) {
    AlignDevicesHook::pre_forward(module, args);
    return;
  }
  // The output goes where a streamed forward would leave it: the execution device, or with
  // io_same_device the device of the first input.
  return_device_ = execution_device();
  if (options().io_same_device) {
    if (const auto found = nn::find_device(args)) return_device_ = found;
  }
  try {
    scheduler_->acquire_on_cpu(*this);
    swap_resident_to_cpu(module);
  } catch (...) {
    restore_resident();
    throw;
  }
  cpu_step_ = true;
  nn::send_to_device(args, Device::cpu(), options().skip_keys);
}

void PrefetchHook::post_forward(nn::Module& module, nn::Value& output) {
  if (!cpu_step_) {
    AlignDevicesHook::post_forward(module, output);
    return;
  }
  cpu_step_ = false;
  scheduler_->release(*this);
  restore_resident();
  output = nn::send_to_device(std::move(output), return_device_, options().skip_keys);
  return_device_.reset();
}

}  // namespace strata::placement
