// Operators, iteration, attribute and item access with Python's semantics.

#include <cmath>
#include <limits>

#include "text/jinja/builtins.h"
#include "text/jinja/errors.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {
namespace {

bool is_int(const Value& v) { return v.kind == Value::Kind::Int || v.kind == Value::Kind::Bool; }
std::int64_t as_int(const Value& v) { return v.kind == Value::Kind::Bool ? v.boolean : v.integer; }

[[noreturn]] void unsupported(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    fail("{}", undefined_reason(u));
  }
  fail("TypeError: unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a),
       type_name(b));
}

[[noreturn]] void overflow() { fail("integer overflow (Strata's integers are 64-bit)"); }

std::int64_t checked_add(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_add_overflow(a, b, &r)) overflow();
  return r;
}
std::int64_t checked_sub(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) overflow();
  return r;
}
std::int64_t checked_mul(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) overflow();
  return r;
}

Value repeat(const Value& seq, std::int64_t n, const Limits& limits) {
  if (n <= 0) return seq.is_string() ? Value::from_string("") : Value::from_list({});
  if (seq.is_string()) {
    if (seq.text().size() * static_cast<std::uint64_t>(n) > limits.max_string) {
      fail("string repetition would exceed {} bytes", limits.max_string);
    }
    std::string out;
    out.reserve(seq.text().size() * n);
    for (std::int64_t i = 0; i < n; ++i) out += seq.text();
    return Value::from_string(std::move(out));
  }
  if (seq.items->size() * static_cast<std::uint64_t>(n) > limits.max_items) {
    fail("list repetition would exceed {} items", limits.max_items);
  }
  List out;
  for (std::int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items->begin(), seq.items->end());
  Value r = Value::from_list(std::move(out));
  r.kind = seq.kind;
  return r;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  if (b == -1 && a == std::numeric_limits<std::int64_t>::min()) fail("integer overflow");
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

std::int64_t python_mod(std::int64_t a, std::int64_t b) {
  if (b == -1) return 0;
  std::int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

// Python's index normalisation: negative counts from the end; nullopt when out of range.
std::optional<std::size_t> normalize_index(std::int64_t i, std::size_t size) {
  if (i < 0) i += static_cast<std::int64_t>(size);
  if (i < 0 || i >= static_cast<std::int64_t>(size)) return std::nullopt;
  return static_cast<std::size_t>(i);
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b, const Limits& limits) {
  if (op == "~") {
    std::string s = python_str(a) + python_str(b);
    if (s.size() > limits.max_string) fail("string would exceed {} bytes", limits.max_string);
    return Value::from_string(std::move(s));
  }
  const bool numbers = a.is_number() && b.is_number();
  const bool ints = is_int(a) && is_int(b);
  if (op == "+") {
    if (ints) return Value::from_int(checked_add(as_int(a), as_int(b)));
    if (numbers) return Value::from_float(to_double(a) + to_double(b));
    if (a.is_string() && b.is_string()) {
      if (a.text().size() + b.text().size() > limits.max_string) {
        fail("string would exceed {} bytes", limits.max_string);
      }
      return Value::from_string(a.text() + b.text());
    }
    if (a.is_sequence() && a.kind == b.kind) {
      if (a.items->size() + b.items->size() > limits.max_items) {
        fail("list would exceed {} items", limits.max_items);
      }
      List out = *a.items;
      out.insert(out.end(), b.items->begin(), b.items->end());
      Value r = Value::from_list(std::move(out));
      r.kind = a.kind;
      return r;
    }
    if (a.is_string() || b.is_string()) {
      if (a.is_undefined() || b.is_undefined()) unsupported(op, a, b);
      fail("TypeError: can only concatenate str (not \"{}\") to str",
           type_name(a.is_string() ? b : a));
    }
    unsupported(op, a, b);
  }
  if (op == "-") {
    if (ints) return Value::from_int(checked_sub(as_int(a), as_int(b)));
    if (numbers) return Value::from_float(to_double(a) - to_double(b));
    unsupported(op, a, b);
  }
  if (op == "*") {
    if (ints) return Value::from_int(checked_mul(as_int(a), as_int(b)));
    if (numbers) return Value::from_float(to_double(a) * to_double(b));
    if ((a.is_string() || a.is_sequence()) && is_int(b)) return repeat(a, as_int(b), limits);
    if ((b.is_string() || b.is_sequence()) && is_int(a)) return repeat(b, as_int(a), limits);
    unsupported(op, a, b);
  }
  if (op == "/") {
    if (!numbers) unsupported(op, a, b);
    if (to_double(b) == 0.0) fail("ZeroDivisionError: division by zero");
    return Value::from_float(to_double(a) / to_double(b));
  }
  if (op == "//" || op == "%") {
    if (op == "%" && a.is_string()) return Value::from_string(percent_format(a.text(), b));
    if (!numbers) unsupported(op, a, b);
    if (to_double(b) == 0.0) fail("ZeroDivisionError: integer division or modulo by zero");
    if (ints) {
      return Value::from_int(op == "//" ? floor_div(as_int(a), as_int(b))
                                        : python_mod(as_int(a), as_int(b)));
    }
    const double x = to_double(a), y = to_double(b);
    if (op == "//") return Value::from_float(std::floor(x / y));
    double r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value::from_float(r);
  }
  if (op == "**") {
    if (!numbers) unsupported(op, a, b);
    if (ints && as_int(b) >= 0) {
      std::int64_t result = 1, base = as_int(a);
      for (std::int64_t e = as_int(b); e > 0; e >>= 1) {
        if (e & 1) result = checked_mul(result, base);
        if (e > 1) base = checked_mul(base, base);
      }
      return Value::from_int(result);
    }
    if (to_double(a) == 0.0 && to_double(b) < 0) {
      fail("ZeroDivisionError: 0.0 cannot be raised to a negative power");
    }
    return Value::from_float(std::pow(to_double(a), to_double(b)));
  }
  fail("unknown operator '{}'", op);
}

Value negate(const Value& v) {
  if (is_int(v)) {
    if (as_int(v) == std::numeric_limits<std::int64_t>::min()) fail("integer overflow");
    return Value::from_int(-as_int(v));
  }
  if (v.kind == Value::Kind::Float) return Value::from_float(-v.number);
  if (v.is_undefined()) fail("{}", undefined_reason(v));
  fail("TypeError: bad operand type for unary -: '{}'", type_name(v));
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Value::Kind::String:
      charge_creation(container.text().size());  // a scan: counted as work
      if (!item.is_string()) {
        fail("TypeError: 'in <string>' requires string as left operand, not {}", type_name(item));
      }
      return container.text().find(item.text()) != std::string::npos;
    case Value::Kind::List:
    case Value::Kind::Tuple:
      for (const Value& v : *container.items) {
        if (equals(v, item)) return true;
      }
      return false;
    case Value::Kind::Dict:
      return dict_find(*container.entries, item) != nullptr;
    case Value::Kind::Undefined:
      return false;
    default:
      fail("TypeError: argument of type '{}' is not iterable", type_name(container));
  }
}

List iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::List:
    case Value::Kind::Tuple:
      return *v.items;
    case Value::Kind::Dict: {
      List keys;
      keys.reserve(v.entries->size());
      for (const auto& [k, _] : *v.entries) keys.push_back(k);
      return keys;
    }
    case Value::Kind::String: {
      check_list_size(codepoint_count(v.text()));
      List chars;
      for (const char32_t cp : decode_utf8(v.text())) {
        std::string s;
        append_utf8(s, cp);
        chars.push_back(Value::from_string(std::move(s)));
      }
      return chars;
    }
    case Value::Kind::Undefined:
      return {};
    default:
      fail("TypeError: '{}' object is not iterable", type_name(v));
  }
}

std::int64_t length_of(const Value& v) {
  switch (v.kind) {
    case Value::Kind::String:
      charge_creation(v.text().size());
      return static_cast<std::int64_t>(codepoint_count(v.text()));
    case Value::Kind::List:
    case Value::Kind::Tuple:
      return static_cast<std::int64_t>(v.items->size());
    case Value::Kind::Dict:
      return static_cast<std::int64_t>(v.entries->size());
    case Value::Kind::Undefined:
      return 0;
    default:
      fail("TypeError: object of type '{}' has no len()", type_name(v));
  }
}

Value get_attribute(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail("{} (reading its attribute '{}')", undefined_reason(obj), name);
  if (auto method = bound_method(obj, name)) return *method;
  if (obj.kind == Value::Kind::Dict || obj.kind == Value::Kind::Namespace) {
    if (const Value* v = dict_find(*obj.entries, name)) return *v;
  }
  return Value::undefined(fmt::format("'{}' object has no attribute '{}'", type_name(obj), name));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) {
    fail("{} (reading its item {})", undefined_reason(obj), python_repr(key));
  }
  if (obj.kind == Value::Kind::Dict) {
    if (const Value* v = dict_find(*obj.entries, key)) return *v;
  } else if ((obj.is_sequence() || obj.is_string()) && is_int(key)) {
    if (obj.is_string()) {
      charge_creation(obj.text().size());
      const std::u32string cps = decode_utf8(obj.text());
      if (auto i = normalize_index(as_int(key), cps.size())) {
        return Value::from_string(encode_utf8(std::u32string_view(&cps[*i], 1)));
      }
    } else if (auto i = normalize_index(as_int(key), obj.items->size())) {
      return (*obj.items)[*i];
    }
  }
  if (key.is_string()) {
    if (auto method = bound_method(obj, key.text())) return *method;
  }
  return Value::undefined(
      fmt::format("'{}' object has no item {}", type_name(obj), python_repr(key)));
}

Value slice_value(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  auto bound = [](const Value& v, const char* what) -> std::optional<std::int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!is_int(v))
      fail("TypeError: slice {} must be an integer or None, not {}", what, type_name(v));
    return as_int(v);
  };
  const std::int64_t st = bound(step, "step").value_or(1);
  if (st == 0) fail("ValueError: slice step cannot be zero");
  std::u32string cps;
  std::int64_t n;
  if (obj.is_string()) {
    charge_creation(obj.text().size());
    cps = decode_utf8(obj.text());
    n = static_cast<std::int64_t>(cps.size());
  } else if (obj.is_sequence()) {
    n = static_cast<std::int64_t>(obj.items->size());
  } else if (obj.is_undefined()) {
    fail("{} (slicing it)", undefined_reason(obj));
  } else {
    fail("TypeError: '{}' object is not subscriptable", type_name(obj));
  }
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<std::int64_t> v, std::int64_t dflt) {
    if (!v) return dflt;
    std::int64_t i = *v;
    if (i < 0) {
      i += n;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= n) {
      i = st < 0 ? n - 1 : n;
    }
    return i;
  };
  const std::int64_t lo = adjust(bound(start, "start"), st < 0 ? n - 1 : 0);
  const std::int64_t hi = adjust(bound(stop, "stop"), st < 0 ? -1 : n);
  std::vector<std::size_t> picks;
  for (std::int64_t i = lo; st > 0 ? i < hi : i > hi; i += st)
    picks.push_back(static_cast<std::size_t>(i));
  if (obj.is_string()) {
    std::u32string out;
    for (const std::size_t i : picks) out.push_back(cps[i]);
    return Value::from_string(encode_utf8(out));
  }
  List out;
  for (const std::size_t i : picks) out.push_back((*obj.items)[i]);
  Value r = Value::from_list(std::move(out));
  r.kind = obj.kind;
  return r;
}

}  // namespace strata::text::jinja
