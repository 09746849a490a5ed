#pragma once
// safetensors: reading (memory-mapped, zero-copy, validated before use) and writing (atomic).
//
// File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON
// {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the data area; offsets are relative to it.
//
// Alignment: safetensors does not require a tensor to start at a multiple of its element size,
// and a typed access to a misaligned address is undefined behaviour. Files written by the
// reference writers (and by save_safetensors) always align every tensor, so tensor() returns a
// zero-copy view for them; a misaligned tensor is copied out into an aligned buffer instead
// (is_zero_copy() tells which).

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/io/mapped_file.h"
#include "strata/io/weight_source.h"

namespace strata::io {

// Headers larger than this are refused (the reference's limit, and a bound on parse memory).
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::Float32;
  Shape shape;
  std::uint64_t begin = 0;  // byte offsets relative to the data area
  std::uint64_t end = 0;
  std::uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::uint64_t header_bytes = 0;         // N
  std::uint64_t data_offset = 0;          // 8 + N: where the data area starts in the file
  std::uint64_t data_bytes = 0;           // file size - data_offset
  std::vector<SafetensorsEntry> entries;  // sorted by name
  std::map<std::string, std::string> metadata;

  // nullptr when absent.
  const SafetensorsEntry* find(std::string_view name) const;
};

// Validates the header of a complete safetensors file held in `file` and returns it. `source`
// names the file in messages. Throws CheckpointError naming the file (and the tensor, where one
// is at fault), what was expected and what was found, for every malformed input; never reads
// outside `file`.
SafetensorsHeader parse_safetensors_header(std::span<const std::uint8_t> file,
                                           std::string_view source);

// A validated, memory-mapped safetensors file. Immutable and thread-safe.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws IoError (cannot open) or CheckpointError (malformed; for
  // a PyTorch pickle or zip file, the message says how to convert it).
  static std::shared_ptr<const SafetensorsFile> open(const std::filesystem::path& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return mapping_->path(); }
  const SafetensorsHeader& header() const { return header_; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const std::vector<SafetensorsEntry>& entries() const { return header_.entries; }
  bool contains(std::string_view name) const { return header_.find(name) != nullptr; }
  // Throws CheckpointError naming the file and the tensor when absent.
  const SafetensorsEntry& entry(std::string_view name) const;

  // A read-only CPU tensor viewing the mapping (a copy when the tensor is misaligned).
  Tensor tensor(std::string_view name) const;
  Tensor tensor(const SafetensorsEntry& entry) const;
  bool is_zero_copy(const SafetensorsEntry& entry) const;
  // Copies a tensor's bytes into `dst` (at least entry.nbytes() bytes) with pread, bypassing the
  // mapping: the fast path for loaders that copy (see MappedFile::read).
  void read_into(const SafetensorsEntry& entry, void* dst) const;
  // The raw bytes of a tensor inside the mapping.
  std::span<const std::uint8_t> bytes(const SafetensorsEntry& entry) const;
  // Absolute byte offset of a tensor in the file (for readers that bypass the mapping).
  std::uint64_t file_offset(const SafetensorsEntry& entry) const {
    return header_.data_offset + entry.begin;
  }
  const std::shared_ptr<const MappedFile>& mapping() const { return mapping_; }

 private:
  SafetensorsFile(std::shared_ptr<const MappedFile> mapping, SafetensorsHeader header);

  std::shared_ptr<const MappedFile> mapping_;
  SafetensorsHeader header_;
};

// Writes `tensors` (any device, dtype and layout; copied to the CPU one at a time when needed)
// as a safetensors file: the header padded with spaces to a multiple of 8 bytes, then the data
// ordered by element size (largest first) and name, so every tensor is aligned and the data is
// contiguous (what the reference reader requires). Written to a temporary file, fsync'ed and
// renamed over `path`. `metadata` gets "format": "pt" unless it names a format (transformers
// refuses files without one). Throws InvalidArgument for duplicate or reserved names and meta
// tensors, IoError for write failures.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace strata::io
