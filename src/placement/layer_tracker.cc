#include "layer_tracker.h"

#include <algorithm>

namespace strata::placement::detail {

LayerTracker::LayerTracker(const PlanTree& tree, const std::vector<std::uint8_t>& splittable)
    : tree_(tree),
      best_(static_cast<std::size_t>(tree.size())),
      snapshot_(static_cast<std::size_t>(tree.size()), 0),
      consumed_(static_cast<std::size_t>(tree.size()), 0) {
  // Children have larger ids than their parent: one backward pass settles every subtree.
  for (std::int32_t id = tree.size() - 1; id >= 0; --id) {
    if (!splittable[id]) {
      best_[id] = {tree[id].size, 1};
      continue;
    }
    Best best;
    for (std::int32_t child : tree.children(id)) {
      if (best_[child].size > best.size) {
        best = best_[child];
      } else if (best_[child].size == best.size) {
        best.count += best_[child].count;
      }
    }
    best_[id] = best;
  }
}

void LayerTracker::add(std::int32_t id) {
  if (tree_.is_module(id)) queued_.emplace(best_[id].size, id);
}

void LayerTracker::remove(std::int32_t id) {
  if (tree_.is_module(id)) queued_.erase({best_[id].size, id});
}

void LayerTracker::recompute(std::span<const std::int32_t> tensors) {
  ++epoch_;
  size_ = queued_.empty() ? 0 : queued_.rbegin()->first;
  for (std::int32_t id : tensors) size_ = std::max(size_, tree_[id].size);
  remaining_ = 0;
  for (auto it = queued_.rbegin(); it != queued_.rend() && it->first == size_; ++it) {
    snapshot_[it->second] = epoch_;
    remaining_ += best_[it->second].count;
  }
  for (std::int32_t id : tensors) {
    if (tree_[id].size != size_) continue;
    snapshot_[id] = epoch_;
    ++remaining_;
  }
}

void LayerTracker::consume(std::int32_t id) {
  if (remaining_ > 0) {
    // The list entry holding `id` is `id` or an ancestor (the queue only gets finer between
    // recomputations); nothing to drop if `id` or an ancestor was already taken.
    for (std::int32_t a = id; a >= 0 && consumed_[a] != epoch_; a = tree_[a].parent) {
      if (snapshot_[a] != epoch_) continue;
      // A tensor is a layer only as a list entry itself (the root's direct tensors).
      const bool holds = tree_.is_module(id) ? best_[id].size == size_ : a == id;
      if (holds) remaining_ -= best_[id].count;
      consumed_[id] = epoch_;
      break;
    }
  }
  if (remaining_ == 0) recompute();
}

}  // namespace strata::placement::detail
