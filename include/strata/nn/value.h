#pragma once
// Value: the type-erased currency of Module::forward, like TorchScript's IValue. A Value is none,
// a Tensor, an int, a double, a bool, a string, a list, a dict with string keys (insertion
// ordered), or an opaque object handle (a KV cache, for example). Args = positional values +
// keyword values.
//
// Values have value semantics: copying a list or dict copies its structure, while tensors inside
// stay shared handles (copying a Tensor never copies its bytes) and objects stay shared.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "strata/core/tensor.h"

namespace strata::nn {

// Base of the opaque objects a Value can carry. send_to_device passes them through untouched:
// an object that owns tensors manages their placement itself.
class Object {
 public:
  virtual ~Object() = default;
  virtual std::string_view type_name() const { return "object"; }
};

class Value;
using ValueList = std::vector<Value>;

// A dict with string keys that keeps insertion order (kwargs, model outputs). Lookups are linear:
// these dicts hold a handful of entries.
class ValueDict {
 public:
  using Entry = std::pair<std::string, Value>;

  ValueDict() = default;
  ValueDict(std::initializer_list<Entry> entries);

  // Inserts or replaces; a replaced key keeps its position.
  void set(std::string key, Value value);
  Value* find(std::string_view key);
  const Value* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  // Throws InvalidArgument naming the key and the keys present.
  const Value& at(std::string_view key) const;
  bool erase(std::string_view key);

  // (Defined after Value, which must be complete first.)
  std::size_t size() const;
  bool empty() const;
  std::vector<Entry>::iterator begin();
  std::vector<Entry>::iterator end();
  std::vector<Entry>::const_iterator begin() const;
  std::vector<Entry>::const_iterator end() const;
  // "a, b, c"
  std::string keys_str() const;

 private:
  std::vector<Entry> entries_;
};

class Value {
 public:
  enum class Kind : std::uint8_t { None, Tensor, Int, Double, Bool, String, List, Dict, Object };

  Value() = default;  // none
  Value(Tensor tensor) : data_(std::move(tensor)) {}
  Value(bool value) : data_(value) {}
  template <std::integral I>
  requires(!std::same_as<I, bool>) Value(I value) : data_(static_cast<std::int64_t>(value)) {}
  template <std::floating_point F>
  Value(F value) : data_(static_cast<double>(value)) {}
  Value(std::string value) : data_(std::move(value)) {}
  Value(std::string_view value) : data_(std::string(value)) {}
  Value(const char* value) : data_(std::string(value)) {}  // not bool
  Value(ValueList list) : data_(std::move(list)) {}
  Value(ValueDict dict) : data_(std::move(dict)) {}
  Value(std::shared_ptr<Object> object) : data_(std::move(object)) {}
  template <std::derived_from<Object> T>
  Value(std::shared_ptr<T> object) : data_(std::shared_ptr<Object>(std::move(object))) {}

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_none() const { return kind() == Kind::None; }
  bool is_tensor() const { return kind() == Kind::Tensor; }
  bool is_int() const { return kind() == Kind::Int; }
  bool is_double() const { return kind() == Kind::Double; }
  bool is_bool() const { return kind() == Kind::Bool; }
  bool is_string() const { return kind() == Kind::String; }
  bool is_list() const { return kind() == Kind::List; }
  bool is_dict() const { return kind() == Kind::Dict; }
  bool is_object() const { return kind() == Kind::Object; }

  // Typed access; the wrong kind throws InvalidArgument naming what was expected and found.
  const Tensor& tensor() const;
  Tensor& tensor();
  std::int64_t to_int() const;
  double to_double() const;  // an int is accepted
  bool to_bool() const;
  const std::string& string() const;
  const ValueList& list() const;
  ValueList& list();
  const ValueDict& dict() const;
  ValueDict& dict();
  const std::shared_ptr<Object>& object() const;
  // The object as T; throws InvalidArgument when it is not a T.
  template <std::derived_from<Object> T>
  std::shared_ptr<T> object_as() const;

  // "none", "Tensor[2, 3] float32 cpu", "int 3", "list[2]", "dict{a, b}", "object KVCache"
  std::string describe() const;

 private:
  [[noreturn]] void wrong_kind(Kind expected) const;

  std::variant<std::monostate, Tensor, std::int64_t, double, bool, std::string, ValueList,
               ValueDict, std::shared_ptr<Object>>
      data_;
};

std::string_view kind_name(Value::Kind kind);

// The arguments of a forward call.
struct Args {
  ValueList positional;
  ValueDict keywords;

  Args() = default;
  Args(std::initializer_list<Value> values) : positional(values) {}
  Args(ValueList positional_values, ValueDict keyword_values = {})
      : positional(std::move(positional_values)), keywords(std::move(keyword_values)) {}

  // Positional argument `index` as a tensor. `who` names the caller ("Linear.forward") for the
  // error when the argument is missing or not a tensor.
  const Tensor& tensor(std::size_t index, std::string_view who) const;
  const Value* keyword(std::string_view name) const { return keywords.find(name); }
};

// ---- moving values between devices ---------------------------------------------------------

// Moves every tensor in `value` (lists and dicts walked recursively) to `device`. Dict entries
// whose key is in `skip_keys` are left as they are, at every nesting level. Objects, strings and
// scalars pass through. No device (nullopt) returns the value unchanged. Tensors already on the
// device are not copied.
Value send_to_device(Value value, std::optional<Device> device,
                     std::span<const std::string> skip_keys = {}, bool non_blocking = false);
// The forward-hook form: positional arguments are moved without skip keys, keyword arguments
// honour them (the reference's AlignDevicesHook does exactly this).
void send_to_device(Args& args, std::optional<Device> device,
                    std::span<const std::string> skip_keys = {}, bool non_blocking = false);

// The device of the first tensor found depth first (lists in order, dict values in order), or
// nullopt when there is none.
std::optional<Device> find_device(const Value& value);
// The device of the first tensor among the positional arguments, then the keyword values.
std::optional<Device> find_device(const Args& args);

// ---- template and inline definitions -------------------------------------------------------

inline ValueDict::ValueDict(std::initializer_list<Entry> entries) {
  for (const Entry& entry : entries) set(entry.first, entry.second);
}
inline std::size_t ValueDict::size() const { return entries_.size(); }
inline bool ValueDict::empty() const { return entries_.empty(); }
inline std::vector<ValueDict::Entry>::iterator ValueDict::begin() { return entries_.begin(); }
inline std::vector<ValueDict::Entry>::iterator ValueDict::end() { return entries_.end(); }
inline std::vector<ValueDict::Entry>::const_iterator ValueDict::begin() const {
  return entries_.begin();
}
inline std::vector<ValueDict::Entry>::const_iterator ValueDict::end() const {
  return entries_.end();
}

template <std::derived_from<Object> T>
std::shared_ptr<T> Value::object_as() const {
  const std::shared_ptr<Object>& base = object();
  auto typed = std::dynamic_pointer_cast<T>(base);
  STRATA_CHECK_ARG(typed != nullptr,
                   "Value: the object is a '{}', not the type the caller asked for",
                   base ? base->type_name() : std::string_view("null object"));
  return typed;
}

}  // namespace strata::nn
