#include "text/jinja/value.h"

#include <charconv>
#include <cmath>

#include "text/jinja/errors.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {

namespace {
thread_local CreationBudget* current_budget = nullptr;
}  // namespace

CreationBudget::CreationBudget(std::size_t bytes) : previous_(current_budget), left_(bytes) {
  current_budget = this;
}
CreationBudget::~CreationBudget() { current_budget = previous_; }

void charge_creation(std::size_t bytes) {
  CreationBudget* b = current_budget;
  if (!b) return;
  if (bytes > b->left_) {
    b->left_ = 0;
    fail("the template built or scanned more than {} MiB of strings and lists in one render",
         kMaxCreatedBytes >> 20);
  }
  b->left_ -= bytes;
}

const std::string& Value::text() const {
  static const std::string empty;
  return shared_text ? *shared_text : empty;
}

Value Value::undefined(std::string what) {
  Value v;
  v.shared_text = std::make_shared<const std::string>(std::move(what));
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::from_bool(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.boolean = b;
  return v;
}
Value Value::from_int(std::int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.integer = i;
  return v;
}
Value Value::from_float(double d) {
  Value v;
  v.kind = Kind::Float;
  v.number = d;
  return v;
}
Value Value::from_string(std::string s) {
  Value v;
  v.kind = Kind::String;
  charge_creation(s.size());
  v.shared_text = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::from_list(List l) {
  charge_creation(l.size() * sizeof(Value));
  Value v;
  v.kind = Kind::List;
  v.items = std::make_shared<List>(std::move(l));
  return v;
}
Value Value::from_tuple(List l) {
  Value v = from_list(std::move(l));
  v.kind = Kind::Tuple;
  return v;
}
Value Value::from_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.entries = std::make_shared<Dict>(std::move(d));
  return v;
}
Value Value::make_namespace(Dict d) {
  Value v = from_dict(std::move(d));
  v.kind = Kind::Namespace;
  return v;
}
Value Value::make_function(std::string name, std::function<Value(CallArgs&)> fn) {
  Value v;
  v.kind = Kind::Function;
  v.function = std::make_shared<Function>(Function{std::move(name), std::move(fn)});
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > 256) fail("the input JSON is nested deeper than 256 levels");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return none();
    case nlohmann::ordered_json::value_t::boolean:
      return from_bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return from_int(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) fail("integer {} is too large", u);
      return from_int(static_cast<std::int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return from_float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return from_string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e, depth + 1));
      return from_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.emplace_back(from_string(it.key()), from_json(it.value(), depth + 1));
      }
      return from_dict(std::move(d));
    }
    default:
      fail("unsupported JSON value (binary or discarded)");
  }
}

std::string_view type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return "Undefined";
    case Value::Kind::None:
      return "NoneType";
    case Value::Kind::Bool:
      return "bool";
    case Value::Kind::Int:
      return "int";
    case Value::Kind::Float:
      return "float";
    case Value::Kind::String:
      return "str";
    case Value::Kind::List:
      return "list";
    case Value::Kind::Tuple:
      return "tuple";
    case Value::Kind::Dict:
      return "dict";
    case Value::Kind::Namespace:
      return "Namespace";
    case Value::Kind::Function:
      return "function";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return false;
    case Value::Kind::Bool:
      return v.boolean;
    case Value::Kind::Int:
      return v.integer != 0;
    case Value::Kind::Float:
      return v.number != 0.0;
    case Value::Kind::String:
      return !v.text().empty();
    case Value::Kind::List:
    case Value::Kind::Tuple:
      return !v.items->empty();
    case Value::Kind::Dict:
      return !v.entries->empty();
    case Value::Kind::Namespace:
    case Value::Kind::Function:
      return true;
  }
  return false;
}

double to_double(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Bool:
      return v.boolean ? 1.0 : 0.0;
    case Value::Kind::Int:
      return static_cast<double>(v.integer);
    case Value::Kind::Float:
      return v.number;
    default:
      fail("expected a number, got {}", type_name(v));
  }
}

namespace {
bool is_intlike(const Value& v) {
  return v.kind == Value::Kind::Int || v.kind == Value::Kind::Bool;
}
std::int64_t int_of(const Value& v) { return v.kind == Value::Kind::Bool ? v.boolean : v.integer; }
}  // namespace

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_intlike(a) && is_intlike(b)) return int_of(a) == int_of(b);
    return to_double(a) == to_double(b);
  }
  if (a.is_sequence() && b.is_sequence()) {
    if (a.kind != b.kind || a.items->size() != b.items->size()) return false;
    for (std::size_t i = 0; i < a.items->size(); ++i) {
      if (!equals((*a.items)[i], (*b.items)[i])) return false;
    }
    return true;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return true;
    case Value::Kind::String:
      return a.text() == b.text();
    case Value::Kind::Dict: {
      if (a.entries->size() != b.entries->size()) return false;
      for (const auto& [k, v] : *a.entries) {
        const Value* other = dict_find(*b.entries, k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::Namespace:
      return a.entries == b.entries;
    case Value::Kind::Function:
      return a.function == b.function;
    default:
      return false;
  }
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (is_intlike(a) && is_intlike(b)) return int_of(a) < int_of(b);
    return to_double(a) < to_double(b);
  }
  if (a.is_string() && b.is_string())
    return a.text() < b.text();  // UTF-8 bytes order as code points
  if (a.is_sequence() && a.kind == b.kind) {
    const List& x = *a.items;
    const List& y = *b.items;
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  fail("TypeError: '<' not supported between instances of '{}' and '{}'", type_name(a),
       type_name(b));
}

const Value* dict_find(const Dict& d, const Value& key) {
  for (const auto& [k, v] : d) {
    if (equals(k, key)) return &v;
  }
  return nullptr;
}

const Value* dict_find(const Dict& d, std::string_view key) {
  for (const auto& [k, v] : d) {
    if (k.is_string() && k.text() == key) return &v;
  }
  return nullptr;
}

void dict_set(Dict& d, Value key, Value value) {
  for (auto& [k, v] : d) {
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  d.emplace_back(std::move(key), std::move(value));
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  const std::string sci(buf, res.ptr);
  // sci is [-]d[.ddd]e[+-]xx: split sign, digits and exponent.
  std::size_t pos = 0;
  std::string out;
  if (sci[0] == '-') {
    out = "-";
    pos = 1;
  }
  const std::size_t e = sci.find('e');
  std::string digits;
  for (std::size_t i = pos; i < e; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  const int exponent = std::stoi(sci.substr(e + 1));
  const int decpt = exponent + 1;  // value = 0.digits * 10^decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(static_cast<std::size_t>(-decpt), '0') + digits;
    } else if (static_cast<std::size_t>(decpt) >= digits.size()) {
      out += digits + std::string(decpt - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out;
}

namespace {

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (const char32_t cp : decode_utf8(s)) {
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (python_isprintable(cp)) {
      append_utf8(out, cp);
    } else if (cp < 0x100) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(cp));
    } else if (cp < 0x10000) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
    } else {
      out += fmt::format("\\U{:08x}", static_cast<unsigned>(cp));
    }
  }
  out += quote;
  return out;
}

void repr_into(std::string& out, const Value& v, int depth);

void sequence_repr(std::string& out, const List& items, bool tuple, int depth) {
  out += tuple ? '(' : '[';
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    repr_into(out, items[i], depth + 1);
  }
  if (tuple && items.size() == 1) out += ',';
  out += tuple ? ')' : ']';
}

void dict_repr(std::string& out, const Dict& d, int depth) {
  out += '{';
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (i) out += ", ";
    repr_into(out, d[i].first, depth + 1);
    out += ": ";
    repr_into(out, d[i].second, depth + 1);
  }
  out += '}';
}

void repr_into(std::string& out, const Value& v, int depth) {
  // Values nest no deeper than the data given; a namespace can hold itself.
  if (depth > 200) fail("RecursionError: value nested too deeply to print");
  check_string_size(out.size());
  switch (v.kind) {
    case Value::Kind::Undefined:
      out += "";
      break;
    case Value::Kind::None:
      out += "None";
      break;
    case Value::Kind::Bool:
      out += v.boolean ? "True" : "False";
      break;
    case Value::Kind::Int:
      out += std::to_string(v.integer);
      break;
    case Value::Kind::Float:
      out += float_repr(v.number);
      break;
    case Value::Kind::String:
      out += string_repr(v.text());
      break;
    case Value::Kind::List:
    case Value::Kind::Tuple:
      sequence_repr(out, *v.items, v.kind == Value::Kind::Tuple, depth);
      break;
    case Value::Kind::Dict:
      dict_repr(out, *v.entries, depth);
      break;
    case Value::Kind::Namespace:
      out += "<Namespace ";
      dict_repr(out, *v.entries, depth);
      out += '>';
      break;
    case Value::Kind::Function:
      out += "<function " + v.function->name + ">";
      break;
  }
}

}  // namespace

std::string python_repr(const Value& v) {
  std::string out;
  repr_into(out, v, 0);
  return out;
}

std::string undefined_reason(const Value& v) {
  return v.text().empty() ? std::string("a value is undefined") : v.text();
}

std::string python_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return "";
    case Value::Kind::String:
      return v.text();
    default:
      return python_repr(v);
  }
}

}  // namespace strata::text::jinja
