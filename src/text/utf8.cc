#include "text/utf8.h"

#include <utf8proc.h>

namespace strata::text::detail {

char32_t next_code_point(std::string_view text, std::size_t& pos) {
  auto b0 = static_cast<unsigned char>(text[pos]);
  std::size_t n = utf8_len(b0);
  if (pos + n > text.size()) n = 1;
  char32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (std::size_t i = 1; i < n; ++i)
    cp = (cp << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  pos += n;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_word_char(char32_t c) {
  if (c == '_') return true;
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

namespace {
// Length of the valid UTF-8 sequence at text[pos], or 0 when it is invalid (overlongs,
// surrogates and code points over U+10FFFF included, as Rust refuses them).
std::size_t valid_sequence(std::string_view text, std::size_t pos) {
  auto b0 = static_cast<unsigned char>(text[pos]);
  if (b0 < 0x80) return 1;
  std::size_t n = utf8_len(b0);
  if (n == 1 || pos + n > text.size()) return 0;
  auto b1 = static_cast<unsigned char>(text[pos + 1]);
  if ((b1 & 0xC0) != 0x80) return 0;
  if (n == 2 && b0 < 0xC2) return 0;
  if (n == 3 && ((b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 >= 0xA0))) return 0;
  if (n == 4 && ((b0 == 0xF0 && b1 < 0x90) || (b0 == 0xF4 && b1 >= 0x90) || b0 > 0xF4)) return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if ((static_cast<unsigned char>(text[pos + i]) & 0xC0) != 0x80) return 0;
  }
  return n;
}
}  // namespace

std::size_t valid_utf8_prefix(std::string_view text) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t n = valid_sequence(text, pos);
    if (n == 0) break;
    pos += n;
  }
  return pos;
}

std::string utf8_lossy(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t n = valid_sequence(text, pos);
    if (n > 0) {
      out.append(text.substr(pos, n));
      pos += n;
      continue;
    }
    // Rust replaces each maximal invalid prefix of a sequence by one U+FFFD.
    std::size_t bad = 1;
    auto b0 = static_cast<unsigned char>(text[pos]);
    std::size_t want = utf8_len(b0);
    if (want > 1) {
      while (bad < want && pos + bad < text.size() &&
             (static_cast<unsigned char>(text[pos + bad]) & 0xC0) == 0x80) {
        // Stop where the prefix can no longer start a valid sequence (second-byte ranges).
        if (bad == 1) {
          auto b1 = static_cast<unsigned char>(text[pos + 1]);
          if ((b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 >= 0xA0) ||
              (b0 == 0xF0 && b1 < 0x90) || (b0 == 0xF4 && b1 >= 0x90) || b0 > 0xF4 || b0 < 0xC2) {
            break;
          }
        }
        ++bad;
      }
    }
    out += "\xEF\xBF\xBD";
    pos += bad;
  }
  return out;
}

}  // namespace strata::text::detail
