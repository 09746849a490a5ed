// Tied parameters and fallback allocation for the planner (accelerate-semantics.md §1.8.2 steps
// 4-7 and §1.8.5), with the reference's crashes (B1, B3) and its substring test (B2) fixed.

#include <algorithm>

#include "planner.h"
#include "strata/core/error.h"

namespace strata::placement::detail {

std::int32_t Planner::queued_owner(std::int32_t id) const {
  // The queue entries are disjoint subtrees, so at most one holds `id`.
  for (std::int32_t a = id; a >= 0; a = tree_[a].parent) {
    if (queue_.contains(a)) return a;
  }
  return -1;
}

std::int32_t Planner::searched_owner(std::int32_t id) const {
  for (std::int32_t a = id; a >= 0; a = tree_[a].parent) {
    if (search_mark_[a] == search_epoch_) return a;
  }
  // The reference looks in its search list only and raises IndexError when the holder was
  // already searched or is the entry being treated (B3); the queue has the real holder.
  if (const std::int32_t owner = queued_owner(id); owner >= 0) return owner;
  return current_entry_ >= 0 && tree_.contains(current_entry_, id) ? current_entry_ : -1;
}

bool Planner::in_bundle(std::int32_t id) const {
  for (std::int32_t a = id; a >= 0; a = tree_[a].parent) {
    if (bundle_mark_[a] == bundle_epoch_) return true;
  }
  return false;
}

Planner::Ties Planner::ties_of(std::int32_t entry, Lookup lookup) {
  Ties ties;
  ties.size = tree_[entry].size;
  const auto inside = tree_.tied_inside(entry);
  if (inside.empty()) return ties;
  const auto& groups = tree_.tie_groups();
  // Groups with members both inside and outside the entry (a subtree test, where the reference
  // tests substrings and so ties "0" to "10.weight": B2).
  std::vector<std::int32_t> touched;
  for (std::int32_t member : inside) {
    const std::int32_t g = tree_[member].tie_group;
    if (inside_count_[g]++ == 0) touched.push_back(g);
  }
  std::sort(touched.begin(), touched.end());
  for (std::int32_t g : touched) {
    if (static_cast<std::size_t>(inside_count_[g]) < groups[g].size()) ties.groups.push_back(g);
    inside_count_[g] = 0;
  }
  for (std::int32_t g : ties.groups) {
    for (std::int32_t member : groups[g]) {
      if (!tree_.contains(entry, member)) ties.params.push_back(member);
    }
  }
  if (ties.params.empty()) return ties;

  ++bundle_epoch_;
  bundle_mark_[entry] = bundle_epoch_;
  for (std::int32_t g : ties.groups) group_mark_[g] = bundle_epoch_;
  std::vector<std::int32_t> pending;
  // Each tied parameter adds its holder's size, so a holder of two counts twice, as in the
  // reference (B19: conservative). The reference also subtracts the parameter's own size, which
  // undercounts when the entry holds a duplicate and the holder the counted copy; not here.
  for (std::int32_t param : ties.params) {
    const std::int32_t owner = (this->*lookup)(param);
    STRATA_ASSERT(owner >= 0, "no queued module holds '{}', tied to '{}'", tree_[param].name,
                  tree_[entry].name);
    ties.owners.push_back(owner);
    ties.size += tree_[owner].size;
    if (bundle_mark_[owner] != bundle_epoch_) {
      bundle_mark_[owner] = bundle_epoch_;
      pending.push_back(owner);
    }
  }
  // Holders tied to the holders through other groups go along too, so that no group ends up on
  // two devices.
  for (std::size_t next = 0; next < pending.size(); ++next) {
    for (std::int32_t member : tree_.tied_inside(pending[next])) {
      const std::int32_t g = tree_[member].tie_group;
      if (group_mark_[g] == bundle_epoch_) continue;
      group_mark_[g] = bundle_epoch_;
      for (std::int32_t other : groups[g]) {
        if (in_bundle(other)) continue;
        const std::int32_t owner = (this->*lookup)(other);
        STRATA_ASSERT(owner >= 0, "no queued module holds '{}'", tree_[other].name);
        bundle_mark_[owner] = bundle_epoch_;
        ties.extra.push_back(owner);
        ties.size += tree_[owner].size;
        pending.push_back(owner);
      }
    }
  }
  return ties;
}

std::int32_t Planner::fallback_allocate(std::int64_t size_limit) {
  if (size_limit < 0) return -1;
  // The reference's search: a copy of the queue, front first; an entry too large is replaced by
  // its parts when it can be split.
  ++search_epoch_;
  std::vector<std::int32_t> search;
  for (std::int32_t id = queue_.front(); id >= 0; id = queue_.next(id)) {
    search.push_back(id);
    search_mark_[id] = search_epoch_;
  }
  std::reverse(search.begin(), search.end());
  std::int32_t found = -1;
  std::vector<std::int32_t> parts;
  while (!search.empty() && found < 0) {
    const std::int32_t candidate = search.back();
    search.pop_back();
    search_mark_[candidate] = 0;
    if (ties_of(candidate, &Planner::searched_owner).size <= size_limit) {
      found = candidate;
    } else if (splittable_[candidate]) {
      parts.clear();
      tree_.append_parts(candidate, parts);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        search.push_back(*it);
        search_mark_[*it] = search_epoch_;
      }
    }
  }
  // Pulling the same entry forward twice on one device means it was refused after the first
  // pull; the reference may cycle forever there. Stop looking instead.
  if (found < 0 || fallback_device_[found] == current_ + 1) return -1;
  fallback_device_[found] = current_ + 1;
  // Out of the queue: split its queued ancestor down to it.
  std::vector<std::int32_t> path;
  std::int32_t holder = found;
  while (!queue_.contains(holder)) {
    path.push_back(holder);
    holder = tree_[holder].parent;
  }
  if (holder != found) {
    split_in_place(holder);
    for (std::size_t i = path.size() - 1; i >= 1; --i) split_in_place(path[i]);
  }
  dequeue(found);
  return found;
}

}  // namespace strata::placement::detail
