#pragma once
// The reserve the reference keeps on its main devices: the size of the largest "layer" still to be
// placed (get_max_layer_size over the queue) and the names of the layers of that size. The
// reference rebuilds both from the whole queue after every split and filters the name list on
// every step (quadratic); here each queued module carries its best layer (size and how many
// layers have it, precomputed bottom-up), the queue's modules sit in an ordered set, and the name
// list is a count per snapshot. Same values, O(log n + depth) per step.

#include <cstdint>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "plan_tree.h"

namespace strata::placement::detail {

class LayerTracker {
 public:
  LayerTracker(const PlanTree& tree, const std::vector<std::uint8_t>& splittable);

  // Queue membership (only modules are tracked, as the reference filters its list).
  void add(std::int32_t id);
  void remove(std::int32_t id);

  // get_max_layer_size over the queued modules, plus `tensors` counted as layers (the first
  // computation includes the root's direct tensors).
  void recompute(std::span<const std::int32_t> tensors = {});
  // `id` was taken from the queue: its layers leave the name list; an empty list is recomputed.
  void consume(std::int32_t id);

  std::int64_t size() const { return size_; }

 private:
  struct Best {
    std::int64_t size = 0;
    std::int64_t count = 0;  // layers of that size
  };
  const PlanTree& tree_;
  std::vector<Best> best_;
  std::set<std::pair<std::int64_t, std::int32_t>> queued_;  // (best size, module)
  std::vector<std::uint32_t> snapshot_;  // == epoch_: holds names of the current list
  std::vector<std::uint32_t> consumed_;  // == epoch_: already taken since the list was made
  std::uint32_t epoch_ = 0;
  std::int64_t size_ = 0;
  std::int64_t remaining_ = 0;  // names left in the list
};

}  // namespace strata::placement::detail
