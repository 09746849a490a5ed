// The generation driver on the recorded llama fixture (tests/fixtures/models/llama, recorded with
// transformers by record_model_fixtures.py): greedy output equals transformers' greedy
// continuation and models::generate_greedy; rows of a batch equal the same prompts run alone;
// seeds replay; eos, max_new_tokens, the context limit and the callback end rows.

#include "strata/engine/generate.h"

#include <gtest/gtest.h>

#include "models/model_testing.h"

namespace strata::engine {
namespace {

using testing::load_fixture_model;
using testing::load_model_fixture;
using testing::ModelFixture;

class GenerateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new ModelFixture(load_model_fixture("llama"));
    model_ = new std::shared_ptr<models::CausalLM>(load_fixture_model(*fixture_, Device::cpu()));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete fixture_;
  }
  static models::CausalLM& model() { return **model_; }
  static std::vector<std::int64_t> prompt(std::int64_t row, std::int64_t length = -1) {
    std::vector<std::int64_t> ids = fixture_->prompt_ids.select(0, row).to_vector<std::int64_t>();
    if (length >= 0) ids.resize(static_cast<std::size_t>(length));
    return ids;
  }
  static GenerateRequest greedy(std::vector<std::int64_t> ids) {
    GenerateRequest r{std::move(ids), {}};
    r.params.do_sample = false;
    return r;
  }
  static GenerateRequest sampled(std::vector<std::int64_t> ids, std::uint64_t seed) {
    GenerateRequest r{std::move(ids), {}};
    r.params.temperature = 1.3;
    r.params.top_k = 40;
    r.params.top_p = 0.95;
    r.params.repetition_penalty = 1.1;
    r.params.seed = seed;
    return r;
  }
  static GenerateOutput run(const std::vector<GenerateRequest>& requests, std::int64_t new_tokens,
                            const TokenCallback& callback = {}) {
    GenerateOptions options;
    options.max_new_tokens = new_tokens;
    return generate(model(), requests, options, callback);
  }

  static ModelFixture* fixture_;
  static std::shared_ptr<models::CausalLM>* model_;
};
ModelFixture* GenerateTest::fixture_ = nullptr;
std::shared_ptr<models::CausalLM>* GenerateTest::model_ = nullptr;

TEST_F(GenerateTest, GreedyEqualsTransformersAndGenerateGreedy) {
  const std::vector<std::int64_t> expected = fixture_->greedy_ids.to_vector<std::int64_t>();
  const auto n = static_cast<std::int64_t>(expected.size());
  std::vector<std::int64_t> streamed;
  const GenerateOutput out = run({greedy(prompt(0))}, n, [&](std::int64_t row, std::int64_t id) {
    EXPECT_EQ(row, 0);
    streamed.push_back(id);
    return true;
  });
  ASSERT_EQ(out.rows.size(), 1u);
  EXPECT_EQ(out.rows[0].tokens, expected);
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(out.rows[0].finish, FinishReason::Length);
  EXPECT_EQ(out.step_seconds.size(), static_cast<std::size_t>(n - 1));
  models::GenerationOptions options;
  options.max_new_tokens = n;
  const auto reference =
      models::generate_greedy(model(), fixture_->prompt_ids.narrow(0, 0, 1), options);
  EXPECT_EQ(reference.tokens.to_vector<std::int64_t>(), expected);
}

TEST_F(GenerateTest, BatchRowsEqualTheirPromptsRunAlone) {
  for (const bool sampling : {false, true}) {
    std::vector<GenerateRequest> requests;
    // Two prompts of the full length and a shorter one, left-padded in the same batch.
    for (std::int64_t r = 0; r < 2; ++r) {
      requests.push_back(sampling ? sampled(prompt(r), 11 + r) : greedy(prompt(r)));
    }
    requests.push_back(sampling ? sampled(prompt(1, 3), 99) : greedy(prompt(1, 3)));
    const GenerateOutput together = run(requests, 10);
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const GenerateOutput alone = run({requests[r]}, 10);
      EXPECT_EQ(alone.rows[0].tokens, together.rows[r].tokens)
          << "row " << r << (sampling ? " sampled" : " greedy");
    }
  }
}

TEST_F(GenerateTest, ASeedReplaysARunAndAnotherSeedDiffers) {
  const GenerateOutput a = run({sampled(prompt(0), 5)}, 24);
  const GenerateOutput b = run({sampled(prompt(0), 5)}, 24);
  const GenerateOutput c = run({sampled(prompt(0), 6)}, 24);
  EXPECT_EQ(a.rows[0].tokens, b.rows[0].tokens);
  EXPECT_NE(a.rows[0].tokens, c.rows[0].tokens);
  EXPECT_EQ(a.rows[0].seed, 5u);
  // Without a seed each run draws one, and reports it: passing it back replays the run.
  GenerateRequest unseeded = sampled(prompt(0), 0);
  unseeded.params.seed.reset();
  const GenerateOutput d = run({unseeded}, 24);
  const GenerateOutput e = run({sampled(prompt(0), d.rows[0].seed)}, 24);
  EXPECT_EQ(d.rows[0].tokens, e.rows[0].tokens);
}

TEST_F(GenerateTest, EosEndsTheRowAndIsNotStreamed) {
  const std::vector<std::int64_t> greedy_ids = fixture_->greedy_ids.to_vector<std::int64_t>();
  // The first token that differs from every earlier one, as the end-of-sequence token.
  std::size_t at = 1;
  while (std::find(greedy_ids.begin(), greedy_ids.begin() + at, greedy_ids[at]) !=
         greedy_ids.begin() + at) {
    ++at;
  }
  GenerateOptions options;
  options.max_new_tokens = 12;
  options.eos_token_ids = {greedy_ids[at]};
  std::vector<std::int64_t> streamed;
  const std::vector<GenerateRequest> requests = {greedy(prompt(0))};
  const GenerateOutput out =
      generate(model(), requests, options, [&](std::int64_t, std::int64_t id) {
        streamed.push_back(id);
        return true;
      });
  const std::vector<std::int64_t> expected(greedy_ids.begin(), greedy_ids.begin() + at + 1);
  EXPECT_EQ(out.rows[0].tokens, expected);
  EXPECT_EQ(streamed, std::vector<std::int64_t>(expected.begin(), expected.end() - 1));
  EXPECT_EQ(out.rows[0].finish, FinishReason::Stop);
}

TEST_F(GenerateTest, TheCallbackEndsOneRow) {
  const std::vector<GenerateRequest> requests = {greedy(prompt(0)), greedy(prompt(1))};
  std::vector<std::int64_t> calls(2, 0);
  const GenerateOutput out = run(requests, 8, [&](std::int64_t row, std::int64_t) {
    ++calls[static_cast<std::size_t>(row)];
    return !(row == 1 && calls[1] == 3);  // row 1 "finds a stop string" at its third token
  });
  EXPECT_EQ(out.rows[0].tokens.size(), 8u);
  EXPECT_EQ(out.rows[0].finish, FinishReason::Length);
  EXPECT_EQ(out.rows[1].tokens.size(), 3u);
  EXPECT_EQ(out.rows[1].finish, FinishReason::Stop);
  EXPECT_EQ(calls, (std::vector<std::int64_t>{8, 3}));
}

TEST_F(GenerateTest, TheContextLimitEndsGenerationAndKeepsTheOutput) {
  const std::vector<std::int64_t> ids = prompt(0);
  const auto length = static_cast<std::int64_t>(ids.size());
  GenerateOptions options;
  options.max_new_tokens = 50;
  options.context_limit = length + 4;
  const std::vector<GenerateRequest> requests = {greedy(ids)};
  const GenerateOutput out = generate(model(), requests, options);
  const std::vector<std::int64_t> greedy_ids = fixture_->greedy_ids.to_vector<std::int64_t>();
  EXPECT_EQ(out.rows[0].tokens,
            std::vector<std::int64_t>(greedy_ids.begin(), greedy_ids.begin() + 4));
  EXPECT_EQ(out.rows[0].finish, FinishReason::Length);
  EXPECT_NE(out.rows[0].message.find("context limit"), std::string::npos) << out.rows[0].message;
  // The model's own limit (max_position_embeddings = 128) applies by default.
  std::vector<std::int64_t> long_prompt(126, 5);
  const GenerateOutput capped = run({greedy(long_prompt)}, 50);
  EXPECT_EQ(capped.rows[0].tokens.size(), 2u);
  EXPECT_EQ(capped.rows[0].finish, FinishReason::Length);
}

TEST_F(GenerateTest, BadRequestsAreRefusedBeforeRunning) {
  int calls = 0;
  const TokenCallback count = [&](std::int64_t, std::int64_t) { return ++calls > 0; };
  EXPECT_THROW(run({greedy(std::vector<std::int64_t>(128, 5))}, 4, count), InvalidArgument);
  EXPECT_THROW(run({greedy(prompt(0)), greedy({})}, 4, count), InvalidArgument);
  EXPECT_THROW(run({greedy(prompt(0)), greedy({1, 100000})}, 4, count), InvalidArgument);
  GenerateRequest bad = sampled(prompt(0), 1);
  bad.params.top_p = 0.0;
  EXPECT_THROW(run({greedy(prompt(0)), bad}, 4, count), InvalidArgument);
  EXPECT_EQ(calls, 0);
}

TEST(GenerationConfigToParams, ReadsTheSamplingFields) {
  text::GenerationConfig config;
  config.do_sample = true;
  config.temperature = 0.7;
  config.top_k = 20;
  config.top_p = 0.8;
  config.min_p = 0.05;
  config.repetition_penalty = 1.05;
  const SamplingParams p = sampling_params_from(config);
  EXPECT_FALSE(p.greedy());
  EXPECT_EQ(p.top_k, 20);
  EXPECT_DOUBLE_EQ(p.temperature, 0.7);
  EXPECT_DOUBLE_EQ(p.top_p, 0.8);
  EXPECT_DOUBLE_EQ(p.min_p, 0.05);
  EXPECT_DOUBLE_EQ(p.repetition_penalty, 1.05);
  EXPECT_TRUE(sampling_params_from(text::GenerationConfig{}).greedy());
  EXPECT_EQ(max_new_tokens_from(config, 10, 16), 16);
  config.max_length = 30;
  EXPECT_EQ(max_new_tokens_from(config, 10, 16), 20);
  config.max_new_tokens = 5;
  EXPECT_EQ(max_new_tokens_from(config, 10, 16), 5);
}

}  // namespace
}  // namespace strata::engine

namespace strata::engine {
namespace {

// Left-padded batches on architectures with other position rules (learned positions, OPT's
// offset, a sliding window): every row equals its prompt run alone, greedy and sampled.
class PaddedBatchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PaddedBatchTest, RowsEqualTheirPromptsRunAlone) {
  const testing::ModelFixture f = testing::load_model_fixture(GetParam());
  auto model = testing::load_fixture_model(f, Device::cpu());
  const std::vector<std::int64_t> full = f.prompt_ids.select(0, 1).to_vector<std::int64_t>();
  std::vector<GenerateRequest> requests;
  for (const std::size_t length : {full.size(), std::size_t{1}, full.size() / 2}) {
    GenerateRequest r{std::vector<std::int64_t>(full.begin(), full.begin() + length), {}};
    r.params.top_k = 20;
    r.params.seed = length;
    requests.push_back(r);
    r.params.do_sample = false;
    requests.push_back(r);
  }
  GenerateOptions options;
  options.max_new_tokens = 8;
  const GenerateOutput together = generate(*model, requests, options);
  for (std::size_t r = 0; r < requests.size(); ++r) {
    const GenerateOutput alone = generate(*model, std::span(&requests[r], 1), options);
    EXPECT_EQ(alone.rows[0].tokens, together.rows[r].tokens) << GetParam() << " row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PaddedBatchTest,
                         ::testing::Values("llama", "gpt2", "opt", "mistral", "qwen3"));

}  // namespace
}  // namespace strata::engine
