#pragma once
// Offload folders in the reference's format (accelerate/utils/offload.py), so either side can
// read what the other wrote:
//   <folder>/<tensor name>.dat   raw bytes, C order, little-endian, no header; a 0-d tensor is
//                                stored as one element
//   <folder>/index.json          {"<name>": {"dtype": "float32", "shape": [4, 3]}, ...}
// dtype names are numpy's ("float32", "int64", "bool", ...) plus "bfloat16" (bytes are the bf16
// bit patterns, which the reference writes through an int16 view), "float8_e4m3fn" and
// "float8_e5m2" (numpy's names once ml_dtypes is loaded; without it the reference cannot offload
// fp8 at all, its bug B8).
// Entries may instead point into a safetensors file, as transformers writes them:
//   {"safetensors_file": path, "weight_name": name (optional), "dtype": torch name (optional)}.
//
// Trust: index.json is written last and atomically, after every .dat is on disk, and a writer
// removes it before replacing a file it names: a folder with an index holds exactly what the
// last committed writer wrote. A folder without index.json is refused (callers rewrite it), and
// so is an index naming a .dat file that is missing or has the wrong size.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/io/mapped_file.h"
#include "strata/io/safetensors.h"
#include "strata/io/weight_source.h"

namespace strata::io {

inline constexpr std::string_view kOffloadIndexName = "index.json";

struct OffloadEntry {
  // A raw .dat entry: dtype and shape of the stored bytes.
  DType dtype = DType::Float32;
  Shape shape;
  // A safetensors entry: the file, the name inside it (defaults to the key) and an optional
  // dtype to cast to after reading.
  std::optional<std::string> safetensors_file;
  std::optional<std::string> weight_name;
  std::optional<DType> cast_to;

  bool is_safetensors() const { return safetensors_file.has_value(); }
};

using OffloadIndex = std::map<std::string, OffloadEntry, std::less<>>;

// The index's dtype names.
std::string_view offload_dtype_name(DType dtype);
std::optional<DType> dtype_from_offload_name(std::string_view name);

// Parses and validates index.json text (names usable as file names, known dtypes,
// non-negative shapes, no duplicate keys). Throws CheckpointError naming `source` and the
// tensor.
OffloadIndex parse_offload_index(std::string_view json_text, std::string_view source);
// index.json text as the reference writes it (json.dump(indent=2)).
std::string serialize_offload_index(const OffloadIndex& index);

// Writes tensors into an offload folder. The folder is created when absent (a folder without
// index.json first loses the temporary files a killed writer left); an existing index.json is
// merged with the new entries on commit(), as the reference's save_offload_index does. Nothing written becomes visible to readers until commit(); the
// first write replacing a named file removes index.json until then.
// Not thread-safe: one writer per folder.
class OffloadFolderWriter {
 public:
  explicit OffloadFolderWriter(std::filesystem::path folder);
  // Without commit(), the index is left as it was, or absent once a named file was replaced.
  ~OffloadFolderWriter() = default;
  OffloadFolderWriter(const OffloadFolderWriter&) = delete;
  OffloadFolderWriter& operator=(const OffloadFolderWriter&) = delete;

  // Stores `tensor` (any device and layout) as <name>.dat in `dtype` (default: the tensor's),
  // converting once while writing. Integer and bool tensors are never converted to another
  // dtype class silently: a cast between them and floats is refused (InvalidArgument).
  void write(std::string_view name, const Tensor& tensor, std::optional<DType> dtype = {});
  // Records an entry pointing into a safetensors file (nothing is written until commit()).
  void add_reference(std::string name, OffloadEntry entry);
  // Flushes the data to disk, then writes the merged index.json atomically.
  void commit();

  const std::filesystem::path& folder() const { return folder_; }
  const OffloadIndex& pending() const { return pending_; }

 private:
  void retract_index_before_replacing(const std::string& name);
  void remove_abandoned_temporary_files() const;

  std::filesystem::path folder_;
  OffloadIndex existing_;  // what index.json held when the writer was made
  OffloadIndex pending_;   // written since, not yet in index.json
  bool index_retracted_ = false;  // index.json removed before a named file was replaced
};

// offload_state_dict(folder, state_dict): every tensor written, then the index.
void offload_state_dict(const std::filesystem::path& folder,
                        const std::vector<std::pair<std::string, Tensor>>& tensors,
                        std::optional<DType> dtype = {});

// Reads an offload folder. index.json is read and every entry checked at construction (the
// .dat exists with numel x element-size bytes, or the safetensors file exists); each file is
// mapped once, on first use. get() returns read-only views of the mappings (0-d entries are
// reshaped from their one stored element).
class OffloadFolderReader final : public WeightSource {
 public:
  explicit OffloadFolderReader(std::filesystem::path folder);

  const std::filesystem::path& folder() const { return folder_; }
  const OffloadIndex& index() const { return index_; }

  bool contains(std::string_view name) const override;
  Tensor get(std::string_view name) const override;
  TensorMeta meta(std::string_view name) const override;
  std::vector<std::string> keys() const override;
  std::string describe() const override;

 private:
  const OffloadEntry& entry(std::string_view name) const;
  std::shared_ptr<const MappedFile> dat_mapping(const std::string& name) const;
  std::shared_ptr<const SafetensorsFile> safetensors(const std::string& file) const;

  std::filesystem::path folder_;
  OffloadIndex index_;
  mutable std::mutex mutex_;  // guards the two caches below
  mutable std::map<std::string, std::shared_ptr<const MappedFile>, std::less<>> dat_files_;
  mutable std::map<std::string, std::shared_ptr<const SafetensorsFile>, std::less<>> st_files_;
};

}  // namespace strata::io
