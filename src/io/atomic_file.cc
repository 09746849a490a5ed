#include "strata/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "strata/core/error.h"

namespace strata::io {
namespace {

constexpr std::string_view kTempMarker = ".tmp-";

void fsync_folder(const std::filesystem::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  STRATA_CHECK(fd >= 0, IoError, "cannot open folder '{}' to sync it: {}", folder.string(),
               std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  STRATA_CHECK(rc == 0, IoError, "cannot sync folder '{}': {}", folder.string(),
               std::strerror(err));
}

std::filesystem::path folder_of(const std::filesystem::path& target) {
  const auto parent = target.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
  STRATA_CHECK(target_.has_filename(), InvalidArgument, "cannot write '{}': not a file name",
               target_.string());
  std::string pattern =
      (folder_of(target_) / ("." + target_.filename().string() + std::string(kTempMarker)))
          .string() +
      "XXXXXX";
  fd_ = ::mkstemp(pattern.data());
  STRATA_CHECK(fd_ >= 0, IoError, "cannot create a temporary file next to '{}': {}",
               target_.string(), std::strerror(errno));
  temp_ = pattern;
  ::fcntl(fd_, F_SETFD, FD_CLOEXEC);
  ::fchmod(fd_, 0644);  // mkstemp makes 0600; checkpoints are meant to be shared
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFileWriter::write(const void* data, std::size_t nbytes) {
  STRATA_CHECK(fd_ >= 0 && !committed_, IoError, "'{}' was already committed", target_.string());
  const auto* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    const ssize_t n = ::write(fd_, p, nbytes);
    if (n < 0 && errno == EINTR) continue;
    STRATA_CHECK(n > 0, IoError, "cannot write '{}' after {} bytes: {}; check free space",
                 temp_.string(), written_, n < 0 ? std::strerror(errno) : "no progress");
    p += n;
    nbytes -= static_cast<std::size_t>(n);
    written_ += static_cast<std::uint64_t>(n);
  }
}

void AtomicFileWriter::commit(bool durable) {
  STRATA_CHECK(fd_ >= 0 && !committed_, IoError, "'{}' was already committed", target_.string());
  if (durable) {
    STRATA_CHECK(::fsync(fd_) == 0, IoError, "cannot sync '{}': {}", temp_.string(),
                 std::strerror(errno));
  }
  const int rc = ::close(fd_);
  fd_ = -1;
  STRATA_CHECK(rc == 0, IoError, "cannot close '{}': {}", temp_.string(), std::strerror(errno));
  STRATA_CHECK(::rename(temp_.c_str(), target_.c_str()) == 0, IoError,
               "cannot rename '{}' to '{}': {}", temp_.string(), target_.string(),
               std::strerror(errno));
  committed_ = true;
  if (durable) fsync_folder(folder_of(target_));
}

void sync_filesystem_of(const std::filesystem::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  STRATA_CHECK(fd >= 0, IoError, "cannot open folder '{}' to sync it: {}", folder.string(),
               std::strerror(errno));
  const int rc = ::syncfs(fd);
  const int err = errno;
  ::close(fd);
  STRATA_CHECK(rc == 0, IoError, "cannot sync the filesystem of '{}': {}", folder.string(),
               std::strerror(err));
}

void write_file_atomically(const std::filesystem::path& target, const void* data,
                           std::size_t nbytes) {
  AtomicFileWriter writer(target);
  writer.write(data, nbytes);
  writer.commit();
}

bool is_temporary_file_name(const std::filesystem::path& name) {
  const std::string s = name.filename().string();
  const auto pos = s.rfind(kTempMarker);
  return !s.empty() && s[0] == '.' && pos != std::string::npos &&
         s.size() == pos + kTempMarker.size() + 6;
}

}  // namespace strata::io
