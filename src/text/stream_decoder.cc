// Streaming detokenisation. The decoded text of a window of ids is emitted up to the point
// where more ids could still change it: a trailing run of byte-fallback tokens (a UTF-8
// character or an invalid group still forming) and trailing U+FFFD of ByteLevel's incomplete
// bytes. When all of
// a window's text is out, the window restarts, decoded from then on as a continuation (no
// start-of-text rules), so the work per id stays bounded and the concatenation of the pieces
// equals decode() of all ids.

#include "strata/core/error.h"
#include "strata/text/tokenizer.h"
#include "text/tokenizer_parts.h"

namespace strata::text {
namespace {
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : state_(tokenizer.state_), skip_special_(skip_special_tokens) {}

std::string StreamDecoder::push(std::int64_t id) {
  const detail::TokenizerState& s = *state_;
  s.token_string(id);  // validates the id before it joins the window
  ids_.push_back(id);
  std::string text = s.decode(ids_.data(), ids_.size(), skip_special_, at_start_);
  // Text of a trailing run of pending (byte) tokens may still change: stop before it. Skipped
  // special tokens are transparent (the byte group continues across them).
  std::size_t k = ids_.size();
  bool has_pending = false;
  if (s.decoder) {
    while (k > 0) {
      std::int64_t last = ids_[k - 1];
      if (skip_special_ && s.is_special(last)) {
        --k;
      } else if (s.decoder->pending(s.token_string(last))) {
        has_pending = true;
        --k;
      } else {
        break;
      }
    }
  }
  if (!has_pending) k = ids_.size();
  std::string stable_text =
      k == ids_.size() ? text : s.decode(ids_.data(), k, skip_special_, at_start_);
  std::size_t stable = std::min(stable_text.size(), text.size());
  while (stable >= 3 && std::string_view(text).substr(stable - 3, 3) == kReplacementChar) {
    stable -= 3;
  }
  std::string out;
  if (stable > emitted_) {
    out = text.substr(emitted_, stable - emitted_);
    emitted_ = stable;
  }
  // A decoder that strips the text's end (Strip stop > 0) may still drop or restore trailing
  // characters: such a stream keeps its whole window.
  bool restartable = !(s.decoder && s.decoder->rewrites_end());
  if (restartable && k == ids_.size() && emitted_ == text.size() && emitted_ > 0) {
    ids_.clear();
    emitted_ = 0;
    at_start_ = false;
  }
  return out;
}

std::string StreamDecoder::finish() {
  std::string text = state_->decode(ids_.data(), ids_.size(), skip_special_, at_start_);
  std::string out = emitted_ < text.size() ? text.substr(emitted_) : std::string();
  ids_.clear();
  emitted_ = 0;
  at_start_ = true;
  return out;
}

}  // namespace strata::text
