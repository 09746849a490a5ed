// Normalizers of tokenizer.json: Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD (utf8proc),
// Lowercase, Strip. Each works on one piece of text between added tokens, as the reference.

#include <utf8proc.h>

#include <cstdlib>

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"
#include "text/utf8.h"

namespace strata::text::detail {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

// Replace with a literal pattern or a regex (non-overlapping, left to right).
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    if (regex_) {
      regex_->find_all(text, matches);
    } else if (!literal_.empty()) {
      for (std::size_t pos = text.find(literal_); pos != std::string::npos;
           pos = text.find(literal_, pos + literal_.size())) {
        matches.emplace_back(pos, pos + literal_.size());
      }
    }
    if (matches.empty()) return;
    std::string out;
    out.reserve(text.size() + matches.size() * content_.size());
    std::size_t last = 0;
    for (auto [b, e] : matches) {
      out.append(text, last, b - last);
      out += content_;
      last = e;
    }
    out.append(text, last, std::string::npos);
    text = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  void normalize(std::string& text) const override {
    if (text.empty()) return;
    // ASCII is invariant under every normalisation form: skip the library call.
    bool ascii = true;
    for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (ascii) return;
    utf8proc_uint8_t* out = nullptr;
    auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                          static_cast<utf8proc_option_t>(options_));
    if (n < 0) return;  // invalid UTF-8 cannot reach here (input is repaired first)
    text.assign(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
    std::free(out);
  }

 private:
  int options_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    std::size_t pos = 0;
    while (pos < text.size()) {
      char32_t cp = next_code_point(text, pos);
      if (cp == 0x130) {  // İ lowercases to i + combining dot above (Rust's to_lowercase)
        out += "i\xCC\x87";
        continue;
      }
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
    text = std::move(out);
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    std::size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        std::size_t p = begin;
        if (!is_whitespace(next_code_point(text, p))) break;
        begin = p;
      }
    }
    if (right_) {
      while (end > begin) {
        std::size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        std::size_t p = start;
        if (!is_whitespace(next_code_point(text, p))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

}  // namespace

// {"String": "..."} or {"Regex": "..."}: the literal, or a compiled regex.
std::pair<std::string, std::unique_ptr<Regex>> load_pattern(const JsonRef& pattern) {
  if (auto s = pattern.get("String")) return {s->str(), nullptr};
  if (auto r = pattern.get("Regex")) {
    return {std::string(), std::make_unique<Regex>(r->str(), r->file() + ": " + r->path())};
  }
  pattern.malformed("an object with a \"String\" or \"Regex\" member");
}

std::unique_ptr<Normalizer> make_normalizer(const JsonRef& node) {
  std::string type = node.at("type").str();
  if (type == "Sequence") {
    auto list = node.at("normalizers");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (std::size_t i = 0; i < list.size(); ++i) parts.push_back(make_normalizer(list.at(i)));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(node.at("prepend").str());
  if (type == "Replace") {
    auto [literal, regex] = load_pattern(node.at("pattern"));
    return std::make_unique<ReplaceNormalizer>(std::move(literal), std::move(regex),
                                               node.at("content").str());
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(node.bool_or("strip_left", true),
                                             node.bool_or("strip_right", true));
  }
  node.at("type").not_supported("the normalizer type '" + type + "'");
}

}  // namespace strata::text::detail
