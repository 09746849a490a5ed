// Pre-tokenizers of tokenizer.json: Sequence, Split (literal or Oniguruma regex, the five
// delimiter behaviours, invert), ByteLevel (prefix space, GPT-2 regex, byte-to-char map),
// Metaspace (prepend schemes, split), Digits.

#include <utf8proc.h>

#include <algorithm>
#include <array>

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"
#include "text/utf8.h"

namespace strata::text::detail {
namespace {

using Spans = std::vector<std::pair<std::size_t, std::size_t>>;

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const JsonRef& node) {
  std::string b = node.str();
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  node.not_supported("the split behavior '" + b + "'");
}

struct Segment2 {
  std::size_t begin, end;
  bool match;
};

// The reference's NormalizedString::split: segments (matches and gaps, in order) combined per
// behaviour; returns the kept spans.
void split_segments(std::vector<Segment2>& segs, Behavior behavior, bool invert, Spans& out) {
  if (invert) {
    for (auto& s : segs) s.match = !s.match;
  }
  out.clear();
  switch (behavior) {
    case Behavior::kRemoved:
      for (auto& s : segs) {
        if (!s.match) out.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kIsolated:
      for (auto& s : segs) out.emplace_back(s.begin, s.end);
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (auto& s : segs) {
        if (s.match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (std::size_t k = segs.size(); k-- > 0;) {
        auto& s = segs[k];
        if (s.match && !previous_match && !out.empty()) {
          out.back().first = s.begin;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (auto& s : segs) {
        if (s.match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.begin, s.end);
        }
        previous_match = s.match;
      }
      break;
    }
  }
}

// Matches -> ordered segments covering the text.
void to_segments(const Spans& matches, std::size_t size, std::vector<Segment2>& segs) {
  segs.clear();
  std::size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b != prev) segs.push_back({prev, b, false});
    segs.push_back({b, e, true});
    prev = e;
  }
  if (prev != size) segs.push_back({prev, size, false});
}

// Replaces each piece by its non-empty sub-pieces.
template <typename SplitFn>
void split_pieces(std::vector<Piece>& pieces, SplitFn&& fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  Spans spans;
  for (auto& p : pieces) {
    spans.clear();
    fn(p, spans);
    for (auto [b, e] : spans) {
      if (e > b) out.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
    }
  }
  pieces = std::move(out);
}

class SequencePre : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPre : public PreTokenizer {
 public:
  SplitPre(std::string literal, std::unique_ptr<Regex> regex, Behavior behavior, bool invert)
      : literal_(std::move(literal)),
        regex_(std::move(regex)),
        behavior_(behavior),
        invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, [&](const Piece& p, Spans& spans) {
      Spans matches;
      if (regex_) {
        regex_->find_all(p.text, matches);
      } else if (!literal_.empty()) {
        for (auto pos = p.text.find(literal_); pos != std::string::npos;
             pos = p.text.find(literal_, pos + literal_.size())) {
          matches.emplace_back(pos, pos + literal_.size());
        }
      }
      std::vector<Segment2> segs;
      to_segments(matches, p.text.size(), segs);
      split_segments(segs, behavior_, invert_, spans);
    });
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern, "ByteLevel") : nullptr) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& p : pieces) {
        if (!p.text.empty() && p.text[0] != ' ') p.text.insert(0, " ");
      }
    }
    if (regex_) {
      split_pieces(pieces, [&](const Piece& p, Spans& spans) {
        Spans matches;
        regex_->find_all(p.text, matches);
        std::vector<Segment2> segs;
        to_segments(matches, p.text.size(), segs);
        split_segments(segs, Behavior::kIsolated, false, spans);
      });
    }
    for (auto& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += byte_level_char(static_cast<unsigned char>(c));
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePre : public PreTokenizer {
 public:
  MetaspacePre(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : pieces) {
      std::string out;
      out.reserve(p.text.size() + replacement_.size());
      for (char c : p.text) {
        if (c == ' ') {
          out += replacement_;
        } else {
          out += c;
        }
      }
      bool starts = out.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start))) {
        out.insert(0, replacement_);
      }
      p.text = std::move(out);
    }
    if (!split_) return;
    split_pieces(pieces, [&](const Piece& p, Spans& spans) {
      Spans matches;
      for (auto pos = p.text.find(replacement_); pos != std::string::npos;
           pos = p.text.find(replacement_, pos + replacement_.size())) {
        matches.emplace_back(pos, pos + replacement_.size());
      }
      std::vector<Segment2> segs;
      to_segments(matches, p.text.size(), segs);
      split_segments(segs, Behavior::kMergedWithNext, false, spans);
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

// Rust's char::is_numeric (categories Nd, Nl, No), the Digits pre-tokenizer's test.
bool is_numeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

class DigitsPre : public PreTokenizer {
 public:
  explicit DigitsPre(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(pieces, [&](const Piece& p, Spans& spans) {
      std::vector<Segment2> segs;
      std::size_t pos = 0;
      while (pos < p.text.size()) {
        std::size_t start = pos;
        bool digit = is_numeric(next_code_point(p.text, pos));
        if (!digit && !segs.empty() && !segs.back().match) {
          segs.back().end = pos;  // gaps are one segment, as the reference's char patterns
        } else {
          segs.push_back({start, pos, digit});
        }
      }
      split_segments(segs, individual_ ? Behavior::kIsolated : Behavior::kContiguous, false, spans);
    });
  }

 private:
  bool individual_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonRef& node) {
  std::string type = node.at("type").str();
  if (type == "Sequence") {
    auto list = node.at("pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (std::size_t i = 0; i < list.size(); ++i) parts.push_back(make_pre_tokenizer(list.at(i)));
    return std::make_unique<SequencePre>(std::move(parts));
  }
  if (type == "Split") {
    auto [literal, regex] = load_pattern(node.at("pattern"));
    return std::make_unique<SplitPre>(std::move(literal), std::move(regex),
                                      parse_behavior(node.at("behavior")),
                                      node.bool_or("invert", false));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPre>(node.bool_or("add_prefix_space", true),
                                          node.bool_or("use_regex", true));
  }
  if (type == "Metaspace") {
    std::string replacement = node.str_or("replacement", "\u2581");
    if (replacement.empty()) node.at("replacement").malformed("a one-character string");
    PrependScheme scheme =
        node.bool_or("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
    if (auto s = node.get("prepend_scheme")) {
      std::string v = s->str();
      if (v == "always") {
        scheme = PrependScheme::kAlways;
      } else if (v == "first") {
        scheme = PrependScheme::kFirst;
      } else if (v == "never") {
        scheme = PrependScheme::kNever;
      } else {
        s->not_supported("the prepend_scheme '" + v + "'");
      }
    }
    return std::make_unique<MetaspacePre>(replacement, scheme, node.bool_or("split", true));
  }
  if (type == "Digits")
    return std::make_unique<DigitsPre>(node.bool_or("individual_digits", false));
  node.at("type").not_supported("the pre-tokenizer type '" + type + "'");
}

const std::string& byte_level_char(unsigned char byte) {
  static const auto table = [] {
    std::array<std::string, 256> t;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      append_utf8(t[b], cp);
    }
    return t;
  }();
  return table[byte];
}

int byte_level_byte(char32_t cp) {
  static const auto table = [] {
    std::array<int, 512> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) {
      const std::string& s = byte_level_char(static_cast<unsigned char>(b));
      std::size_t pos = 0;
      t[next_code_point(s, pos)] = b;
    }
    return t;
  }();
  return cp < 512 ? table[cp] : -1;
}

}  // namespace strata::text::detail
