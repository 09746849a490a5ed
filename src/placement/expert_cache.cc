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
                                   std::int64_t aging_period)
    : policy_(policy), aging_period_(aging_period) {
  STRATA_CHECK_ARG(capacity_bytes >= 0, "expert cache: capacity {} bytes must not be negative",
                   capacity_bytes);
  STRATA_CHECK_ARG(aging_period >= 0, "expert cache: aging period {} must not be negative",
                   aging_period);
  stats_.capacity_bytes = capacity_bytes;
}

void ExpertCacheIndex::use(ExpertKey key, Entry& entry) {
  order_.erase(rank(entry));
  ++entry.count;
  entry.last_use = ++clock_;
  order_.emplace(rank(entry), key);
}

void ExpertCacheIndex::age() {
  // Halving keeps the order of old counts but lets a recent burst overtake an old favourite.
  order_.clear();
  for (auto& [key, entry] : entries_) {
    entry.count /= 2;
    order_.emplace(rank(entry), key);
  }
}

void ExpertCacheIndex::reset_counters() {
  stats_.hits = stats_.misses = stats_.insertions = stats_.evictions = stats_.rejected = 0;
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
  if (bytes > stats_.capacity_bytes) {
    ++stats_.rejected;
    return std::nullopt;
  }
  std::vector<ExpertKey> evicted;
  while (stats_.bytes + bytes > stats_.capacity_bytes) {
    const auto victim = order_.begin();
    STRATA_ASSERT(victim != order_.end(), "expert cache: {} bytes held with no entry",
                  stats_.bytes);
    const ExpertKey gone = victim->second;
    stats_.bytes -= entries_.at(gone).bytes;
    entries_.erase(gone);
    order_.erase(victim);
    evicted.push_back(gone);
    ++stats_.evictions;
  }
  Entry& entry = entries_[key];
  entry.bytes = bytes;
  entry.count = 1;
  entry.last_use = ++clock_;
  order_.emplace(rank(entry), key);
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

ExpertCache::ExpertCache(Device device, std::int64_t capacity_bytes, ExpertCachePolicy policy)
    : device_(device), index_(capacity_bytes, policy) {}

const std::vector<Tensor>* ExpertCache::find(ExpertKey key) {
  if (!index_.lookup(key)) return nullptr;
  return &tensors_.at(key);
}

std::vector<Tensor> ExpertCache::load(ExpertKey key, const std::vector<Tensor>& stored) {
  std::vector<Tensor> copies;
  std::int64_t bytes = 0;
  for (const Tensor& t : stored) {
    copies.push_back(owned_copy(t, device_));
    bytes += static_cast<std::int64_t>(t.nbytes());
  }
  if (index_.contains(key)) return copies;  // loaded by a caller that skipped find()
  if (const auto evicted = index_.insert(key, bytes)) {
    for (const ExpertKey gone : *evicted) tensors_.erase(gone);
    tensors_[key] = copies;
  }
  return copies;
}

}  // namespace strata::placement
