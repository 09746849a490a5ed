// The expert cache's policies against naive models written independently (a recency list for
// LRU; counts with a linear scan for LFU with aging), on random routing traces, and the device
// copies it keeps (cpu device: the mechanism is device-generic).

#include "strata/placement/expert_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "ops/throws_naming.h"

namespace strata::testing {
namespace {

using placement::ExpertCacheIndex;
using placement::ExpertCachePolicy;
using placement::ExpertKey;

// Naive caches: a vector of entries, linear scans, no cleverness.
struct NaiveEntry {
  ExpertKey key;
  std::int64_t bytes, count, last;
};

class NaiveCache {
 public:
  NaiveCache(std::int64_t capacity, bool lfu, std::int64_t aging)
      : capacity_(capacity), lfu_(lfu), aging_(aging) {}

  bool lookup(ExpertKey key) {
    if (lfu_ && aging_ > 0 && ++since_ >= aging_) {
      since_ = 0;
      for (NaiveEntry& e : entries_) e.count /= 2;
    }
    for (NaiveEntry& e : entries_) {
      if (e.key == key) {
        ++e.count;
        e.last = ++clock_;
        return true;
      }
    }
    return false;
  }
  // Evicted keys, or {-1} when it does not fit at all.
  std::vector<ExpertKey> insert(ExpertKey key, std::int64_t bytes) {
    if (bytes > capacity_) return {~ExpertKey{0}};
    std::vector<ExpertKey> evicted;
    while (held() + bytes > capacity_) {
      auto victim = entries_.begin();
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        const std::int64_t c = lfu_ ? it->count : 0, vc = lfu_ ? victim->count : 0;
        if (c < vc || (c == vc && it->last < victim->last)) victim = it;
      }
      evicted.push_back(victim->key);
      entries_.erase(victim);
    }
    entries_.push_back({key, bytes, 1, ++clock_});
    return evicted;
  }

 private:
  std::int64_t held() const {
    std::int64_t total = 0;
    for (const NaiveEntry& e : entries_) total += e.bytes;
    return total;
  }
  std::int64_t capacity_;
  bool lfu_;
  std::int64_t aging_, since_ = 0, clock_ = 0;
  std::vector<NaiveEntry> entries_;
};

// The index's answer to an insert against the naive cache's ({-1}: it did not fit at all).
::testing::AssertionResult same_insert(const std::optional<std::vector<ExpertKey>>& evicted,
                                       const std::vector<ExpertKey>& expected) {
  const std::vector<ExpertKey> got = evicted.value_or(std::vector<ExpertKey>{~ExpertKey{0}});
  if (got == expected) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "evicted " << ::testing::PrintToString(got)
                                       << ", expected " << ::testing::PrintToString(expected);
}

// A routing-like trace: per step, `k` distinct experts of `experts`, skewed towards a few (as
// trained routers are), in `blocks` blocks; sizes differ per block.
void run_trace(ExpertCachePolicy policy, std::int64_t capacity, std::int64_t aging,
               std::uint32_t seed) {
  ExpertCacheIndex index(capacity, policy, aging);
  NaiveCache naive(capacity, policy == ExpertCachePolicy::Lfu, aging);
  std::mt19937 rng(seed);
  std::geometric_distribution<int> skew(0.15);
  std::int64_t hits = 0, lookups = 0;
  for (int step = 0; step < 400; ++step) {
    for (std::int64_t block = 0; block < 3; ++block) {
      std::vector<int> chosen;
      while (chosen.size() < 4) {
        const int e = skew(rng) % 32;
        if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
      }
      std::sort(chosen.begin(), chosen.end());
      for (const int e : chosen) {
        const ExpertKey key = placement::expert_key(block, e);
        const bool hit = index.lookup(key);
        ASSERT_EQ(hit, naive.lookup(key)) << "step " << step << " key " << key;
        ++lookups;
        hits += hit ? 1 : 0;
        if (hit) continue;
        const std::int64_t bytes = 100 + 50 * block;
        ASSERT_TRUE(same_insert(index.insert(key, bytes), naive.insert(key, bytes)))
            << "step " << step << " key " << key;
      }
    }
  }
  EXPECT_EQ(index.stats().hits, hits);
  EXPECT_EQ(index.stats().misses, lookups - hits);
  EXPECT_LE(index.stats().bytes, capacity);
  EXPECT_DOUBLE_EQ(index.stats().hit_rate(),
                   static_cast<double>(hits) / static_cast<double>(lookups));
}

TEST(ExpertCacheIndex, LruMatchesTheNaiveRecencyList) {
  for (const std::int64_t capacity : {0, 120, 1000, 3000, 100000}) {
    SCOPED_TRACE(capacity);
    run_trace(ExpertCachePolicy::Lru, capacity, 0, 7);
  }
}

TEST(ExpertCacheIndex, LfuWithAgingMatchesTheNaiveCounts) {
  for (const std::int64_t aging : {0, 16, 97}) {
    for (const std::int64_t capacity : {300, 2000}) {
      SCOPED_TRACE(::testing::Message() << "aging " << aging << " capacity " << capacity);
      run_trace(ExpertCachePolicy::Lfu, capacity, aging, 11);
    }
  }
}

TEST(ExpertCacheIndex, LruEvictsTheLeastRecentAndLfuTheLeastUsed) {
  for (const auto policy : {ExpertCachePolicy::Lru, ExpertCachePolicy::Lfu}) {
    ExpertCacheIndex index(300, policy, 0);
    ASSERT_TRUE(index.insert(1, 100));
    ASSERT_TRUE(index.insert(2, 100));
    ASSERT_TRUE(index.insert(3, 100));
    EXPECT_TRUE(index.lookup(1));
    EXPECT_TRUE(index.lookup(1));
    EXPECT_TRUE(index.lookup(2));
    EXPECT_TRUE(index.lookup(3));
    // LRU: 1 is the least recent now; LFU: 2 and 3 were used twice, 1 three times -> 2 goes.
    const auto evicted = index.insert(4, 100);
    ASSERT_TRUE(evicted);
    EXPECT_EQ(*evicted, (std::vector<ExpertKey>{policy == ExpertCachePolicy::Lru ? 1u : 2u}));
    EXPECT_EQ(index.stats().evictions, 1);
    EXPECT_EQ(index.stats().bytes, 300);
  }
}

TEST(ExpertCacheIndex, RejectsWhatCannotFitAndBadArguments) {
  ExpertCacheIndex index(100, ExpertCachePolicy::Lru);
  EXPECT_FALSE(index.insert(1, 101));
  EXPECT_EQ(index.stats().rejected, 1);
  EXPECT_FALSE(index.contains(1));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [] { ExpertCacheIndex bad(-1, ExpertCachePolicy::Lru); }, {"-1", "negative"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>([] { placement::parse_expert_cache_policy("arc"); },
                                             {"arc", "lru", "lfu"}));
  EXPECT_EQ(placement::parse_expert_cache_policy("lfu"), ExpertCachePolicy::Lfu);
}

// Partitions: the index against one naive cache per partition (a key's block modulo the count),
// each with the partition's share of the budget, on a routing-like trace of five blocks.
void run_partitioned_trace(ExpertCachePolicy policy, std::int64_t capacity, std::int64_t partitions,
                           std::uint32_t seed) {
  ExpertCacheIndex index(capacity, policy, 0, partitions);
  EXPECT_EQ(index.partitions(), partitions);
  EXPECT_EQ(index.partition_capacity(), capacity / partitions);
  std::vector<NaiveCache> naive;
  for (std::int64_t p = 0; p < partitions; ++p) {
    naive.emplace_back(capacity / partitions, policy == ExpertCachePolicy::Lfu, 0);
  }
  std::mt19937 rng(seed);
  std::geometric_distribution<int> skew(0.15);
  for (int step = 0; step < 300; ++step) {
    for (std::int64_t block = 0; block < 5; ++block) {
      NaiveCache& mine = naive[static_cast<std::size_t>(block % partitions)];
      for (int pick = 0; pick < 3; ++pick) {
        const ExpertKey key = placement::expert_key(block, skew(rng) % 24);
        const bool hit = index.lookup(key);
        ASSERT_EQ(hit, mine.lookup(key)) << "step " << step << " key " << key;
        if (hit) continue;
        const std::int64_t bytes = 100 + 30 * block;
        const auto evicted = index.insert(key, bytes);
        ASSERT_TRUE(same_insert(evicted, mine.insert(key, bytes)))
            << "step " << step << " key " << key;
        // Only keys of the same partition make room.
        for (const ExpertKey gone : evicted.value_or(std::vector<ExpertKey>{})) {
          EXPECT_EQ(static_cast<std::int64_t>(gone >> 32) % partitions, block % partitions);
        }
      }
    }
  }
  EXPECT_LE(index.stats().bytes, capacity);
}

TEST(ExpertCacheIndex, PartitionsAreIndependentCachesOfAnEvenShare) {
  for (const auto policy : {ExpertCachePolicy::Lru, ExpertCachePolicy::Lfu}) {
    for (const std::int64_t partitions : {1, 2, 5}) {
      for (const std::int64_t capacity : {600, 2500}) {
        SCOPED_TRACE(::testing::Message()
                     << placement::expert_cache_policy_name(policy) << " partitions " << partitions
                     << " capacity " << capacity);
        run_partitioned_trace(policy, capacity, partitions, 5);
      }
    }
  }
}

TEST(ExpertCacheIndex, RoomIsCountedPerPartition) {
  // Two partitions of 200 bytes: block 0's full, block 1's empty.
  ExpertCacheIndex index(400, ExpertCachePolicy::Lru, 0, 2);
  ASSERT_TRUE(index.insert(placement::expert_key(0, 1), 100));
  ASSERT_TRUE(index.insert(placement::expert_key(0, 2), 100));
  EXPECT_FALSE(index.has_room(placement::expert_key(0, 3), 1));
  EXPECT_TRUE(index.has_room(placement::expert_key(1, 3), 200));
  EXPECT_FALSE(index.has_room(placement::expert_key(1, 3), 201));
  EXPECT_FALSE(index.has_room(placement::expert_key(2, 3), 1)) << "block 2 shares block 0's";
  // 201 bytes fit the whole budget but not a partition: rejected.
  EXPECT_FALSE(index.insert(placement::expert_key(1, 4), 201));
  EXPECT_EQ(index.stats().rejected, 1);
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [] { ExpertCacheIndex bad(100, ExpertCachePolicy::Lru, 0, 0); }, {"0 partitions"}));
}

// A prefill's stream: every expert of every block in block order, more than the cache holds.
// LRU evicting for each miss serves none of a second pass; loading without eviction keeps what
// the first pass put in free room, and a second pass finds exactly that share.
TEST(ExpertCache, ScansDoNotEvictWhenAskedNotTo) {
  const Tensor w = Tensor::from_vector(std::vector<float>(4, 1.0f), {4});  // 16 bytes
  constexpr std::int64_t kBlocks = 4, kExperts = 8;
  const auto scan = [&](placement::ExpertCache& cache, bool evict) {
    std::int64_t hits = 0;
    for (std::int64_t b = 0; b < kBlocks; ++b) {
      for (std::int64_t e = 0; e < kExperts; ++e) {
        const ExpertKey key = placement::expert_key(b, e);
        if (cache.find(key) != nullptr) {
          ++hits;
        } else {
          EXPECT_EQ(cache.load(key, {w}, evict).size(), 1u);
        }
      }
    }
    return hits;
  };
  // 12 of the 32 experts fit: 3 a block in four partitions.
  placement::ExpertCache lru(Device::cpu(), 12 * 16, ExpertCachePolicy::Lru, kBlocks);
  scan(lru, true);
  EXPECT_EQ(scan(lru, true), 0) << "LRU on a cyclic scan larger than the cache";
  placement::ExpertCache kept(Device::cpu(), 12 * 16, ExpertCachePolicy::Lru, kBlocks);
  EXPECT_EQ(scan(kept, false), 0);
  EXPECT_EQ(kept.stats().evictions, 0);
  EXPECT_EQ(kept.stats().entries, 12);
  EXPECT_EQ(kept.stats().bypassed, 32 - 12);
  EXPECT_EQ(scan(kept, false), 12) << "the resident share serves the second pass";
  for (std::int64_t b = 0; b < kBlocks; ++b) {
    EXPECT_NE(kept.find(placement::expert_key(b, 0)), nullptr) << "every block keeps a share";
  }
}

TEST(ExpertCache, KeepsOwnedCopiesWithinTheBudget) {
  placement::ExpertCache cache(Device::cpu(), 2 * 4 * 6, ExpertCachePolicy::Lru);
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<float>{7, 8, 9, 10, 11, 12}, {3, 2});
  EXPECT_EQ(cache.find(1), nullptr);
  const std::vector<Tensor> copies = cache.load(1, {a});
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_NE(copies[0].data_ptr(), a.data_ptr());  // a copy, not a view of the source
  EXPECT_EQ(copies[0].to_vector<float>(), a.to_vector<float>());
  cache.load(2, {b});
  const std::vector<Tensor>* hit = cache.find(1);
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ((*hit)[0].to_vector<float>(), a.to_vector<float>());
  cache.load(3, {b});  // evicts 2, the least recent
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_NE(cache.find(3), nullptr);
  const auto stats = cache.stats();
  EXPECT_EQ(stats.hits, 2);
  EXPECT_EQ(stats.misses, 2);
  EXPECT_EQ(stats.evictions, 1);
  EXPECT_DOUBLE_EQ(stats.hit_rate(), 0.5);
}

}  // namespace
}  // namespace strata::testing
