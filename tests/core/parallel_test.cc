#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "strata/core/parallel.h"

namespace strata {
namespace {

TEST(ParallelFor, CoversEveryIndexExactlyOnce) {
  for (std::int64_t n : {0, 1, 3, 17, 4097, 100000}) {
    for (std::int64_t grain : {1, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      parallel_for(n, grain, [&](std::int64_t b, std::int64_t e) {
        ASSERT_LE(b, e);
        for (std::int64_t i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
      });
      for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<std::size_t>(i)], 1) << i;
    }
  }
}

TEST(ParallelFor, RethrowsTheWorkersException) {
  EXPECT_THROW(parallel_for(1000, 1,
                            [](std::int64_t b, std::int64_t) {
                              if (b > 0) throw std::runtime_error("boom");
                            }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<std::int64_t> sum{0};
  parallel_for(100, 1, [&](std::int64_t b, std::int64_t e) { sum += e - b; });
  EXPECT_EQ(sum, 100);
}

TEST(ParallelFor, NestedCallsRunAndCover) {
  std::atomic<std::int64_t> total{0};
  parallel_for(8, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      parallel_for(100, 1, [&](std::int64_t ib, std::int64_t ie) { total += ie - ib; });
    }
  });
  EXPECT_EQ(total, 800);
}

TEST(ParallelFor, ManyBackToBackLoops) {
  std::int64_t expected = 0;
  std::atomic<std::int64_t> sum{0};
  for (int round = 0; round < 2000; ++round) {
    parallel_for(64, 1, [&](std::int64_t b, std::int64_t e) { sum += e - b; });
    expected += 64;
  }
  EXPECT_EQ(sum, expected);
  EXPECT_GE(num_threads(), 1);
}

}  // namespace
}  // namespace strata
