// The tokenizer pipeline end to end: added tokens, normaliser, pre-tokenizer, BPE, template
// (encode); token strings and the decoder chain (decode); and the public facade. No
// clean_up_tokenization: transformers 5 ignores clean_up_tokenization_spaces for BPE tokenizers
// (it would strip spaces before punctuation), and only BPE is supported here.

#include "strata/text/tokenizer.h"

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"
#include "text/utf8.h"

namespace strata::text {
namespace detail {

void TokenizerState::encode_into(std::string_view input, bool add_special, bool skip_special,
                                 std::vector<std::int64_t>& ids, bool text_at_start) const {
  // Rust strings are valid UTF-8 by construction; bytes that are not become U+FFFD here.
  std::string repaired;
  std::string_view text = input;
  if (valid_utf8_prefix(input) != input.size()) {
    repaired = utf8_lossy(input);
    text = repaired;
  }
  std::vector<Piece> pieces;
  auto run_model = [&](std::vector<Piece>& ps) {
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(ps);
    for (const auto& p : ps) model->tokenize(p.text, ids);
    ps.clear();
  };
  for (const Segment& seg : added->split(text, false, skip_special)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    std::string piece(text.substr(seg.begin, seg.end - seg.begin));
    bool at_start = text_at_start && seg.begin == 0;
    if (normalizer) normalizer->normalize(piece);
    if (!added->any_normalized()) {
      pieces.push_back({std::move(piece), at_start});
      run_model(pieces);
      continue;
    }
    for (const Segment& sub : added->split(piece, true, skip_special)) {
      if (sub.id >= 0) {
        ids.push_back(sub.id);
        continue;
      }
      pieces.push_back({piece.substr(sub.begin, sub.end - sub.begin), at_start && sub.begin == 0});
      run_model(pieces);
    }
  }
  if (add_special) post.apply(ids);
}

std::string TokenizerState::token_string(std::int64_t id) const {
  if (const AddedToken* t = added->find(id)) return t->content;
  std::string_view s = model->id_to_token(id);
  if (s.empty()) {
    STRATA_THROW(InvalidArgument, "token id {} is not in the vocabulary of {} (ids are 0..{})", id,
                 origin, vocab_size - 1);
  }
  return std::string(s);
}

bool TokenizerState::is_special(std::int64_t id) const {
  const AddedToken* t = added->find(id);
  return t && t->special;
}

std::string TokenizerState::decode(const std::int64_t* ids, std::size_t n, bool skip_special,
                                   bool first) const {
  std::vector<std::string> tokens;
  tokens.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (skip_special && is_special(ids[i])) continue;
    tokens.push_back(token_string(ids[i]));
  }
  std::string out;
  if (decoder) {
    decoder->decode_chain(tokens, first);
    for (const auto& t : tokens) out += t;
  } else {
    // No decoder: tokens joined by spaces, as the reference; a continuation joins on too.
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 || !first) out += ' ';
      out += tokens[i];
    }
  }
  return out;
}

}  // namespace detail

Tokenizer::Tokenizer(std::shared_ptr<const detail::TokenizerState> state)
    : state_(std::move(state)) {}

std::vector<std::int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<std::int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  state_->encode_into(text, add_special_tokens, false, ids);
  return ids;
}

std::vector<std::int64_t> Tokenizer::encode_plain(std::string_view text, bool at_start) const {
  std::vector<std::int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  state_->encode_into(text, false, true, ids, at_start);
  return ids;
}

Tokenizer::Encoding Tokenizer::encode_with_pieces(std::string_view text,
                                                  bool add_special_tokens) const {
  Encoding e;
  e.ids = encode(text, add_special_tokens);
  e.pieces.reserve(e.ids.size());
  for (auto id : e.ids) e.pieces.push_back(state_->token_string(id));
  return e;
}

std::string Tokenizer::decode(std::span<const std::int64_t> ids, bool skip_special_tokens) const {
  return state_->decode(ids.data(), ids.size(), skip_special_tokens, true);
}

std::int64_t Tokenizer::vocab_size() const { return state_->vocab_size; }

std::optional<std::int64_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = state_->added->find(token)) return id;
  return state_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(std::int64_t id) const { return state_->token_string(id); }

bool Tokenizer::is_special(std::int64_t id) const { return state_->is_special(id); }
std::optional<std::int64_t> Tokenizer::bos_token_id() const { return state_->bos; }
std::optional<std::int64_t> Tokenizer::eos_token_id() const { return state_->eos; }
std::optional<std::int64_t> Tokenizer::pad_token_id() const { return state_->pad; }

}  // namespace strata::text
