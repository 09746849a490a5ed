#include "io/json_util.h"

#include <memory>
#include <unordered_set>
#include <vector>

#include "strata/core/error.h"
#include "strata/io/mapped_file.h"

namespace strata::io::detail {
namespace {

// Nesting depth of `text` counted over brackets outside strings; stops at the first excess.
bool nesting_within(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

}  // namespace

Json parse_json_strict(std::string_view text, std::string_view what) {
  STRATA_CHECK(nesting_within(text, kMaxJsonDepth), CheckpointError,
               "{}: JSON nested deeper than {} levels; no checkpoint file needs that, so the "
               "file is damaged or not what it claims to be",
               what, kMaxJsonDepth);
  // One key set per open object (a header can hold 100k keys, so a hash set, not a scan).
  std::vector<std::unordered_set<std::string>> open_objects;
  std::optional<std::string> duplicate;
  const Json::parser_callback_t callback = [&](int /*depth*/, Json::parse_event_t event,
                                               Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == Json::parse_event_t::key && !open_objects.empty() && !duplicate) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  Json doc;
  try {
    doc = Json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                      /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    STRATA_THROW(CheckpointError,
                 "{}: not valid JSON ({}); the file is damaged or truncated: re-download or "
                 "re-export it",
                 what, e.what());
  }
  STRATA_CHECK(!duplicate, CheckpointError,
               "{}: the key {} appears twice in one object; a JSON reader would silently keep "
               "one of them, so the file is ambiguous: re-export it",
               what, printable(duplicate.value_or("")));
  return doc;
}

std::string printable(std::string_view text, std::size_t max_chars) {
  std::string out = "'";
  std::size_t shown = 0;
  for (const char ch : text) {
    if (shown == max_chars) {
      out += fmt::format("...' ({} bytes)", text.size());
      return out;
    }
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
    ++shown;
  }
  out += "'";
  return out;
}

std::string json_kind(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::string:
      return fmt::format("the string {}", printable(value.get_ref<const std::string&>(), 40));
    case Json::value_t::boolean:
      return value.get<bool>() ? "true" : "false";
    case Json::value_t::number_integer:
      return fmt::format("the integer {}", value.get<std::int64_t>());
    case Json::value_t::number_unsigned:
      return fmt::format("the integer {}", value.get<std::uint64_t>());
    case Json::value_t::number_float:
      return fmt::format("the number {}", value.get<double>());
    default:
      return "an unsupported value";
  }
}

std::optional<std::uint64_t> as_uint(const Json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  return std::nullopt;
}

std::string read_text_file(const std::filesystem::path& path, std::uint64_t max_bytes,
                           std::string_view what) {
  const auto mapping = MappedFile::open(path, /*keep_descriptor=*/false);
  STRATA_CHECK(mapping->size() <= max_bytes, CheckpointError,
               "{} {}: {} bytes, over the {} byte limit for such a file; it is not what it "
               "claims to be",
               what, printable(path.string(), 400), mapping->size(), max_bytes);
  return std::string(reinterpret_cast<const char*>(mapping->data()),
                     static_cast<std::size_t>(mapping->size()));
}

const Json& config_document(const std::shared_ptr<const void>& document) {
  static const Json kEmpty = Json::object();
  return document ? *static_cast<const Json*>(document.get()) : kEmpty;
}

}  // namespace strata::io::detail
