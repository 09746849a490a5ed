#include "text/jinja/lexer.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "strata/text/chat_template.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Python's str.rstrip() / lstrip() of whitespace (Unicode whitespace included).
std::string rstrip_ws(std::string_view s) { return strip(s, nullptr, false, true); }

class Lexer {
 public:
  Lexer(std::string_view src, const std::string& origin) : src_(src), origin_(origin) {
    line_starts_.push_back(0);
    for (std::size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      const std::size_t tag = find_tag(pos_);
      std::string text(src_.substr(pos_, tag - pos_));
      if (tag == src_.size()) {
        emit_text(text, pos_);
        break;
      }
      const char kind = src_[tag + 1];
      const char marker = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (marker == '-') {
        text = rstrip_ws(text);
      } else if (marker != '+' && kind != '{') {
        // lstrip_blocks: spaces and tabs between the line start and a block or comment tag go.
        const std::size_t nl = text.rfind('\n');
        const std::size_t line_start = nl == std::string::npos ? 0 : nl + 1;
        if ((nl != std::string::npos || line_starting) &&
            std::all_of(text.begin() + line_start, text.end(), [](char c) {
              return c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r';
            })) {
          text.resize(line_start);
        }
      }
      emit_text(text, pos_);
      pos_ = tag + 2 + ((marker == '-' || marker == '+') ? 1 : 0);
      if (kind == '#') {
        line_starting = lex_comment(tag);
      } else if (kind == '%' && lex_raw(tag, line_starting)) {
        // raw block consumed
      } else {
        line_starting = lex_tag(tag, kind == '{');
      }
    }
    Token end;
    end.type = TokenType::End;
    set_position(end, src_.size());
    tokens_.push_back(end);
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void error(std::size_t offset, const std::string& message) const {
    const auto [line, col] = position(offset);
    throw TemplateError(fmt::format("{}:{}:{}: {}", origin_, line, col, message));
  }

  // Tokens come in source order: the column counts on from the previous position on the same
  // line, so a long one-line template costs linear time, not quadratic.
  std::pair<int, int> position(std::size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const std::size_t line = static_cast<std::size_t>(it - line_starts_.begin());
    std::size_t from = line_starts_[line - 1];
    std::size_t column = 1;
    if (line == cached_line_ && offset >= cached_offset_) {
      from = cached_offset_;
      column = cached_column_;
    }
    column += codepoint_count(src_.substr(from, offset - from));
    cached_line_ = line;
    cached_offset_ = offset;
    cached_column_ = column;
    return {static_cast<int>(line), static_cast<int>(column)};
  }

  void set_position(Token& t, std::size_t offset) const {
    const auto [line, col] = position(offset);
    t.line = line;
    t.column = col;
  }

  std::size_t find_tag(std::size_t from) const {
    for (std::size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
    }
    return src_.size();
  }

  void emit_text(std::string text, std::size_t offset) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::Text;
    t.value = std::move(text);
    set_position(t, offset);
    tokens_.push_back(std::move(t));
  }

  // After a closing delimiter at pos_ (already past it): `-` strips all following whitespace,
  // trim_blocks drops one newline after blocks and comments. Returns whether a line starts next.
  bool after_close(bool strip_after, bool trim) {
    if (strip_after) {
      const std::size_t start = pos_;
      // Python's \s: Unicode whitespace too; decode to test non-ASCII code points.
      while (pos_ < src_.size()) {
        if (is_space(src_[pos_])) {
          ++pos_;
          continue;
        }
        const auto c = static_cast<unsigned char>(src_[pos_]);
        if (c < 0x80) break;
        std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        const std::u32string cp = decode_utf8(src_.substr(pos_, len));
        if (cp.size() != 1 || !python_isspace(cp[0])) break;
        pos_ += len;
      }
      return pos_ > start && src_[pos_ - 1] == '\n';
    }
    if (trim && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      return true;
    }
    return false;
  }

  bool lex_comment(std::size_t tag) {
    const std::size_t close = src_.find("#}", pos_);
    if (close == std::string_view::npos) error(tag, "unclosed comment: missing '#}'");
    const bool strip_after = close > pos_ && src_[close - 1] == '-';
    pos_ = close + 2;
    return after_close(strip_after, true);
  }

  // `{% raw %}...{% endraw %}`: the body is text. Returns false when the tag is not raw.
  bool lex_raw(std::size_t tag, bool& line_starting) {
    std::size_t p = pos_;
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3]))) {
      return false;
    }
    p += 3;
    while (p < src_.size() && is_space(src_[p])) ++p;
    bool strip_after = false;
    if (p < src_.size() && src_[p] == '-') strip_after = true, ++p;
    if (src_.compare(p, 2, "%}") != 0) return false;
    pos_ = p + 2;
    after_close(strip_after, false);
    // Find `{%[-+]? endraw [-]?%}`.
    std::size_t search = pos_;
    while (true) {
      const std::size_t open = src_.find("{%", search);
      if (open == std::string_view::npos) error(tag, "unclosed raw block: missing '{% endraw %}'");
      std::size_t q = open + 2;
      const char marker = q < src_.size() ? src_[q] : '\0';
      if (marker == '-' || marker == '+') ++q;
      while (q < src_.size() && is_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      q += 6;
      while (q < src_.size() && is_space(src_[q])) ++q;
      bool end_strip = false;
      if (q < src_.size() && src_[q] == '-') end_strip = true, ++q;
      if (src_.compare(q, 2, "%}") != 0) {
        search = open + 2;
        continue;
      }
      std::string body(src_.substr(pos_, open - pos_));
      if (marker == '-') {
        body = rstrip_ws(body);
      } else if (marker != '+') {
        const std::size_t nl = body.rfind('\n');
        const std::size_t line_start = nl == std::string::npos ? 0 : nl + 1;
        if (nl != std::string::npos && std::all_of(body.begin() + line_start, body.end(),
                                                   [](char c) { return c == ' ' || c == '\t'; })) {
          body.resize(line_start);
        }
      }
      emit_text(body, pos_);
      pos_ = q + 2;
      line_starting = after_close(end_strip, true);
      return true;
    }
  }

  bool lex_tag(std::size_t tag, bool variable) {
    Token begin;
    begin.type = variable ? TokenType::VarBegin : TokenType::BlockBegin;
    set_position(begin, tag);
    tokens_.push_back(begin);
    const char* close = variable ? "}}" : "%}";
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) {
        error(tag, variable ? "unclosed expression: missing '}}'" : "unclosed tag: missing '%}'");
      }
      if (depth == 0) {
        const bool dash = src_[pos_] == '-' && src_.compare(pos_ + 1, 2, close) == 0;
        if (dash || src_.compare(pos_, 2, close) == 0) {
          Token end;
          end.type = variable ? TokenType::VarEnd : TokenType::BlockEnd;
          set_position(end, pos_);
          tokens_.push_back(end);
          pos_ += dash ? 3 : 2;
          return after_close(dash, !variable);
        }
      }
      lex_token(depth);
    }
  }

  void lex_token(int& depth) {
    Token t;
    set_position(t, pos_);
    const char c = src_[pos_];
    if (is_name_start(c)) {
      std::size_t end = pos_;
      while (end < src_.size() && is_name_char(src_[end])) ++end;
      t.type = TokenType::Name;
      t.value = std::string(src_.substr(pos_, end - pos_));
      pos_ = end;
    } else if (is_digit(c)) {
      lex_number(t);
    } else if (c == '\'' || c == '"') {
      lex_string(t);
    } else {
      static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
                                         "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                         "]",  "{",  "}",  ".",  ",",  ":",  "|"};
      const char* match = nullptr;
      for (const char* op : kOps) {
        if (src_.compare(pos_, std::strlen(op), op) == 0) {
          match = op;
          break;
        }
      }
      if (!match) error(pos_, fmt::format("unexpected character '{}'", c));
      t.type = TokenType::Op;
      t.value = match;
      pos_ += t.value.size();
      if (t.value == "(" || t.value == "[" || t.value == "{") ++depth;
      if ((t.value == ")" || t.value == "]" || t.value == "}") && depth > 0) --depth;
    }
    tokens_.push_back(std::move(t));
  }

  void lex_number(Token& t) {
    std::size_t end = pos_;
    auto digits = [&] {
      while (end < src_.size() &&
             (is_digit(src_[end]) ||
              (src_[end] == '_' && end + 1 < src_.size() && is_digit(src_[end + 1]))))
        ++end;
    };
    digits();
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && is_digit(src_[end + 1])) {
      is_float = true;
      ++end;
      digits();
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      std::size_t e = end + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && is_digit(src_[e])) {
        is_float = true;
        end = e;
        digits();
      }
    }
    std::string text;
    for (std::size_t i = pos_; i < end; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    if (is_float) {
      t.type = TokenType::Float;
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      t.type = TokenType::Int;
      const auto res = std::from_chars(text.data(), text.data() + text.size(), t.int_value);
      if (res.ec != std::errc()) error(pos_, fmt::format("integer literal {} is too large", text));
    }
    t.value = text;
    pos_ = end;
  }

  void lex_string(Token& t) {
    const char quote = src_[pos_];
    const std::size_t start = pos_;
    std::size_t p = pos_ + 1;
    std::string out;
    while (true) {
      if (p >= src_.size()) error(start, "unterminated string literal");
      const char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) error(start, "unterminated string literal");
      const char e = src_[p + 1];
      p += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\n':
          break;  // a backslash-newline joins lines, as Python's unicode-escape
        case 'x':
        case 'u':
        case 'U': {
          const std::size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          std::uint32_t cp = 0;
          if (p + n > src_.size()) error(start, "truncated \\x/\\u escape in string literal");
          const auto res = std::from_chars(src_.data() + p, src_.data() + p + n, cp, 16);
          if (res.ptr != src_.data() + p + n || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            error(start, "bad \\x/\\u escape in string literal");
          }
          append_utf8(out, cp);
          p += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            std::uint32_t cp = e - '0';
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7';
                 ++k, ++p) {
              cp = cp * 8 + (src_[p] - '0');
            }
            append_utf8(out, cp);
          } else {
            // Unknown escapes keep their backslash, as Python's unicode-escape does.
            out += '\\';
            p -= 1;
          }
      }
    }
    t.type = TokenType::String;
    t.value = std::move(out);
    pos_ = p + 1;
  }

  std::string_view src_;
  const std::string& origin_;
  std::vector<std::size_t> line_starts_;
  mutable std::size_t cached_line_ = 0, cached_offset_ = 0, cached_column_ = 1;
  std::size_t pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::string normalize_source(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::vector<Token> tokenize(std::string_view source, const std::string& origin) {
  return Lexer(source, origin).run();
}

}  // namespace strata::text::jinja
