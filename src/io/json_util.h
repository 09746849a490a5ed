#pragma once
// JSON helpers shared by the io parsers (private to the library). Every parser of untrusted
// text goes through parse_json_strict, which refuses what nlohmann::json would accept silently.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace strata::io::detail {

using Json = nlohmann::json;

// Deeper nesting is refused before parsing (nlohmann's copy and dump recurse).
inline constexpr int kMaxJsonDepth = 64;

// Parses `text`, refusing invalid JSON or UTF-8, nesting deeper than kMaxJsonDepth, and
// duplicate keys in any object (nlohmann keeps the last one without a word). `what` names the
// document in messages ("safetensors header of 'x.safetensors'"). Throws CheckpointError.
Json parse_json_strict(std::string_view text, std::string_view what);

// `text` printable for an error message: control and non-ASCII bytes escaped, cut at `max_chars`.
std::string printable(std::string_view text, std::size_t max_chars = 160);

// A JSON value's type in words ("a string", "a negative integer", ...), for messages.
std::string json_kind(const Json& value);

// The value as an unsigned integer, or nullopt when it is not one (floats and negatives too).
std::optional<std::uint64_t> as_uint(const Json& value);

// The whole of a small text file (an index, a config), refusing files over `max_bytes`.
// Throws IoError when it cannot be read, CheckpointError when it is too large.
std::string read_text_file(const std::filesystem::path& path, std::uint64_t max_bytes,
                           std::string_view what);

// The parsed document held by a ModelConfig (see model_config.h).
const Json& config_document(const std::shared_ptr<const void>& document);

}  // namespace strata::io::detail
