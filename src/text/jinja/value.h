#pragma once
// The interpreter's value type, with Jinja2's (that is, Python's) semantics: undefined apart from
// none, dicts in insertion order, Python truthiness and equality, and Python's str() and repr()
// (`True`, `None`, `['a', 'b']`), so that `{{ x }}` prints what jinja2 prints.

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata::text::jinja {

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<Value, Value>>;  // insertion order, as Python's dict

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Function {
  std::string name;
  std::function<Value(CallArgs&)> call;
};

struct Value {
  enum class Kind {
    Undefined,
    None,
    Bool,
    Int,
    Float,
    String,
    List,
    Tuple,
    Dict,
    Namespace,
    Function
  };

  Kind kind = Kind::Undefined;
  bool boolean = false;
  std::int64_t integer = 0;
  double number = 0.0;
  // String: the text, shared (copies of a value never copy its text); Undefined: why (errors).
  std::shared_ptr<const std::string> shared_text;
  std::shared_ptr<List> items;    // List, Tuple
  std::shared_ptr<Dict> entries;  // Dict, Namespace
  std::shared_ptr<Function> function;

  static Value undefined(std::string what = {});
  static Value none();
  static Value from_bool(bool b);
  static Value from_int(std::int64_t i);
  static Value from_float(double d);
  static Value from_string(std::string s);
  static Value from_list(List l);
  static Value from_tuple(List l);
  static Value from_dict(Dict d);
  static Value make_namespace(Dict d);
  static Value make_function(std::string name, std::function<Value(CallArgs&)> fn);
  // Inputs nested deeper than 256 levels are refused (RenderError): no template reads them, and
  // converting (and later printing) them recursively must not overflow the stack.
  static Value from_json(const nlohmann::ordered_json& j, int depth = 0);

  const std::string& text() const;
  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_sequence() const { return kind == Kind::List || kind == Kind::Tuple; }
  bool is_mapping() const { return kind == Kind::Dict; }
  bool is_callable() const { return kind == Kind::Function; }
};

// Caps the bytes of strings and list items one render creates or scans in total (so that a
// template cannot build gigabytes out of small pieces, nor index a long string a million times);
// RAII: active on this thread while it lives. Past the budget, a RenderError.
class CreationBudget {
 public:
  explicit CreationBudget(std::size_t bytes);
  ~CreationBudget();
  CreationBudget(const CreationBudget&) = delete;
  CreationBudget& operator=(const CreationBudget&) = delete;

 private:
  CreationBudget* previous_;
  std::size_t left_;
  friend void charge_creation(std::size_t bytes);
};
void charge_creation(std::size_t bytes);

// Python's name of the value's type, for error messages ('str', 'list', 'NoneType', ...).
std::string_view type_name(const Value& v);

bool truthy(const Value& v);
bool equals(const Value& a, const Value& b);
// Python's a < b; throws TemplateError for types that do not order.
bool less_than(const Value& a, const Value& b);
double to_double(const Value& v);  // numbers (bool, int, float) only

// Looks up a key in a dict (Python equality of keys); nullptr when absent.
const Value* dict_find(const Dict& d, const Value& key);
const Value* dict_find(const Dict& d, std::string_view key);
void dict_set(Dict& d, Value key, Value value);

// Why a value is undefined ("'x' is undefined", "'dict' object has no attribute 'y'").
std::string undefined_reason(const Value& v);
std::string python_str(const Value& v);   // str(v); undefined prints as ""
std::string python_repr(const Value& v);  // repr(v)
std::string float_repr(double d);         // Python's repr of a float: shortest round trip

}  // namespace strata::text::jinja
