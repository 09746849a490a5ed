// The expert cache (strata/placement/expert_cache.h): an ordered index of (count, last use) per
// resident expert, and the device copies it keeps.

#include "strata/placement/expert_cache.h"

#include <algorithm>

#include "strata/core/error.h"

namespace strata::placement {

ExpertCachePolicy parse_expert_cache_policy(std::string_view text) {
  if (text == "lru") return ExpertCachePolicy::Lru;
  if (text == "lfu") return ExpertCachePolicy::Lfu;
  STRATA_THROW(InvalidArgument,
               "expert cache policy '{}': expected lru (evict the least recently used expert) or "
               "lfu (the least frequently used, with aging)",
               text);
}

std::string_view expert_cache_policy_name(ExpertCachePolicy policy) {
  return policy == ExpertCachePolicy::Lfu ? "lfu" : "lru";
}

// ---- index -----------------------------------------------------------------------------------

ExpertCacheIndex::ExpertCacheIndex(std::int64_t capacity_bytes, ExpertCachePolicy policy,
                                   std::int64_t aging_period, std::int64_t partitions)
    : policy_(policy), aging_period_(aging_period) {
  STRATA_CHECK_ARG(capacity_bytes >= 0, "expert cache: capacity {} bytes must not be negative",
                   capacity_bytes);
  STRATA_CHECK_ARG(aging_period >= 0, "expert cache: aging period {} must not be negative",
                   aging_period);
  STRATA_CHECK_ARG(partitions >= 1, "expert cache: {} partitions; expected at least one",
                   partitions);
  stats_.capacity_bytes = capacity_bytes;
  partition_capacity_ = capacity_bytes / partitions;
  order_.resize(static_cast<std::size_t>(partitions));
  held_.assign(static_cast<std::size_t>(partitions), 0);
}

void ExpertCacheIndex::use(ExpertKey key, Entry& entry) {
  auto& order = order_[partition_of(key)];
  order.erase(rank(entry));
  ++entry.count;
  entry.last_use = ++clock_;
  order.emplace(rank(entry), key);
}

void ExpertCacheIndex::age() {
  // Halving keeps the order of old counts but lets a recent burst overtake an old favourite.
  for (auto& order : order_) order.clear();
  for (auto& [key, entry] : entries_) {
    entry.count /= 2;
    order_[partition_of(key)].emplace(rank(entry), key);
  }
}

void ExpertCacheIndex::reset_counters() {
  stats_.hits = stats_.misses = stats_.insertions = stats_.evictions = stats_.rejected =
      stats_.bypassed = 0;
}

bool ExpertCacheIndex::has_room(ExpertKey key, std::int64_t bytes) const {
  return held_[partition_of(key)] + bytes <= partition_capacity_;
}

bool ExpertCacheIndex::lookup(ExpertKey key) {
  if (policy_ == ExpertCachePolicy::Lfu && aging_period_ > 0 &&
      ++lookups_since_aging_ >= aging_period_) {
    lookups_since_aging_ = 0;
    age();
  }
  const auto it = entries_.find(key);
  if (it == entries_.end()) {
    ++stats_.misses;
    return false;
  }
  ++stats_.hits;
  use(key, it->second);
  return true;
}

std::optional<std::vector<ExpertKey>> ExpertCacheIndex::insert(ExpertKey key, std::int64_t bytes) {
  STRATA_ASSERT(!entries_.contains(key), "expert cache: key {} inserted twice", key);
  if (bytes > partition_capacity_) {
    ++stats_.rejected;
    return std::nullopt;
  }
  const std::size_t p = partition_of(key);
  auto& order = order_[p];
  std::vector<ExpertKey> evicted;
  while (held_[p] + bytes > partition_capacity_) {
    const auto victim = order.begin();
    STRATA_ASSERT(victim != order.end(),
                  "expert cache: {} bytes held in partition {} with no entry", held_[p], p);
    const ExpertKey gone = victim->second;
    const std::int64_t gone_bytes = entries_.at(gone).bytes;
    held_[p] -= gone_bytes;
    stats_.bytes -= gone_bytes;
    entries_.erase(gone);
    order.erase(victim);
    evicted.push_back(gone);
    ++stats_.evictions;
  }
  Entry& entry = entries_[key];
  entry.bytes = bytes;
  entry.count = 1;
  entry.last_use = ++clock_;
  order.emplace(rank(entry), key);
  held_[p] += bytes;
  stats_.bytes += bytes;
  ++stats_.insertions;
  stats_.entries = static_cast<std::int64_t>(entries_.size());
  return evicted;
}

std::int64_t spare_for_expert_cache(std::int64_t gpu_budget, std::int64_t gpu_weights) {
  const std::int64_t margin = std::max<std::int64_t>(std::int64_t{1} << 30, gpu_budget / 20);
  return std::max<std::int64_t>(gpu_budget - gpu_weights - margin, 0);
}

// ---- cache -----------------------------------------------------------------------------------

Tensor owned_copy(const Tensor& t, Device device) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  out.copy_(t, /*non_blocking=*/true);
  return out;
}

ExpertCache::ExpertCache(Device device, std::int64_t capacity_bytes, ExpertCachePolicy policy,
                         std::int64_t partitions)
    : device_(device), index_(capacity_bytes, policy, 4096, partitions) {}

const std::vector<Tensor>* ExpertCache::find(ExpertKey key) {
  if (!index_.lookup(key)) return nullptr;
  return &tensors_.at(key);
}

std::vector<Tensor> ExpertCache::load(ExpertKey key, const std::vector<Tensor>& stored,
                                      bool evict) {
  std::vector<Tensor> copies;
  std::int64_t bytes = 0;
  for (const Tensor& t : stored) {
    copies.push_back(owned_copy(t, device_));
    bytes += static_cast<std::int64_t>(t.nbytes());
  }
  if (index_.contains(key)) return copies;  // loaded by a caller that skipped find()
  if (!evict && !index_.has_room(key, bytes)) {
    index_.count_bypass();
    return copies;
  }
  if (const auto evicted = index_.insert(key, bytes)) {
    for (const ExpertKey gone : *evicted) tensors_.erase(gone);
    tensors_[key] = copies;
  }
  return copies;
}

}  // namespace strata::placement
