#include "strata/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "strata/core/error.h"
#include "strata/core/parallel.h"

namespace strata::io {
namespace {

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels answer EINVAL, which is ignored
#endif

// Closes a file descriptor unless released (error paths of open()).
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// The page-aligned range covering [offset, offset + length), clipped to `size`.
std::pair<std::uint64_t, std::uint64_t> page_range(std::uint64_t offset, std::uint64_t length,
                                                   std::uint64_t size) {
  length = std::min(length, size - offset);
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset / page * page;
  return {start, offset + length - start};
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path,
                                                   bool keep_descriptor) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is then refused below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  STRATA_CHECK(fd >= 0, IoError, "cannot open '{}': {}; check the path and its permissions",
               path.string(), std::strerror(errno));
  FdCloser closer{fd};
  struct stat st {};
  STRATA_CHECK(::fstat(fd, &st) == 0, IoError, "cannot stat '{}': {}", path.string(),
               std::strerror(errno));
  STRATA_CHECK(S_ISREG(st.st_mode), IoError,
               "'{}' is not a regular file (a folder, device or pipe); pass a file", path.string());

  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<std::uint64_t>(st.st_size);
  if (file->size_ > 0) {  // mmap refuses length 0; an empty span is enough then
    void* p = ::mmap(nullptr, static_cast<std::size_t>(file->size_), PROT_READ, MAP_PRIVATE, fd, 0);
    STRATA_CHECK(p != MAP_FAILED, IoError, "cannot map '{}' ({} bytes): {}", path.string(),
                 file->size_, std::strerror(errno));
    file->data_ = static_cast<const std::uint8_t*>(p);
  }
  if (keep_descriptor) {
    file->fd_ = fd;
    closer.fd = -1;  // owned by the MappedFile now
  }
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), static_cast<std::size_t>(size_));
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::will_need(std::uint64_t offset, std::uint64_t length) const {
  if (data_ == nullptr || offset >= size_) return;
  const auto [start, n] = page_range(offset, length, size_);
  ::madvise(const_cast<std::uint8_t*>(data_) + start, static_cast<std::size_t>(n), MADV_WILLNEED);
}

void MappedFile::populate(std::uint64_t offset, std::uint64_t length) const {
  if (data_ == nullptr || offset >= size_) return;
  const auto [start, n] = page_range(offset, length, size_);
  ::madvise(const_cast<std::uint8_t*>(data_) + start, static_cast<std::size_t>(n),
            MADV_POPULATE_READ);
}

bool populate_pages(const void* data, std::uint64_t nbytes) {
  if (data == nullptr || nbytes == 0) return false;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(data) / page * page;
  const auto end = reinterpret_cast<std::uintptr_t>(data) + nbytes;
  return ::madvise(reinterpret_cast<void*>(begin), static_cast<std::size_t>(end - begin),
                   MADV_POPULATE_READ) == 0;
}

void MappedFile::read(std::uint64_t offset, void* dst, std::uint64_t nbytes) const {
  STRATA_CHECK_ARG(offset <= size_ && nbytes <= size_ - offset,
                   "read of [{}, {}) from '{}', which has {} bytes", offset, offset + nbytes,
                   path_.string(), size_);
  auto* out = static_cast<char*>(dst);
  // One thread copies from the page cache at a fraction of the memory bandwidth: large reads are
  // split over the cores, in pieces big enough that each call's overhead does not show.
  constexpr std::int64_t kPiece = std::int64_t{8} << 20;
  const auto pieces = static_cast<std::int64_t>((nbytes + kPiece - 1) / kPiece);
  parallel_for(pieces, 1, [&](std::int64_t begin, std::int64_t end) {
    const std::uint64_t first = static_cast<std::uint64_t>(begin * kPiece);
    const std::uint64_t last = std::min(nbytes, static_cast<std::uint64_t>(end * kPiece));
    read_serial(offset + first, out + first, last - first);
  });
}

void MappedFile::read_serial(std::uint64_t offset, char* out, std::uint64_t nbytes) const {
  if (fd_ < 0) {
    if (nbytes > 0) std::memcpy(out, data_ + offset, static_cast<std::size_t>(nbytes));
    return;
  }
  while (nbytes > 0) {
    // Linux moves at most ~2 GiB per call.
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(nbytes, 1ull << 30));
    const ssize_t n = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    STRATA_CHECK(n > 0, IoError, "cannot read {} bytes at offset {} of '{}': {}", nbytes, offset,
                 path_.string(), n < 0 ? std::strerror(errno) : "the file shrank");
    out += n;
    offset += static_cast<std::uint64_t>(n);
    nbytes -= static_cast<std::uint64_t>(n);
  }
}

}  // namespace strata::io
