// PrefetchScheduler::policy_for (prefetch.h): the execution policy of a unit whose module is run
// by its parent with the stored weights (the routed experts of a mixture-of-experts block,
// docs/moe-execution.md), decided as PrefetchHook::pre_forward would decide it.

#include "prefetch_unit.h"
#include "strata/placement/prefetch.h"

namespace strata::placement {

ExecutionPolicy PrefetchScheduler::policy_for(PrefetchHook& hook, std::int64_t tokens,
                                              std::int64_t activation_bytes_per_token,
                                              std::int64_t block_projections) {
  // The caller computes the unit with its stored weights, so nothing hooked inside it and no
  // resident tie can interfere: it is always cpu-capable. Unlike begin_step, the step's token
  // count (which the prefetch of the next units follows) stays the block's, not the expert's.
  Unit& unit = unit_of(&hook);
  unit.cpu_capable = true;
  if (activation_bytes_per_token > 0) unit.activation_bytes_per_token = activation_bytes_per_token;
  if (block_projections != unit.block_projections) {
    unit.block_projections = block_projections;
    unit.cpu_threshold = -1;  // planned again with the shared round trip
  }
  const ExecutionPolicy policy = decide(unit, tokens);
  if (policy == ExecutionPolicy::Cpu) ++stats_.cpu_computes;
  return policy;
}

}  // namespace strata::placement
