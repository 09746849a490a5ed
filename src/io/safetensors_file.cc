#include <cstring>

#include "io/json_util.h"
#include "strata/core/error.h"
#include "strata/io/checkpoint.h"
#include "strata/io/safetensors.h"

namespace strata::io {
namespace {

// A zip archive (torch.save since 1.6) or a raw pickle (older torch.save, protocol 2-5).
bool looks_like_pytorch(std::span<const std::uint8_t> b) {
  if (b.size() >= 4 && std::memcmp(b.data(), "PK\x03\x04", 4) == 0) return true;
  return b.size() >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5;
}

}  // namespace

SafetensorsFile::SafetensorsFile(std::shared_ptr<const MappedFile> mapping,
                                 SafetensorsHeader header)
    : mapping_(std::move(mapping)), header_(std::move(header)) {}

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  auto mapping = MappedFile::open(path);
  SafetensorsHeader header;
  try {
    header = parse_safetensors_header(mapping->bytes(), path.string());
  } catch (const CheckpointError&) {
    // Only now: a valid safetensors header length can also start with these bytes.
    if (looks_like_pytorch(mapping->bytes())) {
      STRATA_THROW(CheckpointError, "{}", pytorch_checkpoint_advice(path));
    }
    throw;
  }
  return std::shared_ptr<const SafetensorsFile>(
      new SafetensorsFile(std::move(mapping), std::move(header)));
}

const SafetensorsEntry& SafetensorsFile::entry(std::string_view name) const {
  const SafetensorsEntry* e = header_.find(name);
  STRATA_CHECK(e != nullptr, CheckpointError,
               "safetensors file '{}' has no tensor {} ({} tensors in the file)", path().string(),
               detail::printable(name), header_.entries.size());
  return *e;
}

std::span<const std::uint8_t> SafetensorsFile::bytes(const SafetensorsEntry& e) const {
  STRATA_ASSERT(e.end <= header_.data_bytes, "entry outside the data area");
  if (e.nbytes() == 0) return {};
  return {mapping_->data() + file_offset(e), static_cast<std::size_t>(e.nbytes())};
}

void SafetensorsFile::read_into(const SafetensorsEntry& e, void* dst) const {
  STRATA_ASSERT(e.end <= header_.data_bytes, "entry outside the data area");
  if (e.nbytes() > 0) mapping_->read(file_offset(e), dst, e.nbytes());
}

bool SafetensorsFile::is_zero_copy(const SafetensorsEntry& e) const {
  const auto address = reinterpret_cast<std::uintptr_t>(mapping_->data()) + file_offset(e);
  return e.nbytes() > 0 && address % dtype_size(e.dtype) == 0;
}

Tensor SafetensorsFile::tensor(std::string_view name) const { return tensor(entry(name)); }

Tensor SafetensorsFile::tensor(const SafetensorsEntry& e) const {
  const auto src = bytes(e);
  if (!is_zero_copy(e)) {
    // Empty, or misaligned for its element type: an aligned copy (see the header comment).
    Tensor out = Tensor::empty(e.shape, e.dtype);
    if (!src.empty()) std::memcpy(out.data_ptr(), src.data(), src.size());
    return out;
  }
  Storage storage = Storage::wrap(const_cast<std::uint8_t*>(src.data()), src.size(), Device::cpu(),
                                  mapping_, /*writable=*/false);
  return Tensor::from_storage(std::move(storage), e.dtype, e.shape);
}

}  // namespace strata::io
