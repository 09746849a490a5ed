// The routing shared by the mixtures of experts (models/expert_routing.h) against a naive
// per-token computation: grouping per expert, float32 renormalisation, the weights' rounding to
// the router dtype, the sum in increasing expert order, and the errors.

#include "models/expert_routing.h"

#include <gtest/gtest.h>

#include <vector>

#include "ops/throws_naming.h"
#include "strata/core/error.h"
#include "strata/core/float_types.h"
#include "strata/ops.h"

namespace strata::testing {
namespace {

using models::detail::combine_experts;
using models::detail::ExpertRouting;
using models::detail::route_tokens;

// 3 tokens, top-2 of 4 experts.
const std::vector<std::int64_t> kIndices = {2, 0, 1, 2, 3, 1};
const std::vector<float> kWeights = {0.5f, 0.25f, 0.7f, 0.1f, 0.3f, 0.3f};

TEST(ExpertRouting, GroupsTokensPerExpertInTokenOrder) {
  const ExpertRouting r = route_tokens(Tensor::from_vector(kIndices, {3, 2}),
                                       Tensor::from_vector(kWeights, {3, 2}), 4, false, "test");
  EXPECT_EQ(r.tokens, 3);
  EXPECT_EQ(r.top_k, 2);
  ASSERT_EQ(r.expert_tokens.size(), 4u);
  EXPECT_EQ(r.expert_tokens[0], (std::vector<std::int64_t>{0}));
  EXPECT_EQ(r.expert_tokens[1], (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(r.expert_tokens[2], (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(r.expert_tokens[3], (std::vector<std::int64_t>{2}));
  EXPECT_EQ(r.expert_weights[1], (std::vector<double>{0.7f, 0.3f}));
  EXPECT_EQ(r.expert_weights[2], (std::vector<double>{0.5f, 0.1f}));
}

TEST(ExpertRouting, RenormalisesTheTopKInFloat32) {
  const ExpertRouting r = route_tokens(Tensor::from_vector(kIndices, {3, 2}),
                                       Tensor::from_vector(kWeights, {3, 2}), 4, true, "test");
  // Token 1 routes to experts 1 (0.7) and 2 (0.1): float32 0.7f / (0.7f + 0.1f).
  const float sum1 = 0.7f + 0.1f, sum0 = 0.5f + 0.25f;
  EXPECT_EQ(r.expert_weights[1][0], static_cast<double>(0.7f / sum1));
  EXPECT_EQ(r.expert_weights[2][1], static_cast<double>(0.1f / sum1));
  EXPECT_EQ(r.expert_weights[0][0], static_cast<double>(0.25f / sum0));
}

TEST(ExpertRouting, RejectsBadIndicesAndShapes) {
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        route_tokens(Tensor::from_vector(std::vector<std::int64_t>{0, 4}, {1, 2}),
                     Tensor::from_vector(std::vector<float>{0.5f, 0.5f}, {1, 2}), 4, false,
                     "TestExperts.forward");
      },
      {"TestExperts.forward", "router index 4", "[0, 4)"}));
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] {
        route_tokens(Tensor::from_vector(kIndices, {3, 2}), Tensor::from_vector(kWeights, {6}), 4,
                     false, "TestExperts.forward");
      },
      {"TestExperts.forward", "routing_weights", "[tokens, k]"}));
}

// Expert e multiplies its rows by e + 1; the result per token is the naive weighted sum.
TEST(ExpertRouting, CombinesWeightedOutputsLikeANaiveLoop) {
  const std::vector<float> xs = {1.0f, -2.0f, 0.5f, 3.0f, -1.5f, 0.25f};  // [3, 2]
  const Tensor x = Tensor::from_vector(xs, {3, 2});
  for (const DType weight_dtype : {DType::Float32, DType::BFloat16}) {
    const ExpertRouting r = route_tokens(Tensor::from_vector(kIndices, {3, 2}),
                                         Tensor::from_vector(kWeights, {3, 2}), 4, false, "test");
    std::vector<std::int64_t> ran;
    const Tensor out = combine_experts(x, r, weight_dtype, [&](std::int64_t e, const Tensor& rows) {
      ran.push_back(e);
      return ops::mul(rows, Tensor::full({1}, static_cast<double>(e + 1), rows.dtype()));
    });
    EXPECT_EQ(ran, (std::vector<std::int64_t>{0, 1, 2, 3}));
    ASSERT_EQ(out.shape(), (Shape{3, 2}));
    const std::vector<float> got = out.to_vector<float>();
    for (std::int64_t t = 0; t < 3; ++t) {
      // Token t's two experts, added in increasing expert order.
      std::int64_t a = 0, b = 1;
      if (kIndices[static_cast<std::size_t>(t * 2)] > kIndices[static_cast<std::size_t>(t * 2 + 1)])
        std::swap(a, b);
      for (std::int64_t h = 0; h < 2; ++h) {
        float sum = 0.0f;
        for (const std::int64_t s : {a, b}) {
          const auto at = static_cast<std::size_t>(t * 2 + s);
          float w = kWeights[at];
          if (weight_dtype == DType::BFloat16) {
            w = bfloat16_bits_to_float(float_to_bfloat16_bits(w));
          }
          const float expert_out =
              xs[static_cast<std::size_t>(t * 2 + h)] * static_cast<float>(kIndices[at] + 1);
          sum += expert_out * w;
        }
        EXPECT_FLOAT_EQ(got[static_cast<std::size_t>(t * 2 + h)], sum)
            << "token " << t << " column " << h << " weights " << dtype_name(weight_dtype);
      }
    }
  }
}

// A `grouped` callback takes every expert not on the cpu in one call: their ids in increasing
// order, their row counts, and their rows one expert after another. The result is that of
// calling each expert (the same bits), and the cpu experts are still called one by one.
TEST(ExpertRouting, GroupedCallTakesTheDeviceExpertsAtOnce) {
  const std::vector<float> xs = {1.0f, -2.0f, 0.5f, 3.0f, -1.5f, 0.25f};  // [3, 2]
  const Tensor x = Tensor::from_vector(xs, {3, 2});
  const ExpertRouting r = route_tokens(Tensor::from_vector(kIndices, {3, 2}),
                                       Tensor::from_vector(kWeights, {3, 2}), 4, false, "test");
  const auto scale = [](std::int64_t e, const Tensor& rows) {
    return ops::mul(rows, Tensor::full({1}, static_cast<double>(e + 1), rows.dtype()));
  };
  const auto on_cpu = [](std::int64_t e) { return e == 1; };
  for (const DType weight_dtype : {DType::Float32, DType::BFloat16}) {
    const Tensor one_by_one = combine_experts(x, r, weight_dtype, scale, on_cpu);
    std::vector<std::int64_t> called;
    int grouped_calls = 0;
    const Tensor grouped = combine_experts(
        x, r, weight_dtype,
        [&](std::int64_t e, const Tensor& rows) {
          called.push_back(e);
          return scale(e, rows);
        },
        on_cpu, {}, nullptr,
        [&](const std::vector<std::int64_t>& ids, const std::vector<std::int64_t>& counts,
            const Tensor& rows) {
          ++grouped_calls;
          EXPECT_EQ(ids, (std::vector<std::int64_t>{0, 2, 3}));
          EXPECT_EQ(counts, (std::vector<std::int64_t>{1, 2, 1}));
          // Expert 0: token 0; expert 2: tokens 0 and 1; expert 3: token 2.
          EXPECT_EQ(rows.to_vector<float>(),
                    (std::vector<float>{1.0f, -2.0f, 1.0f, -2.0f, 0.5f, 3.0f, -1.5f, 0.25f}));
          const Tensor outs = Tensor::empty(rows.shape(), rows.dtype());
          std::int64_t first = 0;
          for (std::size_t i = 0; i < ids.size(); ++i) {
            outs.narrow(0, first, counts[i]).copy_(scale(ids[i], rows.narrow(0, first, counts[i])));
            first += counts[i];
          }
          return outs;
        });
    EXPECT_EQ(grouped_calls, 1) << dtype_name(weight_dtype);
    EXPECT_EQ(called, (std::vector<std::int64_t>{1})) << "only the cpu expert is called alone";
    EXPECT_EQ(grouped.to_vector<float>(), one_by_one.to_vector<float>())
        << dtype_name(weight_dtype);
  }
  // One token: every expert is called alone (the decode path), the callback never.
  const ExpertRouting one =
      route_tokens(Tensor::from_vector(std::vector<std::int64_t>{2, 0}, {1, 2}),
                   Tensor::from_vector(std::vector<float>{0.5f, 0.5f}, {1, 2}), 4, false, "test");
  int grouped_calls = 0;
  combine_experts(
      x.narrow(0, 0, 1), one, DType::Float32, scale, {}, {}, nullptr,
      [&](const std::vector<std::int64_t>&, const std::vector<std::int64_t>&, const Tensor& rows) {
        ++grouped_calls;
        return rows;
      });
  EXPECT_EQ(grouped_calls, 0);
}

}  // namespace
}  // namespace strata::testing
