#include "text/json_access.h"

#include "strata/core/error.h"

namespace strata::text::detail {

JsonRef JsonRef::at(std::string_view key) const {
  if (!node_->is_object()) malformed("an object");
  auto it = node_->find(key);
  if (it == node_->end()) {
    STRATA_THROW(CheckpointError,
                 "{}: '{}' is missing the required member '{}'; re-export the file", file_, path_,
                 key);
  }
  return JsonRef(*it, file_, path_ + "." + std::string(key));
}

std::optional<JsonRef> JsonRef::get(std::string_view key) const {
  if (!node_->is_object()) malformed("an object");
  auto it = node_->find(key);
  if (it == node_->end() || it->is_null()) return std::nullopt;
  return JsonRef(*it, file_, path_ + "." + std::string(key));
}

JsonRef JsonRef::at(std::size_t index) const {
  if (!node_->is_array()) malformed("an array");
  if (index >= node_->size()) malformed(fmt::format("an array with more than {} elements", index));
  return JsonRef((*node_)[index], file_, fmt::format("{}[{}]", path_, index));
}

std::size_t JsonRef::size() const {
  if (!node_->is_array()) malformed("an array");
  return node_->size();
}

std::string JsonRef::str() const {
  if (!node_->is_string()) malformed("a string");
  return node_->get<std::string>();
}

bool JsonRef::boolean() const {
  if (!node_->is_boolean()) malformed("true or false");
  return node_->get<bool>();
}

std::int64_t JsonRef::integer() const {
  if (node_->is_number_unsigned()) {
    auto v = node_->get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(INT64_MAX)) malformed("an integer below 2^63");
    return static_cast<std::int64_t>(v);
  }
  if (!node_->is_number_integer()) malformed("an integer");
  return node_->get<std::int64_t>();
}

std::string JsonRef::str_or(std::string_view key, std::string_view fallback) const {
  auto v = get(key);
  return v ? v->str() : std::string(fallback);
}

bool JsonRef::bool_or(std::string_view key, bool fallback) const {
  auto v = get(key);
  return v ? v->boolean() : fallback;
}

std::int64_t JsonRef::int_or(std::string_view key, std::int64_t fallback) const {
  auto v = get(key);
  return v ? v->integer() : fallback;
}

void JsonRef::malformed(std::string_view expected) const {
  STRATA_THROW(CheckpointError, "{}: '{}' should be {} but is {} ({}); the file is malformed",
               file_, path_, expected, io::detail::json_kind(*node_),
               io::detail::printable(node_->dump(), 80));
}

void JsonRef::not_supported(std::string_view what) const {
  STRATA_THROW(NotSupported,
               "{}: '{}' is {} ({}), which Strata's tokenizer does not implement; "
               "docs/tokenizers.md lists the supported components",
               file_, path_, what, io::detail::printable(node_->dump(), 120));
}

}  // namespace strata::text::detail
