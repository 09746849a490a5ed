// Parity with transformers on the recorded fixtures, for every architecture and on every
// execution device: float32 logits, greedy continuations, bfloat16 logits, and the KV cache
// (prefill + single-token decode) against the full-sequence forward.

#include <fmt/format.h>

#include "models/model_testing.h"
#include "strata/ops.h"

namespace strata::testing {
namespace {

// bfloat16 (docs/models.md): weights and activations keep 8 significant bits, so each rounding
// is worth up to 2^-9 of its operand and the logits move by a few hundredths of their scale.
// transformers' own bfloat16 run (from_pretrained(dtype=bfloat16)) differs from its float32 run
// by 0.7-2.0% of the scale on these fixtures, 3.7% for Mixtral; Strata's bfloat16 logits must
// stay within 4% of the scale of both transformers' float32 and bfloat16 logits (measured on the
// cpu: at most 2.1% and 1.9%).
constexpr double kBFloat16Tolerance = 0.04;
// gpt-oss fixtures: the experts' clamped SwiGLU runs at large activations (gate and up reach the
// limit 7, times up + 1), so every bfloat16 rounding weighs more: transformers' own bfloat16 run
// is 7.5% (dense) and 5.1% (MXFP4) of the scale away from its float32 run (measured here: 6.3%
// and 6.1%). The bound is 8% for these two fixtures only.
double bfloat16_tolerance(const std::string& fixture) {
  return fixture.starts_with("gpt_oss") ? 0.08 : kBFloat16Tolerance;
}

class ParityTest : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    if (!device_available(device())) GTEST_SKIP() << device() << " is not available here";
    fixture_ = load_model_fixture(GetParam().fixture);
  }
  Device device() const { return GetParam().device; }
  Tensor prompt() const { return fixture_.prompt_ids.to(device()); }

  ModelFixture fixture_;
};

TEST_P(ParityTest, Float32LogitsMatchTransformers) {
  auto model = load_fixture_model(fixture_, device());
  expect_float32_logits_match(fixture_, model->run(prompt()).logits);
}

TEST_P(ParityTest, LogitsToKeepGivesTheLastPositions) {
  auto model = load_fixture_model(fixture_, device());
  const Tensor last = model->run(prompt(), nullptr, 1).logits;
  const std::int64_t seq = fixture_.logits.size(1);
  ASSERT_EQ(last.shape(), (Shape{2, 1, fixture_.logits.size(2)}));
  EXPECT_LE(max_abs_diff(last, fixture_.logits.narrow(1, seq - 1, 1)),
            kFloat32Tolerance * max_abs(fixture_.logits));
}

TEST_P(ParityTest, GreedyContinuationMatchesTransformers) {
  auto model = load_fixture_model(fixture_, device());
  expect_greedy_continuation_matches(fixture_, *model);
}

TEST_P(ParityTest, PaddedBatchMatchesTransformers) {
  auto model = load_fixture_model(fixture_, device());
  expect_padded_batch_matches(fixture_, *model, device());
}

TEST_P(ParityTest, BFloat16LogitsWithinTolerance) {
  if (!fixture_.logits_bf16.defined()) {
    GTEST_SKIP() << fixture_.name
                 << ": no bfloat16 reference (fp8 weights: the reference is the "
                    "dequantised float32 model)";
  }
  if (const auto margin = fixture_.extra.find("router_margin_bf16");
      margin != fixture_.extra.end()) {
    // DeepSeek's sigmoid/softmax routing scores tie within a few bfloat16 ulps on these tiny
    // random models: when transformers' own bfloat16 run already strays past the bound from its
    // float32 run, its routing flipped in bfloat16 and either run's experts are a coin toss.
    const double scale = max_abs(fixture_.logits);
    const double drift = max_abs_diff(fixture_.logits_bf16, fixture_.logits) / scale;
    if (drift > bfloat16_tolerance(fixture_.name)) {
      GTEST_SKIP() << fixture_.name << ": transformers' bfloat16 logits are " << drift
                   << " of the scale from its float32 ones (bfloat16 router margin "
                   << margin->second.to_vector<float>().at(0) << "): routing flipped";
    }
  }
  auto model = load_fixture_model(fixture_, device(), DType::BFloat16);
  const Tensor logits = model->run(prompt()).logits;
  EXPECT_EQ(logits.dtype(), DType::BFloat16);
  const double scale = max_abs(fixture_.logits);
  const double vs_float32 = max_abs_diff(logits, fixture_.logits);
  const double vs_reference = max_abs_diff(logits, fixture_.logits_bf16);
  const double reference_drift = max_abs_diff(fixture_.logits_bf16, fixture_.logits);
  RecordProperty("bf16_vs_float32", fmt::format("{:.4f}", vs_float32 / scale));
  RecordProperty("bf16_vs_transformers_bf16", fmt::format("{:.4f}", vs_reference / scale));
  const double tolerance = bfloat16_tolerance(fixture_.name);
  EXPECT_LE(vs_float32, tolerance * scale)
      << fixture_.name << ": transformers' own bf16 drift is " << reference_drift / scale;
  EXPECT_LE(vs_reference, tolerance * scale)
      << fixture_.name << ": transformers' own bf16 drift is " << reference_drift / scale;
}

// Prefill the prompt, then feed tokens one at a time: every position's logits must equal those
// of one forward over the whole sequence.
TEST_P(ParityTest, CachedDecodeMatchesFullForward) {
  if (fixture_.name == "llama_dynamic") {
    // Dynamic NTK RoPE rescales every position by the current length, so keys cached at a
    // shorter length are rotated differently from a full forward, in transformers too.
    GTEST_SKIP() << "dynamic RoPE: cached keys keep the frequencies of their step, by design";
  }
  auto model = load_fixture_model(fixture_, device());
  const std::int64_t prompt_len = fixture_.prompt_ids.size(1), extra = 4;
  const std::int64_t vocab = fixture_.logits.size(2);
  Tensor sequence = Tensor::empty({2, prompt_len + extra}, DType::Int64);
  sequence.narrow(1, 0, prompt_len).copy_(fixture_.prompt_ids);
  for (std::int64_t i = 0; i < extra; ++i) {
    sequence.set<std::int64_t>({0, prompt_len + i}, (7 * i + 3) % vocab);
    sequence.set<std::int64_t>({1, prompt_len + i}, (11 * i + 5) % vocab);
  }
  const Tensor full = model->run(sequence.to(device())).logits;
  const double tolerance = kFloat32Tolerance * max_abs(full);

  auto cache = model->make_cache();
  const Tensor prefill = model->run(sequence.narrow(1, 0, prompt_len).to(device()), cache).logits;
  EXPECT_LE(max_abs_diff(prefill, full.narrow(1, 0, prompt_len)), tolerance);
  EXPECT_EQ(cache->seq_length(), prompt_len);
  for (std::int64_t i = 0; i < extra; ++i) {
    const std::int64_t at = prompt_len + i;
    const Tensor step = model->run(sequence.narrow(1, at, 1).to(device()), cache).logits;
    EXPECT_LE(max_abs_diff(step, full.narrow(1, at, 1)), tolerance) << "position " << at;
  }
  EXPECT_EQ(cache->seq_length(), prompt_len + extra);
  for (std::int64_t layer = 0; layer < cache->num_layers(); ++layer) {
    EXPECT_EQ(cache->device(layer), device()) << "layer " << layer;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ParityTest, ::testing::ValuesIn(model_cases()), model_case_name);

}  // namespace
}  // namespace strata::testing
