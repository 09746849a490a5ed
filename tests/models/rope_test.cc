// RoPE frequencies of every rope type against the rotary module transformers built for the
// fixture (its inv_freq buffer and attention_scaling), and the cos/sin tables.

#include <cmath>

#include "models/model_testing.h"

namespace strata::testing {
namespace {

using models::compute_rope_frequencies;
using models::RopeFrequencies;

// float32 evaluation of the same formulas: a few ulps (pow's last bit may differ from torch's).
constexpr double kFrequencyTolerance = 4e-7;

void expect_frequencies(const std::vector<float>& ours, const Tensor& reference,
                        const std::string& what) {
  const std::vector<float> ref = reference.to_vector<float>();
  ASSERT_EQ(ours.size(), ref.size()) << what;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    EXPECT_NEAR(ours[i], ref[i], kFrequencyTolerance * std::abs(ref[i]))
        << what << " [" << i << "]";
  }
}

class RopeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RopeTest, FrequenciesMatchTransformers) {
  const ModelFixture f = load_model_fixture(GetParam());
  const models::TransformerConfig c = models::parse_transformer_config(f.config);
  ASSERT_TRUE(c.rope.has_value());
  if (f.extra.contains("inv_freq_full_attention")) {  // Gemma 3: one rope per layer type
    ASSERT_TRUE(c.sliding_rope.has_value());
    expect_frequencies(compute_rope_frequencies(*c.rope).inv_freq,
                       f.extra.at("inv_freq_full_attention"), f.name + " full_attention");
    expect_frequencies(compute_rope_frequencies(*c.sliding_rope).inv_freq,
                       f.extra.at("inv_freq_sliding_attention"), f.name + " sliding_attention");
    return;
  }
  const RopeFrequencies ours = compute_rope_frequencies(*c.rope);
  expect_frequencies(ours.inv_freq, f.extra.at("inv_freq"), f.name + " inv_freq");
  EXPECT_NEAR(ours.attention_scaling, f.extra.at("attention_scaling").item(), 1e-6) << f.name;
  if (f.extra.contains("dynamic_inv_freq")) {
    // transformers grew the base during generation; its last length is recorded with it.
    const auto seq_len = static_cast<std::int64_t>(f.extra.at("dynamic_seq_len").item());
    EXPECT_GT(seq_len, c.rope->max_position_embeddings);
    expect_frequencies(compute_rope_frequencies(*c.rope, seq_len).inv_freq,
                       f.extra.at("dynamic_inv_freq"), f.name + " dynamic");
  }
  if (f.extra.contains("long_inv_freq")) {
    // longrope past original_max_position_embeddings: transformers' long factors.
    const RopeFrequencies long_ours =
        compute_rope_frequencies(*c.rope, c.rope->original_max_position_embeddings + 1);
    expect_frequencies(long_ours.inv_freq, f.extra.at("long_inv_freq"), f.name + " long");
    EXPECT_NEAR(long_ours.attention_scaling, f.extra.at("long_attention_scaling").item(), 1e-6);
  }
}

std::vector<std::string> rope_fixtures() {
  std::vector<std::string> out;
  for (const std::string& name : model_fixture_names()) {
    if (name != "gpt2" && name.rfind("opt", 0) != 0) out.push_back(name);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Models, RopeTest, ::testing::ValuesIn(rope_fixtures()));

TEST(Rope, TablesRepeatTheHalvesAndScale) {
  RopeFrequencies f{{1.0f, 0.5f}, 2.0f};
  const auto [cos, sin] = models::rope_tables(f, 3, 2);
  ASSERT_EQ(cos.shape(), (Shape{1, 2, 4}));
  for (std::int64_t p = 0; p < 2; ++p) {
    for (std::int64_t i = 0; i < 2; ++i) {
      const float angle = static_cast<float>(3 + p) * f.inv_freq[static_cast<std::size_t>(i)];
      EXPECT_FLOAT_EQ(cos.at<float>({0, p, i}), 2.0f * static_cast<float>(std::cos(angle)));
      EXPECT_FLOAT_EQ(cos.at<float>({0, p, i + 2}), cos.at<float>({0, p, i}));
      EXPECT_FLOAT_EQ(sin.at<float>({0, p, i + 2}), 2.0f * static_cast<float>(std::sin(angle)));
    }
  }
}

TEST(Rope, DynamicIsUnscaledUpToTheTrainedLength) {
  models::RopeConfig rope;
  rope.type = "dynamic";
  rope.dim = 16;
  rope.factor = 2.0;
  rope.max_position_embeddings = 16;
  const auto plain = compute_rope_frequencies(rope, 16).inv_freq;
  models::RopeConfig unscaled = rope;
  unscaled.type = "default";
  EXPECT_EQ(plain, compute_rope_frequencies(unscaled).inv_freq);
  const auto longer = compute_rope_frequencies(rope, 32).inv_freq;
  EXPECT_EQ(longer.front(), 1.0f);         // base^0
  EXPECT_LT(longer.back(), plain.back());  // a larger base: lower frequencies
}

}  // namespace
}  // namespace strata::testing
