// json.dumps as transformers' tojson filter calls it (ensure_ascii off by default, indent,
// separators, sort_keys), with Python's float repr and string escapes.

#include <algorithm>
#include <cmath>

#include "text/jinja/builtins.h"
#include "text/jinja/errors.h"
#include "text/jinja/unicode.h"

namespace strata::text::jinja {
namespace {

void dump_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (const char32_t cp : decode_utf8(s)) {
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (cp < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
        } else if (ensure_ascii && cp > 0x7E) {
          if (cp >= 0x10000) {
            const char32_t v = cp - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
          }
        } else {
          append_utf8(out, cp);
        }
    }
  }
  out += '"';
}

std::string float_json(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return float_repr(d);
}

std::string key_string(const Value& k) {
  switch (k.kind) {
    case Value::Kind::String:
      return k.text();
    case Value::Kind::Int:
      return std::to_string(k.integer);
    case Value::Kind::Bool:
      return k.boolean ? "true" : "false";
    case Value::Kind::Float:
      return float_json(k.number);
    case Value::Kind::None:
      return "null";
    default:
      fail("TypeError: keys must be str, int, float, bool or None, not {}", type_name(k));
  }
}

class Dumper {
 public:
  explicit Dumper(const JsonOptions& o) : o_(o) {}

  void dump(std::string& out, const Value& v, int level) {
    if (level > 200) fail("ValueError: value nested too deeply for tojson");
    check_string_size(out.size());
    switch (v.kind) {
      case Value::Kind::None:
        out += "null";
        return;
      case Value::Kind::Bool:
        out += v.boolean ? "true" : "false";
        return;
      case Value::Kind::Int:
        out += std::to_string(v.integer);
        return;
      case Value::Kind::Float:
        out += float_json(v.number);
        return;
      case Value::Kind::String:
        dump_string(out, v.text(), o_.ensure_ascii);
        return;
      case Value::Kind::List:
      case Value::Kind::Tuple: {
        if (v.items->empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (std::size_t i = 0; i < v.items->size(); ++i) {
          if (i) out += o_.item_separator;
          newline(out, level + 1);
          dump(out, (*v.items)[i], level + 1);
        }
        newline(out, level);
        out += ']';
        return;
      }
      case Value::Kind::Dict: {
        if (v.entries->empty()) {
          out += "{}";
          return;
        }
        std::vector<std::pair<std::string, const Value*>> entries;
        for (const auto& [k, val] : *v.entries) entries.emplace_back(key_string(k), &val);
        if (o_.sort_keys) {
          std::stable_sort(entries.begin(), entries.end(),
                           [](const auto& a, const auto& b) { return a.first < b.first; });
        }
        out += '{';
        for (std::size_t i = 0; i < entries.size(); ++i) {
          if (i) out += o_.item_separator;
          newline(out, level + 1);
          dump_string(out, entries[i].first, o_.ensure_ascii);
          out += o_.key_separator;
          dump(out, *entries[i].second, level + 1);
        }
        newline(out, level);
        out += '}';
        return;
      }
      default:
        fail("TypeError: Object of type {} is not JSON serializable", type_name(v));
    }
  }

 private:
  void newline(std::string& out, int level) {
    if (!o_.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *o_.indent;
  }

  const JsonOptions& o_;
};

}  // namespace

std::string to_json(const Value& v, const JsonOptions& options) {
  std::string out;
  Dumper(options).dump(out, v, 0);
  return out;
}

}  // namespace strata::text::jinja
