#pragma once
// MappedFile: a whole file mapped read-only into memory (RAII). Tensors read from checkpoints
// and offload folders are views into such mappings; each view holds a shared_ptr to its mapping,
// so the mapping lives exactly as long as the last tensor that uses it.
//
// A mapped file that another process truncates while it is mapped raises SIGBUS on access; the
// writers in this folder never do that (they write a new file and rename it over the old one).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

namespace strata::io {

class MappedFile {
 public:
  // Maps `path` read-only. Throws IoError naming the path and the reason (missing, not a
  // regular file, permission, mmap failure). An empty file gives an empty mapping.
  // `keep_descriptor` keeps the file open for read() (pread); without it (offload folders map
  // one file per tensor, and descriptors are a scarce resource) read() copies from the mapping.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path,
                                                bool keep_descriptor = true);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::uint64_t size() const { return size_; }
  std::span<const std::uint8_t> bytes() const { return {data_, static_cast<std::size_t>(size_)}; }
  const std::filesystem::path& path() const { return path_; }

  // Asks the kernel to start reading [offset, offset + length) (MADV_WILLNEED). Only a hint:
  // failures are ignored and ranges are clipped to the file.
  void will_need(std::uint64_t offset, std::uint64_t length) const;
  // Maps the pages of [offset, offset + length) into the page tables in one call
  // (MADV_POPULATE_READ), instead of one fault per 4 KiB page on first access. A hint too.
  void populate(std::uint64_t offset, std::uint64_t length) const;

  // Copies [offset, offset + nbytes) of the file into `dst` with pread(): from the page cache
  // straight into the destination, without faulting the mapping in (a memcpy from the mapping
  // when no descriptor was kept), in 8 MiB pieces over the cores (parallel_for). Loaders that
  // copy (into CPU, pinned or staging memory) use this; views use data(). Throws IoError naming
  // the file (the range must lie inside the file: InvalidArgument otherwise).
  void read(std::uint64_t offset, void* dst, std::uint64_t nbytes) const;

 private:
  MappedFile() = default;
  void read_serial(std::uint64_t offset, char* out, std::uint64_t nbytes) const;

  std::filesystem::path path_;
  int fd_ = -1;  // kept open for read() when asked
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
};

// Maps the pages of [data, data + nbytes) of any mapping into the page tables in one call
// (MADV_POPULATE_READ, widened to whole pages): a view of a mapped file read for the first time
// then costs one system call instead of a page fault per 4 KiB page (the disk tier computed on
// the cpu, hybrid-execution.md). A hint: returns whether the kernel did it (false on kernels
// before 5.14, or for an empty range); callers may ignore it.
bool populate_pages(const void* data, std::uint64_t nbytes);

}  // namespace strata::io
