#pragma once
// infer_auto_device_map's main loop (accelerate-semantics.md §1.8), over a PlanTree. The queue is
// the reference's modules_to_treat; each step takes its front entry and either places it (with
// the entries holding parameters tied to it), splits it (or one of those entries), pulls a later
// entry forward (fallback_allocation), or moves on to the next device.

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "layer_tracker.h"
#include "plan_queue.h"
#include "plan_tree.h"
#include "strata/placement/auto_device_map.h"

namespace strata::placement::detail {

class Planner {
 public:
  // `budgets` are in planning order; disk is appended when absent.
  Planner(const PlanTree& tree, const MaxMemory& budgets, const InferOptions& options);
  DevicePlan run();

 private:
  // What placing an entry drags along: the entries holding the parameters tied to it.
  struct Ties {
    std::vector<std::int32_t> groups;  // tie groups with members inside and outside the entry
    std::vector<std::int32_t> params;  // their members outside the entry (tied_params)
    std::vector<std::int32_t> owners;  // the queue entry holding each of them (tied modules)
    // Entries tied to the owners through other groups; the reference forgets them and later
    // crashes (B1) or splits the group across devices.
    std::vector<std::int32_t> extra;
    std::int64_t size = 0;  // bytes of the entry and everything it drags along
  };
  // Returns the entry holding tensor `id`, or -1.
  using Lookup = std::int32_t (Planner::*)(std::int32_t) const;

  Ties ties_of(std::int32_t entry, Lookup lookup);
  std::int32_t queued_owner(std::int32_t id) const;
  std::int32_t searched_owner(std::int32_t id) const;
  bool in_bundle(std::int32_t id) const;

  // Queue edits that keep the layer tracker in step.
  void enqueue_before(std::int32_t position, std::int32_t id);
  void dequeue(std::int32_t id);
  // Replaces queued `id` by its parts, where it stands.
  void split_in_place(std::int32_t id);

  // One step of the main loop for the entry just taken from the queue.
  void treat(std::int32_t entry);
  bool try_split_tied(std::int32_t entry, const Ties& ties);
  std::int32_t fallback_allocate(std::int64_t size_limit);
  // Case A: `available` is none on disk; `reserved` was kept for the largest remaining layer.
  void place(std::int32_t entry, const Ties& ties, std::optional<std::int64_t> available,
             std::int64_t reserved);
  void finish();

  void trace(std::string line);
  std::string names(const std::vector<std::int32_t>& ids) const;

  const PlanTree& tree_;
  const InferOptions& options_;
  std::vector<std::uint8_t> splittable_;
  PlanQueue queue_;
  LayerTracker layers_;

  std::vector<MapDevice> devices_;
  std::vector<std::optional<std::int64_t>> limits_;  // none for disk
  std::vector<std::uint8_t> main_;                   // reserves room for the largest layer
  std::vector<std::int64_t> used_;
  std::vector<std::int64_t> buffers_;  // buffers of placed modules, kept on the GPU at run time
  std::vector<std::optional<std::int64_t>> minimum_;
  std::size_t current_ = 0;

  std::int32_t current_entry_ = -1;         // the entry being treated (outside the queue)
  std::vector<std::int32_t> inside_count_;  // per tie group, scratch for ties_of
  std::vector<std::uint32_t> bundle_mark_, group_mark_, search_mark_;
  std::uint32_t bundle_epoch_ = 0, search_epoch_ = 0;
  std::vector<std::size_t> fallback_device_;  // device + 1 a node was pulled forward on

  // Explain: why the entry at the front was refused by earlier devices, and why modules split.
  std::int32_t refused_entry_ = -1;
  std::string refused_note_;
  std::unordered_map<std::int32_t, std::string> split_note_;

  DevicePlan plan_;
};

}  // namespace strata::placement::detail
