// index.json of offload folders: parsing (untrusted: fuzzed by fuzz/index_fuzz.cc) and
// writing in the reference's format.

#include "io/json_util.h"
#include "strata/core/error.h"
#include "strata/io/offload.h"

namespace strata::io {
namespace {

using detail::Json;
using detail::printable;

constexpr std::string_view kRedo = "the folder is damaged: delete it and offload again";

std::optional<std::string> optional_string(const Json& entry, const char* key, std::string_view src,
                                           std::string_view tensor) {
  const auto it = entry.find(key);
  if (it == entry.end() || it->is_null()) return std::nullopt;
  STRATA_CHECK(it->is_string(), CheckpointError,
               "offload index {}: tensor {} has {} {}, expected a string; {}", src, tensor, key,
               detail::json_kind(*it), kRedo);
  return it->get<std::string>();
}

OffloadEntry parse_entry(const std::string& name, const Json& value, std::string_view src) {
  const std::string tensor = printable(name);
  STRATA_CHECK(value.is_object(), CheckpointError,
               "offload index {}: tensor {} is described by {}, expected an object with dtype "
               "and shape; {}",
               src, tensor, detail::json_kind(value), kRedo);
  OffloadEntry e;
  e.safetensors_file = optional_string(value, "safetensors_file", src, tensor);
  if (e.is_safetensors()) {
    e.weight_name = optional_string(value, "weight_name", src, tensor);
    if (const auto dtype = optional_string(value, "dtype", src, tensor)) {
      try {
        e.cast_to = parse_dtype(*dtype);
      } catch (const InvalidArgument&) {
        STRATA_THROW(CheckpointError, "offload index {}: tensor {} has the unknown dtype {}; {}",
                     src, tensor, printable(*dtype), kRedo);
      }
    }
    return e;
  }

  // A raw .dat entry: its name becomes a file name inside the folder.
  STRATA_CHECK(
      !name.empty() && name.find('/') == std::string::npos && name.find('\0') == std::string::npos,
      CheckpointError,
      "offload index {}: tensor name {} cannot be a file name in the folder (empty, or "
      "with '/' or NUL); {}",
      src, tensor, kRedo);
  const auto dtype_text = optional_string(value, "dtype", src, tensor);
  STRATA_CHECK(dtype_text.has_value(), CheckpointError,
               "offload index {}: tensor {} has no dtype; {}", src, tensor, kRedo);
  const auto dtype = dtype_from_offload_name(*dtype_text);
  STRATA_CHECK(dtype.has_value(), CheckpointError,
               "offload index {}: tensor {} has the dtype {}, which Strata cannot read (it reads "
               "bool, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64, "
               "float8_e4m3fn, float8_e5m2); offload that model again with one of those",
               src, tensor, printable(*dtype_text));
  e.dtype = *dtype;
  const auto shape = value.find("shape");
  STRATA_CHECK(shape != value.end() && shape->is_array(), CheckpointError,
               "offload index {}: tensor {} has no shape array; {}", src, tensor, kRedo);
  std::uint64_t bytes = dtype_size(e.dtype);
  bool overflow = false;
  for (const Json& d : *shape) {
    const auto dim = detail::as_uint(d);
    STRATA_CHECK(dim.has_value() && *dim <= static_cast<std::uint64_t>(INT64_MAX), CheckpointError,
                 "offload index {}: tensor {} has a shape entry that is {}, expected a "
                 "non-negative integer; {}",
                 src, tensor, detail::json_kind(d), kRedo);
    overflow = overflow || __builtin_mul_overflow(bytes, *dim, &bytes);
    e.shape.push_back(static_cast<std::int64_t>(*dim));
  }
  STRATA_CHECK(!overflow && bytes <= static_cast<std::uint64_t>(INT64_MAX), CheckpointError,
               "offload index {}: tensor {} has the shape {}, too large for any file; {}", src,
               tensor, shape_str(e.shape), kRedo);
  return e;
}

}  // namespace

std::string_view offload_dtype_name(DType dtype) {
  // numpy's names coincide with PyTorch's for every dtype Strata has ("bfloat16" and the
  // float8 names are not numpy's but the reference's and ml_dtypes').
  return dtype_name(dtype);
}

std::optional<DType> dtype_from_offload_name(std::string_view name) {
  for (const DType d : kAllDTypes) {
    if (dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

OffloadIndex parse_offload_index(std::string_view json_text, std::string_view source) {
  const std::string src = printable(source, 400);
  const Json doc = detail::parse_json_strict(json_text, fmt::format("offload index {}", src));
  STRATA_CHECK(doc.is_object(), CheckpointError,
               "offload index {}: the document is {}, expected an object; {}", src,
               detail::json_kind(doc), kRedo);
  OffloadIndex index;
  for (const auto& [name, value] : doc.items()) index.emplace(name, parse_entry(name, value, src));
  return index;
}

std::string serialize_offload_index(const OffloadIndex& index) {
  Json doc = Json::object();
  for (const auto& [name, e] : index) {
    Json entry = Json::object();
    if (e.is_safetensors()) {
      entry["safetensors_file"] = *e.safetensors_file;
      if (e.weight_name) entry["weight_name"] = *e.weight_name;
      if (e.cast_to) entry["dtype"] = std::string(dtype_name(*e.cast_to));
    } else {
      entry["dtype"] = std::string(offload_dtype_name(e.dtype));
      entry["shape"] = e.shape;
    }
    doc[name] = std::move(entry);
  }
  // Python's json.dump(indent=2) escapes non-ASCII characters (ensure_ascii).
  try {
    return doc.dump(2, ' ', /*ensure_ascii=*/true);
  } catch (const Json::type_error& e) {
    STRATA_THROW(InvalidArgument, "offload index: a tensor name is not valid UTF-8 ({})", e.what());
  }
}

}  // namespace strata::io
