// jinja2's builtin filters that chat templates use, with transformers' tojson, and its tests.

#include <algorithm>
#include <charconv>
#include <cmath>

#include "text/jinja/builtins.h"
#include "text/jinja/errors.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {
namespace {

// Python's str.splitlines() (without keepends).
std::vector<std::string> splitlines(const std::string& s) {
  std::vector<std::string> lines;
  std::u32string current;
  const std::u32string cps = decode_utf8(s);
  for (std::size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0x1C || c == 0x1D || c == 0x1E ||
        c == 0x85 || c == 0x2028 || c == 0x2029) {
      if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
      lines.push_back(encode_utf8(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) lines.push_back(encode_utf8(current));
  return lines;
}

std::string indent(const std::string& text, const Value& width, bool first, bool blank) {
  // The width is checked before the pad is built: a template's indent(10**11) must get the
  // render's size error, not an allocation of that many spaces.
  const std::int64_t spaces =
      std::max<std::int64_t>(0, width.kind == Value::Kind::Int ? width.integer : 4);
  if (!width.is_string()) check_string_size(static_cast<std::size_t>(spaces));
  const std::string pad =
      width.is_string() ? width.text() : std::string(static_cast<std::size_t>(spaces), ' ');
  check_string_size(pad.size() * (codepoint_count(text) + 1));
  std::vector<std::string> lines = splitlines(text + "\n");
  std::string out;
  if (blank) {
    for (std::size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" + pad : "") + lines[i];
  } else if (!lines.empty()) {
    out = lines[0];
    for (std::size_t i = 1; i < lines.size(); ++i)
      out += "\n" + (lines[i].empty() ? "" : pad) + lines[i];
  }
  return first ? pad + out : out;
}

// jinja2's title filter: upper-case the first letter after -, whitespace, (, {, [ or <.
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (const char32_t cp : decode_utf8(s)) {
    const bool sep =
        cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || python_isspace(cp);
    std::string one;
    append_utf8(one, cp);
    out += sep ? one : word_start ? to_upper(one) : to_lower(one);
    word_start = sep;
  }
  return out;
}

Value int_filter(const Value& v, const Value& fallback, std::int64_t base) {
  switch (v.kind) {
    case Value::Kind::Int:
      return v;
    case Value::Kind::Bool:
      return Value::from_int(v.boolean);
    case Value::Kind::Float:
      if (std::isfinite(v.number) && std::fabs(v.number) < 9.2e18) {
        return Value::from_int(static_cast<std::int64_t>(v.number));
      }
      return fallback;
    case Value::Kind::String: {
      const std::string t = strip(v.text(), nullptr, true, true);
      if (t.empty()) return fallback;
      errno = 0;
      char* end = nullptr;
      const long long i = std::strtoll(t.c_str(), &end, static_cast<int>(base));
      if (errno == 0 && end == t.c_str() + t.size()) return Value::from_int(i);
      const double d = std::strtod(t.c_str(), &end);
      if (end == t.c_str() + t.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) {
        return Value::from_int(static_cast<std::int64_t>(d));
      }
      return fallback;
    }
    default:
      return fallback;
  }
}

Value float_filter(const Value& v, const Value& fallback) {
  if (v.is_number()) return Value::from_float(to_double(v));
  if (v.is_string()) {
    const std::string t = strip(v.text(), nullptr, true, true);
    char* end = nullptr;
    const double d = std::strtod(t.c_str(), &end);
    if (!t.empty() && end == t.c_str() + t.size()) return Value::from_float(d);
  }
  return fallback;
}

// Dotted attribute lookup as jinja2's make_attrgetter ("a.b", integers index).
Value attribute_path(const Value& v, const std::string& path) {
  Value cur = v;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    const std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    std::int64_t index = 0;
    const auto parsed = std::from_chars(part.data(), part.data() + part.size(), index);
    if (numeric && parsed.ec != std::errc())
      return Value::undefined("index " + part + " is out of range");
    cur = numeric ? get_item(cur, Value::from_int(index)) : get_item(cur, Value::from_string(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// select/reject/selectattr/rejectattr: the test and its arguments after `skip` leading ones.
List select(const Value& seq, CallArgs& args, bool by_attribute, bool keep) {
  std::size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty() || !args.positional[0].is_string())
      fail("selectattr needs an attribute name");
    attribute = args.positional[next++].text();
  }
  std::string test;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) fail("the test name must be a string");
    test = args.positional[next++].text();
  }
  CallArgs test_args;
  test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(next),
                              args.positional.end());
  test_args.keyword = args.keyword;
  List out;
  for (const Value& item : iterate(seq)) {
    const Value subject = by_attribute ? attribute_path(item, attribute) : item;
    bool ok;
    if (test.empty()) {
      ok = truthy(subject);
    } else {
      CallArgs a = test_args;
      ok = apply_test(test, subject, a);
    }
    if (ok == keep) out.push_back(item);
  }
  return out;
}

Value map_filter(const Value& seq, CallArgs& args, const Limits& limits) {
  List out;
  if (args.positional.empty()) {
    ArgReader r("map", args, {"attribute", "default"});
    const std::string attribute = r.string_or(0, "");
    if (attribute.empty()) fail("map() needs a filter name or attribute=");
    for (const Value& item : iterate(seq)) {
      Value v = attribute_path(item, attribute);
      if (v.is_undefined() && r.has(1)) v = r.get(1);
      out.push_back(std::move(v));
    }
    return Value::from_list(std::move(out));
  }
  if (!args.positional[0].is_string()) fail("map() needs a filter name");
  const std::string filter = args.positional[0].text();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : iterate(seq)) {
    CallArgs a = rest;
    out.push_back(apply_filter(filter, item, a, limits));
  }
  return Value::from_list(std::move(out));
}

Value tojson(const Value& v, CallArgs& args) {
  ArgReader r("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = truthy(r.get_or(0, Value::from_bool(false)));
  const Value indent = r.get_or(1, Value::none());
  if (indent.kind == Value::Kind::Int) {
    o.indent = std::string(
        static_cast<std::size_t>(std::clamp<std::int64_t>(indent.integer, 0, 1 << 16)), ' ');
  } else if (indent.is_string()) {
    o.indent = indent.text();
  } else if (!indent.is_none()) {
    fail("tojson: indent must be an integer or a string, not {}", type_name(indent));
  }
  if (o.indent) o.item_separator = ",";
  const Value seps = r.get_or(2, Value::none());
  if (seps.is_sequence()) {
    if (seps.items->size() != 2 || !(*seps.items)[0].is_string() || !(*seps.items)[1].is_string()) {
      fail("tojson: separators must be two strings (item, key)");
    }
    o.item_separator = (*seps.items)[0].text();
    o.key_separator = (*seps.items)[1].text();
  } else if (!seps.is_none()) {
    fail("tojson: separators must be a list of two strings");
  }
  o.sort_keys = truthy(r.get_or(3, Value::from_bool(false)));
  return Value::from_string(to_json(v, o));
}

Value sort_filter(const Value& v, CallArgs& args) {
  ArgReader r("sort", args, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = truthy(r.get_or(0, Value::from_bool(false)));
  const bool case_sensitive = truthy(r.get_or(1, Value::from_bool(false)));
  const std::string attribute = r.string_or(2, "");
  List items = iterate(v);
  auto key = [&](const Value& x) {
    Value k = attribute.empty() ? x : attribute_path(x, attribute);
    if (!case_sensitive && k.is_string()) k = Value::from_string(to_lower(k.text()));
    return k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    return reverse ? less_than(key(b), key(a)) : less_than(key(a), key(b));
  });
  return Value::from_list(std::move(items));
}

Value escape(const Value& v) {
  std::string out;
  for (const char c : python_str(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return Value::from_string(std::move(out));
}

}  // namespace

Value apply_filter(const std::string& name, const Value& v, CallArgs& args, const Limits& limits) {
  if (name == "tojson") return tojson(v, args);
  if (name == "trim") {
    ArgReader r("trim", args, {"chars"});
    const std::string s = python_str(v);
    if (!r.has(0) || r.get(0).is_none()) return Value::from_string(strip(s, nullptr, true, true));
    const std::string chars = r.string_or(0, "");
    return Value::from_string(strip(s, &chars, true, true));
  }
  if (name == "length" || name == "count") return Value::from_int(length_of(v));
  if (name == "upper") return Value::from_string(to_upper(python_str(v)));
  if (name == "lower") return Value::from_string(to_lower(python_str(v)));
  if (name == "capitalize") return Value::from_string(capitalize(python_str(v)));
  if (name == "title") return Value::from_string(jinja_title(python_str(v)));
  if (name == "string") return v.is_string() ? v : Value::from_string(python_str(v));
  if (name == "safe") return v.is_string() ? v : Value::from_string(python_str(v));
  if (name == "e" || name == "escape") return escape(v);
  if (name == "default" || name == "d") {
    ArgReader r("default", args, {"default_value", "boolean"});
    const bool boolean = truthy(r.get_or(1, Value::from_bool(false)));
    if (v.is_undefined() || (boolean && !truthy(v))) return r.get_or(0, Value::from_string(""));
    return v;
  }
  if (name == "join") {
    ArgReader r("join", args, {"d", "attribute"});
    const std::string sep = r.string_or(0, "");
    const std::string attribute = r.string_or(1, "");
    std::string out;
    bool first = true;
    for (const Value& item : iterate(v)) {
      if (!first) out += sep;
      out += python_str(attribute.empty() ? item : attribute_path(item, attribute));
      first = false;
      if (out.size() > limits.max_string) fail("join would exceed {} bytes", limits.max_string);
    }
    return Value::from_string(std::move(out));
  }
  if (name == "first" || name == "last") {
    const List items = iterate(v);
    if (items.empty())
      return Value::undefined("the sequence is empty: it has no " + name + " item");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::from_list(iterate(v));
  if (name == "reverse") {
    if (v.is_string()) return slice_value(v, Value::none(), Value::none(), Value::from_int(-1));
    List items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::from_list(std::move(items));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::from_list({});
    if (v.kind != Value::Kind::Dict)
      fail("TypeError: items filter: can only get item pairs from a mapping, not {}", type_name(v));
    List out;
    for (const auto& [k, val] : *v.entries) out.push_back(Value::from_tuple({k, val}));
    return Value::from_list(std::move(out));
  }
  if (name == "map") return map_filter(v, args, limits);
  if (name == "select" || name == "reject")
    return Value::from_list(select(v, args, false, name == "select"));
  if (name == "selectattr" || name == "rejectattr") {
    return Value::from_list(select(v, args, true, name == "selectattr"));
  }
  if (name == "replace") {
    ArgReader r("replace", args, {"old", "new", "count"});
    const std::string out = replace(python_str(v), python_str(r.get(0)), python_str(r.get(1)),
                                    static_cast<long>(r.int_or(2, -1)));
    if (out.size() > limits.max_string) fail("replace would exceed {} bytes", limits.max_string);
    return Value::from_string(out);
  }
  if (name == "int") {
    ArgReader r("int", args, {"default", "base"});
    return int_filter(v, r.get_or(0, Value::from_int(0)), r.int_or(1, 10));
  }
  if (name == "float") {
    ArgReader r("float", args, {"default"});
    return float_filter(v, r.get_or(0, Value::from_float(0.0)));
  }
  if (name == "abs") {
    if (v.kind == Value::Kind::Float) return Value::from_float(std::fabs(v.number));
    if (v.is_number()) {
      const Value n = v.kind == Value::Kind::Bool ? Value::from_int(v.boolean) : v;
      return n.integer < 0 ? negate(n) : n;
    }
    fail("TypeError: bad operand type for abs(): '{}'", type_name(v));
  }
  if (name == "indent") {
    ArgReader r("indent", args, {"width", "first", "blank"});
    return Value::from_string(indent(python_str(v), r.get_or(0, Value::from_int(4)),
                                     truthy(r.get_or(1, Value::from_bool(false))),
                                     truthy(r.get_or(2, Value::from_bool(false)))));
  }
  if (name == "sort") return sort_filter(v, args);
  if (name == "sum") {
    ArgReader r("sum", args, {"attribute", "start"});
    const std::string attribute = r.string_or(0, "");
    Value total = r.get_or(1, Value::from_int(0));
    for (const Value& item : iterate(v)) {
      total =
          binary_op("+", total, attribute.empty() ? item : attribute_path(item, attribute), limits);
    }
    return total;
  }
  if (name == "attr") {
    ArgReader r("attr", args, {"name"});
    return get_attribute(v, r.string_or(0, ""));
  }
  if (name == "format") {
    if (!args.keyword.empty()) fail("format filter: keyword arguments are not supported");
    return Value::from_string(percent_format(python_str(v), Value::from_tuple(args.positional)));
  }
  fail("no filter named '{}'", name);
}

bool apply_test(const std::string& name, const Value& v, CallArgs& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == K::Bool;
  if (name == "true") return v.kind == K::Bool && v.boolean;
  if (name == "false") return v.kind == K::Bool && !v.boolean;
  if (name == "integer") return v.kind == K::Int;
  if (name == "float") return v.kind == K::Float;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.kind == K::Dict;
  if (name == "iterable")
    return v.is_string() || v.is_sequence() || v.kind == K::Dict || v.is_undefined();
  if (name == "sequence")
    return v.is_string() || v.is_sequence() || v.kind == K::Dict || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "escaped") return false;
  if (name == "odd" || name == "even") {
    if (v.kind == K::Float) return std::fmod(v.number, 2.0) == (name == "odd" ? 1.0 : 0.0);
    const Value r = binary_op("%", v, Value::from_int(2), Limits{});
    return (r.integer == 1) == (name == "odd");
  }
  if (name == "lower" || name == "upper") {
    const std::string s = python_str(v);
    const std::string lower = to_lower(s), upper = to_upper(s);
    return lower != upper && s == (name == "lower" ? lower : upper);  // cased, and all one case
  }
  ArgReader r(name.c_str(), args, {"other"});
  const Value& other = r.get(0);
  if (name == "divisibleby") return equals(binary_op("%", v, other, Limits{}), Value::from_int(0));
  if (name == "in") return contains(other, v);
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, other);
  if (name == "ne" || name == "!=") return !equals(v, other);
  if (name == "lt" || name == "lessthan" || name == "<") return less_than(v, other);
  if (name == "le" || name == "<=") return !less_than(other, v);
  if (name == "gt" || name == "greaterthan" || name == ">") return less_than(other, v);
  if (name == "ge" || name == ">=") return !less_than(v, other);
  if (name == "sameas") {
    if (v.kind != other.kind) return false;
    if (v.is_sequence()) return v.items == other.items;
    if (v.kind == K::Dict || v.kind == K::Namespace) return v.entries == other.entries;
    return equals(v, other);
  }
  fail("no test named '{}'", name);
}

}  // namespace strata::text::jinja
