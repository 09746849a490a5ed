#pragma once
// The sampling options `generate` and `chat` share: each unset option takes the model's
// generation_config.json value; giving --temperature, --top-k, --top-p or --min-p turns sampling
// on (transformers' do_sample), unless the temperature is 0 (greedy).

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>

#include "strata/engine/sampling.h"
#include "strata/text/generation_config.h"

namespace strata::cli {

struct SamplingArgs {
  std::optional<double> temperature;
  std::optional<std::int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<double> presence_penalty;
  std::optional<double> frequency_penalty;
  std::optional<std::uint64_t> seed;
};

void add_sampling_options(CLI::App* cmd, SamplingArgs& args);

// generation_config.json's defaults with the options given on top, validated (InvalidArgument
// naming the option).
engine::SamplingParams sampling_params(const SamplingArgs& args,
                                       const text::GenerationConfig& config);

}  // namespace strata::cli
