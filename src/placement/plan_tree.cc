#include "plan_tree.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <unordered_set>

#include "strata/core/error.h"
#include "strata/core/logging.h"

namespace strata::placement::detail {
namespace {

std::string join_name(const std::string& prefix, const std::string& local) {
  return prefix.empty() ? local : prefix + "." + local;
}

// Bytes per element of a tensor as planned (SizeOptions): never up-cast, integers untouched.
std::size_t planned_element_size(const std::string& name, DType own, const SizeOptions& options) {
  if (auto it = options.special_dtypes.find(name); it != options.special_dtypes.end()) {
    return dtype_size(it->second);
  }
  if (!options.dtype || is_integral(own) || own == DType::Bool) return dtype_size(own);
  return std::min(dtype_size(*options.dtype), dtype_size(own));
}

}  // namespace

PlanTree::PlanTree(nn::Module& root, const SizeOptions& options) {
  build(root);
  compute_sizes(options);
  collect_ties();
}

void PlanTree::build(nn::Module& root) {
  struct Pending {
    const nn::Module* module;
    std::int32_t parent;
    std::string name;
  };
  std::vector<Pending> stack;
  stack.push_back({&root, -1, ""});
  while (!stack.empty()) {
    Pending item = std::move(stack.back());
    stack.pop_back();
    const auto id = static_cast<std::int32_t>(nodes_.size());
    // A module may appear under several names, but never inside itself (the walk would not end).
    for (std::int32_t a = item.parent; a >= 0; a = nodes_[a].parent) {
      STRATA_CHECK_ARG(nodes_[a].module != item.module,
                       "module '{}' ({}) contains itself as '{}': a module tree cannot have cycles",
                       nodes_[a].name, item.module->class_name(), item.name);
    }
    PlanNode& node = nodes_.emplace_back();
    node.name = std::move(item.name);
    node.module = item.module;
    node.parent = item.parent;
    slots_.push_back(nullptr);
    const auto add_tensors = [&](const std::vector<nn::TensorEntry>& entries, NodeKind kind) {
      for (const nn::TensorEntry& entry : entries) {
        PlanNode& tensor = nodes_.emplace_back();
        tensor.name = join_name(nodes_[id].name, entry.name);
        tensor.parent = id;
        tensor.kind = kind;
        tensor.persistent = entry.persistent;
        slots_.push_back(entry.slot.get());
      }
      return static_cast<std::int32_t>(entries.size());
    };
    const std::int32_t num_params =
        add_tensors(item.module->direct_parameters(), NodeKind::Parameter);
    const std::int32_t num_buffers = add_tensors(item.module->direct_buffers(), NodeKind::Buffer);
    nodes_[id].num_params = num_params;
    nodes_[id].num_buffers = num_buffers;
    const auto& children = item.module->direct_children();
    nodes_[id].num_children = static_cast<std::int32_t>(children.size());
    for (auto it = children.rbegin(); it != children.rend(); ++it) {
      stack.push_back({it->second.get(), id, join_name(nodes_[id].name, it->first)});
    }
  }
  // Subtrees are contiguous in pre-order: a parent ends where its last descendant ends.
  for (auto& node : nodes_) node.end = static_cast<std::int32_t>(&node - nodes_.data()) + 1;
  for (std::int32_t id = size() - 1; id > 0; --id) {
    PlanNode& parent = nodes_[nodes_[id].parent];
    parent.end = std::max(parent.end, nodes_[id].end);
  }
  // Child lists, in registration order (pre-order visits children in that order).
  std::int32_t offset = 0;
  for (auto& node : nodes_) {
    node.children_begin = offset;
    offset += node.num_children;
  }
  child_list_.assign(static_cast<std::size_t>(offset), -1);
  std::vector<std::int32_t> filled(nodes_.size(), 0);
  for (std::int32_t id = 1; id < size(); ++id) {
    if (nodes_[id].kind != NodeKind::Module) continue;
    const std::int32_t p = nodes_[id].parent;
    child_list_[nodes_[p].children_begin + filled[p]++] = id;
  }
}

void PlanTree::compute_sizes(const SizeOptions& options) {
  // Parameters and buffers are deduplicated separately, as PyTorch's named_parameters and
  // named_buffers do; the first name of a tensor is the one counted.
  std::unordered_map<const nn::TensorSlot*, std::int32_t> first_param, first_buffer;
  first_param.reserve(nodes_.size());
  std::size_t special_found = 0;
  first_of_.assign(nodes_.size(), -1);
  for (std::int32_t id = 0; id < size(); ++id) {
    PlanNode& node = nodes_[id];
    if (node.kind == NodeKind::Module) continue;
    auto& first = node.kind == NodeKind::Parameter ? first_param : first_buffer;
    first_of_[id] = first.emplace(slots_[id], id).first->second;
    node.canonical = first_of_[id] == id;
    if (!options.special_dtypes.empty() && options.special_dtypes.contains(node.name)) {
      ++special_found;
    }
    if (!node.canonical) continue;
    const Tensor& tensor = slots_[id]->tensor();
    node.size = tensor.numel() *
                static_cast<std::int64_t>(planned_element_size(node.name, tensor.dtype(), options));
    if (node.kind == NodeKind::Buffer) node.buffer_size = node.size;
  }
  for (std::int32_t id = size() - 1; id > 0; --id) {
    nodes_[nodes_[id].parent].size += nodes_[id].size;
    nodes_[nodes_[id].parent].buffer_size += nodes_[id].buffer_size;
  }
  if (special_found < options.special_dtypes.size()) {
    std::vector<std::string> unknown;
    for (const auto& [name, dtype] : options.special_dtypes) {
      const std::int32_t id = find(name);
      if (id < 0 || nodes_[id].kind == NodeKind::Module) unknown.push_back(name);
    }
    std::sort(unknown.begin(), unknown.end());
    log_warning(
        fmt::format("special_dtypes names no tensor of the model: {}; they are ignored "
                    "(give full tensor names, like \"lm_head.weight\")",
                    fmt::join(unknown, ", ")));
  }
}

void PlanTree::collect_ties() {
  std::vector<std::int32_t> group_of(nodes_.size(), -1);  // by first name
  for (std::int32_t id = 0; id < size(); ++id) {
    const std::int32_t first = first_of_[id];
    if (nodes_[id].kind != NodeKind::Parameter || first == id) continue;
    if (group_of[first] < 0) {
      group_of[first] = static_cast<std::int32_t>(tie_groups_.size());
      tie_groups_.push_back({first});
    }
    tie_groups_[group_of[first]].push_back(id);
  }
  // Groups in the order of their first member; members by name.
  std::sort(tie_groups_.begin(), tie_groups_.end(),
            [](const auto& a, const auto& b) { return a.front() < b.front(); });
  for (std::size_t g = 0; g < tie_groups_.size(); ++g) {
    for (std::int32_t id : tie_groups_[g]) {
      nodes_[id].tie_group = static_cast<std::int32_t>(g);
      tied_.push_back(id);
    }
    std::sort(tie_groups_[g].begin(), tie_groups_[g].end(),
              [&](std::int32_t a, std::int32_t b) { return nodes_[a].name < nodes_[b].name; });
  }
  std::sort(tied_.begin(), tied_.end());
}

std::span<const std::int32_t> PlanTree::children(std::int32_t id) const {
  const PlanNode& node = (*this)[id];
  return {child_list_.data() + node.children_begin, static_cast<std::size_t>(node.num_children)};
}

void PlanTree::append_parts(std::int32_t id, std::vector<std::int32_t>& out) const {
  const PlanNode& node = (*this)[id];
  if (node.kind != NodeKind::Module) return;
  for (std::int32_t i = 0; i < node.num_params; ++i) out.push_back(id + 1 + i);
  for (std::int32_t child : children(id)) out.push_back(child);
  for (std::int32_t i = 0; i < node.num_buffers; ++i) out.push_back(id + 1 + node.num_params + i);
}

std::vector<std::int32_t> PlanTree::top_level() const {
  std::vector<std::int32_t> parts;
  append_parts(0, parts);
  return parts;
}

std::span<const std::int32_t> PlanTree::tied_inside(std::int32_t id) const {
  const auto first = std::lower_bound(tied_.begin(), tied_.end(), id);
  const auto last = std::lower_bound(first, tied_.end(), (*this)[id].end);
  return {tied_.data() + (first - tied_.begin()), static_cast<std::size_t>(last - first)};
}

std::int32_t PlanTree::find(std::string_view name) const {
  if (by_name_.empty()) {
    by_name_.reserve(nodes_.size());
    for (std::int32_t id = 0; id < size(); ++id) by_name_.emplace(nodes_[id].name, id);
  }
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

std::vector<std::int32_t> reference_size_order(const PlanTree& tree) {
  std::vector<std::int32_t> order;
  std::vector<std::uint8_t> emitted(static_cast<std::size_t>(tree.size()), 0);
  std::vector<std::int32_t> path;
  for (NodeKind kind : {NodeKind::Parameter, NodeKind::Buffer}) {
    for (std::int32_t id = 0; id < tree.size(); ++id) {
      if (tree[id].kind != kind || !tree[id].canonical) continue;
      path.clear();
      for (std::int32_t a = id; a >= 0 && !emitted[a]; a = tree[a].parent) path.push_back(a);
      for (auto it = path.rbegin(); it != path.rend(); ++it) {
        emitted[*it] = 1;
        order.push_back(*it);
      }
    }
  }
  return order;
}

std::vector<std::uint8_t> splittable_nodes(const PlanTree& tree,
                                           const std::vector<std::string>& no_split) {
  const std::unordered_set<std::string_view> classes(no_split.begin(), no_split.end());
  std::vector<std::uint8_t> result(static_cast<std::size_t>(tree.size()), 0);
  for (std::int32_t id = 0; id < tree.size(); ++id) {
    result[id] =
        tree.is_module(id) && tree[id].num_children > 0 && !classes.contains(tree.class_name(id));
  }
  return result;
}

}  // namespace strata::placement::detail
