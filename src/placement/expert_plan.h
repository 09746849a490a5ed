#pragma once
// Planning with routed experts placed after the rest of the model (ExpertPlacement).

#include "strata/placement/auto_device_map.h"

namespace strata::placement::detail {

// `budgets` are the planning budgets (runtime reserve already taken off), in planning order.
DevicePlan plan_experts_after(nn::Module& model, const MaxMemory& budgets,
                              const InferOptions& options);

}  // namespace strata::placement::detail
