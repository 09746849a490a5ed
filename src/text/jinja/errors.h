#pragma once
// Errors inside the interpreter. A RenderError carries no position: the interpreter catches it at
// the innermost expression or statement and rethrows a TemplateError naming the template, line and
// column. RaisedError is the template's own raise_exception(message).

#include <fmt/format.h>

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

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw RenderError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace strata::text::jinja
