#include "planner.h"

#include <algorithm>

#include "strata/core/error.h"
#include "strata/core/logging.h"
#include "strata/placement/device_map_checks.h"

namespace strata::placement::detail {
namespace {

// The room an explain row reports. It is negative when what is kept for the largest remaining
// layer exceeds what is left of the budget (a cpu budget of 0, say); the row then says by how much
// instead of printing a negative size.
std::string room_text(std::int64_t available, std::int64_t reserved) {
  if (available >= 0) return format_bytes(available) + " available";
  return fmt::format("0 B available, {} short of the {} kept for the largest remaining layer",
                     format_bytes(-available), format_bytes(reserved));
}

}  // namespace

Planner::Planner(const PlanTree& tree, const MaxMemory& budgets, const InferOptions& options)
    : tree_(tree),
      options_(options),
      splittable_(splittable_nodes(tree, options.no_split_module_classes)),
      queue_(tree.size()),
      layers_(tree, splittable_),
      inside_count_(tree.tie_groups().size(), 0),
      bundle_mark_(static_cast<std::size_t>(tree.size()), 0),
      group_mark_(tree.tie_groups().size(), 0),
      search_mark_(static_cast<std::size_t>(tree.size()), 0),
      fallback_device_(static_cast<std::size_t>(tree.size()), 0) {
  for (const auto& [device, bytes] : budgets) {
    devices_.push_back(device);
    limits_.push_back(device.is_disk() ? std::nullopt : std::optional(bytes));
  }
  if (!budgets.contains(MapDevice::disk())) {
    devices_.push_back(MapDevice::disk());
    limits_.push_back(std::nullopt);
  }
  // The reference's main devices reserve room for the largest remaining layer: mps alone when
  // present, else the first GPU and the cpu.
  const bool has_mps = budgets.contains(MapDevice::mps());
  main_.assign(devices_.size(), 0);
  bool first_gpu = true;
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    const MapDevice& device = devices_[d];
    if (has_mps) {
      main_[d] = device.is_mps();
    } else if (device.is_gpu()) {
      main_[d] = first_gpu;
      first_gpu = false;
    } else {
      main_[d] = device.is_cpu();
    }
  }
  used_.assign(devices_.size(), 0);
  buffers_.assign(devices_.size(), 0);
  minimum_.assign(devices_.size(), std::nullopt);
  plan_.max_memory = budgets;
}

DevicePlan Planner::run() {
  std::vector<std::int32_t> root_tensors;
  for (std::int32_t id : tree_.top_level()) {
    enqueue_before(-1, id);
    if (!tree_.is_module(id)) root_tensors.push_back(id);
  }
  // The first computation also counts the root's direct tensors as layers.
  layers_.recompute(root_tensors);
  while (!queue_.empty()) {
    const std::int32_t entry = queue_.front();
    dequeue(entry);
    treat(entry);
  }
  finish();
  return std::move(plan_);
}

void Planner::enqueue_before(std::int32_t position, std::int32_t id) {
  queue_.insert_before(position, id);
  layers_.add(id);
}

void Planner::dequeue(std::int32_t id) {
  queue_.erase(id);
  layers_.remove(id);
}

void Planner::split_in_place(std::int32_t id) {
  std::vector<std::int32_t> parts;
  tree_.append_parts(id, parts);
  for (std::int32_t part : parts) enqueue_before(id, part);
  dequeue(id);
}

void Planner::treat(std::int32_t entry) {
  current_entry_ = entry;
  const PlanNode& node = tree_[entry];
  if (options_.verbose) trace(fmt::format("Treating module {}.", node.name));
  layers_.consume(entry);
  if (refused_entry_ != entry) {
    refused_entry_ = entry;
    refused_note_.clear();
  }
  const Ties ties = ties_of(entry, &Planner::queued_owner);
  if (options_.verbose && !ties.groups.empty()) {
    std::string groups;
    for (std::int32_t g : ties.groups) {
      groups += (groups.empty() ? "" : ", ") + names(tree_.tie_groups()[g]);
    }
    trace(fmt::format("  Found the relevant tied param groups [{}]", groups));
    trace(
        fmt::format("  So those parameters need to be taken into account {}", names(ties.params)));
  }

  const std::size_t d = current_;
  const MapDevice& device = devices_[d];
  std::optional<std::int64_t> max_size = limits_[d];
  std::int64_t reserved = 0;
  if (main_[d] && max_size) {
    reserved = layers_.size();
    *max_size -= reserved;
  }
  const std::int64_t used = used_[d];
  if (!max_size || used + ties.size <= *max_size) {
    place(entry, ties, max_size ? std::optional(*max_size - used) : std::nullopt, reserved);
    return;
  }
  const std::int64_t available = *max_size - used;
  // The entry fits alone but not with its tied entries: split one of those.
  if (!ties.params.empty() && used + node.size <= *max_size) {
    if (options_.verbose) {
      std::vector<std::int32_t> tied = ties.owners;
      tied.insert(tied.end(), ties.extra.begin(), ties.extra.end());
      trace(
          fmt::format("Not enough space on {} to put {} and {} (space available {}, needed size "
                      "{}).",
                      device, node.name, names(tied), available, ties.size));
    }
    if (try_split_tied(entry, ties)) return;
    if (options_.verbose) trace("None of the tied module can be split, going to the next device.");
  }
  // The entry does not fit (the reference's ">=": on equality it splits too).
  if (used + node.size >= *max_size) {
    if (options_.verbose) {
      trace(fmt::format("Not enough space on {} to put {} (space available {}, module size {}).",
                        device, node.name, available, node.size));
    }
    if (splittable_[entry]) {
      if (options_.verbose) trace(fmt::format("Splitting {}.", node.name));
      split_note_[entry] = fmt::format("it needs {} and {} has {}", format_bytes(node.size), device,
                                       room_text(available, reserved));
      std::vector<std::int32_t> parts;
      tree_.append_parts(entry, parts);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) enqueue_before(queue_.front(), *it);
      layers_.recompute();
      return;
    }
    if (options_.verbose) trace("This module cannot be split, going to the next device.");
  }
  // Nothing placed here yet: look further down the queue for something that fits.
  if (used == 0 && options_.fallback_allocation && !device.is_disk()) {
    const std::int64_t limit = *limits_[d] - std::max(layers_.size(), ties.size);
    const std::int32_t found = fallback_allocate(limit - used);
    if (found >= 0) {
      enqueue_before(queue_.front(), entry);
      enqueue_before(queue_.front(), found);
      return;
    }
  }
  // Next device; the reserve stays booked on this one.
  if (used == 0) minimum_[d] = ties.size + reserved;
  used_[d] += reserved;
  refused_note_ += fmt::format("{}{} (needs {}, {})", refused_note_.empty() ? "" : ", ", device,
                               format_bytes(ties.size), room_text(available, reserved));
  ++current_;
  enqueue_before(queue_.front(), entry);
}

bool Planner::try_split_tied(std::int32_t entry, const Ties& ties) {
  std::vector<std::int32_t> tied = ties.owners;
  tied.insert(tied.end(), ties.extra.begin(), ties.extra.end());
  for (std::int32_t owner : tied) {
    // An owner listed twice was not split the first time (the loop stops at the first split).
    if (!splittable_[owner] || !queue_.contains(owner)) continue;
    if (options_.verbose) trace(fmt::format("Splitting {}.", tree_[owner].name));
    split_note_[owner] = fmt::format("it is tied to {}, and both did not fit on {}",
                                     tree_[entry].name, devices_[current_]);
    split_in_place(owner);
    enqueue_before(queue_.front(), entry);
    layers_.recompute();
    return true;
  }
  return false;
}

void Planner::place(std::int32_t entry, const Ties& ties, std::optional<std::int64_t> available,
                    std::int64_t reserved) {
  const std::size_t d = current_;
  const MapDevice& device = devices_[d];
  std::vector<std::int32_t> tied = ties.owners;
  tied.insert(tied.end(), ties.extra.begin(), ties.extra.end());
  if (options_.verbose) {
    std::string line = "Putting " + tree_[entry].name;
    line += tied.empty() ? fmt::format(" (size={})", tree_[entry].size) : " and " + names(tied);
    if (available) line += fmt::format(" (available={})", *available);
    trace(line + fmt::format(" on {}.", device));
  }
  used_[d] += ties.size;

  std::string reason;
  if (refused_entry_ == entry && !refused_note_.empty()) {
    reason = "does not fit on " + refused_note_ + "; ";
  }
  if (!available) {
    reason += "disk takes what fits nowhere else";
  } else {
    reason +=
        fmt::format("fits: {} of {} available", format_bytes(ties.size), format_bytes(*available));
    if (reserved > 0) {
      reason += fmt::format(" ({} kept for the largest remaining layer)", format_bytes(reserved));
    }
  }
  if (!tied.empty()) reason += ", with the entries holding its tied parameters";
  if (fallback_device_[entry] == current_ + 1) reason += "; pulled ahead by fallback_allocation";
  const std::int32_t parent = tree_[entry].parent;
  if (auto it = split_note_.find(parent); parent >= 0 && it != split_note_.end()) {
    reason += fmt::format("; part of '{}', split because {}", tree_[parent].name, it->second);
  }
  plan_.placements.emplace_back(tree_[entry].name, device);
  plan_.explain.push_back({tree_[entry].name, ties.size, device, std::move(reason)});

  for (std::int32_t owner : tied) {
    if (!queue_.contains(owner)) continue;  // listed twice
    dequeue(owner);
    plan_.placements.emplace_back(tree_[owner].name, device);
    plan_.explain.push_back({tree_[owner].name, tree_[owner].size, device,
                             fmt::format("holds parameters tied to '{}'", tree_[entry].name)});
  }
  // Buffers of offloaded modules stay on the execution GPU at run time unless offload_buffers.
  if (!options_.offload_buffers) {
    if (tree_.is_module(entry)) {
      buffers_[d] += tree_[entry].buffer_size;
    } else if (tree_[entry].kind == NodeKind::Buffer) {
      buffers_[d] += tree_[entry].size;
    }
  }
}

void Planner::finish() {
  plan_.device_map = options_.clean_result ? clean_device_map(plan_.placements) : plan_.placements;
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    if (used_[d] > 0) plan_.used.set(devices_[d], used_[d]);
  }
  std::int64_t offloaded_buffers = 0;
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    if (devices_[d].is_cpu() || devices_[d].is_disk()) offloaded_buffers += buffers_[d];
  }
  if (offloaded_buffers > 0 && !options_.offload_buffers) {
    bool has_gpu = false, fits = false;
    for (std::size_t d = 0; d < devices_.size(); ++d) {
      if (devices_[d].is_cpu() || devices_[d].is_disk()) continue;
      has_gpu = true;
      fits = fits || *limits_[d] >= offloaded_buffers + used_[d];
    }
    if (has_gpu && !fits) {
      std::string warning = fmt::format(
          "Current model requires {} bytes of buffer for offloaded layers, which seems does not "
          "fit any GPU's remaining memory. If you are experiencing a OOM later, please consider "
          "using offload_buffers=True.",
          offloaded_buffers);
      log_warning(warning);
      plan_.warnings.push_back(std::move(warning));
    }
  }
  std::string required;
  for (std::size_t d = 0; d < devices_.size(); ++d) {
    if (!minimum_[d]) continue;
    plan_.minimum_memory.set(devices_[d], *minimum_[d]);
    required += fmt::format("\n  - {}: {} bytes required", devices_[d], *minimum_[d]);
  }
  if (options_.verbose && !required.empty()) {
    log_message(LogLevel::Info,
                "Based on the current allocation process, no modules could be assigned to the "
                "following devices due to insufficient memory:" +
                    required +
                    "\nThese minimum requirements are specific to this allocation attempt and may "
                    "vary. Consider increasing the available memory for these devices to at least "
                    "the specified minimum, or adjusting the model config.");
  }
}

void Planner::trace(std::string line) {
  log_message(LogLevel::Info, line);
  plan_.trace.push_back(std::move(line));
}

std::string Planner::names(const std::vector<std::int32_t>& ids) const {
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    out += fmt::format("{}'{}'", i ? ", " : "", tree_[ids[i]].name);
  }
  return out + "]";
}

}  // namespace strata::placement::detail
