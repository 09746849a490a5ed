#pragma once
// A byte-budgeted cache of routed experts' weights on the execution device (issue 17,
// docs/moe-execution.md). Routing reuses experts over short spans of tokens; an expert that a
// mixture-of-experts block found here computes at GPU speed instead of being read on the cpu or
// streamed over PCIe again. The block asks the cache first, then chooses between the cpu and
// streaming for a miss (a streamed expert is kept when it fits).
//
// ExpertCacheIndex is the bookkeeping alone (which keys are resident, which one goes next), so
// the policies are testable without tensors; ExpertCache holds the device copies.
//
// Two rules keep the cache useful on the streams a model makes (session 10's 48-layer run: an LRU
// over the whole model served 0 of 12288 prefill lookups and filled itself with the last 18
// blocks' experts, docs/moe-execution.md):
//  - partitions: every block runs top_k experts per token, so every block gets the same share of
//    the budget, and a block evicts only its own experts. A decode step then finds about the
//    cache's share of every block's experts, so each block has experts on the GPU to launch
//    beside its cpu experts, instead of some blocks all on the GPU and the rest all on the cpu;
//  - no eviction for a scan: a prefill selects nearly every expert of every block, in block
//    order, which under LRU evicts each expert just before it is needed again. ExpertCache::load
//    with `evict` false keeps a copy only where there is free room, so the resident experts serve
//    the prefill at the cache's share.

#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "strata/core/device.h"
#include "strata/core/tensor.h"

namespace strata::placement {

// One expert of one block: (block index in module order, expert index).
using ExpertKey = std::uint64_t;
constexpr ExpertKey expert_key(std::int64_t block, std::int64_t expert) {
  return (static_cast<std::uint64_t>(block) << 32) | static_cast<std::uint32_t>(expert);
}

// Steps of up to this many tokens (decode, small batches) are "decode-sized" for a block of
// offloaded experts behind a GPU (moe-execution.md): its transfers use the block's pinned buffers
// (and, with STRATA_MOE_BESIDE=1, its cpu experts compute beside the thread that launches the
// device experts).
inline constexpr std::int64_t kDecodeSizedExpertTokens = 16;

enum class ExpertCachePolicy : std::uint8_t {
  Lru,  // evict the least recently used
  Lfu,  // evict the least frequently used (ties: least recent); counts halve every aging period
};

// "lru" or "lfu" (InvalidArgument naming both otherwise).
ExpertCachePolicy parse_expert_cache_policy(std::string_view text);
std::string_view expert_cache_policy_name(ExpertCachePolicy policy);

struct ExpertCacheStats {
  std::int64_t hits = 0;
  std::int64_t misses = 0;
  std::int64_t insertions = 0;
  std::int64_t evictions = 0;
  std::int64_t rejected = 0;  // entries larger than a partition's whole budget (never kept)
  std::int64_t bypassed = 0;  // copies not kept: a scan's miss with no free room (load's evict)
  std::int64_t bytes = 0;     // held now
  std::int64_t capacity_bytes = 0;
  std::int64_t entries = 0;
  // hits / (hits + misses), 0 before any lookup.
  double hit_rate() const {
    const std::int64_t lookups = hits + misses;
    return lookups == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(lookups);
  }
};

class ExpertCacheIndex {
 public:
  // `aging_period`: LFU halves every count after that many lookups (0: never). `partitions`:
  // the budget split evenly between partitions, a key's partition its block (expert_key) modulo
  // the count; a partition evicts only its own keys (1: one budget for everything).
  ExpertCacheIndex(std::int64_t capacity_bytes, ExpertCachePolicy policy,
                   std::int64_t aging_period = 4096, std::int64_t partitions = 1);

  // Whether `key` is resident; a hit counts as a use.
  bool lookup(ExpertKey key);
  // Makes `key` (of `bytes`) resident, evicting keys of its partition by the policy until it
  // fits; returns the evicted keys in eviction order, or nullopt when `bytes` exceeds the
  // partition's whole budget (nothing changes). Inserting a resident key is an internal error
  // (look it up first).
  std::optional<std::vector<ExpertKey>> insert(ExpertKey key, std::int64_t bytes);
  bool contains(ExpertKey key) const { return entries_.contains(key); }
  // Whether `bytes` more fit `key`'s partition without evicting anything.
  bool has_room(ExpertKey key, std::int64_t bytes) const;
  std::int64_t partitions() const { return static_cast<std::int64_t>(held_.size()); }
  std::int64_t partition_capacity() const { return partition_capacity_; }
  // Counts a copy its owner did not keep (ExpertCacheStats::bypassed).
  void count_bypass() { ++stats_.bypassed; }
  const ExpertCacheStats& stats() const { return stats_; }
  // Zeroes the counters (hits, misses, insertions, evictions, rejected), keeping the entries.
  void reset_counters();
  ExpertCachePolicy policy() const { return policy_; }

 private:
  struct Entry {
    std::int64_t bytes = 0;
    std::int64_t count = 0;     // uses while resident (LFU; halved by aging)
    std::int64_t last_use = 0;  // the clock at the last use
  };
  // Eviction order: the smallest (count, last_use) first; LRU keeps count at 0.
  using Rank = std::pair<std::int64_t, std::int64_t>;
  Rank rank(const Entry& e) const {
    return {policy_ == ExpertCachePolicy::Lfu ? e.count : 0, e.last_use};
  }
  std::size_t partition_of(ExpertKey key) const {
    return static_cast<std::size_t>((key >> 32) % held_.size());
  }
  void use(ExpertKey key, Entry& entry);
  void age();

  ExpertCachePolicy policy_;
  std::int64_t aging_period_;
  std::int64_t partition_capacity_;
  std::int64_t clock_ = 0;
  std::int64_t lookups_since_aging_ = 0;
  std::unordered_map<ExpertKey, Entry> entries_;
  // Per partition: the eviction order (ranks are unique: last_use is a strictly rising clock)
  // and the bytes held.
  std::vector<std::map<Rank, ExpertKey>> order_;
  std::vector<std::int64_t> held_;
  ExpertCacheStats stats_;
};

class ExpertCache {
 public:
  ExpertCache(Device device, std::int64_t capacity_bytes,
              ExpertCachePolicy policy = ExpertCachePolicy::Lru, std::int64_t partitions = 1);
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  Device device() const { return device_; }
  // The device copies of `key`'s tensors (a hit), or nullptr (a miss); counted either way.
  const std::vector<Tensor>* find(ExpertKey key);
  // Copies `stored` to the device (asynchronously where the source is pinned) and keeps the
  // copies when they fit the key's partition, evicting others of it (`evict` false: only into
  // free room; a scan's misses leave the resident experts alone); returns the copies either way.
  std::vector<Tensor> load(ExpertKey key, const std::vector<Tensor>& stored, bool evict = true);
  ExpertCacheStats stats() const { return index_.stats(); }
  void reset_counters() { index_.reset_counters(); }
  // Whether `bytes` more fit `key`'s partition without evicting anything (a cpu-computed miss is
  // then copied in too: filling free room costs one copy per expert, evicting for every miss
  // would thrash).
  bool has_room(ExpertKey key, std::int64_t bytes) const { return index_.has_room(key, bytes); }
  // A scan's miss the caller copied past the cache itself (no room: load would not keep it),
  // counted as load counts one (`bypassed`).
  void note_bypass() { index_.count_bypass(); }
  std::int64_t partitions() const { return index_.partitions(); }

 private:
  Device device_;
  ExpertCacheIndex index_;
  std::unordered_map<ExpertKey, std::vector<Tensor>> tensors_;
};

// The default expert cache budget (--expert-cache auto): what a GPU's budget leaves after its
// weights, less a margin of max(1 GiB, 5% of the budget) for activations and the runtime.
std::int64_t spare_for_expert_cache(std::int64_t gpu_budget, std::int64_t gpu_weights);

// A copy of `t` on `device` that owns its memory (a view of a mapped file becomes RAM on the cpu).
Tensor owned_copy(const Tensor& t, Device device);

}  // namespace strata::placement
