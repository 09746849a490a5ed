#pragma once
// get_balanced_memory over an already built tree (shared by the public function and the
// "balanced" strategies).

#include <string>
#include <vector>

#include "plan_tree.h"
#include "strata/placement/memory.h"

namespace strata::placement::detail {

// `budgets` in planning order; `measured`: the user gave none (a lone GPU then keeps 10% spare).
MaxMemory balance_budgets(const PlanTree& tree, MaxMemory budgets,
                          const std::vector<std::string>& no_split_module_classes, bool low_zero,
                          bool measured);

}  // namespace strata::placement::detail
