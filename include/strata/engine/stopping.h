#pragma once
// When generation stops: an end-of-sequence token, max_new_tokens, the model's context limit
// (token level, StopCriteria), or a stop string found in the streamed text (text level,
// StopStringMatcher; the engine does not detokenise, so the caller feeds it the decoded text).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace strata::engine {

// OpenAI's finish_reason: "stop" (an eos token or a stop string) or "length" (max_new_tokens or
// the context limit); None while the sequence runs.
enum class FinishReason { None, Stop, Length };
std::string_view to_string(FinishReason reason);

struct StopDecision {
  FinishReason reason = FinishReason::None;
  std::string message;  // why, for the user ("" while running)
  bool stopped() const { return reason != FinishReason::None; }
};

class StopCriteria {
 public:
  // `context_limit`: the most tokens (prompt + generated) the model takes, its
  // max_position_embeddings; 0 for none.
  StopCriteria(std::vector<std::int64_t> eos_token_ids, std::int64_t max_new_tokens,
               std::int64_t context_limit);

  // Throws InvalidArgument when a prompt of `prompt_tokens` leaves no room for a new token; call
  // it before loading a model (the message says the limit and what to do).
  static void check_prompt(std::int64_t prompt_tokens, std::int64_t context_limit);

  // After `token` was produced: `generated` new tokens so far (including it) and `length`
  // tokens in the sequence (prompt + generated).
  StopDecision after_token(std::int64_t token, std::int64_t generated, std::int64_t length) const;

  bool is_eos(std::int64_t token) const;
  std::int64_t max_new_tokens() const { return max_new_tokens_; }
  std::int64_t context_limit() const { return context_limit_; }

 private:
  std::vector<std::int64_t> eos_;
  std::int64_t max_new_tokens_;
  std::int64_t context_limit_;
};

// Finds stop strings in text that arrives in pieces (a stop string may span pieces). feed()
// returns the text that is safe to show now: it holds back a tail that could be the start of a
// stop string. When a stop string is found, the text before it is returned, stopped() turns true
// and the stop string and everything after it are dropped (as OpenAI does). Matching is on bytes,
// so stop strings and pieces are compared exactly (UTF-8 in, UTF-8 out).
class StopStringMatcher {
 public:
  // Empty stop strings are refused (InvalidArgument); no stop strings is fine.
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Piece {
    std::string text;  // to emit now
    bool stopped = false;
    std::string stop;  // the stop string found
  };
  Piece feed(std::string_view chunk);
  // The held-back tail at the end of the stream ("" after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }
  const std::vector<std::string>& stop_strings() const { return stops_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace strata::engine
