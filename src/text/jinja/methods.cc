// Methods templates call on values (str.strip, dict.items, ...), argument binding for builtins,
// and Python's '%' and str.format formatting.

#include <algorithm>
#include <charconv>

#include "text/jinja/builtins.h"
#include "text/jinja/errors.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {

ArgReader::ArgReader(const char* function, CallArgs& args, std::initializer_list<const char*> names)
    : function_(function), names_(names), values_(names.size()) {
  if (args.positional.size() > names_.size()) {
    fail("TypeError: {}() takes at most {} arguments ({} given)", function_, names_.size(),
         args.positional.size());
  }
  for (std::size_t i = 0; i < args.positional.size(); ++i) values_[i] = args.positional[i];
  for (auto& keyword : args.keyword) {
    const std::string& key = keyword.first;
    const Value& value = keyword.second;
    const auto it =
        std::find_if(names_.begin(), names_.end(), [&](const char* n) { return key == n; });
    if (it == names_.end())
      fail("TypeError: {}() got an unexpected keyword argument '{}'", function_, key);
    const std::size_t i = static_cast<std::size_t>(it - names_.begin());
    if (values_[i]) fail("TypeError: {}() got multiple values for argument '{}'", function_, key);
    values_[i] = value;
  }
}

const Value& ArgReader::get(std::size_t i) const {
  if (!values_[i]) fail("TypeError: {}() missing required argument '{}'", function_, names_[i]);
  return *values_[i];
}

Value ArgReader::get_or(std::size_t i, Value fallback) const {
  return values_[i] ? *values_[i] : std::move(fallback);
}

std::string ArgReader::string_or(std::size_t i, std::string fallback) const {
  if (!values_[i] || values_[i]->is_none()) return fallback;
  if (!values_[i]->is_string()) {
    fail("TypeError: {}() argument '{}' must be str, not {}", function_, names_[i],
         type_name(*values_[i]));
  }
  return values_[i]->text();
}

std::int64_t ArgReader::int_or(std::size_t i, std::int64_t fallback) const {
  if (!values_[i] || values_[i]->is_none()) return fallback;
  const Value& v = *values_[i];
  if (v.kind == Value::Kind::Int) return v.integer;
  if (v.kind == Value::Kind::Bool) return v.boolean;
  fail("TypeError: {}() argument '{}' must be an integer, not {}", function_, names_[i],
       type_name(v));
}

namespace {

Value string_list(const std::vector<std::string>& parts) {
  List l;
  l.reserve(parts.size());
  for (const auto& p : parts) l.push_back(Value::from_string(p));
  return Value::from_list(std::move(l));
}

// startswith/endswith accept a string or a tuple of strings.
bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    if (!a.is_string())
      fail("TypeError: {}with first arg must be str or a tuple of str, not {}",
           prefix ? "starts" : "ends", type_name(a));
    return prefix ? s.starts_with(a.text()) : s.ends_with(a.text());
  };
  if (affix.kind == Value::Kind::Tuple) {
    return std::any_of(affix.items->begin(), affix.items->end(), one);
  }
  return one(affix);
}

std::optional<std::string> optional_chars(const ArgReader& r, std::size_t i) {
  if (!r.has(i) || r.get(i).is_none()) return std::nullopt;
  return r.string_or(i, "");
}

Value string_method(const std::string& s, const std::string& name, CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    ArgReader r(name.c_str(), args, {"chars"});
    const auto chars = optional_chars(r, 0);
    return Value::from_string(
        strip(s, chars ? &*chars : nullptr, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    ArgReader r(name.c_str(), args, {"sep", "maxsplit"});
    const auto sep = optional_chars(r, 0);
    const long maxsplit = static_cast<long>(r.int_or(1, -1));
    return string_list(name == "split" ? split(s, sep ? &*sep : nullptr, maxsplit)
                                       : rsplit(s, sep ? &*sep : nullptr, maxsplit));
  }
  if (name == "startswith" || name == "endswith") {
    ArgReader r(name.c_str(), args, {"prefix"});
    return Value::from_bool(affix_match(s, r.get(0), name == "startswith"));
  }
  if (name == "replace") {
    ArgReader r("replace", args, {"old", "new", "count"});
    if (!r.get(0).is_string() || !r.get(1).is_string())
      fail("TypeError: replace() arguments must be str");
    return Value::from_string(
        replace(s, r.get(0).text(), r.get(1).text(), static_cast<long>(r.int_or(2, -1))));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    ArgReader r(name.c_str(), args, {});
    if (name == "upper") return Value::from_string(to_upper(s));
    if (name == "lower") return Value::from_string(to_lower(s));
    if (name == "title") return Value::from_string(title(s));
    return Value::from_string(capitalize(s));
  }
  if (name == "find" || name == "rfind" || name == "count" || name == "index") {
    ArgReader r(name.c_str(), args, {"sub"});
    const Value& sub = r.get(0);
    if (!sub.is_string()) fail("TypeError: must be str, not {}", type_name(sub));
    if (name == "count") {
      if (sub.text().empty())
        return Value::from_int(static_cast<std::int64_t>(codepoint_count(s)) + 1);
      std::int64_t n = 0;
      for (std::size_t at = s.find(sub.text()); at != std::string::npos;
           at = s.find(sub.text(), at + sub.text().size()))
        ++n;
      return Value::from_int(n);
    }
    const std::size_t at = name == "rfind" ? s.rfind(sub.text()) : s.find(sub.text());
    if (at == std::string::npos) {
      if (name == "index") fail("ValueError: substring not found");
      return Value::from_int(-1);
    }
    return Value::from_int(
        static_cast<std::int64_t>(codepoint_count(std::string_view(s).substr(0, at))));
  }
  if (name == "join") {
    ArgReader r("join", args, {"iterable"});
    std::string out;
    bool first = true;
    for (const Value& v : iterate(r.get(0))) {
      if (!v.is_string())
        fail("TypeError: sequence item: expected str instance, {} found", type_name(v));
      if (!first) out += s;
      out += v.text();
      check_string_size(out.size());
      first = false;
    }
    return Value::from_string(std::move(out));
  }
  if (name == "format") {
    // Positional `{}` / `{0}` and keyword `{name}` fields, str() of each value.
    std::string out;
    std::size_t next = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
        out += '{', ++i;
      } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
        out += '}', ++i;
      } else if (s[i] == '{') {
        const std::size_t close = s.find('}', i);
        if (close == std::string::npos)
          fail("ValueError: Single '{{' encountered in format string");
        const std::string field = s.substr(i + 1, close - i - 1);
        if (field.find_first_of(":!.[") != std::string::npos)
          fail("format field '{{{}}}' is not supported", field);
        const Value* v = nullptr;
        if (field.empty() || std::all_of(field.begin(), field.end(), ::isdigit)) {
          std::size_t k = next;
          if (field.empty()) {
            ++next;
          } else if (std::from_chars(field.data(), field.data() + field.size(), k).ec !=
                     std::errc()) {
            fail("IndexError: Replacement index {} out of range", field);
          }
          if (k >= args.positional.size()) fail("IndexError: Replacement index {} out of range", k);
          v = &args.positional[k];
        } else {
          for (const auto& [key, value] : args.keyword) {
            if (key == field) v = &value;
          }
          if (!v) fail("KeyError: '{}'", field);
        }
        out += python_str(*v);
        check_string_size(out.size());
        i = close;
      } else if (s[i] == '}') {
        fail("ValueError: Single '}}' encountered in format string");
      } else {
        out += s[i];
      }
    }
    return Value::from_string(std::move(out));
  }
  if (name.starts_with("is")) {
    ArgReader r(name.c_str(), args, {});
    const std::u32string cps = decode_utf8(s);
    auto all = [&](auto pred) { return !cps.empty() && std::all_of(cps.begin(), cps.end(), pred); };
    if (name == "isspace") return Value::from_bool(all(python_isspace));
    if (name == "isdigit")
      return Value::from_bool(all([](char32_t c) { return c >= '0' && c <= '9'; }));
    if (name == "isalpha") {
      return Value::from_bool(all([](char32_t c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }));
    }
    if (name == "islower") return Value::from_bool(to_lower(s) == s && to_upper(s) != s);
    if (name == "isupper") return Value::from_bool(to_upper(s) == s && to_lower(s) != s);
  }
  fail("str.{}() is not supported", name);
}

bool is_string_method(const std::string& n) {
  static const char* const kNames[] = {
      "strip", "lstrip", "rstrip",  "split",      "rsplit",  "startswith", "endswith", "replace",
      "upper", "lower",  "title",   "capitalize", "find",    "rfind",      "count",    "index",
      "join",  "format", "isspace", "isdigit",    "isalpha", "islower",    "isupper"};
  return std::find_if(std::begin(kNames), std::end(kNames),
                      [&](const char* k) { return n == k; }) != std::end(kNames);
}

Value dict_method(const Value& self, const std::string& name, CallArgs& args) {
  const Dict& d = *self.entries;
  if (name == "get") {
    ArgReader r("get", args, {"key", "default"});
    if (const Value* v = dict_find(d, r.get(0))) return *v;
    return r.get_or(1, Value::none());
  }
  ArgReader r(name.c_str(), args, {});
  if (name == "copy") return Value::from_dict(d);
  List out;
  out.reserve(d.size());
  for (const auto& [k, v] : d) {
    if (name == "items") {
      out.push_back(Value::from_tuple({k, v}));
    } else {
      out.push_back(name == "keys" ? k : v);
    }
  }
  return Value::from_list(std::move(out));
}

Value list_method(const Value& self, const std::string& name, CallArgs& args) {
  ArgReader r(name.c_str(), args, {"value"});
  std::int64_t count = 0;
  for (std::size_t i = 0; i < self.items->size(); ++i) {
    if (equals((*self.items)[i], r.get(0))) {
      if (name == "index") return Value::from_int(static_cast<std::int64_t>(i));
      ++count;
    }
  }
  if (name == "index") fail("ValueError: {} is not in list", python_repr(r.get(0)));
  return Value::from_int(count);
}

}  // namespace

std::optional<Value> bound_method(const Value& obj, const std::string& name) {
  // The sandbox is immutable, as transformers' ImmutableSandboxedEnvironment: methods that would
  // modify a value exist but refuse to run.
  static const char* const kMutating[] = {"append", "extend",     "insert", "pop",
                                          "remove", "clear",      "sort",   "reverse",
                                          "update", "setdefault", "popitem"};
  const bool mutating =
      std::find_if(std::begin(kMutating), std::end(kMutating),
                   [&](const char* k) { return name == k; }) != std::end(kMutating);
  const std::string qualified = fmt::format("{}.{}", type_name(obj), name);
  if (obj.is_string() && is_string_method(name)) {
    const std::string s = obj.text();
    return Value::make_function(qualified,
                                [s, name](CallArgs& a) { return string_method(s, name, a); });
  }
  if (obj.kind == Value::Kind::Dict) {
    if (name == "get" || name == "items" || name == "keys" || name == "values" || name == "copy") {
      return Value::make_function(qualified,
                                  [obj, name](CallArgs& a) { return dict_method(obj, name, a); });
    }
  }
  if (obj.is_sequence() && (name == "index" || name == "count")) {
    return Value::make_function(qualified,
                                [obj, name](CallArgs& a) { return list_method(obj, name, a); });
  }
  if ((obj.is_sequence() || obj.kind == Value::Kind::Dict) && mutating) {
    if (obj.is_sequence() && (name == "update" || name == "setdefault" || name == "popitem"))
      return std::nullopt;
    if (obj.kind == Value::Kind::Dict &&
        (name == "append" || name == "extend" || name == "insert" || name == "remove" ||
         name == "sort" || name == "reverse")) {
      return std::nullopt;
    }
    return Value::make_function(qualified, [qualified](CallArgs&) -> Value {
      fail("SecurityError: {}() modifies a value, which the sandbox does not allow", qualified);
    });
  }
  return std::nullopt;
}

std::string percent_format(const std::string& format, const Value& args) {
  const List values = args.kind == Value::Kind::Tuple ? *args.items : List{args};
  std::size_t next = 0;
  std::string out;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (i + 1 >= format.size()) fail("ValueError: incomplete format");
    const char spec = format[++i];
    if (spec == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) fail("TypeError: not enough arguments for format string");
    const Value& v = values[next++];
    switch (spec) {
      case 's':
        out += python_str(v);
        check_string_size(out.size());
        break;
      case 'r':
        out += python_repr(v);
        break;
      case 'd':
      case 'i':
        if (!v.is_number())
          fail("TypeError: %{} format: a real number is required, not {}", spec, type_name(v));
        out += std::to_string(v.kind == Value::Kind::Float  ? static_cast<std::int64_t>(v.number)
                              : v.kind == Value::Kind::Bool ? v.boolean
                                                            : v.integer);
        break;
      case 'f':
        out += fmt::format("{:.6f}", to_double(v));
        break;
      default:
        fail("format '%{}' is not supported (use %s, %r, %d, %i, %f)", spec);
    }
  }
  if (next < values.size()) fail("TypeError: not all arguments converted during string formatting");
  return out;
}

}  // namespace strata::text::jinja
