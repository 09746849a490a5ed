// Public planning entry points: budgets, runtime reserve, strategies, explain table.

#include "strata/placement/auto_device_map.h"

#include <algorithm>
#include <array>
#include <functional>

#include "balanced_memory.h"
#include "expert_plan.h"
#include "planner.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"

namespace strata::placement {
namespace {

using detail::PlanTree;
using BudgetTransform = std::function<MaxMemory(MaxMemory)>;

// Takes the runtime reserve off the budgets; `reserved` records what was held back.
MaxMemory take_reserve(const MaxMemory& budgets, const RuntimeReserve& reserve,
                       MaxMemory& reserved) {
  for (const auto& [device, bytes] : reserve.per_device) {
    STRATA_CHECK_ARG(budgets.contains(device),
                     "the runtime reserve names device {}, which has no budget in max_memory {}; "
                     "reserve memory on budgeted devices only",
                     device, budgets.str());
  }
  STRATA_CHECK_ARG(reserve.per_gpu >= 0 && reserve.staging_slots >= 0,
                   "runtime reserve per_gpu ({}) and staging_slots ({}) cannot be negative",
                   reserve.per_gpu, reserve.staging_slots);
  MaxMemory result;
  for (const auto& [device, bytes] : budgets) {
    const std::int64_t want =
        reserve.per_device.find(device).value_or(0) + (device.is_gpu() ? reserve.per_gpu : 0);
    if (want > bytes) {
      log_warning(
          fmt::format("the runtime reserve for {} ({}) exceeds its budget ({}); no weights "
                      "will be planned there",
                      device, format_bytes(want), format_bytes(bytes)));
    }
    const std::int64_t held = std::min(want, bytes);
    if (held > 0) reserved.set(device, reserved.find(device).value_or(0) + held);
    result.set(device, bytes - held);
  }
  return result;
}

// The largest thing the runtime brings onto a GPU at once from an offloaded tier: a module that is
// not split, a tensor, or the direct tensors of a module that is split.
std::int64_t largest_offload_unit(const PlanTree& tree, const std::vector<std::uint8_t>& split) {
  std::int64_t largest = 0;
  for (std::int32_t id = 0; id < tree.size(); ++id) {
    const detail::PlanNode& node = tree[id];
    if (!tree.is_module(id)) {
      if (node.parent < 0 || !split[node.parent]) continue;
      largest = std::max(largest, node.size);
    } else if (!split[id]) {
      largest = std::max(largest, node.size);
    } else {
      std::int64_t direct = 0;
      for (std::int32_t t = id + 1; t <= id + node.num_params + node.num_buffers; ++t) {
        direct += tree[t].size;
      }
      largest = std::max(largest, direct);
    }
  }
  return largest;
}

bool offloads(const DevicePlan& plan) {
  return std::any_of(plan.placements.begin(), plan.placements.end(), [](const auto& entry) {
    return entry.second.is_cpu() || entry.second.is_disk();
  });
}

// Reserve, transform (balance), plan; then, if staging slots are asked for and the plan offloads,
// hold them back on the first GPU and plan again.
DevicePlan plan_tree(const PlanTree& tree, const MaxMemory& budgets, const InferOptions& options,
                     const BudgetTransform& transform) {
  MaxMemory reserved;
  MaxMemory planned = transform(take_reserve(budgets, options.reserve, reserved));
  DevicePlan plan = detail::Planner(tree, planned, options).run();
  const auto first_gpu = std::find_if(planned.begin(), planned.end(),
                                      [](const auto& entry) { return entry.first.is_gpu(); });
  if (options.reserve.staging_slots > 0 && first_gpu != planned.end() && offloads(plan)) {
    const std::int64_t unit =
        largest_offload_unit(tree, detail::splittable_nodes(tree, options.no_split_module_classes));
    const MapDevice gpu = first_gpu->first;
    const std::int64_t held = std::min(unit * options.reserve.staging_slots, planned.at(gpu));
    planned.set(gpu, planned.at(gpu) - held);
    reserved.set(gpu, reserved.find(gpu).value_or(0) + held);
    plan = detail::Planner(tree, planned, options).run();
  }
  plan.reserved = std::move(reserved);
  return plan;
}

MaxMemory unchanged(MaxMemory budgets) { return budgets; }

// ExpertPlacement: the runtime reserve comes off the budgets, then the expert-aware fill (no
// balancing over GPUs: the dense part is small, and experts fill GPUs in order).
DevicePlan plan_with_experts(nn::Module& model, const InferOptions& options) {
  MaxMemory reserved;
  const MaxMemory budgets =
      take_reserve(get_max_memory(options.max_memory), options.reserve, reserved);
  DevicePlan plan = detail::plan_experts_after(model, budgets, options);
  plan.reserved = std::move(reserved);
  return plan;
}

}  // namespace

DevicePlan plan_auto_device_map(nn::Module& model, const InferOptions& options) {
  if (options.experts) return plan_with_experts(model, options);
  const PlanTree tree(model, SizeOptions{options.dtype, options.special_dtypes});
  return plan_tree(tree, get_max_memory(options.max_memory), options, unchanged);
}

DeviceMap infer_auto_device_map(nn::Module& model, const InferOptions& options) {
  return plan_auto_device_map(model, options).device_map;
}

DeviceMapStrategy parse_device_map_strategy(std::string_view text) {
  static constexpr std::array<DeviceMapStrategy, 4> kAll = {
      DeviceMapStrategy::Auto, DeviceMapStrategy::Balanced, DeviceMapStrategy::BalancedLow0,
      DeviceMapStrategy::Sequential};
  for (DeviceMapStrategy strategy : kAll) {
    if (text == strategy_name(strategy)) return strategy;
  }
  STRATA_THROW(InvalidArgument,
               "device_map strategy '{}' is not known: choose \"auto\", \"balanced\", "
               "\"balanced_low_0\" or \"sequential\", or give an explicit device map",
               text);
}

std::string_view strategy_name(DeviceMapStrategy strategy) {
  switch (strategy) {
    case DeviceMapStrategy::Auto:
      return "auto";
    case DeviceMapStrategy::Balanced:
      return "balanced";
    case DeviceMapStrategy::BalancedLow0:
      return "balanced_low_0";
    case DeviceMapStrategy::Sequential:
      return "sequential";
  }
  return "?";
}

DevicePlan plan_device_map(nn::Module& model, DeviceMapStrategy strategy,
                           const InferOptions& options) {
  if (options.experts) return plan_with_experts(model, options);
  const PlanTree tree(model, SizeOptions{options.dtype, options.special_dtypes});
  const MaxMemory budgets = get_max_memory(options.max_memory);
  if (strategy == DeviceMapStrategy::Sequential)
    return plan_tree(tree, budgets, options, unchanged);
  const bool low_zero = strategy == DeviceMapStrategy::BalancedLow0;
  const bool measured = !options.max_memory.has_value();
  return plan_tree(tree, budgets, options, [&](MaxMemory reserved_budgets) {
    return detail::balance_budgets(tree, std::move(reserved_budgets),
                                   options.no_split_module_classes, low_zero, measured);
  });
}

std::string explain_table(const DevicePlan& plan) {
  std::vector<std::array<std::string, 4>> rows;
  rows.push_back({"module", "size", "device", "reason"});
  for (const ExplainRow& row : plan.explain) {
    rows.push_back({row.module.empty() ? "(model)" : row.module, format_bytes(row.size),
                    row.device.str(), row.reason});
  }
  std::array<std::size_t, 3> width{};
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    out += fmt::format("{:<{}}  {:>{}}  {:<{}}  {}\n", row[0], width[0], row[1], width[1], row[2],
                       width[2], row[3]);
  }
  return out;
}

}  // namespace strata::placement
