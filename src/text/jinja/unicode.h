#pragma once
// UTF-8 helpers with Python's str semantics: indexing and lengths count code points, whitespace is
// what str.isspace() accepts, case mapping per code point (utf8proc).

#include <string>
#include <string_view>
#include <vector>

namespace strata::text::jinja {

bool valid_utf8(std::string_view s);
std::u32string decode_utf8(std::string_view s);  // input must be valid UTF-8
std::string encode_utf8(std::u32string_view s);
void append_utf8(std::string& out, char32_t cp);
std::size_t codepoint_count(std::string_view s);

bool python_isspace(char32_t cp);
bool python_isprintable(char32_t cp);

// str.strip/lstrip/rstrip: `chars` null strips whitespace, else the code points in *chars.
std::string strip(std::string_view s, const std::string* chars, bool left, bool right);
std::string to_upper(std::string_view s);
std::string to_lower(std::string_view s);
std::string capitalize(std::string_view s);  // first upper, rest lower
std::string title(std::string_view s);       // Python's str.title()

// str.split(sep, maxsplit): sep null splits on runs of whitespace.
std::vector<std::string> split(std::string_view s, const std::string* sep, long maxsplit);
std::vector<std::string> rsplit(std::string_view s, const std::string* sep, long maxsplit);
std::string replace(std::string_view s, std::string_view old, std::string_view with, long count);

}  // namespace strata::text::jinja
