#pragma once
// What the interpreter does to values: operators, attribute and item access (with the string,
// dict and list methods templates call), filters, tests and tojson. Errors are RenderError
// (the interpreter adds the template position).

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "text/jinja/errors.h"
#include "text/jinja/value.h"

namespace strata::text::jinja {

// Guards against pathological templates: each is a clear error, never a hang or a crash.
struct Limits {
  std::size_t max_string = kMaxStringBytes;  // output and any one string, bytes
  std::size_t max_items = kMaxListItems;     // any one list (range(), repetition)
  std::int64_t max_iterations = 1'000'000;   // loop iterations in one render, in total
  int max_depth = 400;                       // nested evaluation (macro recursion included)
};

// Binds positional and keyword arguments to parameter names, as Python does for a builtin.
class ArgReader {
 public:
  ArgReader(const char* function, CallArgs& args, std::initializer_list<const char*> names);
  bool has(std::size_t i) const { return values_[i].has_value(); }
  const Value& get(std::size_t i) const;  // a required argument
  Value get_or(std::size_t i, Value fallback) const;
  std::string string_or(std::size_t i, std::string fallback) const;
  std::int64_t int_or(std::size_t i, std::int64_t fallback) const;

 private:
  const char* function_;
  std::vector<const char*> names_;
  std::vector<std::optional<Value>> values_;
};

// Operators. `op` is one of + - * / // % ** ~.
Value binary_op(const std::string& op, const Value& a, const Value& b, const Limits& limits);
Value negate(const Value& v);
bool contains(const Value& container, const Value& item);  // Python's `item in container`

// Iteration as a for loop sees it: lists and tuples, dict keys, string code points; undefined is
// empty; anything else is an error.
List iterate(const Value& v);
std::int64_t length_of(const Value& v);

// jinja2's getattr / getitem: attributes first for `.name` (methods of str, dict, list), items
// first for `[key]`; a missing one is undefined; any access on undefined is an error.
Value get_attribute(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value slice_value(const Value& obj, const Value& start, const Value& stop, const Value& step);
// The bound method `name` of a str, dict or list, or nullopt.
std::optional<Value> bound_method(const Value& obj, const std::string& name);

Value apply_filter(const std::string& name, const Value& v, CallArgs& args, const Limits& limits);
bool apply_test(const std::string& name, const Value& v, CallArgs& args);

struct JsonOptions {
  std::optional<std::string> indent;  // null: one line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};
// json.dumps(v, ...) as transformers' tojson filter calls it.
std::string to_json(const Value& v, const JsonOptions& options);

// Python's '%' formatting of a string: %s, %r, %d, %i, %f, %%.
std::string percent_format(const std::string& format, const Value& args);

}  // namespace strata::text::jinja
