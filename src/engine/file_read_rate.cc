// Reading files in the loader's 8 MiB blocks over several threads, through the page cache or with
// O_DIRECT (engine/machine_rates.h): `strata bench --load` reports a checkpoint's loads against
// this rate over the checkpoint's own shards.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "strata/core/error.h"
#include "strata/engine/machine_rates.h"

namespace strata::engine {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kBlock = std::size_t{8} << 20;  // as the loader's staging chunks
constexpr std::size_t kDirectAlign = 4096;            // O_DIRECT buffer and offset alignment

struct FileDescriptor {
  int fd = -1;
  FileDescriptor(const fs::path& path, int flags) : fd(::open(path.c_str(), flags)) {
    STRATA_CHECK(fd >= 0, IoError, "cannot open '{}'{}: {}{}", path.string(),
                 (flags & O_DIRECT) ? " with O_DIRECT" : "", std::strerror(errno),
                 errno == EINVAL ? " (the file system does not support O_DIRECT; put the "
                                   "files on a disk to measure reads from it)"
                                 : "");
  }
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
};

}  // namespace

double measure_file_read_gbps(const std::vector<fs::path>& files, int threads, bool direct) {
  // Every (file, block) is one job; threads take the next job until none is left.
  struct Job {
    std::size_t file;
    std::uint64_t offset;
    std::size_t bytes;
  };
  std::vector<Job> jobs;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    std::error_code failure;
    const std::uint64_t size = fs::file_size(files[i], failure);
    STRATA_CHECK(!failure, IoError, "cannot read '{}': {}", files[i].string(), failure.message());
    for (std::uint64_t offset = 0; offset < size; offset += kBlock) {
      jobs.push_back(
          {i, offset, static_cast<std::size_t>(std::min<std::uint64_t>(kBlock, size - offset))});
    }
    total += size;
  }
  std::vector<std::unique_ptr<FileDescriptor>> fds;
  for (const fs::path& file : files) {
    fds.push_back(std::make_unique<FileDescriptor>(file, O_RDONLY | (direct ? O_DIRECT : 0)));
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::atomic<int> error{0};  // errno of the first failed read (errno is per thread)
  std::atomic<std::size_t> failed_file{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      void* raw = std::aligned_alloc(kDirectAlign, kBlock);
      if (raw == nullptr) {
        int expected = 0;
        error.compare_exchange_strong(expected, ENOMEM);
        failed = true;
        return;
      }
      std::unique_ptr<void, decltype(&std::free)> buffer(raw, &std::free);
      for (std::size_t j = next++; j < jobs.size() && !failed; j = next++) {
        const Job& job = jobs[j];
        // O_DIRECT reads whole aligned blocks; the file's last one may come back short.
        const std::size_t want =
            direct ? (job.bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign : job.bytes;
        const ssize_t got =
            ::pread(fds[job.file]->fd, buffer.get(), want, static_cast<off_t>(job.offset));
        if (got < static_cast<ssize_t>(job.bytes)) {
          int expected = 0;
          if (error.compare_exchange_strong(expected, got < 0 ? errno : EIO)) {
            failed_file = job.file;
          }
          failed = true;
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  STRATA_CHECK(!failed, IoError, "reading '{}'{} failed: {}", files[failed_file].string(),
               direct ? " with O_DIRECT" : "", std::strerror(error.load()));
  return static_cast<double>(total) / std::max(seconds, 1e-9) / 1e9;
}

}  // namespace strata::engine
