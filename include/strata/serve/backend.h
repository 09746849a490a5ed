#pragma once
// What the HTTP server needs from the model side, behind an interface so the server is tested
// over real sockets with a fake (tests/serve/server_test.cc) and runs a real model through
// make_model_backend (src/serve/model_backend.cc): prompts to token ids, token ids back to text
// (streamed, with stop strings), sampling parameters, and the continuous-batching scheduler.

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/engine/scheduler.h"
#include "strata/serve/protocol.h"

namespace strata::serve {

// The text of one sequence as its tokens arrive: detokenised incrementally, with the stop strings
// of its request found across token boundaries (text after a stop string is never shown).
class TextStream {
 public:
  virtual ~TextStream() = default;
  struct Piece {
    std::string text;      // to send now (may be empty)
    bool stopped = false;  // a stop string was found: the sequence ends
  };
  virtual Piece push(std::int64_t token) = 0;
  // Whatever was held back, at the end of the sequence ("" after a stop).
  virtual std::string finish() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // The token ids of a completion prompt (the tokenizer's special tokens added, e.g. BOS).
  virtual std::vector<std::int64_t> encode_prompt(const std::string& prompt) const = 0;
  // The prompt of a chat: the template rendered with add_generation_prompt, with message content
  // encoded as plain text (a user cannot inject control tokens). Throws ApiError(400) when the
  // model has no chat template or the template refuses the messages.
  virtual std::vector<std::int64_t> encode_chat(const nlohmann::json& messages) const = 0;
  virtual std::int64_t vocab_size() const = 0;
  virtual std::vector<std::int64_t> eos_token_ids() const = 0;
  // The sampling parameters of a request: its fields over the model's generation_config.json
  // defaults. Throws ApiError(400) naming a field the sampler refuses.
  virtual std::shared_ptr<const engine::SamplingParams> sampling_params(
      const SamplingFields& fields) const = 0;
  // The seed a sequence draws with (the request's, else a fresh one).
  virtual std::uint64_t seed_for(const SamplingFields& fields) const = 0;
  virtual std::unique_ptr<TextStream> text_stream(const std::vector<std::string>& stop) const = 0;
  virtual engine::Scheduler& scheduler() = 0;
};

}  // namespace strata::serve
