#pragma once
// UTF-8 helpers for the tokenizer: decoding code points, Rust's char classes that the reference
// uses (whitespace, alphanumeric), lossy repair of invalid input.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata::text::detail {

// Length of the UTF-8 sequence starting with byte `lead` (1 for invalid lead bytes).
inline std::size_t utf8_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Decodes the code point at text[pos] (text must be valid UTF-8) and advances pos.
char32_t next_code_point(std::string_view text, std::size_t& pos);
void append_utf8(std::string& out, char32_t cp);

// Rust's char::is_whitespace (the White_Space property).
bool is_whitespace(char32_t cp);
// Rust's char::is_alphanumeric || '_' (letters and numbers by Unicode category).
bool is_word_char(char32_t cp);

// Length of the longest prefix of `text` that is valid UTF-8.
std::size_t valid_utf8_prefix(std::string_view text);
// `text` with every invalid sequence replaced by U+FFFD, as Rust's String::from_utf8_lossy.
std::string utf8_lossy(std::string_view text);

}  // namespace strata::text::detail
