// The sampler's filtered distribution against transformers' own logits processors
// (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
// MinPLogitsWarper, in generate()'s order) on fixed logits, every option alone and combined:
// tests/fixtures/engine/sampler_cases.json, recorded by
// tests/fixtures/tools/record_sampler_fixtures.py. The same cases run on the GPU in
// tests/cuda/sampling_cuda_test.cc.

#include "engine/sampler_fixture.h"

#include <gtest/gtest.h>

namespace strata::engine {
namespace {

TEST(SamplerFixture, FilteredDistributionEqualsTransformers) {
  const std::vector<testing::SamplerCase> cases = testing::load_sampler_cases();
  ASSERT_GE(cases.size(), 19u);
  for (const testing::SamplerCase& c : cases) {
    testing::expect_case_matches(c, Device::cpu());
  }
}

}  // namespace
}  // namespace strata::engine
