#pragma once
// One unit of the prefetch scheduler (private to prefetch.cc and prefetch_policy.cc).

#include <memory>
#include <vector>

#include "prefetch_engine.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

// Whether two tensors are the same view of the same memory (a copy made of one serves the other).
inline bool same_view(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.storage().defined() && b.storage().defined() &&
         a.data_ptr() == b.data_ptr() && a.shape() == b.shape() && a.strides() == b.strides() &&
         a.dtype() == b.dtype() && a.device() == b.device();
}

struct PrefetchScheduler::Unit {
  PrefetchHook* hook = nullptr;
  int position = -1;  // in the recorded order
  bool issued = false;
  bool in_use = false;
  // One per offloaded tensor: the execution-device tensor to bind (undefined: bind `sources`).
  std::vector<Tensor> targets;
  std::vector<Tensor> sources;
  std::unique_ptr<detail::CopyEngine::Ticket> ticket;
  // Execution policy (prefetch_policy.cc): what the unit's hook reported, and its threshold.
  bool cpu_capable = false;
  std::int64_t activation_bytes_per_token = 0;
  std::int64_t block_projections = 0;  // UnitProfile::block_projections (policy_for)
  std::int64_t cpu_threshold = -1;     // -1: not asked yet
  UnitPlan plan;                       // valid once cpu_threshold >= 0
  ExecutionPolicy step_policy = ExecutionPolicy::Stream;  // of the step in progress
  ExecutionPolicy issued_as = ExecutionPolicy::Stream;    // what the issued copies hold
  bool pages_populated = false;        // its file views mapped in at its first cpu step
  std::vector<std::int64_t> cpu_rows;  // split rows per tensor (split_rows)
  bool rows_known = false;
  std::vector<Tensor> cpu_parts;     // per tensor, in a split step: the cpu rows
  std::vector<Tensor> placeholders;  // ... and the meta placeholders to put back at release
};

}  // namespace strata::placement
