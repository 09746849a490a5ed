// Validation of safetensors headers: everything a reader relies on is checked here, once,
// before any tensor is touched (this is what fuzz/safetensors_header_fuzz.cc exercises).

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "io/json_util.h"
#include "strata/core/error.h"
#include "strata/io/safetensors.h"

namespace strata::io {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors and offload files are little-endian; big-endian hosts need byte swaps");

using detail::Json;
using detail::printable;

constexpr std::string_view kRedo =
    "the file is damaged or was not written by a safetensors writer: "
    "re-download or re-export it";

std::string known_dtype_list() {
  std::string out;
  for (const DType d : kAllDTypes) {
    if (!out.empty()) out += ", ";
    out += safetensors_name(d);
  }
  return out;
}

std::map<std::string, std::string> parse_metadata(const Json& value, std::string_view file) {
  STRATA_CHECK(value.is_object(), CheckpointError,
               "safetensors file {}: __metadata__ is {}, expected an object of string values; {}",
               file, detail::json_kind(value), kRedo);
  std::map<std::string, std::string> out;
  for (const auto& [key, v] : value.items()) {
    STRATA_CHECK(v.is_string(), CheckpointError,
                 "safetensors file {}: __metadata__ key {} is {}, expected a string; {}", file,
                 printable(key), detail::json_kind(v), kRedo);
    out.emplace(key, v.get<std::string>());
  }
  return out;
}

SafetensorsEntry parse_entry(const std::string& name, const Json& value, std::uint64_t data_bytes,
                             std::string_view file) {
  const std::string tensor = printable(name);
  STRATA_CHECK(value.is_object(), CheckpointError,
               "safetensors file {}: tensor {} is described by {}, expected an object with "
               "dtype, shape and data_offsets; {}",
               file, tensor, detail::json_kind(value), kRedo);
  SafetensorsEntry e;
  e.name = name;

  const auto dtype_it = value.find("dtype");
  STRATA_CHECK(dtype_it != value.end() && dtype_it->is_string(), CheckpointError,
               "safetensors file {}: tensor {} has no dtype string; {}", file, tensor, kRedo);
  const auto& dtype_text = dtype_it->get_ref<const std::string&>();
  const auto dtype = dtype_from_safetensors(dtype_text);
  STRATA_CHECK(dtype.has_value(), CheckpointError,
               "safetensors file {}: tensor {} has dtype {}, which Strata does not support "
               "(known: {}); convert the tensor to one of those and save the file again",
               file, tensor, printable(dtype_text), known_dtype_list());
  e.dtype = *dtype;

  const auto shape_it = value.find("shape");
  STRATA_CHECK(shape_it != value.end() && shape_it->is_array(), CheckpointError,
               "safetensors file {}: tensor {} has no shape array; {}", file, tensor, kRedo);
  std::uint64_t numel = 1;
  bool overflow = false;
  for (const Json& d : *shape_it) {
    const auto dim = detail::as_uint(d);
    STRATA_CHECK(dim.has_value() && *dim <= static_cast<std::uint64_t>(INT64_MAX), CheckpointError,
                 "safetensors file {}: tensor {} has a shape entry that is {}, expected a "
                 "non-negative integer; {}",
                 file, tensor, detail::json_kind(d), kRedo);
    e.shape.push_back(static_cast<std::int64_t>(*dim));
    overflow = overflow || __builtin_mul_overflow(numel, *dim, &numel);
  }
  std::uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(e.dtype), &nbytes);

  const auto offsets_it = value.find("data_offsets");
  STRATA_CHECK(offsets_it != value.end() && offsets_it->is_array() && offsets_it->size() == 2,
               CheckpointError,
               "safetensors file {}: tensor {} needs data_offsets [begin, end]; {}", file, tensor,
               kRedo);
  const auto begin = detail::as_uint((*offsets_it)[0]);
  const auto end = detail::as_uint((*offsets_it)[1]);
  STRATA_CHECK(begin && end && *begin <= *end, CheckpointError,
               "safetensors file {}: tensor {} has data_offsets [{}, {}] (expected two "
               "non-negative integers, begin <= end); {}",
               file, tensor, detail::json_kind((*offsets_it)[0]),
               detail::json_kind((*offsets_it)[1]), kRedo);
  e.begin = *begin;
  e.end = *end;
  STRATA_CHECK(e.end <= data_bytes, CheckpointError,
               "safetensors file {}: tensor {} has data_offsets [{}, {}] but the data area holds "
               "only {} bytes; the file is truncated or damaged: re-download it",
               file, tensor, e.begin, e.end, data_bytes);
  STRATA_CHECK(!overflow && nbytes == e.nbytes(), CheckpointError,
               "safetensors file {}: tensor {} of shape {} and dtype {} needs {} bytes but its "
               "data_offsets [{}, {}] span {} bytes; {}",
               file, tensor, shape_str(e.shape), dtype_text,
               overflow ? std::string("more than 2^64") : std::to_string(nbytes), e.begin, e.end,
               e.nbytes(), kRedo);
  return e;
}

// No two non-empty tensors may share a byte (an empty tensor owns no bytes).
void check_no_overlap(const std::vector<SafetensorsEntry>& entries, std::string_view file) {
  std::vector<const SafetensorsEntry*> by_offset;
  by_offset.reserve(entries.size());
  for (const auto& e : entries) {
    if (e.nbytes() > 0) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const auto& prev = *by_offset[i - 1];
    const auto& cur = *by_offset[i];
    STRATA_CHECK(cur.begin >= prev.end, CheckpointError,
                 "safetensors file {}: tensors {} [{}, {}] and {} [{}, {}] overlap; every tensor "
                 "needs bytes of its own; {}",
                 file, printable(prev.name), prev.begin, prev.end, printable(cur.name), cur.begin,
                 cur.end, kRedo);
  }
}

}  // namespace

const SafetensorsEntry* SafetensorsHeader::find(std::string_view name) const {
  const auto it = std::lower_bound(
      entries.begin(), entries.end(), name,
      [](const SafetensorsEntry& e, std::string_view n) { return std::string_view(e.name) < n; });
  return it != entries.end() && it->name == name ? &*it : nullptr;
}

SafetensorsHeader parse_safetensors_header(std::span<const std::uint8_t> bytes,
                                           std::string_view source) {
  const std::string file = printable(source, 400);
  const std::uint64_t size = bytes.size();
  STRATA_CHECK(size >= 8, CheckpointError,
               "safetensors file {}: {} bytes, too short for the 8-byte header length; the file "
               "is truncated or not a safetensors file: re-download it",
               file, size);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);  // little-endian (checked above)
  STRATA_CHECK(n <= kMaxSafetensorsHeaderBytes, CheckpointError,
               "safetensors file {}: header length {} is over the {} byte limit; {}", file, n,
               kMaxSafetensorsHeaderBytes, kRedo);
  STRATA_CHECK(n <= size - 8, CheckpointError,
               "safetensors file {}: header length {} is larger than the {} bytes that follow "
               "it; the file is truncated: re-download it",
               file, n, size - 8);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8,
                              static_cast<std::size_t>(n));
  // The reference reader insists on '{' first (no BOM, no leading space).
  STRATA_CHECK(!text.empty() && text.front() == '{', CheckpointError,
               "safetensors file {}: the header does not start with '{{'; {}", file, kRedo);
  const Json doc = detail::parse_json_strict(text, fmt::format("safetensors header of {}", file));
  STRATA_CHECK(doc.is_object(), CheckpointError,
               "safetensors file {}: the header is {}, expected an object; {}", file,
               detail::json_kind(doc), kRedo);

  SafetensorsHeader header;
  header.header_bytes = n;
  header.data_offset = 8 + n;
  header.data_bytes = size - header.data_offset;
  header.entries.reserve(doc.size());
  for (const auto& [name, value] : doc.items()) {
    if (name == "__metadata__") {
      header.metadata = parse_metadata(value, file);
    } else {
      header.entries.push_back(parse_entry(name, value, header.data_bytes, file));
    }
  }
  // nlohmann objects iterate in key order, so entries are already sorted by name (and the
  // duplicate check in parse_json_strict made the names unique).
  STRATA_ASSERT(std::is_sorted(header.entries.begin(), header.entries.end(),
                               [](const auto& a, const auto& b) { return a.name < b.name; }),
                "safetensors entries not sorted");
  check_no_overlap(header.entries, file);
  return header;
}

}  // namespace strata::io
