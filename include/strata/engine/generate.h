#pragma once
// The generation driver: prefill the prompts, then decode one token per step with the sampler and
// a KV cache, stopping each row on its own (eos, max_new_tokens, the context limit, or the
// caller's callback, which is where stop strings on the decoded text end a row). Tokens in,
// tokens out: text is the caller's business (the CLI detokenises and matches stop strings).

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/core/device.h"
#include "strata/engine/sampling.h"
#include "strata/engine/stopping.h"
#include "strata/models/causal_lm.h"
#include "strata/text/generation_config.h"

namespace strata::engine {

struct GenerateRequest {
  std::vector<std::int64_t> prompt;  // token ids, not empty
  SamplingParams params;             // validated before anything runs
};

struct GenerateOptions {
  std::int64_t max_new_tokens = 16;
  std::vector<std::int64_t> eos_token_ids;
  // Prompt + output limit: nullopt uses the model's max_position_embeddings (none when 0).
  std::optional<std::int64_t> context_limit;
  // Where the input ids go: by default the input embedding's device when materialised, else the
  // cpu (a hook moves them), as models::generate_greedy.
  std::optional<Device> input_device;
  // Unpadded decode steps of up to 8 rows through the fused CUDA graph when the model allows it
  // (strata/models/decode_graph.h; STRATA_DECODE_GRAPH=0 also turns it off).
  bool decode_graph = true;
};

// Called once per new token of a running row, in step order; an end-of-sequence token is not
// reported (it ends the row). Return false to end the row (finish reason "stop"; the token stays
// in the output): the CLI does so when a stop string appears in the decoded text.
using TokenCallback = std::function<bool(std::int64_t row, std::int64_t token)>;

struct RowOutput {
  std::vector<std::int64_t> tokens;  // the new tokens, an ending eos included (as transformers)
  FinishReason finish = FinishReason::None;
  std::string message;     // why the row ended
  std::uint64_t seed = 0;  // the seed its draws used (replays the row)
};

struct GenerateOutput {
  std::vector<RowOutput> rows;       // one per request, in order
  double prefill_seconds = 0.0;      // the prompt forward(s) and the first token
  std::vector<double> step_seconds;  // one per later decode step
};

// Generates for every request, all in one batch: prompts of different lengths are left-padded
// to the longest with an attention mask (each row then equals its prompt run alone). Throws
// InvalidArgument before running anything when a prompt is empty, does not fit the context
// limit, holds an id outside the vocabulary, or a parameter is out of range.
GenerateOutput generate(models::CausalLM& model, std::span<const GenerateRequest> requests,
                        const GenerateOptions& options, const TokenCallback& on_token = {});

// SamplingParams from a model's generation_config.json (do_sample, temperature, top_k, top_p,
// min_p, repetition_penalty), as transformers' generate() reads them.
SamplingParams sampling_params_from(const text::GenerationConfig& config);

// GenerateOptions::max_new_tokens from generation_config.json: max_new_tokens, else
// max_length - prompt_tokens (at least 1), else `fallback`.
std::int64_t max_new_tokens_from(const text::GenerationConfig& config, std::int64_t prompt_tokens,
                                 std::int64_t fallback);

}  // namespace strata::engine
