#include "strata/placement/device_map_checks.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "plan_tree.h"
#include "strata/core/error.h"
#include "strata/core/logging.h"

namespace strata::placement {
namespace {

using detail::NodeKind;
using detail::PlanTree;

// The map's keys in a hash table; a name resolves to its longest covering key.
class KeyIndex {
 public:
  explicit KeyIndex(const DeviceMap& map) {
    for (const auto& [key, device] : map) {
      STRATA_CHECK_ARG(keys_.emplace(key, device).second,
                       "the device map names '{}' twice; give each module one device", key);
    }
  }
  bool contains(std::string_view key) const { return keys_.contains(key); }
  std::optional<MapDevice> find(std::string_view name) const {
    for (std::string_view prefix = name;;) {
      if (auto it = keys_.find(prefix); it != keys_.end()) return it->second;
      if (prefix.empty()) return std::nullopt;
      const std::size_t dot = prefix.rfind('.');
      prefix = dot == std::string_view::npos ? std::string_view() : prefix.substr(0, dot);
    }
  }

 private:
  std::unordered_map<std::string_view, MapDevice> keys_;
};

// clean_device_map works on the trie of dotted key components.
struct Trie {
  struct Node {
    std::unordered_map<std::string_view, std::int32_t> child_of;
    std::vector<std::int32_t> children;  // first-appearance order
    std::int32_t key = -1;               // index of the map entry named by this node
    std::int32_t first = 0;              // smallest entry index in the subtree (own key included)
    std::string_view name;               // the dotted name of this node
    // Entries strictly below (for the root: all entries): how many, and their common device.
    std::int64_t below = 0;
    std::optional<MapDevice> device;
    bool mixed = false;
  };
  std::vector<Node> nodes;

  explicit Trie(const DeviceMap& map) {
    nodes.emplace_back();
    for (std::size_t i = 0; i < map.size(); ++i) {
      const std::string_view key = map[i].first;
      std::int32_t at = 0;
      if (!key.empty()) {
        for (std::size_t start = 0;;) {
          const std::size_t dot = std::min(key.find('.', start), key.size());
          const std::string_view part = key.substr(start, dot - start);
          const auto fresh = static_cast<std::int32_t>(nodes.size());
          const auto [it, added] = nodes[at].child_of.emplace(part, fresh);
          const std::int32_t child = it->second;  // read before nodes may reallocate
          if (added) {
            nodes[at].children.push_back(child);
            nodes.emplace_back().name = key.substr(0, dot);
          }
          at = child;
          if (dot == key.size()) break;
          start = dot + 1;
        }
      }
      STRATA_CHECK_ARG(nodes[at].key < 0,
                       "the device map names '{}' twice; give each module one "
                       "device",
                       key);
      nodes[at].key = static_cast<std::int32_t>(i);
    }
  }
};

void merge_into(Trie::Node& into, std::int64_t count, const std::optional<MapDevice>& device,
                bool mixed) {
  if (count == 0) return;
  into.mixed = into.mixed || mixed || (into.device && device && *into.device != *device);
  if (!into.device) into.device = device;
  into.below += count;
}

}  // namespace

DeviceMap clean_device_map(DeviceMap map) {
  Trie trie(map);
  auto& nodes = trie.nodes;
  // Children come after their parent: a backward pass aggregates every subtree.
  for (auto id = static_cast<std::int32_t>(nodes.size()) - 1; id >= 0; --id) {
    Trie::Node& node = nodes[id];
    node.first = node.key >= 0 ? node.key : static_cast<std::int32_t>(map.size());
    for (std::int32_t c : node.children) {
      const Trie::Node& child = nodes[c];
      node.first = std::min(node.first, child.first);
      if (child.key >= 0) merge_into(node, 1, map[child.key].second, false);
      merge_into(node, child.below, child.device, child.mixed);
    }
  }
  // The root also counts its own key ("" is under the empty prefix).
  if (nodes[0].key >= 0) merge_into(nodes[0], 1, map[nodes[0].key].second, false);

  // From the root down: a node whose entries below all agree (two or more) becomes one entry.
  std::vector<std::pair<std::int32_t, std::pair<std::string, MapDevice>>>
      kept;  // (position, entry)
  std::vector<std::int32_t> stack = {0};
  while (!stack.empty()) {
    const Trie::Node& node = nodes[stack.back()];
    stack.pop_back();
    if (!node.mixed && node.below > 1) {
      kept.push_back({node.first, {std::string(node.name), *node.device}});
      continue;
    }
    if (node.key >= 0) kept.push_back({node.key, std::move(map[node.key])});
    for (auto it = node.children.rbegin(); it != node.children.rend(); ++it) stack.push_back(*it);
  }
  std::sort(kept.begin(), kept.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  DeviceMap result;
  result.reserve(kept.size());
  for (auto& [position, entry] : kept) result.push_back(std::move(entry));
  return result;
}

void check_device_map(nn::Module& model, const DeviceMap& map) {
  const PlanTree tree(model, {});
  const KeyIndex keys(map);
  std::vector<std::string> unknown;
  for (const auto& [key, device] : map) {
    if (!key.empty() && tree.find(key) < 0) unknown.push_back("'" + key + "'");
  }
  if (!unknown.empty()) {
    log_warning(
        fmt::format("The following device_map keys do not match any submodules in the "
                    "model: [{}]; they are ignored",
                    fmt::join(unknown, ", ")));
  }
  if (keys.contains("")) return;
  std::vector<std::string_view> missing;
  for (std::int32_t id = 0; id < tree.size(); ++id) {
    const detail::PlanNode& node = tree[id];
    const bool in_checkpoint =
        node.kind == NodeKind::Parameter || (node.kind == NodeKind::Buffer && node.persistent);
    if (in_checkpoint && !keys.find(node.name)) missing.push_back(node.name);
  }
  if (missing.empty()) return;
  constexpr std::size_t kShown = 20;
  const std::size_t shown = std::min(missing.size(), kShown);
  const std::string more =
      missing.size() > kShown ? fmt::format(" and {} more", missing.size() - kShown) : "";
  STRATA_THROW(
      InvalidArgument,
      "The device_map provided does not give any device for the following parameters: "
      "{}{} ({} tensors). Add an entry for each, or for a module that holds them (\"\" "
      "covers the whole model)",
      fmt::join(missing.begin(), missing.begin() + static_cast<std::ptrdiff_t>(shown), ", "), more,
      missing.size());
}

std::vector<std::vector<std::string>> check_tied_parameters_on_same_device(nn::Module& model,
                                                                           const DeviceMap& map) {
  const PlanTree tree(model, {});
  const KeyIndex keys(map);
  std::vector<std::vector<std::string>> split;
  for (const auto& members : tree.tie_groups()) {
    std::vector<std::string> where;
    bool differ = false;
    std::optional<MapDevice> first;
    for (std::int32_t id : members) {
      const std::optional<MapDevice> device = keys.find(tree[id].name);
      STRATA_CHECK_ARG(device.has_value(),
                       "tied parameter '{}' is not covered by the device map; add an entry for it "
                       "or a module holding it",
                       tree[id].name);
      differ = differ || (first && *first != *device);
      if (!first) first = device;
      where.push_back(fmt::format("'{}': {}", tree[id].name, *device));
    }
    if (!differ) continue;
    log_warning(
        fmt::format("Tied parameters are on different devices: {{{}}}. Put them on one "
                    "device in the device map, or plan it with device_map=\"auto\"",
                    fmt::join(where, ", ")));
    auto& names = split.emplace_back();
    for (std::int32_t id : members) names.push_back(tree[id].name);
  }
  return split;
}

}  // namespace strata::placement
