#include "strata/nn/value.h"

#include <fmt/format.h>

#include <algorithm>

namespace strata::nn {

// ---- ValueDict -----------------------------------------------------------------------------

void ValueDict::set(std::string key, Value value) {
  if (Value* existing = find(key)) {
    *existing = std::move(value);
    return;
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

Value* ValueDict::find(std::string_view key) {
  for (Entry& entry : entries_) {
    if (entry.first == key) return &entry.second;
  }
  return nullptr;
}

const Value* ValueDict::find(std::string_view key) const {
  for (const Entry& entry : entries_) {
    if (entry.first == key) return &entry.second;
  }
  return nullptr;
}

const Value& ValueDict::at(std::string_view key) const {
  const Value* value = find(key);
  STRATA_CHECK_ARG(value != nullptr, "dict has no key '{}' (keys: {})", key, keys_str());
  return *value;
}

bool ValueDict::erase(std::string_view key) {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const Entry& entry) { return entry.first == key; });
  if (it == entries_.end()) return false;
  entries_.erase(it);
  return true;
}

std::string ValueDict::keys_str() const {
  std::string out;
  for (const Entry& entry : entries_) {
    if (!out.empty()) out += ", ";
    out += entry.first;
  }
  return out;
}

// ---- Value ---------------------------------------------------------------------------------

std::string_view kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::None:
      return "none";
    case Value::Kind::Tensor:
      return "tensor";
    case Value::Kind::Int:
      return "int";
    case Value::Kind::Double:
      return "double";
    case Value::Kind::Bool:
      return "bool";
    case Value::Kind::String:
      return "string";
    case Value::Kind::List:
      return "list";
    case Value::Kind::Dict:
      return "dict";
    case Value::Kind::Object:
      return "object";
  }
  return "unknown";
}

void Value::wrong_kind(Kind expected) const {
  STRATA_THROW(InvalidArgument, "Value: expected {}, got {}", kind_name(expected), describe());
}

const Tensor& Value::tensor() const {
  if (!is_tensor()) wrong_kind(Kind::Tensor);
  return std::get<Tensor>(data_);
}

Tensor& Value::tensor() {
  if (!is_tensor()) wrong_kind(Kind::Tensor);
  return std::get<Tensor>(data_);
}

std::int64_t Value::to_int() const {
  if (!is_int()) wrong_kind(Kind::Int);
  return std::get<std::int64_t>(data_);
}

double Value::to_double() const {
  if (is_int()) return static_cast<double>(std::get<std::int64_t>(data_));
  if (!is_double()) wrong_kind(Kind::Double);
  return std::get<double>(data_);
}

bool Value::to_bool() const {
  if (!is_bool()) wrong_kind(Kind::Bool);
  return std::get<bool>(data_);
}

const std::string& Value::string() const {
  if (!is_string()) wrong_kind(Kind::String);
  return std::get<std::string>(data_);
}

const ValueList& Value::list() const {
  if (!is_list()) wrong_kind(Kind::List);
  return std::get<ValueList>(data_);
}

ValueList& Value::list() {
  if (!is_list()) wrong_kind(Kind::List);
  return std::get<ValueList>(data_);
}

const ValueDict& Value::dict() const {
  if (!is_dict()) wrong_kind(Kind::Dict);
  return std::get<ValueDict>(data_);
}

ValueDict& Value::dict() {
  if (!is_dict()) wrong_kind(Kind::Dict);
  return std::get<ValueDict>(data_);
}

const std::shared_ptr<Object>& Value::object() const {
  if (!is_object()) wrong_kind(Kind::Object);
  return std::get<std::shared_ptr<Object>>(data_);
}

std::string Value::describe() const {
  switch (kind()) {
    case Kind::None:
      return "none";
    case Kind::Tensor: {
      const Tensor& t = std::get<Tensor>(data_);
      return t.defined() ? t.describe() : "undefined tensor";
    }
    case Kind::Int:
      return fmt::format("int {}", std::get<std::int64_t>(data_));
    case Kind::Double:
      return fmt::format("double {}", std::get<double>(data_));
    case Kind::Bool:
      return fmt::format("bool {}", std::get<bool>(data_));
    case Kind::String:
      return fmt::format("string '{}'", std::get<std::string>(data_));
    case Kind::List:
      return fmt::format("list[{}]", std::get<ValueList>(data_).size());
    case Kind::Dict:
      return fmt::format("dict{{{}}}", std::get<ValueDict>(data_).keys_str());
    case Kind::Object: {
      const auto& object = std::get<std::shared_ptr<Object>>(data_);
      return fmt::format("object {}", object ? object->type_name() : "null");
    }
  }
  return "unknown";
}

// ---- Args ----------------------------------------------------------------------------------

const Tensor& Args::tensor(std::size_t index, std::string_view who) const {
  STRATA_CHECK_ARG(index < positional.size(),
                   "{}: expected a tensor as positional argument {}, but only {} positional "
                   "argument(s) were passed",
                   who, index, positional.size());
  const Value& value = positional[index];
  STRATA_CHECK_ARG(value.is_tensor() && value.tensor().defined(),
                   "{}: positional argument {} must be a tensor, got {}", who, index,
                   value.describe());
  return value.tensor();
}

// ---- send_to_device / find_device ----------------------------------------------------------

namespace {

bool is_skipped(std::string_view key, std::span<const std::string> skip_keys) {
  return std::find(skip_keys.begin(), skip_keys.end(), key) != skip_keys.end();
}

// In place, so containers are not rebuilt: a forward hook calls this on every call.
void move_in_place(Value& value, Device device, std::span<const std::string> skip_keys,
                   bool non_blocking) {
  switch (value.kind()) {
    case Value::Kind::Tensor: {
      Tensor& t = value.tensor();
      if (t.defined() && t.device() != device) t = t.to(device, non_blocking);
      return;
    }
    case Value::Kind::List:
      for (Value& item : value.list()) move_in_place(item, device, skip_keys, non_blocking);
      return;
    case Value::Kind::Dict:
      for (auto& [key, item] : value.dict()) {
        if (!is_skipped(key, skip_keys)) move_in_place(item, device, skip_keys, non_blocking);
      }
      return;
    default:
      return;  // scalars, strings and objects pass through
  }
}

}  // namespace

Value send_to_device(Value value, std::optional<Device> device,
                     std::span<const std::string> skip_keys, bool non_blocking) {
  if (device) move_in_place(value, *device, skip_keys, non_blocking);
  return value;
}

void send_to_device(Args& args, std::optional<Device> device,
                    std::span<const std::string> skip_keys, bool non_blocking) {
  if (!device) return;
  for (Value& value : args.positional) move_in_place(value, *device, {}, non_blocking);
  for (auto& [key, value] : args.keywords) {
    if (!is_skipped(key, skip_keys)) move_in_place(value, *device, skip_keys, non_blocking);
  }
}

std::optional<Device> find_device(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::Tensor:
      if (value.tensor().defined()) return value.tensor().device();
      return std::nullopt;
    case Value::Kind::List:
      for (const Value& item : value.list()) {
        if (auto device = find_device(item)) return device;
      }
      return std::nullopt;
    case Value::Kind::Dict:
      for (const auto& entry : value.dict()) {
        if (auto device = find_device(entry.second)) return device;
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

std::optional<Device> find_device(const Args& args) {
  for (const Value& value : args.positional) {
    if (auto device = find_device(value)) return device;
  }
  for (const auto& entry : args.keywords) {
    if (auto device = find_device(entry.second)) return device;
  }
  return std::nullopt;
}

}  // namespace strata::nn
