#pragma once
// Typed access to a tokenizer file's JSON with the JSON path in every error: a malformed file
// is a CheckpointError naming file, path, what was expected and what was found; an unknown
// component or value is NotSupported naming the same.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "io/json_util.h"

namespace strata::text::detail {

using Json = io::detail::Json;

class JsonRef {
 public:
  JsonRef(const Json& node, std::string file, std::string path)
      : node_(&node), file_(std::move(file)), path_(std::move(path)) {}

  const Json& json() const { return *node_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return file_; }
  bool is_null() const { return node_->is_null(); }

  // Required member (CheckpointError when absent); optional member (nullopt when absent/null).
  JsonRef at(std::string_view key) const;
  std::optional<JsonRef> get(std::string_view key) const;
  JsonRef at(std::size_t index) const;
  std::size_t size() const;  // of an array (CheckpointError otherwise)

  std::string str() const;
  bool boolean() const;
  std::int64_t integer() const;
  // Member helpers with defaults when absent or null.
  std::string str_or(std::string_view key, std::string_view fallback) const;
  bool bool_or(std::string_view key, bool fallback) const;
  std::int64_t int_or(std::string_view key, std::int64_t fallback) const;

  [[noreturn]] void malformed(std::string_view expected) const;
  [[noreturn]] void not_supported(std::string_view what) const;

 private:
  const Json* node_;
  std::string file_;
  std::string path_;
};

}  // namespace strata::text::detail
