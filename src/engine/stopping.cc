#include "strata/engine/stopping.h"

#include <fmt/format.h>

#include <algorithm>

#include "strata/core/error.h"

namespace strata::engine {

std::string_view to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::None:
      return "none";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
  }
  return "unknown";
}

StopCriteria::StopCriteria(std::vector<std::int64_t> eos_token_ids, std::int64_t max_new_tokens,
                           std::int64_t context_limit)
    : eos_(std::move(eos_token_ids)),
      max_new_tokens_(max_new_tokens),
      context_limit_(context_limit) {
  STRATA_CHECK_ARG(max_new_tokens > 0, "max_new_tokens is {}; it must be positive", max_new_tokens);
  STRATA_CHECK_ARG(context_limit >= 0, "context limit is {}; pass 0 for none", context_limit);
}

void StopCriteria::check_prompt(std::int64_t prompt_tokens, std::int64_t context_limit) {
  STRATA_CHECK_ARG(prompt_tokens > 0, "the prompt is empty; generation needs at least one token");
  STRATA_CHECK_ARG(context_limit == 0 || prompt_tokens < context_limit,
                   "the prompt has {} tokens but the model's context limit "
                   "(max_position_embeddings) is {} tokens, prompt and output together; shorten "
                   "the prompt to at most {} tokens",
                   prompt_tokens, context_limit, context_limit - 1);
}

bool StopCriteria::is_eos(std::int64_t token) const {
  return std::find(eos_.begin(), eos_.end(), token) != eos_.end();
}

StopDecision StopCriteria::after_token(std::int64_t token, std::int64_t generated,
                                       std::int64_t length) const {
  if (is_eos(token)) return {FinishReason::Stop, fmt::format("end-of-sequence token {}", token)};
  if (generated >= max_new_tokens_) {
    return {FinishReason::Length, fmt::format("max_new_tokens ({}) reached", max_new_tokens_)};
  }
  if (context_limit_ > 0 && length >= context_limit_) {
    return {FinishReason::Length,
            fmt::format("the model's context limit of {} tokens (max_position_embeddings) was "
                        "reached after {} new tokens; the output so far is kept",
                        context_limit_, generated)};
  }
  return {};
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings)
    : stops_(std::move(stop_strings)) {
  for (std::size_t i = 0; i < stops_.size(); ++i) {
    STRATA_CHECK_ARG(!stops_[i].empty(), "stop string {} is empty; remove it", i);
  }
}

StopStringMatcher::Piece StopStringMatcher::feed(std::string_view chunk) {
  Piece piece;
  if (stopped_) {
    piece.stopped = true;
    return piece;
  }
  pending_.append(chunk);
  // The earliest stop string in the text (the longest one when two start at the same place).
  std::size_t found = std::string::npos;
  const std::string* which = nullptr;
  for (const std::string& stop : stops_) {
    const std::size_t at = pending_.find(stop);
    if (at == std::string::npos) continue;
    if (at < found || (at == found && stop.size() > which->size())) {
      found = at;
      which = &stop;
    }
  }
  if (which != nullptr) {
    piece.text = pending_.substr(0, found);
    piece.stopped = true;
    piece.stop = *which;
    pending_.clear();
    stopped_ = true;
    return piece;
  }
  // Hold back the longest tail that is a proper prefix of a stop string.
  std::size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (std::size_t k = std::min(pending_.size(), stop.size() - 1); k > hold; --k) {
      if (pending_.compare(pending_.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  piece.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return piece;
}

std::string StopStringMatcher::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace strata::engine
