// generate_greedy's next_input (strata bench --decode-input random): each decode step feeds the
// ids the callback returns instead of the last argmax, and the argmaxes it reports are those of
// the model fed with them (teacher forcing), which transformers' recorded logits give: feeding a
// fixture's prompt one token at a time must reproduce the argmax of its logits at every position.

#include <gtest/gtest.h>

#include <vector>

#include "models/model_testing.h"
#include "ops/throws_naming.h"
#include "strata/core/error.h"
#include "strata/models/causal_lm.h"

namespace strata::testing {
namespace {

// Argmax of `logits` [2, S, V] (float32) for row 0 at every position, lowest id on ties.
std::vector<std::int64_t> row0_argmax(const Tensor& logits) {
  const std::int64_t seq = logits.size(1), vocab = logits.size(2);
  const std::vector<float> values = logits.contiguous().to_vector<float>();
  std::vector<std::int64_t> out;
  for (std::int64_t s = 0; s < seq; ++s) {
    const float* row = values.data() + s * vocab;
    std::int64_t best = 0;
    for (std::int64_t v = 1; v < vocab; ++v) {
      if (row[v] > row[best]) best = v;
    }
    out.push_back(best);
  }
  return out;
}

TEST(GenerationInput, EachStepFeedsTheIdsTheCallbackReturns) {
  const ModelFixture f = load_model_fixture("llama");
  auto model = load_fixture_model(f, Device::cpu());
  const std::vector<std::int64_t> prompt = f.prompt_ids.narrow(0, 0, 1).to_vector<std::int64_t>();
  const auto seq = static_cast<std::int64_t>(prompt.size());
  models::GenerationOptions options;
  options.max_new_tokens = seq;
  std::vector<std::int64_t> steps;
  options.next_input = [&](std::int64_t step, const Tensor& argmax) {
    EXPECT_EQ(argmax.shape(), (Shape{1, 1}));
    steps.push_back(step);
    return Tensor::from_vector<std::int64_t>({prompt[static_cast<std::size_t>(step)]}, {1, 1});
  };
  const models::GenerationResult result =
      models::generate_greedy(*model, f.prompt_ids.narrow(0, 0, 1).narrow(1, 0, 1), options);
  EXPECT_EQ(result.tokens.to_vector<std::int64_t>(), row0_argmax(f.logits));
  std::vector<std::int64_t> want_steps;
  for (std::int64_t s = 1; s < seq; ++s) want_steps.push_back(s);
  EXPECT_EQ(steps, want_steps) << "asked once per decode step that feeds a next step";

  // Ids of the wrong shape or dtype are refused, naming the callback and the step.
  options.next_input = [](std::int64_t, const Tensor&) {
    return Tensor::from_vector<std::int64_t>({1, 2}, {1, 2});
  };
  EXPECT_TRUE(throws_naming<InvalidArgument>(
      [&] { models::generate_greedy(*model, f.prompt_ids.narrow(0, 0, 1), options); },
      {"next_input", "step 1"}));
}

}  // namespace
}  // namespace strata::testing
