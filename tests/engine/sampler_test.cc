// The sampler on the cpu: parameter checks, the Philox generator against Random123's published
// answers, penalties and filters against a naive float64 implementation written from
// transformers' and OpenAI's definitions, greedy against ops::argmax, per-row independence, seeds,
// and sampled frequencies against the distribution (chi-square). Agreement with transformers'
// own processors is in sampler_fixture_test.cc; the GPU kernel in tests/cuda/.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/sampling_rows.h"
#include "strata/engine/sampling.h"
#include "strata/ops.h"

namespace strata::engine {
namespace {

std::vector<float> random_logits(std::int64_t vocab, unsigned seed, float scale = 2.5f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> out(static_cast<std::size_t>(vocab));
  for (float& v : out) v = normal(rng);
  return out;
}

// transformers' processors and OpenAI's penalties, naively: float32 penalties and temperature as
// torch computes them, then float64 softmax, sort and cumulative sums.
std::vector<double> reference_probs(std::vector<float> x, const SamplingParams& p,
                                    const std::vector<std::int64_t>& context,
                                    std::int64_t generated) {
  const auto vocab = static_cast<std::int64_t>(x.size());
  std::vector<int> in_context(x.size(), 0), count(x.size(), 0);
  for (std::size_t i = 0; i < context.size(); ++i) {
    in_context[context[i]] = 1;
    if (static_cast<std::int64_t>(i) >= static_cast<std::int64_t>(context.size()) - generated) {
      ++count[context[i]];
    }
  }
  const auto rp = static_cast<float>(p.repetition_penalty);
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (in_context[i]) x[i] = x[i] < 0 ? x[i] * rp : x[i] / rp;
    if (count[i] > 0) {
      x[i] = x[i] - static_cast<float>(p.frequency_penalty) * static_cast<float>(count[i]);
      x[i] = x[i] - static_cast<float>(p.presence_penalty);
    }
  }
  std::vector<double> probs(x.size(), 0.0);
  if (p.greedy()) {
    probs[std::max_element(x.begin(), x.end()) - x.begin()] = 1.0;
    return probs;
  }
  for (float& v : x) v = v / static_cast<float>(p.temperature);
  std::vector<bool> removed(x.size(), false);
  if (p.top_k > 0 && p.top_k < vocab) {
    std::vector<float> sorted = x;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const float kth = sorted[static_cast<std::size_t>(p.top_k - 1)];
    for (std::size_t i = 0; i < x.size(); ++i) removed[i] = removed[i] || x[i] < kth;
  }
  const auto softmax = [&] {
    double max = -INFINITY, sum = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!removed[i]) max = std::max(max, static_cast<double>(x[i]));
    }
    std::vector<double> out(x.size(), 0.0);
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!removed[i]) sum += out[i] = std::exp(x[i] - max);
    }
    for (double& v : out) v /= sum;
    return out;
  };
  if (p.top_p < 1.0) {
    const std::vector<double> pr = softmax();
    std::vector<std::size_t> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return pr[a] < pr[b]; });
    double cum = 0.0;
    for (std::size_t j = 0; j + 1 < order.size(); ++j) {
      cum += pr[order[j]];
      if (cum <= 1.0 - p.top_p) removed[order[j]] = true;
    }
  }
  if (p.min_p > 0.0) {
    const std::vector<double> pr = softmax();
    const double top = *std::max_element(pr.begin(), pr.end());
    for (std::size_t i = 0; i < x.size(); ++i) {
      removed[i] = removed[i] || pr[i] < p.min_p * top;
    }
  }
  return softmax();
}

std::vector<float> probs_of(const Tensor& logits, const SampleRow& row) {
  return sampling_probabilities(logits, std::span(&row, 1)).to_vector<float>();
}

TEST(Philox, MatchesRandom123KnownAnswers) {
  using detail::Philox4;
  using detail::philox4x32_10;
  const Philox4 zero = philox4x32_10(Philox4{{0, 0, 0, 0}}, 0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  const Philox4 ones = philox4x32_10(Philox4{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                                     0xffffffffu, 0xffffffffu);
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);
  const Philox4 pi = philox4x32_10(Philox4{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                                   0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(pi.v[0], 0xd16cfe09u);
  EXPECT_EQ(pi.v[1], 0x94fdccebu);
  EXPECT_EQ(pi.v[2], 0x5001e420u);
  EXPECT_EQ(pi.v[3], 0x24126ea1u);
}

TEST(SamplingParams, RefusesOutOfRangeValuesNamingTheField) {
  const auto expect_refused = [](SamplingParams p, const char* field) {
    try {
      p.validate();
      ADD_FAILURE() << field << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  SamplingParams p;
  p.validate();
  p.temperature = -0.1;
  expect_refused(p, "temperature");
  p = {};
  p.temperature = NAN;
  expect_refused(p, "temperature");
  p = {};
  p.top_p = 0.0;
  expect_refused(p, "top_p");
  p.top_p = 1.5;
  expect_refused(p, "top_p");
  p = {};
  p.top_k = -1;
  expect_refused(p, "top_k");
  p = {};
  p.min_p = 1.2;
  expect_refused(p, "min_p");
  p = {};
  p.repetition_penalty = 0.0;
  expect_refused(p, "repetition_penalty");
  p = {};
  p.presence_penalty = 2.5;
  expect_refused(p, "presence_penalty");
  p = {};
  p.frequency_penalty = -3.0;
  expect_refused(p, "frequency_penalty");
}

TEST(SamplingParams, GreedyWhenTemperatureIsZeroOrSamplingIsOff) {
  SamplingParams p;
  EXPECT_FALSE(p.greedy());
  p.temperature = 0.0;
  EXPECT_TRUE(p.greedy());
  p = {};
  p.do_sample = false;
  EXPECT_TRUE(p.greedy());
  EXPECT_EQ(p.describe(), "greedy");
}

TEST(Sampler, RefusesBadLogitsAndHistories) {
  SamplingParams p;
  p.repetition_penalty = 1.2;
  const std::vector<std::int64_t> context = {1, 2, 99};
  const SampleRow row{&p, context, 0, 1};
  const Tensor logits = Tensor::zeros({1, 10});
  EXPECT_THROW(sample(logits, std::span(&row, 1)), InvalidArgument);  // id 99 >= vocab 10
  const std::vector<std::int64_t> fine = {1, 2};
  const SampleRow ok{&p, fine, 0, 1};
  const SampleRow two[] = {ok, ok};
  EXPECT_THROW(sample(logits, two), InvalidArgument);  // 2 rows for 1 logit row
  EXPECT_THROW(sample(Tensor::zeros({1, 10}, DType::Int64), std::span(&ok, 1)), InvalidArgument);
  EXPECT_THROW(sample(Tensor::zeros({10}), std::span(&ok, 1)), InvalidArgument);
  const SampleRow too_many{&p, fine, 3, 1};  // 3 generated of a 2-token context
  EXPECT_THROW(sample(logits, std::span(&too_many, 1)), InvalidArgument);
  const SampleRow none{nullptr, fine, 0, 1};
  EXPECT_THROW(sample(logits, std::span(&none, 1)), InvalidArgument);
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  SamplingParams p;
  p.temperature = 0.0;
  const Tensor logits = Tensor::from_vector<float>({0.5f, 3.0f, -1.0f, 3.0f, 2.0f,  //
                                                    7.0f, 7.0f, 7.0f, 1.0f, 0.0f},
                                                   {2, 5});
  const SampleRow rows[] = {{&p, {}, 0, 0}, {&p, {}, 0, 0}};
  EXPECT_EQ(sample(logits, rows), (std::vector<std::int64_t>{1, 0}));
  // The same through the sampling path (a penalty on a token that is not in play).
  p.repetition_penalty = 1.5;
  const std::vector<std::int64_t> context = {2};
  const SampleRow penalized[] = {{&p, context, 0, 0}, {&p, context, 0, 0}};
  EXPECT_EQ(sample(logits, penalized), (std::vector<std::int64_t>{1, 0}));
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    EXPECT_EQ(sample(logits.to(dtype), penalized), (std::vector<std::int64_t>{1, 0})) << dtype;
  }
  // [batch, 1, vocab], as a decode step returns.
  EXPECT_EQ(sample(logits.view({2, 1, 5}), rows), (std::vector<std::int64_t>{1, 0}));
}

TEST(Sampler, GreedyRepetitionPenaltyMovesTheArgmax) {
  SamplingParams p;
  p.do_sample = false;
  p.repetition_penalty = 2.0;
  const Tensor logits = Tensor::from_vector<float>({1.0f, 3.0f, 2.0f, -4.0f}, {1, 4});
  const std::vector<std::int64_t> context = {1, 3};  // 3.0 -> 1.5 falls below 2.0
  const SampleRow row{&p, context, 0, 0};
  EXPECT_EQ(sample(logits, std::span(&row, 1)), (std::vector<std::int64_t>{2}));
}

struct Case {
  const char* name;
  SamplingParams params;
};

std::vector<Case> filter_cases() {
  std::vector<Case> cases;
  const auto add = [&](const char* name, auto&& set) {
    SamplingParams p;
    set(p);
    cases.push_back({name, p});
  };
  add("plain", [](SamplingParams&) {});
  add("temperature", [](SamplingParams& p) { p.temperature = 0.6; });
  add("top_k", [](SamplingParams& p) { p.top_k = 7; });
  add("top_p", [](SamplingParams& p) { p.top_p = 0.75; });
  add("min_p", [](SamplingParams& p) { p.min_p = 0.08; });
  add("repetition", [](SamplingParams& p) { p.repetition_penalty = 1.4; });
  add("presence", [](SamplingParams& p) { p.presence_penalty = 1.1; });
  add("frequency", [](SamplingParams& p) { p.frequency_penalty = 0.7; });
  add("negative_penalties", [](SamplingParams& p) {
    p.presence_penalty = -0.5;
    p.frequency_penalty = -0.3;
  });
  add("all", [](SamplingParams& p) {
    p.temperature = 1.3;
    p.top_k = 25;
    p.top_p = 0.9;
    p.min_p = 0.02;
    p.repetition_penalty = 1.2;
    p.presence_penalty = 0.4;
    p.frequency_penalty = 0.2;
  });
  return cases;
}

TEST(Sampler, DistributionMatchesNaiveReference) {
  constexpr std::int64_t kVocab = 64;
  for (const Case& c : filter_cases()) {
    for (unsigned seed = 0; seed < 4; ++seed) {
      const std::vector<float> x = random_logits(kVocab, 100 + seed);
      std::mt19937 rng(seed);
      std::vector<std::int64_t> context(20);
      for (auto& t : context) t = static_cast<std::int64_t>(rng() % kVocab);
      const std::int64_t generated = 8;
      const SampleRow row{&c.params, context, generated, 5};
      const std::vector<float> got = probs_of(Tensor::from_vector(x, {1, kVocab}), row);
      const std::vector<double> want = reference_probs(x, c.params, context, generated);
      for (std::int64_t i = 0; i < kVocab; ++i) {
        EXPECT_EQ(got[i] > 0.0f, want[i] > 0.0) << c.name << " seed " << seed << " token " << i;
        EXPECT_NEAR(got[i], want[i], 2e-6) << c.name << " seed " << seed << " token " << i;
      }
    }
  }
}

TEST(Sampler, TopKKeepsEveryTokenTiedWithTheKth) {
  SamplingParams p;
  p.top_k = 2;
  const Tensor logits = Tensor::from_vector<float>({1.0f, 2.0f, 2.0f, 2.0f, 0.0f}, {1, 5});
  const SampleRow row{&p, {}, 0, 0};
  const std::vector<float> probs = probs_of(logits, row);
  EXPECT_EQ(probs[0], 0.0f);
  EXPECT_NEAR(probs[1], 1.0 / 3.0, 1e-6);
  EXPECT_NEAR(probs[3], 1.0 / 3.0, 1e-6);
  EXPECT_EQ(probs[4], 0.0f);
}

TEST(Sampler, RowsDoNotDependOnTheirBatch) {
  constexpr std::int64_t kVocab = 300;
  const std::vector<Case> cases = filter_cases();
  std::vector<float> all;
  for (std::size_t r = 0; r < cases.size(); ++r) {
    const auto x = random_logits(kVocab, 7 + static_cast<unsigned>(r));
    all.insert(all.end(), x.begin(), x.end());
  }
  const auto batch = static_cast<std::int64_t>(cases.size());
  const Tensor logits = Tensor::from_vector(all, {batch, kVocab});
  std::vector<std::int64_t> context = {3, 17, 17, 250, 9, 3, 3};
  for (std::int64_t step = 0; step < 30; ++step) {
    std::vector<SampleRow> rows;
    for (std::size_t r = 0; r < cases.size(); ++r) {
      rows.push_back({&cases[r].params, context, 4, 1000 + r * 7 + static_cast<unsigned>(step)});
    }
    const std::vector<std::int64_t> together = sample(logits, rows);
    for (std::int64_t r = 0; r < batch; ++r) {
      const auto alone = sample(logits.narrow(0, r, 1), std::span(&rows[r], 1));
      EXPECT_EQ(alone[0], together[r]) << cases[r].name << " step " << step;
    }
  }
}

TEST(Sampler, ASeedReplaysTheDraws) {
  constexpr std::int64_t kVocab = 1000;
  const Tensor logits = Tensor::from_vector(random_logits(kVocab, 3, 1.0f), {1, kVocab});
  SamplingParams p;
  p.top_p = 0.95;
  std::vector<std::int64_t> context(64, 0);
  const auto draws = [&](std::uint64_t seed) {
    std::vector<std::int64_t> ids;
    for (std::int64_t n = 0; n < 64; ++n) {
      const SampleRow row{&p, context, n, seed};
      ids.push_back(sample(logits, std::span(&row, 1))[0]);
    }
    return ids;
  };
  EXPECT_EQ(draws(42), draws(42));
  EXPECT_NE(draws(42), draws(43));
  SamplingParams seeded;
  seeded.seed = 9;
  EXPECT_EQ(resolve_seed(seeded), 9u);
}

// Chi-square goodness of fit of 40000 draws of one stream (draw n = counter n) against the
// distribution the sampler reports (itself checked against the reference above).
TEST(Sampler, FrequenciesPassChiSquare) {
  const Tensor logits =
      Tensor::from_vector<float>({1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -3.0f, 0.7f}, {1, 8});
  SamplingParams p;
  p.temperature = 0.9;
  p.top_k = 6;
  constexpr std::int64_t kDraws = 40000;
  const std::vector<std::int64_t> context(kDraws, 0);
  const SampleRow first{&p, context, 0, 2024};
  const std::vector<float> probs = probs_of(logits, first);
  std::vector<std::int64_t> counts(8, 0);
  std::vector<SampleRow> rows;
  for (std::int64_t n = 0; n < kDraws; ++n) rows.push_back({&p, context, n, 2024});
  const Tensor many = logits.expand({kDraws, 8}).contiguous();
  for (std::int64_t id : sample(many, rows)) ++counts[id];
  double chi2 = 0.0;
  int cells = 0;
  for (int i = 0; i < 8; ++i) {
    if (probs[i] == 0.0f) {
      EXPECT_EQ(counts[i], 0) << "filtered token " << i << " was drawn";
      continue;
    }
    const double expected = probs[i] * kDraws;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++cells;
  }
  ASSERT_EQ(cells, 6);
  EXPECT_LT(chi2, 20.52) << "chi-square with 5 degrees of freedom above its 0.001 quantile";
}

}  // namespace
}  // namespace strata::engine
