#pragma once
// The plain pieces of the disk tier's staging (no GPU): the resolved pool size, how tensors split
// into chunk jobs, the pool's accounting of free chunks, and the read of one chunk from a source
// (usually a view of a memory-mapped offload file).

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "strata/placement/prefetch.h"

namespace strata::placement::detail {

// PrefetchOptions' staging fields with the automatic values resolved.
struct StagingConfig {
  int workers = 1;              // reading threads, never more than `chunks`
  int chunks = 2;               // pinned staging chunks in the pool
  std::size_t chunk_bytes = 0;  // bytes per chunk, a multiple of 64 (so of every element size)
  std::size_t pool_bytes() const { return static_cast<std::size_t>(chunks) * chunk_bytes; }
};
// Throws InvalidArgument for a negative count or a chunk size that is not a positive multiple
// of 64. `cores` stands for the machine's (0: ask the OS).
StagingConfig resolve_staging(const PrefetchOptions& options, unsigned cores = 0);

// The copy of bytes [offset, offset + bytes) of source `tensor` through one staging chunk.
struct ChunkJob {
  std::size_t tensor = 0;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  bool operator==(const ChunkJob&) const = default;
};
// Splits tensors of `sizes` bytes into jobs of at most `chunk_bytes`, tensor by tensor, in
// order; a zero-size tensor gives none.
std::vector<ChunkJob> plan_chunks(std::span<const std::size_t> sizes, std::size_t chunk_bytes);

// Free chunks, least recently released first: the fence a taker waits on (the copy last queued
// out of the chunk) is then the oldest one. acquire() blocks while every chunk is taken.
class ChunkPool {
 public:
  explicit ChunkPool(int chunks);
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  int acquire();
  void release(int chunk);
  int size() const { return size_; }
  int peak_taken() const;

 private:
  const int size_;
  mutable std::mutex mutex_;
  std::condition_variable freed_;
  std::deque<int> free_;
  int peak_taken_ = 0;
};

// Copies `bytes` from `src` to `dst`. The source range is first faulted in with one call
// (MADV_POPULATE_READ) instead of one fault per page, which also reports a failed read of a
// mapped file (EFAULT: the file is shorter than its mapping; EIO, EHWPOISON: the disk) instead
// of raising SIGBUS in the copy. Returns 0, or that errno with nothing copied. A kernel without
// the call (before 5.14) or memory it cannot populate is copied directly.
int read_source(void* dst, const void* src, std::size_t bytes);

// "'<file>' at byte <n>" for an address inside a file mapping, else "memory at <address>"
// (Linux /proc/self/maps; for error messages only).
std::string describe_address(const void* address);

}  // namespace strata::placement::detail
