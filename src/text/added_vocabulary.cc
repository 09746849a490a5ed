// Added tokens, matched before the model as the reference does: leftmost-longest over the raw
// text (tokens with normalized=false) and then over each normalised piece (normalized=true),
// with lstrip/rstrip absorbing whitespace and single_word refusing matches inside words.

#include <algorithm>

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"
#include "text/utf8.h"

namespace strata::text::detail {

// A byte trie; children kept sorted per node (added vocabularies reach a few thousand tokens).
struct AddedVocabulary::Trie {
  struct Node {
    std::vector<std::pair<unsigned char, std::int32_t>> children;
    std::int32_t token = -1;  // index into tokens_
  };
  std::vector<Node> nodes{1};

  void insert(std::string_view s, std::int32_t token) {
    std::int32_t cur = 0;
    for (char ch : s) {
      auto c = static_cast<unsigned char>(ch);
      auto& kids = nodes[static_cast<std::size_t>(cur)].children;
      auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(c, std::int32_t{-1}));
      if (it != kids.end() && it->first == c) {
        cur = it->second;
      } else {
        auto next = static_cast<std::int32_t>(nodes.size());
        kids.insert(it, {c, next});
        nodes.emplace_back();
        cur = next;
      }
    }
    // The first token with a given content wins (later duplicates are ignored).
    if (nodes[static_cast<std::size_t>(cur)].token < 0)
      nodes[static_cast<std::size_t>(cur)].token = token;
  }

  // The longest token starting at text[pos] that `accept` allows; {-1, 0} when none.
  template <typename Accept>
  std::pair<std::int32_t, std::size_t> longest(std::string_view text, std::size_t pos,
                                               Accept&& accept) const {
    std::pair<std::int32_t, std::size_t> best{-1, 0};
    std::int32_t cur = 0;
    for (std::size_t k = pos; k < text.size(); ++k) {
      const auto& kids = nodes[static_cast<std::size_t>(cur)].children;
      auto c = static_cast<unsigned char>(text[k]);
      auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(c, std::int32_t{-1}));
      if (it == kids.end() || it->first != c) break;
      cur = it->second;
      std::int32_t t = nodes[static_cast<std::size_t>(cur)].token;
      if (t >= 0 && accept(t)) best = {t, k + 1 - pos};
    }
    return best;
  }
};

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)),
      raw_(std::make_unique<Trie>()),
      normalized_(std::make_unique<Trie>()) {
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const auto& t = tokens_[i];
    by_id_.emplace(t.id, i);
    by_content_.emplace(t.content, t.id);
    if (t.content.empty()) continue;
    bool normalized = t.normalized;
    (normalized ? normalized_ : raw_)->insert(t.content, static_cast<std::int32_t>(i));
    any_normalized_ |= normalized;
  }
}

AddedVocabulary::~AddedVocabulary() = default;
AddedVocabulary::AddedVocabulary(AddedVocabulary&&) noexcept = default;

namespace {

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return is_word_char(next_code_point(s, start));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t pos = 0;
  return is_word_char(next_code_point(s, pos));
}

// Byte offset where the trailing whitespace of s begins.
std::size_t trailing_space_start(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    std::size_t p = start;
    if (!is_whitespace(next_code_point(s, p))) break;
    end = start;
  }
  return end;
}

std::size_t leading_space_len(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t p = pos;
    if (!is_whitespace(next_code_point(s, p))) break;
    pos = p;
  }
  return pos;
}

}  // namespace

std::vector<Segment> AddedVocabulary::split(std::string_view text, bool normalized,
                                            bool skip_special) const {
  std::vector<Segment> out;
  const Trie& trie = normalized ? *normalized_ : *raw_;
  std::size_t start_offset = 0;
  std::size_t pos = 0;
  auto accept = [&](std::int32_t t) {
    return !(skip_special && tokens_[static_cast<std::size_t>(t)].special);
  };
  while (pos < text.size()) {
    auto [t, len] = trie.longest(text, pos, accept);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[static_cast<std::size_t>(t)];
    std::size_t start = pos, stop = pos + len;
    if (tok.single_word) {
      bool start_space = start == 0 || !ends_with_word(text.substr(0, start));
      bool stop_space = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!start_space || !stop_space) {
        // The reference's matcher moves past this match (leftmost-longest, non-overlapping).
        pos = stop;
        continue;
      }
    }
    if (tok.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (tok.rstrip) stop += leading_space_len(text.substr(stop));
    if (start > start_offset) out.push_back({-1, start_offset, start});
    out.push_back({tok.id, start, stop});
    start_offset = stop;
    pos = stop;
  }
  if (start_offset < text.size()) out.push_back({-1, start_offset, text.size()});
  return out;
}

const AddedToken* AddedVocabulary::find(std::int64_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<std::int64_t> AddedVocabulary::find(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

}  // namespace strata::text::detail
