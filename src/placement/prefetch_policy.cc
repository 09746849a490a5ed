// The execution policy of the prefetch scheduler's units (execution_policy.h): per step, a unit
// streams (PrefetchScheduler::acquire, prefetch.cc) or computes on the cpu where its weights are
// (below). A step is decided by the tokens of its forward (decide); the scheduler keeps the
// per-unit threshold and leaves units that compute on the cpu out of the prefetch pipeline.

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "prefetch_unit.h"
#include "split_linear.h"
#include "strata/core/error.h"
#include "strata/io/mapped_file.h"
#include "strata/nn/hooks.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

using OffloadedTensor = nn::AlignDevicesHook::OffloadedTensor;

OffloadPolicy parse_offload_policy(std::string_view text) {
  if (text == "auto") return OffloadPolicy::Auto;
  if (text == "stream") return OffloadPolicy::Stream;
  if (text == "cpu") return OffloadPolicy::Cpu;
  if (text == "split") return OffloadPolicy::Split;
  STRATA_THROW(InvalidArgument,
               "offload policy '{}': expected auto (chosen per step by the cost model), stream "
               "(copy offloaded weights to the GPU), cpu (compute offloaded units on the cpu) or "
               "split (divide offloaded linear layers' rows between the cpu and the GPU)",
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
    case OffloadPolicy::Split:
      return "split";
  }
  return "?";
}

std::string_view execution_policy_name(ExecutionPolicy policy) {
  switch (policy) {
    case ExecutionPolicy::Stream:
      return "stream";
    case ExecutionPolicy::Cpu:
      return "cpu";
    case ExecutionPolicy::Split:
      return "split";
  }
  return "?";
}

// ---- scheduler side --------------------------------------------------------------------------

void PrefetchScheduler::set_offload_policy(OffloadPolicy policy, CpuTokenThreshold threshold) {
  STRATA_CHECK_ARG(policy != OffloadPolicy::Auto || threshold != nullptr,
                   "offload policy auto needs a threshold function (the cost model's "
                   "cpu_token_threshold); pass one, or choose stream, cpu or split");
  UnitPlanner planner;
  if (threshold) {
    planner = [threshold = std::move(threshold)](const UnitProfile& profile) {
      return UnitPlan{.cpu_max_tokens = threshold(profile)};
    };
  }
  set_offload_planner(policy, std::move(planner));
}

void PrefetchScheduler::set_offload_planner(OffloadPolicy policy, UnitPlanner planner) {
  STRATA_CHECK_ARG(policy != OffloadPolicy::Auto || planner != nullptr,
                   "offload policy auto needs a unit planner (the cost model's "
                   "cost_model_planner); pass one, or choose stream, cpu or split");
  policy_ = policy;
  planner_ = std::move(planner);
  for (auto& unit : units_) {                         // asked again under the new function
    if (unit->issued && !unit->in_use) evict(*unit);  // its split rows may change
    unit->cpu_threshold = -1;
    unit->plan = {};
    unit->rows_known = false;
  }
}

std::vector<std::int64_t> PrefetchScheduler::cpu_thresholds() const {
  std::vector<std::int64_t> out;
  for (const auto& unit : units_) out.push_back(unit->cpu_threshold);
  return out;
}

std::vector<UnitPlan> PrefetchScheduler::unit_plans() const {
  std::vector<UnitPlan> out;
  for (const auto& unit : units_) out.push_back(unit->plan);
  return out;
}

UnitProfile PrefetchScheduler::profile(const Unit& unit) {
  UnitProfile out;
  out.module_class = unit.hook->module_class();
  out.modules = unit.hook->module_count();
  out.activation_bytes_per_token = unit.activation_bytes_per_token;
  out.block_projections = unit.block_projections;
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
  const auto& tensors = unit.hook->offloaded_tensors();
  for (const PrefetchHook::SplitLinear& linear : unit.hook->split_linears()) {
    ++out.split_linears;
    for (const int index : {linear.weight, linear.bias}) {
      if (index >= 0)
        out.split_bytes += static_cast<std::int64_t>(tensors[index].slot->tensor().nbytes());
    }
  }
  return out;
}

const UnitPlan& PrefetchScheduler::plan_of(Unit& unit) {
  if (unit.cpu_threshold < 0) {
    unit.plan = planner_ ? planner_(profile(unit)) : UnitPlan{};
    unit.plan.cpu_max_tokens = std::max<std::int64_t>(unit.plan.cpu_max_tokens, 0);
    unit.plan.split_max_tokens = std::max<std::int64_t>(unit.plan.split_max_tokens, 0);
    STRATA_CHECK_ARG(unit.plan.split_fraction > 0.0 && unit.plan.split_fraction < 1.0,
                     "unit planner: split fraction {} for {}: it must be strictly between 0 and 1 "
                     "(the cpu's share of a split linear's rows)",
                     unit.plan.split_fraction, unit.hook->module_class());
    unit.cpu_threshold = unit.plan.cpu_max_tokens;
  }
  return unit.plan;
}

// A step is decided by its forward's tokens, not by the rows that enter the unit: a prefill's head
// computes the last position only (one token per sequence), but in a prefill forward the copy
// engine is busy anyway and the head's copy goes behind the layers' compute, where a cpu or split
// step of it is extra time after the last layer (session 6 measured auto 1.6% slower than stream
// at a 512-token prefill of a 7B model until the head streamed). Deciding every unit of a forward
// by the same count also makes the prefetch's prediction exact: the next forward is expected to
// be like this one (a prefill is followed by a prefill in a benchmark, a decode step by a decode
// step). Routed experts are decided by their own tokens (policy_for, expert_policy.cc).
ExecutionPolicy PrefetchScheduler::decide(Unit& unit, std::int64_t tokens) {
  switch (policy_) {
    case OffloadPolicy::Stream:
      return ExecutionPolicy::Stream;
    case OffloadPolicy::Cpu:
      return unit.cpu_capable ? ExecutionPolicy::Cpu : ExecutionPolicy::Stream;
    case OffloadPolicy::Split:
      return unit.hook->split_linears().empty() ? ExecutionPolicy::Stream : ExecutionPolicy::Split;
    case OffloadPolicy::Auto:
      break;
  }
  const UnitPlan& plan = plan_of(unit);
  if (tokens <= plan.split_max_tokens && !unit.hook->split_linears().empty()) {
    return ExecutionPolicy::Split;
  }
  if (unit.cpu_capable && tokens <= plan.cpu_max_tokens) return ExecutionPolicy::Cpu;
  return ExecutionPolicy::Stream;
}

const std::vector<std::int64_t>& PrefetchScheduler::split_rows(Unit& unit) {
  if (!unit.rows_known) {
    const double fraction = plan_of(unit).split_fraction;
    unit.cpu_rows.assign(unit.hook->offloaded_tensors().size(), 0);
    for (const PrefetchHook::SplitLinear& linear : unit.hook->split_linears()) {
      const std::int64_t r = split_cpu_rows(linear.rows, fraction);
      for (const int index : {linear.weight, linear.bias}) {
        if (index >= 0) unit.cpu_rows[static_cast<std::size_t>(index)] = r;
      }
    }
    unit.rows_known = true;
  }
  return unit.cpu_rows;
}

// The cpu halves of a split step: rows [0, r) of the stored tensors, read where they are (pinned
// memory or the file mapping; a tensor stored elsewhere or in another dtype is converted).
void PrefetchScheduler::bind_split_cpu_parts(Unit& unit) {
  PrefetchHook& hook = *unit.hook;
  const std::vector<std::int64_t>& rows = split_rows(unit);
  const auto& tensors = hook.offloaded_tensors();
  unit.cpu_parts.assign(tensors.size(), Tensor());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (rows[i] <= 0) continue;
    Tensor value = checked_source(hook, tensors[i]);
    if (!value.is_cpu()) value = value.to(Device::cpu());
    unit.cpu_parts[i] = value.narrow(0, 0, rows[i]);
  }
  ++stats_.split_computes;
  log("split", unit);
}

const Tensor& PrefetchScheduler::split_cpu_part(const PrefetchHook& hook, std::size_t index) {
  Unit& unit = unit_of(&hook);
  STRATA_CHECK(index < unit.cpu_parts.size() && unit.cpu_parts[index].defined(), InternalError,
               "split step of {}: offloaded tensor {} has no cpu rows bound", hook.module_class(),
               index);
  return unit.cpu_parts[index];
}

ExecutionPolicy PrefetchScheduler::begin_step(PrefetchHook& hook, std::int64_t tokens,
                                              std::int64_t activation_bytes_per_token,
                                              bool cpu_capable) {
  Unit& unit = unit_of(&hook);
  unit.cpu_capable = cpu_capable;
  if (activation_bytes_per_token > 0) unit.activation_bytes_per_token = activation_bytes_per_token;
  if (order_.empty() || order_.front() == &unit) {  // a new forward
    forward_tokens_ = tokens;
    // Keyword inputs are reused within a forward only: a caller may update a tensor in place
    // between forwards (a static buffer of a captured graph), so a copy made last step is stale.
    cpu_inputs_.clear();
  }
  unit.step_policy = decide(unit, std::max(tokens, forward_tokens_));
  return unit.step_policy;
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
    // A view of a mapped file (the disk tier): its pages mapped in one call the first time, not
    // faulted in one at a time by the kernels' threads.
    if (!unit.pages_populated && value.is_cpu() && value.storage().defined() &&
        !value.storage().owns_memory()) {
      io::populate_pages(value.data_ptr(), value.nbytes());
    }
    t.slot->set(value.is_cpu() ? value : value.to(Device::cpu()));
  }
  unit.pages_populated = true;
  // The streamed units after this one keep coming while it computes.
  if (order_complete_ && unit.position >= 0) prefetch_after(unit);
}

namespace {

constexpr std::size_t kCpuInputsKept = 8;  // a step's keyword tensors: cos, sin, masks, ids

}  // namespace

void PrefetchScheduler::inputs_to_cpu(nn::Args& args, std::span<const std::string> skip_keys) {
  for (nn::Value& value : args.positional)
    value = nn::send_to_device(std::move(value), Device::cpu());
  const auto cached = [&](const auto& self, nn::Value& value) -> void {
    if (value.is_tensor()) {
      Tensor& t = value.tensor();
      if (!t.defined() || t.is_cpu()) return;
      for (const auto& [source, copy] : cpu_inputs_) {
        if (same_view(source, t)) {
          t = copy;
          ++stats_.cpu_inputs_reused;
          return;
        }
      }
      Tensor copy = t.to(Device::cpu());
      if (cpu_inputs_.size() == kCpuInputsKept) cpu_inputs_.erase(cpu_inputs_.begin());
      cpu_inputs_.emplace_back(t, copy);
      t = std::move(copy);
    } else if (value.kind() == nn::Value::Kind::List) {
      for (nn::Value& item : value.list()) self(self, item);
    } else {
      value = nn::send_to_device(std::move(value), Device::cpu(), skip_keys);
    }
  };
  for (auto& [key, value] : args.keywords) {
    if (std::find(skip_keys.begin(), skip_keys.end(), key) == skip_keys.end())
      cached(cached, value);
  }
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
    if (!name.empty() && child->hook() != nullptr && !is_split_linear_hook(*child)) {
      capable = false;
    }
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
  clear_split_step();  // the last split forward threw: its inputs are stale
  const StepInput input = step_input(args);
  if (input.tokens == 0) {
    AlignDevicesHook::pre_forward(module, args);
    return;
  }
  const ExecutionPolicy policy = scheduler_->begin_step(*this, input.tokens, input.bytes_per_token,
                                                        can_compute_on_cpu(module));
  if (policy == ExecutionPolicy::Split) {
    // The unit computes on the execution device with rows [r, n) of its split linears bound
    // (acquire); their SplitLinearHooks add the cpu rows. The unit itself may be the linear.
    AlignDevicesHook::pre_forward(module, args);
    split_step_ = true;
    const auto& linears = split_linears();
    for (std::size_t i = 0; i < linears.size(); ++i) {
      if (linears[i].module == &module) split_begin(i, args);
    }
    return;
  }
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
  scheduler_->inputs_to_cpu(args, options().skip_keys);
}

void PrefetchHook::post_forward(nn::Module& module, nn::Value& output) {
  if (split_step_) {
    const auto& linears = split_linears();
    for (std::size_t i = 0; i < linears.size(); ++i) {
      if (linears[i].module == &module) split_end(i, output);
    }
    clear_split_step();  // before the release drops the cpu rows
    AlignDevicesHook::post_forward(module, output);
    return;
  }
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
