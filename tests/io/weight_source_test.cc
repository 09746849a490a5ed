// The weight-source views (prefixed, in-memory, chained) and the load summary.

#include <gtest/gtest.h>

#include "io/io_testing.h"
#include "ops/throws_naming.h"
#include "strata/io/load_summary.h"
#include "strata/io/offload.h"

namespace strata::io {
namespace {

using strata::testing::TempDir;
using strata::testing::throws_naming;

std::shared_ptr<const WeightSource> memory(std::map<std::string, Tensor, std::less<>> m) {
  return std::make_shared<InMemoryWeights>(std::move(m), "state dict");
}

TEST(PrefixedWeights, StripsThePrefixAndListsOnlyItsKeys) {
  const auto base = memory({{"a.1.w", Tensor::full({1}, 1, DType::Float32)},
                            {"a.10.w", Tensor::full({1}, 10, DType::Float32)},
                            {"b.w", Tensor::full({1}, 2, DType::Float32)}});
  const PrefixedWeights a1(base, "a.1.");
  EXPECT_EQ(a1.keys(), std::vector<std::string>{"w"});  // "a.10." is not under "a.1."
  EXPECT_EQ(a1.get("w").item(), 1.0);
  EXPECT_TRUE(a1.contains("w"));
  EXPECT_FALSE(a1.contains("b.w"));
  EXPECT_EQ(a1.meta("w").shape, Shape{1});
  EXPECT_TRUE(
      throws_naming<CheckpointError>([&] { a1.get("x"); }, {"state dict", "'a.1.'", "'x'"}));
  // Prefixes nest.
  const PrefixedWeights nested(std::make_shared<PrefixedWeights>(base, "a."), "10.");
  EXPECT_EQ(nested.get("w").item(), 10.0);
}

TEST(ChainedWeights, FirstSourceWinsAndKeysAreListedOnce) {
  // The reference's OffloadedWeightsLoader: the state dict in RAM first, then the folder.
  TempDir dir;
  offload_state_dict(dir.path(), {{"l1.weight", Tensor::full({2}, 5, DType::Float32)},
                                  {"l2.bias", Tensor::full({2}, 6, DType::Float32)}});
  const ChainedWeights chain({memory({{"l1.weight", Tensor::full({2}, 1, DType::Float32)}}),
                              std::make_shared<OffloadFolderReader>(dir.path())});
  EXPECT_EQ(chain.keys(), (std::vector<std::string>{"l1.weight", "l2.bias"}));
  EXPECT_EQ(chain.get("l1.weight").to_doubles(), (std::vector<double>{1, 1}));
  EXPECT_EQ(chain.get("l2.bias").to_doubles(), (std::vector<double>{6, 6}));
  EXPECT_TRUE(throws_naming<CheckpointError>([&] { chain.meta("zz"); },
                                             {"state dict", "offload folder", "'zz'"}));
}

TEST(LoadSummary, CountsBytesPerDestinationAndReportsProgress) {
  std::vector<std::string> seen;
  std::uint64_t last_done = 0;
  LoadTracker tracker(3, 700, [&](const LoadProgress& p) {
    seen.push_back(std::string(p.tensor) + "@" + std::string(p.destination));
    EXPECT_EQ(p.tensors_total, 3u);
    EXPECT_EQ(p.bytes_total, 700u);
    last_done = p.bytes_done;
  });
  tracker.tensor_done("a", "cuda:0", 400);
  tracker.tensor_done("b", "cpu", 200);
  tracker.tensor_done("c", "cuda:0", 100);
  EXPECT_EQ(seen, (std::vector<std::string>{"a@cuda:0", "b@cpu", "c@cuda:0"}));
  EXPECT_EQ(last_done, 700u);
  LoadSummary s = tracker.finish();
  EXPECT_EQ(s.tensors, 3u);
  EXPECT_EQ(s.bytes_per_destination.at("cuda:0"), 500u);
  EXPECT_EQ(s.total_bytes(), 700u);
  EXPECT_GE(s.seconds, 0.0);
  s.seconds = 2e-6;
  EXPECT_DOUBLE_EQ(s.gb_per_second(), 700.0 / 1e9 / 2e-6);
  s.bytes_per_destination = {{"cpu", 2'100'000'000}, {"cuda:0", 13'960'000'000}};
  s.tensors = 291;
  s.seconds = 3.2;
  EXPECT_EQ(s.str(),
            "loaded 291 tensors, 16.06 GB in 3.20 s (5.02 GB/s): cpu 2.10 GB, "
            "cuda:0 13.96 GB");
  EXPECT_EQ(LoadSummary{}.gb_per_second(), 0.0);
}

}  // namespace
}  // namespace strata::io
