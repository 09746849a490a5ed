#pragma once
// The module tree flattened for planning: one node per module and per tensor name, numbered in
// pre-order (a module, its direct parameters, its direct buffers, then its children), so that a
// subtree is the id range [id, end) and "is inside" is two comparisons. Built once per call in
// O(number of names); sizes follow compute_module_sizes.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "strata/nn/module.h"
#include "strata/placement/module_sizes.h"

namespace strata::placement::detail {

enum class NodeKind : std::uint8_t { Module, Parameter, Buffer };

struct PlanNode {
  std::string name;                    // dotted, "" for the root
  const nn::Module* module = nullptr;  // modules only
  std::int32_t parent = -1;
  std::int32_t end = 0;             // the subtree is [id, end)
  std::int32_t children_begin = 0;  // into PlanTree's child list
  std::int32_t num_children = 0;    // direct child modules
  std::int32_t num_params = 0;      // direct parameters: ids id+1 ... id+num_params
  std::int32_t num_buffers = 0;     // direct buffers: right after the parameters
  std::int32_t tie_group = -1;      // parameters whose tensor has several names
  NodeKind kind = NodeKind::Module;
  bool canonical = true;         // tensors: the first name of the tensor, the one that is counted
  bool persistent = true;        // buffers: part of the checkpoint
  std::int64_t size = 0;         // bytes under this name, each tensor once (module_sizes)
  std::int64_t buffer_size = 0;  // bytes of buffers under this name
};

class PlanTree {
 public:
  PlanTree(nn::Module& root, const SizeOptions& options);
  PlanTree(const PlanTree&) = delete;
  PlanTree& operator=(const PlanTree&) = delete;

  std::int32_t size() const { return static_cast<std::int32_t>(nodes_.size()); }
  const PlanNode& operator[](std::int32_t id) const { return nodes_[static_cast<std::size_t>(id)]; }
  bool is_module(std::int32_t id) const { return (*this)[id].kind == NodeKind::Module; }
  // True when `node` is `ancestor` or lies under it.
  bool contains(std::int32_t ancestor, std::int32_t node) const {
    return node >= ancestor && node < (*this)[ancestor].end;
  }
  std::span<const std::int32_t> children(std::int32_t id) const;
  const std::string& class_name(std::int32_t id) const { return (*this)[id].module->class_name(); }

  // What replaces `id` in a planning queue when it is split: its direct parameters, its child
  // modules, then its direct buffers (the reference drops the buffers: bug B4).
  void append_parts(std::int32_t id, std::vector<std::int32_t>& out) const;
  // The root's parts: what planning starts from.
  std::vector<std::int32_t> top_level() const;

  // Tie groups in the order of their first member; members sorted by name.
  const std::vector<std::vector<std::int32_t>>& tie_groups() const { return tie_groups_; }
  // The tied parameters inside the subtree of `id`, ascending.
  std::span<const std::int32_t> tied_inside(std::int32_t id) const;

  // Node of a module or tensor name, or -1.
  std::int32_t find(std::string_view name) const;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  void build(nn::Module& root);
  void compute_sizes(const SizeOptions& options);
  void collect_ties();

  std::vector<PlanNode> nodes_;
  std::vector<std::int32_t> child_list_;
  std::vector<const nn::TensorSlot*> slots_;  // per node; null for modules
  std::vector<std::int32_t> first_of_;        // tensors: the first node bound to the same tensor
  std::vector<std::vector<std::int32_t>> tie_groups_;
  std::vector<std::int32_t> tied_;  // every parameter of a tie group, ascending
  mutable std::unordered_map<std::string, std::int32_t, Hash, std::equal_to<>> by_name_;
};

// Nodes in the order of the reference's compute_module_sizes dict: counted parameters, then
// counted buffers, each preceded by its ancestors the first time they are reached. Modules with
// no counted tensor under them are absent (they weigh 0).
std::vector<std::int32_t> reference_size_order(const PlanTree& tree);

// Per node: 1 for a module that has child modules and whose class is not in `no_split` (a module
// planning may split), 0 otherwise.
std::vector<std::uint8_t> splittable_nodes(const PlanTree& tree,
                                           const std::vector<std::string>& no_split);

}  // namespace strata::placement::detail
