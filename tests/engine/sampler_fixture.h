#pragma once
// The recorded transformers cases (tests/fixtures/engine/sampler_cases.json, written by
// tests/fixtures/tools/record_sampler_fixtures.py), shared by the cpu and cuda tests.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/engine/sampling.h"

namespace strata::engine::testing {

struct SamplerCase {
  std::string name;
  SamplingParams params;
  std::vector<float> logits;
  std::vector<std::int64_t> history;
  std::vector<bool> kept;
  std::vector<double> probs;
};

inline std::vector<SamplerCase> load_sampler_cases() {
  const auto path =
      std::filesystem::path(STRATA_TEST_FIXTURES_DIR) / "engine" / "sampler_cases.json";
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return {};
  }
  const auto doc = nlohmann::json::parse(in);
  std::vector<SamplerCase> cases;
  for (const auto& c : doc.at("cases")) {
    SamplerCase out;
    out.name = c.at("name").get<std::string>();
    const auto& o = c.at("options");
    out.params.temperature = o.value("temperature", 1.0);
    out.params.top_k = o.value("top_k", std::int64_t{0});
    out.params.top_p = o.value("top_p", 1.0);
    out.params.min_p = o.value("min_p", 0.0);
    out.params.repetition_penalty = o.value("repetition_penalty", 1.0);
    out.logits = c.at("logits").get<std::vector<float>>();
    out.history = c.at("history").get<std::vector<std::int64_t>>();
    out.kept = c.at("kept").get<std::vector<bool>>();
    out.probs = c.at("probs").get<std::vector<double>>();
    cases.push_back(std::move(out));
  }
  return cases;
}

// The whole history counts for the repetition penalty (prompt + output, as transformers'
// input_ids); none of it is "generated", which only presence/frequency penalties (not in
// transformers) would read.
inline void expect_case_matches(const SamplerCase& c, Device device) {
  const auto vocab = static_cast<std::int64_t>(c.logits.size());
  const Tensor logits = Tensor::from_vector(c.logits, {1, vocab}).to(device);
  const SampleRow row{&c.params, c.history, 0, 17};
  const std::vector<float> probs =
      sampling_probabilities(logits, std::span(&row, 1)).to_vector<float>();
  for (std::int64_t i = 0; i < vocab; ++i) {
    EXPECT_EQ(probs[i] > 0.0f, static_cast<bool>(c.kept[i]))
        << c.name << " on " << device << ": token " << i;
    EXPECT_NEAR(probs[i], c.probs[i], 1e-6) << c.name << " on " << device << ": token " << i;
  }
  // A draw lands on a kept token.
  const std::int64_t id = sample(logits, std::span(&row, 1))[0];
  EXPECT_TRUE(c.kept[id]) << c.name << " on " << device << " drew filtered token " << id;
}

}  // namespace strata::engine::testing
