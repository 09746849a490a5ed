#pragma once
// Sampling the next token from logits, with transformers' logits processors and their order:
//
//   1. repetition_penalty on every distinct token of prompt + output (a positive logit is divided
//      by it, a negative one multiplied: transformers' RepetitionPenaltyLogitsProcessor);
//   2. frequency_penalty * count + presence_penalty on tokens generated so far (OpenAI's
//      definition, applied where vLLM applies it: after the repetition penalty, before
//      temperature);
//   3. temperature (TemperatureLogitsWarper), 4. top_k (TopKLogitsWarper: every token tied with
//      the k-th value stays), 5. top_p (TopPLogitsWarper: a token stays while the probability of
//      the tokens ranking above it is below top_p), 6. min_p (MinPLogitsWarper: a token stays when
//      its probability is at least min_p times the top one), 7. one draw from what is left.
//
// Greedy rows (temperature 0 or do_sample false) take the argmax after the penalties, lowest id
// on ties, so without penalties they equal models::generate_greedy bit for bit.
//
// Each row has its own counter-based random stream (Philox4x32-10 keyed by the row's seed, draw
// n = the row's n-th generated token): a row's token depends on its logits, history and seed only,
// never on the other rows of the batch, and the CPU and the GPU draw the same numbers. Logits on
// a GPU are sampled there: only the chosen ids come back.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::engine {

struct SamplingParams {
  double temperature = 1.0;           // >= 0; 0 means greedy
  std::int64_t top_k = 0;             // >= 0; 0 disables it
  double top_p = 1.0;                 // in (0, 1]; 1 disables it
  double min_p = 0.0;                 // in [0, 1]; 0 disables it
  double repetition_penalty = 1.0;    // > 0; 1 disables it
  double presence_penalty = 0.0;      // in [-2, 2] as OpenAI
  double frequency_penalty = 0.0;     // in [-2, 2] as OpenAI
  bool do_sample = true;              // false means greedy (transformers' do_sample)
  std::optional<std::uint64_t> seed;  // absent: a random one per sequence

  bool greedy() const { return !do_sample || temperature == 0.0; }
  bool has_penalties() const {
    return repetition_penalty != 1.0 || presence_penalty != 0.0 || frequency_penalty != 0.0;
  }
  // Throws InvalidArgument naming the field, its value and the accepted range.
  void validate() const;
  // "temperature=0.7 top_k=50 ..." (the options in effect), for logs.
  std::string describe() const;
};

// One row of a sampling call. `context` is the prompt followed by the tokens generated so far;
// the last `generated` of them are the output (presence and frequency penalties count those).
// `seed` is the row's stream and `generated` its position in it, so a seed replays a run.
struct SampleRow {
  const SamplingParams* params = nullptr;
  std::span<const std::int64_t> context;
  std::int64_t generated = 0;
  std::uint64_t seed = 0;
};

// A seed for a sequence: params.seed when given, else a fresh random one.
std::uint64_t resolve_seed(const SamplingParams& params);

// One id per row of `logits` [batch, vocab] (or [batch, 1, vocab]; float32, bfloat16 or float16,
// on the cpu or a GPU). rows.size() must equal batch. Throws InvalidArgument for bad shapes,
// parameters or history ids outside the vocabulary.
std::vector<std::int64_t> sample(const Tensor& logits, std::span<const SampleRow> rows);

// The distribution each row draws from after the penalties and filters: float32 [batch, vocab]
// on the logits' device (zero where a token was filtered out; one-hot for greedy rows). For tests
// and inspection: sample() never builds it.
Tensor sampling_probabilities(const Tensor& logits, std::span<const SampleRow> rows);

}  // namespace strata::engine
