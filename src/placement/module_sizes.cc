#include "strata/placement/module_sizes.h"

#include "plan_tree.h"

namespace strata::placement {

using detail::PlanTree;

std::int64_t ModuleSizes::operator[](std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? 0 : entries_[it->second].second;
}

bool ModuleSizes::contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

ModuleSizes compute_module_sizes(nn::Module& model, const SizeOptions& options) {
  const PlanTree tree(model, options);
  ModuleSizes sizes;
  for (std::int32_t id : detail::reference_size_order(tree)) {
    sizes.index_.emplace(tree[id].name, sizes.entries_.size());
    sizes.entries_.emplace_back(tree[id].name, tree[id].size);
  }
  return sizes;
}

std::int64_t compute_module_total_buffer_size(nn::Module& model, const SizeOptions& options) {
  return PlanTree(model, options)[0].buffer_size;
}

std::vector<std::vector<std::string>> find_tied_parameters(nn::Module& model) {
  const PlanTree tree(model, {});
  std::vector<std::vector<std::string>> groups;
  for (const auto& members : tree.tie_groups()) {
    auto& names = groups.emplace_back();
    for (std::int32_t id : members) names.push_back(tree[id].name);
  }
  return groups;
}

MaxLayerSize get_max_layer_size(nn::Module& model,
                                const std::vector<std::string>& no_split_module_classes,
                                const SizeOptions& options) {
  const PlanTree tree(model, options);
  const std::vector<std::uint8_t> splittable =
      detail::splittable_nodes(tree, no_split_module_classes);
  MaxLayerSize result;
  std::vector<std::int32_t> stack;  // reversed, so the back is the front of the reference's list
  const std::vector<std::int32_t> top = tree.top_level();
  stack.assign(top.rbegin(), top.rend());
  while (!stack.empty()) {
    const std::int32_t id = stack.back();
    stack.pop_back();
    if (splittable[id]) {
      const auto children = tree.children(id);
      stack.insert(stack.end(), children.rbegin(), children.rend());
      continue;
    }
    if (tree[id].size > result.bytes) {
      result.bytes = tree[id].size;
      result.names.clear();
    }
    if (tree[id].size == result.bytes) result.names.push_back(tree[id].name);
  }
  return result;
}

}  // namespace strata::placement
