// Offload folders: the writer (data first, index last and atomically) and the reader (files
// mapped once, on first use).

#include <algorithm>
#include <vector>

#include "io/json_util.h"
#include "strata/core/convert.h"
#include "strata/core/error.h"
#include "strata/io/atomic_file.h"
#include "strata/io/offload.h"

namespace strata::io {
namespace fs = std::filesystem;
namespace {

using detail::printable;

constexpr std::uint64_t kMaxIndexBytes = 100'000'000;
constexpr std::size_t kConvertChunkElements = 1 << 20;

fs::path index_path(const fs::path& folder) { return folder / std::string(kOffloadIndexName); }
fs::path dat_path(const fs::path& folder, std::string_view name) {
  return folder / (std::string(name) + ".dat");
}

std::uint64_t stored_bytes(const OffloadEntry& e) {
  return static_cast<std::uint64_t>(shape_numel(e.shape)) * dtype_size(e.dtype);
}

OffloadIndex read_index(const fs::path& folder) {
  const fs::path path = index_path(folder);
  return parse_offload_index(detail::read_text_file(path, kMaxIndexBytes, "offload index"),
                             path.string());
}

void write_index(const fs::path& folder, const OffloadIndex& index) {
  const std::string text = serialize_offload_index(index);
  write_file_atomically(index_path(folder), text.data(), text.size());
}

// Writes `host` (contiguous, on the cpu) converted to `dtype`, a chunk at a time.
void write_converted(AtomicFileWriter& out, const Tensor& host, DType dtype) {
  const auto* src = static_cast<const std::uint8_t*>(host.data_ptr());
  const std::size_t total = static_cast<std::size_t>(host.numel());
  std::vector<std::uint8_t> buffer(std::min(total, kConvertChunkElements) * dtype_size(dtype));
  for (std::size_t done = 0; done < total;) {
    const std::size_t n = std::min(total - done, kConvertChunkElements);
    convert_elements(src + done * host.element_size(), host.dtype(), buffer.data(), dtype, n);
    out.write(buffer.data(), n * dtype_size(dtype));
    done += n;
  }
}

}  // namespace

// ---- writer -------------------------------------------------------------------------------

OffloadFolderWriter::OffloadFolderWriter(fs::path folder) : folder_(std::move(folder)) {
  std::error_code ec;
  fs::create_directories(folder_, ec);
  STRATA_CHECK(!ec, IoError, "cannot create the offload folder '{}': {}", folder_.string(),
               ec.message());
  if (fs::exists(index_path(folder_), ec)) {
    existing_ = read_index(folder_);
  } else {
    remove_abandoned_temporary_files();
  }
}

void OffloadFolderWriter::remove_abandoned_temporary_files() const {
  // Without an index the folder is new or was left by a writer that died (one writer per
  // folder): its half-written temporary files belong to nobody and would stay forever.
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder_, ec)) {
    if (entry.is_regular_file(ec) && is_temporary_file_name(entry.path().filename())) {
      fs::remove(entry.path(), ec);
    }
  }
}

void OffloadFolderWriter::retract_index_before_replacing(const std::string& name) {
  // The index describes the old <name>.dat. Replacing it in place, even with the same dtype and
  // shape, would leave a folder of old and new tensors that still loads if the writer dies
  // half-way. So the index goes (durably) before the first file it names is replaced: until
  // commit() the folder is incomplete, and a later run rewrites it.
  if (index_retracted_ || !existing_.contains(name)) return;
  std::error_code ec;
  fs::remove(index_path(folder_), ec);
  STRATA_CHECK(!ec, IoError, "cannot remove '{}' before replacing '{}' in it: {}",
               index_path(folder_).string(), printable(name), ec.message());
  sync_filesystem_of(folder_);
  index_retracted_ = true;
}

void OffloadFolderWriter::write(std::string_view name, const Tensor& tensor,
                                std::optional<DType> dtype) {
  const std::string tname = printable(name);
  STRATA_CHECK_ARG(!name.empty() && name.find('/') == std::string_view::npos &&
                       name.find('\0') == std::string_view::npos,
                   "offload folder '{}': tensor name {} cannot be a file name (empty, or with "
                   "'/' or NUL)",
                   folder_.string(), tname);
  STRATA_CHECK_ARG(tensor.defined() && !tensor.is_meta(),
                   "offload folder '{}': tensor {} has no data ({}); load it first",
                   folder_.string(), tname, tensor.defined() ? tensor.describe() : "undefined");
  const DType target = dtype.value_or(tensor.dtype());
  STRATA_CHECK_ARG(is_floating_point(target) == is_floating_point(tensor.dtype()),
                   "offload folder '{}': tensor {} is {} and would be stored as {}; integer and "
                   "bool tensors are never cast to floating point or back",
                   folder_.string(), tname, tensor.dtype(), target);

  OffloadEntry entry;
  entry.dtype = target;
  entry.shape = tensor.shape();
  retract_index_before_replacing(std::string(name));

  const Tensor host = tensor.to(Device::cpu()).contiguous();
  AtomicFileWriter out(dat_path(folder_, name));
  if (target == host.dtype()) {
    if (host.nbytes() > 0) out.write(host.data_ptr(), host.nbytes());
  } else {
    write_converted(out, host, target);
  }
  // Not durable yet: commit() syncs the whole folder once, before the index names the file.
  out.commit(/*durable=*/false);
  pending_.insert_or_assign(std::string(name), std::move(entry));
}

void OffloadFolderWriter::add_reference(std::string name, OffloadEntry entry) {
  STRATA_CHECK_ARG(entry.is_safetensors(),
                   "offload folder '{}': the entry for {} names no safetensors file; write() "
                   "stores tensors, add_reference() only points into checkpoint files",
                   folder_.string(), printable(name));
  pending_.insert_or_assign(std::move(name), std::move(entry));
}

void OffloadFolderWriter::commit() {
  std::error_code ec;
  if (pending_.empty() && fs::exists(index_path(folder_), ec)) return;
  sync_filesystem_of(folder_);
  for (auto& [name, entry] : pending_) existing_.insert_or_assign(name, std::move(entry));
  pending_.clear();
  write_index(folder_, existing_);
}

void offload_state_dict(const fs::path& folder,
                        const std::vector<std::pair<std::string, Tensor>>& tensors,
                        std::optional<DType> dtype) {
  OffloadFolderWriter writer(folder);
  for (const auto& [name, t] : tensors) {
    // A cast only applies to floating-point tensors (the loader's rule).
    writer.write(name, t, is_floating_point(t.dtype()) ? dtype : std::nullopt);
  }
  writer.commit();
}

// ---- reader -------------------------------------------------------------------------------

OffloadFolderReader::OffloadFolderReader(fs::path folder) : folder_(std::move(folder)) {
  const std::string where = printable(folder_.string(), 400);
  std::error_code ec;
  STRATA_CHECK(fs::is_directory(folder_, ec), CheckpointError,
               "offload folder {} does not exist or is not a folder", where);
  if (!fs::exists(index_path(folder_), ec)) {
    std::size_t dat_files = 0;
    for (const auto& item : fs::directory_iterator(folder_, ec)) {
      dat_files += item.path().extension() == ".dat";
    }
    STRATA_THROW(CheckpointError,
                 "offload folder {} has no index.json ({} .dat files): an offload into it did "
                 "not finish, so its files cannot be trusted; delete the folder and offload "
                 "again",
                 where, dat_files);
  }
  index_ = read_index(folder_);
  for (const auto& [name, e] : index_) {
    if (e.is_safetensors()) {
      const fs::path file = folder_ / *e.safetensors_file;  // absolute paths stay as they are
      STRATA_CHECK(fs::is_regular_file(file, ec), CheckpointError,
                   "offload folder {}: tensor {} points into the safetensors file '{}', which "
                   "does not exist; the checkpoint moved: offload the model again",
                   where, printable(name), file.string());
      continue;
    }
    const fs::path dat = dat_path(folder_, name);
    const auto size = fs::file_size(dat, ec);
    STRATA_CHECK(!ec, CheckpointError,
                 "offload folder {}: tensor {} is in index.json but '{}' is missing; the folder "
                 "is incomplete: delete it and offload again",
                 where, printable(name), dat.filename().string());
    STRATA_CHECK(size == stored_bytes(e), CheckpointError,
                 "offload folder {}: '{}' holds {} bytes but index.json says tensor {} is {} of "
                 "shape {} ({} bytes); the folder is damaged: delete it and offload again",
                 where, dat.filename().string(), size, printable(name), e.dtype, shape_str(e.shape),
                 stored_bytes(e));
  }
}

const OffloadEntry& OffloadFolderReader::entry(std::string_view name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw_missing(name);
  return it->second;
}

std::shared_ptr<const MappedFile> OffloadFolderReader::dat_mapping(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto& slot = dat_files_[name];
  if (!slot) slot = MappedFile::open(dat_path(folder_, name), /*keep_descriptor=*/false);
  return slot;
}

std::shared_ptr<const SafetensorsFile> OffloadFolderReader::safetensors(
    const std::string& file) const {
  std::lock_guard lock(mutex_);
  auto& slot = st_files_[file];
  if (!slot) slot = SafetensorsFile::open(folder_ / file);
  return slot;
}

bool OffloadFolderReader::contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

Tensor OffloadFolderReader::get(std::string_view name) const {
  const OffloadEntry& e = entry(name);
  const std::string key(name);
  if (e.is_safetensors()) {
    const Tensor t = safetensors(*e.safetensors_file)->tensor(e.weight_name.value_or(key));
    return e.cast_to ? t.to(*e.cast_to) : t;
  }
  const std::uint64_t nbytes = stored_bytes(e);
  if (nbytes == 0) return Tensor::empty(e.shape, e.dtype);
  auto mapping = dat_mapping(key);
  STRATA_CHECK(mapping->size() == nbytes, CheckpointError,
               "offload folder '{}': '{}.dat' changed size since the folder was opened ({} bytes, "
               "expected {}); something rewrote it: reopen the folder",
               folder_.string(), key, mapping->size(), nbytes);
  const auto* data = mapping->data();
  Storage storage = Storage::wrap(const_cast<std::uint8_t*>(data), nbytes, Device::cpu(),
                                  std::move(mapping), /*writable=*/false);
  return Tensor::from_storage(std::move(storage), e.dtype, e.shape);
}

TensorMeta OffloadFolderReader::meta(std::string_view name) const {
  const OffloadEntry& e = entry(name);
  if (!e.is_safetensors()) return {e.dtype, e.shape};
  const auto file = safetensors(*e.safetensors_file);
  const SafetensorsEntry& st = file->entry(e.weight_name.value_or(std::string(name)));
  return {e.cast_to.value_or(st.dtype), st.shape};
}

std::vector<std::string> OffloadFolderReader::keys() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, e] : index_) out.push_back(name);
  return out;
}

std::string OffloadFolderReader::describe() const {
  return fmt::format("offload folder '{}'", folder_.string());
}

}  // namespace strata::io
