#include "strata/placement/prefetch.h"

#include <fmt/format.h>

#include <algorithm>

#include "prefetch_engine.h"
#include "prefetch_unit.h"
#include "staging_chunks.h"
#include "strata/core/backend.h"
#include "strata/core/error.h"
#include "strata/nn/hooks.h"

namespace strata::placement {

using nn::AlignDevicesHook;
using OffloadedTensor = AlignDevicesHook::OffloadedTensor;

PrefetchScheduler::PrefetchScheduler(Device execution_device, PrefetchOptions options)
    : execution_device_(resolve_device(execution_device)), options_(options) {
  STRATA_CHECK_ARG(options_.staging_slots >= 1,
                   "PrefetchOptions::staging_slots must be at least 1 (the unit computing); got {}",
                   options_.staging_slots);
  STRATA_CHECK_ARG(execution_device_.is_cpu() || execution_device_.is_cuda(),
                   "the prefetch scheduler runs on a cpu or cuda execution device, not {}",
                   execution_device_);
  (void)detail::resolve_staging(options_);  // bad staging options fail on every device
  if (execution_device_.is_cuda()) {
    engine_ = detail::make_copy_engine(execution_device_.index(), options_);
  }
}

PrefetchScheduler::~PrefetchScheduler() {
  if (engine_) {
    try {
      engine_->synchronize();
    } catch (...) {  // teardown: the error was reported when the forward waited
    }
  }
  units_.clear();  // tickets before the engine that owns their memory
}

std::vector<const PrefetchHook*> PrefetchScheduler::order() const {
  std::vector<const PrefetchHook*> out;
  for (const Unit* unit : order_) out.push_back(unit->hook);
  return out;
}

int PrefetchScheduler::in_flight() const {
  return static_cast<int>(
      std::count_if(units_.begin(), units_.end(), [](const auto& u) { return u->issued; }));
}

void PrefetchScheduler::synchronize() {
  if (engine_) engine_->synchronize();
}

void PrefetchScheduler::add(PrefetchHook* hook) {
  auto unit = std::make_unique<Unit>();
  unit->hook = hook;
  unit_by_hook_[hook] = unit.get();
  units_.push_back(std::move(unit));
}

void PrefetchScheduler::remove(PrefetchHook* hook) {
  Unit& unit = unit_of(hook);
  if (unit.issued) evict(unit);
  // A changed set of hooks changes the order: record it again.
  order_.clear();
  order_complete_ = false;
  for (auto& u : units_) u->position = -1;
  unit_by_hook_.erase(hook);
  std::erase_if(units_, [&](const auto& u) { return u->hook == hook; });
}

PrefetchScheduler::Unit& PrefetchScheduler::unit_of(const PrefetchHook* hook) {
  const auto found = unit_by_hook_.find(hook);
  if (found != unit_by_hook_.end()) return *found->second;
  STRATA_THROW(InternalError, "prefetch scheduler: a hook that was never registered onloads");
}

void PrefetchScheduler::log(const char* what, const Unit& unit) {
  if (trace_enabled_) trace_.push_back(fmt::format("{} {}", what, unit.position));
}

Tensor PrefetchScheduler::checked_source(PrefetchHook& hook, const OffloadedTensor& t) {
  const Tensor& placeholder = t.slot->tensor();
  Tensor value = hook.stored(t);
  STRATA_CHECK(value.shape() == placeholder.shape(), CheckpointError,
               "offloaded tensor '{}' of {}: the stored tensor has shape {} but the module "
               "expects {}; the offload folder or state dict belongs to another model: rebuild it",
               t.name, hook.module_class(), shape_str(value.shape()),
               shape_str(placeholder.shape()));
  if (value.dtype() != placeholder.dtype() && is_floating_point(placeholder.dtype())) {
    ++stats_.casts;  // a folder written in another dtype; dispatch stores the model's
    value = value.to(placeholder.dtype());
  }
  return value;
}

// Resolves the stored tensors and, on a GPU, queues their copies into fresh device memory. For a
// split step only the rows [r, n) of a split tensor travel (the cpu computes [0, r) in place).
void PrefetchScheduler::issue(Unit& unit, ExecutionPolicy as) {
  PrefetchHook& hook = *unit.hook;
  const Device exec = execution_device_;
  unit.targets.clear();
  unit.sources.clear();
  std::vector<Tensor> dsts;
  std::vector<Tensor> srcs;
  const std::vector<std::int64_t>* rows =
      as == ExecutionPolicy::Split ? &split_rows(unit) : nullptr;
  const auto& tensors = hook.offloaded_tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const OffloadedTensor& t = tensors[i];
    if (t.shared && t.shared->tensor().device() == exec) {  // tied weight resident here already
      unit.targets.push_back(t.shared->tensor());
      unit.sources.emplace_back();
      continue;
    }
    Tensor value = checked_source(hook, t);
    if (rows != nullptr && (*rows)[i] > 0) {
      const std::int64_t r = (*rows)[i];
      value = value.narrow(0, r, value.size(0) - r);
    }
    if (!value.is_cpu() || exec.is_cpu()) {
      unit.targets.push_back(value.to(exec));
      unit.sources.emplace_back();
      continue;
    }
    value = value.contiguous();
    Tensor target = Tensor::empty(value.shape(), value.dtype(), exec);
    dsts.push_back(target);
    srcs.push_back(value);
    unit.targets.push_back(std::move(target));
    unit.sources.push_back(std::move(value));
  }
  if (!dsts.empty()) {
    STRATA_CHECK(engine_ != nullptr, DeviceError,
                 "offloaded weights of {} must go to {}, but this build has no copy engine for "
                 "it; use a CUDA build or a cpu execution device",
                 hook.module_class(), exec);
    unit.ticket = engine_->start(dsts, srcs, stats_);
  }
  unit.issued = true;
  unit.issued_as = as;
  ++stats_.issued;
  stats_.max_in_flight = std::max(stats_.max_in_flight, in_flight());
  log("issue", unit);
}

// Drops a unit's copies (after them: their memory is reused only once they are done).
void PrefetchScheduler::evict(Unit& unit) {
  if (unit.ticket) engine_->retire(std::move(unit.ticket));
  unit.targets.clear();
  unit.sources.clear();
  unit.issued = false;
  unit.in_use = false;
}

void PrefetchScheduler::prefetch_after(const Unit& unit) {
  // The next staging_slots - 1 units that stream in this step; units that compute on the cpu
  // are never copied, so they neither take a slot nor count.
  const int n = static_cast<int>(order_.size());
  int wanted = options_.staging_slots - 1;
  for (int k = 1; k < n && wanted > 0; ++k) {
    Unit& next = *order_[(unit.position + k) % n];
    const ExecutionPolicy policy = decide(next, forward_tokens_);
    if (policy == ExecutionPolicy::Cpu) continue;
    --wanted;
    if (next.issued) continue;
    if (in_flight() >= options_.staging_slots) return;
    issue(next, policy);
  }
}

void PrefetchScheduler::record_order(Unit& unit) {
  if (order_complete_) return;
  if (unit.position < 0) {
    unit.position = static_cast<int>(order_.size());
    order_.push_back(&unit);
  } else {
    order_complete_ = true;  // a unit runs again: the first forward is over
  }
}

void PrefetchScheduler::acquire(PrefetchHook& hook) {
  Unit& unit = unit_of(&hook);
  record_order(unit);
  ++stats_.onloads;
  // A split forward that threw never released: put its full placeholders back first.
  const auto& bound = hook.offloaded_tensors();
  for (std::size_t i = 0; i < unit.placeholders.size() && i < bound.size(); ++i) {
    bound[i].slot->set(unit.placeholders[i]);
  }
  unit.placeholders.clear();
  const ExecutionPolicy policy = unit.step_policy;
  if (unit.issued && unit.issued_as != policy) evict(unit);  // prefetched for another policy
  if (unit.issued) {
    ++stats_.prefetched;
  } else {
    // The recorded order was wrong this time: make room by dropping a unit prefetched for later.
    for (auto& other : units_) {
      if (in_flight() < options_.staging_slots) break;
      if (other->issued && !other->in_use) evict(*other);
    }
    issue(unit, policy);
  }
  if (unit.ticket) engine_->wait(*unit.ticket);
  log("wait", unit);
  const auto& tensors = hook.offloaded_tensors();
  // A split step binds rows [r, n): keep the full placeholders to put back at release.
  if (policy == ExecutionPolicy::Split) {
    bind_split_cpu_parts(unit);  // checks the stored tensors against the full placeholders
    unit.placeholders.clear();
    for (const OffloadedTensor& t : tensors) unit.placeholders.push_back(t.slot->tensor());
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    tensors[i].slot->set(unit.targets[i].defined() ? unit.targets[i] : unit.sources[i]);
  }
  unit.in_use = true;
  if (order_complete_ && unit.position >= 0) prefetch_after(unit);
}

void PrefetchScheduler::release(PrefetchHook& hook) {
  Unit& unit = unit_of(&hook);
  const auto& tensors = hook.offloaded_tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const nn::SlotPtr& slot = tensors[i].slot;
    if (i < unit.placeholders.size() && unit.placeholders[i].is_meta()) {
      slot->set(unit.placeholders[i]);
    } else {
      slot->set(slot->tensor().to(Device::meta()));
    }
  }
  unit.placeholders.clear();
  log("release", unit);
  evict(unit);
  unit.step_policy = ExecutionPolicy::Stream;  // a forward without a step (no input) streams
  unit.cpu_parts.clear();
}

// ---- PrefetchHook ----------------------------------------------------------------------------

PrefetchHook::PrefetchHook(nn::AlignDevicesOptions options,
                           std::shared_ptr<PrefetchScheduler> scheduler)
    : AlignDevicesHook(std::move(options)), scheduler_(std::move(scheduler)) {
  STRATA_CHECK_ARG(scheduler_ != nullptr, "PrefetchHook needs a scheduler");
  STRATA_CHECK_ARG(this->options().offload, "PrefetchHook is for offloaded modules only");
  STRATA_CHECK_ARG(
      execution_device() && resolve_device(*execution_device()) == scheduler_->execution_device(),
      "PrefetchHook: the hook's execution device must be the scheduler's ({})",
      scheduler_->execution_device());
}

std::string PrefetchHook::describe() const { return "Prefetch" + AlignDevicesHook::describe(); }

void PrefetchHook::init_hook(nn::Module& module) {
  class_name_ = module.class_name();
  module_ = &module;
  AlignDevicesHook::init_hook(module);
  scheduler_->add(this);
}

std::int64_t PrefetchHook::module_count() const {
  return module_ == nullptr ? 0 : static_cast<std::int64_t>(module_->named_modules().size());
}

void PrefetchHook::detach_hook(nn::Module& module) {
  detach_split_hooks();
  restore_resident();
  resident_.clear();
  resident_scanned_ = false;
  cpu_capable_.reset();
  scheduler_->remove(this);
  AlignDevicesHook::detach_hook(module);
}

void PrefetchHook::onload(nn::Module&) { scheduler_->acquire(*this); }

void PrefetchHook::release(nn::Module&) { scheduler_->release(*this); }

nn::AlignHookFactory prefetch_hook_factory(std::shared_ptr<PrefetchScheduler> scheduler) {
  STRATA_CHECK_ARG(scheduler != nullptr, "prefetch_hook_factory: the scheduler is null");
  return [scheduler = std::move(scheduler)](
             nn::AlignDevicesOptions options) -> std::shared_ptr<AlignDevicesHook> {
    if (options.offload) return std::make_shared<PrefetchHook>(std::move(options), scheduler);
    return std::make_shared<AlignDevicesHook>(std::move(options));
  };
}

std::shared_ptr<PrefetchScheduler> find_scheduler(nn::Module& model) {
  for (const auto& [name, module] : model.named_modules()) {
    if (auto* hook = nn::find_hook<PrefetchHook>(*module)) return hook->scheduler();
  }
  return nullptr;
}

}  // namespace strata::placement
