// get_balanced_memory (accelerate-semantics.md §1.9).

#include "balanced_memory.h"

#include <algorithm>
#include <unordered_set>

#include "strata/core/logging.h"
#include "strata/placement/auto_device_map.h"

namespace strata::placement {
namespace detail {
namespace {

// The margin added to each GPU's share: 1.25 x the larger of the first no-split block met (in the
// reference's size order) and the mean size of the leaf modules (modules holding counted tensors
// whose child modules hold none).
std::int64_t balance_margin(const PlanTree& tree, const std::vector<std::string>& no_split) {
  const std::vector<std::int32_t> order = reference_size_order(tree);
  std::int64_t block = 0;
  std::unordered_set<std::string_view> wanted(no_split.begin(), no_split.end());
  for (std::int32_t id : order) {
    if (wanted.empty()) break;
    if (id == 0 || !tree.is_module(id)) continue;
    if (wanted.erase(tree.class_name(id)) > 0) block = std::max(block, tree[id].size);
  }
  std::vector<std::uint8_t> counted(static_cast<std::size_t>(tree.size()), 0);
  for (std::int32_t id : order) counted[id] = 1;
  std::int64_t leaf_sum = 0, leaves = 0;
  for (std::int32_t id : order) {
    if (id == 0 || !tree.is_module(id)) continue;
    const auto children = tree.children(id);
    if (std::none_of(children.begin(), children.end(),
                     [&](std::int32_t c) { return counted[c]; })) {
      leaf_sum += tree[id].size;
      ++leaves;
    }
  }
  // Python's int(sum / max(n, 1)) and int(1.25 * x): true division, then truncation.
  const auto mean =
      static_cast<std::int64_t>(static_cast<double>(leaf_sum) / std::max<std::int64_t>(leaves, 1));
  return static_cast<std::int64_t>(1.25 * static_cast<double>(std::max(block, mean)));
}

}  // namespace

MaxMemory balance_budgets(const PlanTree& tree, MaxMemory budgets,
                          const std::vector<std::string>& no_split_module_classes, bool low_zero,
                          bool measured) {
  std::vector<int> gpus;  // GPU indices with a budget, ascending (budgets are in planning order)
  for (const auto& [device, bytes] : budgets) {
    if (device.is_gpu() && bytes > 0) gpus.push_back(device.index());
  }
  if (gpus.empty()) return budgets;
  if (gpus.size() == 1) {
    low_zero = false;
    if (measured) {
      for (const auto& [device, bytes] : budgets) {
        if (!device.is_gpu()) continue;
        budgets.set(device, static_cast<std::int64_t>(static_cast<double>(bytes) * 0.9));
        log_message(LogLevel::Info,
                    fmt::format("We will use 90% of the memory on device {} for storing the model, "
                                "and 10% for the buffer to avoid OOM.",
                                device));
        break;
      }
    }
  }
  const std::int64_t total = tree[0].size;
  const auto sharing = static_cast<std::int64_t>(low_zero ? gpus.size() - 1 : gpus.size());
  const std::int64_t per_gpu = total / sharing + balance_margin(tree, no_split_module_classes);

  // "GPU 0" is GPU 0 when it has a budget entry, else the first GPU (the reference raises
  // KeyError then).
  const MapDevice zero =
      budgets.contains(MapDevice::gpu(0)) ? MapDevice::gpu(0) : MapDevice::gpu(gpus.front());
  // The last GPU keeps its whole budget in case the margin is not enough.
  for (std::size_t i = 0; i + 1 < gpus.size(); ++i) {
    const MapDevice gpu = MapDevice::gpu(gpus[i]);
    const std::int64_t share = low_zero && gpu == zero ? budgets.at(zero) : per_gpu;
    budgets.set(gpu, std::min(share, budgets.at(gpu)));
  }
  if (low_zero) {
    // What the other GPUs cannot hold stays on GPU 0. The reference sums GPUs 1..n-1 by index,
    // which raises KeyError for non-contiguous indices (B7); this sums the other GPUs with a
    // budget.
    std::int64_t others = 0;
    for (int index : gpus) {
      if (MapDevice::gpu(index) != zero) others += budgets.at(MapDevice::gpu(index));
    }
    budgets.set(zero, std::min(std::max<std::int64_t>(0, total - others), budgets.at(zero)));
  }
  return budgets;
}

}  // namespace detail

MaxMemory get_balanced_memory(nn::Module& model, const BalancedOptions& options) {
  const detail::PlanTree tree(model, SizeOptions{options.dtype, options.special_dtypes});
  return detail::balance_budgets(tree, get_max_memory(options.max_memory),
                                 options.no_split_module_classes, options.low_zero,
                                 !options.max_memory.has_value());
}

}  // namespace strata::placement
