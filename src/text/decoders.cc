// Decoders of tokenizer.json: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel,
// Metaspace. Each transforms the list of token strings as the reference's decode_chain; `first`
// false decodes a continuation (the Strip-at-start and Metaspace first-token rules are off).

#include "strata/core/error.h"
#include "text/tokenizer_parts.h"
#include "text/utf8.h"

namespace strata::text::detail {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens, bool first) const override {
    for (const auto& p : parts_) p->decode_chain(tokens, first);
  }
  bool pending(std::string_view token) const override {
    for (const auto& p : parts_) {
      if (p->pending(token)) return true;
    }
    return false;
  }
  bool rewrites_end() const override {
    for (const auto& p : parts_) {
      if (p->rewrites_end()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    for (auto& t : tokens) {
      matches.clear();
      if (regex_) {
        regex_->find_all(t, matches);
      } else if (!literal_.empty()) {
        for (auto pos = t.find(literal_); pos != std::string::npos;
             pos = t.find(literal_, pos + literal_.size())) {
          matches.emplace_back(pos, pos + literal_.size());
        }
      }
      if (matches.empty()) continue;
      std::string out;
      std::size_t last = 0;
      for (auto [b, e] : matches) {
        out.append(t, last, b - last);
        out += content_;
        last = e;
      }
      out.append(t, last, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

// "<0xAB>" -> 0xAB, or -1.
int byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9') {
      v |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      v |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      v |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return v;
}

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    std::size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (valid_utf8_prefix(bytes) == bytes.size()) {
        out.push_back(bytes);
      } else {
        for (std::size_t k = 0; k < count; ++k) out.emplace_back(kReplacementChar);
      }
      bytes.clear();
      count = 0;
    };
    for (auto& t : tokens) {
      int b = byte_token(t);
      if (b >= 0) {
        bytes += static_cast<char>(b);
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
  bool pending(std::string_view token) const override { return byte_token(token) >= 0; }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop, bool after_fuse)
      : content_(content), start_(start), stop_(stop), after_fuse_(after_fuse) {}
  void decode_chain(std::vector<std::string>& tokens, bool first) const override {
    // Per token, as the reference. After a Fuse the one token is the whole text: in a
    // continuation its start is not the text's start, so it keeps its leading content.
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      std::size_t begin = 0;
      if (first || !after_fuse_ || i > 0) {
        for (std::size_t k = 0; k < start_ && begin < t.size(); ++k) {
          std::size_t p = begin;
          if (next_code_point(t, p) != content_) break;
          begin = p;
        }
      }
      std::size_t end = t.size();
      for (std::size_t k = 0; k < stop_ && end > begin; ++k) {
        std::size_t s = end - 1;
        while (s > begin && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80) --s;
        std::size_t p = s;
        if (next_code_point(t, p) != content_) break;
        end = s;
      }
      t = t.substr(begin, end - begin);
    }
  }
  bool rewrites_end() const override { return stop_ > 0; }

 private:
  char32_t content_;
  std::size_t start_, stop_;
  bool after_fuse_;
};

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      std::size_t mark = bytes.size();
      std::size_t pos = 0;
      bool mapped = true;
      while (pos < t.size()) {
        int b = byte_level_byte(next_code_point(t, pos));
        if (b < 0) {
          mapped = false;
          break;
        }
        bytes += static_cast<char>(b);
      }
      if (!mapped) {  // the reference keeps such a token's own bytes
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepend)
      : replacement_(std::move(replacement)), prepend_(prepend) {}
  void decode_chain(std::vector<std::string>& tokens, bool first) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      std::string out;
      std::size_t pos = 0;
      while (pos < t.size()) {
        if (t.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && first && prepend_)) out += ' ';
          pos += replacement_.size();
        } else {
          out += t[pos++];
        }
      }
      t = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepend_;
};

}  // namespace

namespace {
std::unique_ptr<Decoder> make_decoder(const JsonRef& node, bool& fused) {
  std::string type = node.at("type").str();
  if (type == "Sequence") {
    auto list = node.at("decoders");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (std::size_t i = 0; i < list.size(); ++i) parts.push_back(make_decoder(list.at(i), fused));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "Fuse" || type == "ByteLevel") fused = true;
  if (type == "Replace") {
    auto [literal, regex] = load_pattern(node.at("pattern"));
    return std::make_unique<ReplaceDecoder>(std::move(literal), std::move(regex),
                                            node.at("content").str());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto content = node.at("content");
    std::string c = content.str();
    std::size_t pos = 0;
    if (c.empty() || (next_code_point(c, pos), pos != c.size())) content.malformed("one character");
    pos = 0;
    std::int64_t start = node.int_or("start", 0), stop = node.int_or("stop", 0);
    if (start < 0 || stop < 0) node.malformed("start and stop >= 0");
    return std::make_unique<StripDecoder>(next_code_point(c, pos), static_cast<std::size_t>(start),
                                          static_cast<std::size_t>(stop), fused);
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    std::string replacement = node.str_or("replacement", "\u2581");
    if (replacement.empty()) node.at("replacement").malformed("a one-character string");
    bool prepend = node.bool_or("add_prefix_space", true);
    if (auto s = node.get("prepend_scheme")) prepend = s->str() != "never";
    return std::make_unique<MetaspaceDecoder>(replacement, prepend);
  }
  node.at("type").not_supported("the decoder type '" + type + "'");
}
}  // namespace

std::unique_ptr<Decoder> make_decoder(const JsonRef& node) {
  bool fused = false;
  return make_decoder(node, fused);
}

}  // namespace strata::text::detail
