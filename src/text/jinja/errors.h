#pragma once
// Errors inside the interpreter. A RenderError carries no position: the interpreter catches it at
// the innermost expression or statement and rethrows a TemplateError naming the template, line and
// column. RaisedError is the template's own raise_exception(message).

#include <fmt/format.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace strata::text::jinja {

class RenderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class RaisedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Caps on what one render may build (docs/chat-templates.md): a template that would go past them
// gets an error instead of exhausting memory.
inline constexpr std::size_t kMaxStringBytes = std::size_t{16} << 20;
inline constexpr std::size_t kMaxListItems = 1'000'000;
inline constexpr std::size_t kMaxCreatedBytes = std::size_t{1} << 30;  // all strings and lists

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw RenderError(fmt::format(format, std::forward<Args>(args)...));
}

inline void check_string_size(std::size_t bytes) {
  if (bytes > kMaxStringBytes) fail("a string would exceed {} bytes", kMaxStringBytes);
}
inline void check_list_size(std::size_t items) {
  if (items > kMaxListItems) fail("a list would exceed {} items", kMaxListItems);
}

}  // namespace strata::text::jinja
