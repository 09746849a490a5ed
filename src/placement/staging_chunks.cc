#include "staging_chunks.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "strata/core/error.h"

namespace strata::placement::detail {
namespace {

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels answer EINVAL
#endif

constexpr int kMaxAutoThreads = 8;

}  // namespace

StagingConfig resolve_staging(const PrefetchOptions& options, unsigned cores) {
  STRATA_CHECK_ARG(options.io_threads >= 0 && options.staging_chunks >= 0,
                   "PrefetchOptions: io_threads ({}) and staging_chunks ({}) cannot be negative "
                   "(0 picks them automatically)",
                   options.io_threads, options.staging_chunks);
  STRATA_CHECK_ARG(options.staging_chunk_bytes > 0 && options.staging_chunk_bytes % 64 == 0,
                   "PrefetchOptions::staging_chunk_bytes must be a positive multiple of 64; got {}",
                   options.staging_chunk_bytes);
  if (cores == 0) cores = std::max(1u, std::thread::hardware_concurrency());
  const int threads = options.io_threads > 0
                          ? options.io_threads
                          : std::clamp(static_cast<int>(cores / 2), 1, kMaxAutoThreads);
  StagingConfig config;
  config.chunks = options.staging_chunks > 0 ? options.staging_chunks : 2 * threads;
  // A reader holds one chunk at a time; more readers than chunks could only wait.
  config.workers = std::min(threads, config.chunks);
  config.chunk_bytes = options.staging_chunk_bytes;
  return config;
}

std::vector<ChunkJob> plan_chunks(std::span<const std::size_t> sizes, std::size_t chunk_bytes) {
  STRATA_ASSERT(chunk_bytes > 0, "plan_chunks: zero chunk size");
  std::vector<ChunkJob> jobs;
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    for (std::size_t offset = 0; offset < sizes[t]; offset += chunk_bytes) {
      jobs.push_back({t, offset, std::min(chunk_bytes, sizes[t] - offset)});
    }
  }
  return jobs;
}

ChunkPool::ChunkPool(int chunks) : size_(chunks) {
  STRATA_ASSERT(chunks > 0, "ChunkPool: {} chunks", chunks);
  for (int c = 0; c < chunks; ++c) free_.push_back(c);
}

int ChunkPool::acquire() {
  std::unique_lock lock(mutex_);
  freed_.wait(lock, [this] { return !free_.empty(); });
  const int chunk = free_.front();
  free_.pop_front();
  peak_taken_ = std::max(peak_taken_, size_ - static_cast<int>(free_.size()));
  return chunk;
}

void ChunkPool::release(int chunk) {
  {
    std::lock_guard lock(mutex_);
    STRATA_ASSERT(chunk >= 0 && chunk < size_ && static_cast<int>(free_.size()) < size_,
                  "ChunkPool: chunk {} released twice or never taken", chunk);
    free_.push_back(chunk);
  }
  freed_.notify_one();
}

int ChunkPool::peak_taken() const {
  std::lock_guard lock(mutex_);
  return peak_taken_;
}

int read_source(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return 0;
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto address = reinterpret_cast<std::uintptr_t>(src);
  const std::uintptr_t start = address / page * page;
  if (::madvise(reinterpret_cast<void*>(start), address + bytes - start, MADV_POPULATE_READ) != 0) {
    const int error = errno;
    if (error == EFAULT || error == EIO || error == EHWPOISON) return error;
    // Anything else (EINVAL: an old kernel; EINTR, EAGAIN) only means no populate: copy anyway.
  }
  std::memcpy(dst, src, bytes);
  return 0;
}

std::string describe_address(const void* address) {
  const auto target = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;
    std::uint64_t offset = 0;
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %*s %" SCNx64 " %*s %*s %n", &begin,
                    &end, &offset, &path_at) < 3 ||
        target < begin || target >= end) {
      continue;
    }
    const std::string path = path_at > 0 ? line.substr(static_cast<std::size_t>(path_at)) : "";
    if (path.empty() || path.front() != '/') break;  // anonymous memory, [heap], [stack]...
    return fmt::format("'{}' at byte {}", path, offset + (target - begin));
  }
  return fmt::format("memory at {}", address);
}

}  // namespace strata::placement::detail
