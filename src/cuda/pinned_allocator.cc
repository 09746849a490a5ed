#include "cuda/pinned_allocator.h"

#include <cuda_runtime.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "cuda/caching_allocator.h"
#include "strata/core/error.h"
#include "strata/core/parallel.h"

namespace strata::cuda::detail {
namespace {

std::size_t round_to_alignment(std::size_t n) {
  return (n + kStorageAlignment - 1) / kStorageAlignment * kStorageAlignment;
}

// cudaHostAlloc zeroes and locks the pages on one thread: 3.0 GB/s measured on the H200 host
// (docs/cuda-backend.md), which made pinning, not reading, the cost of loading cpu-offloaded
// weights. The zeroing is the kernel's page-fault work and runs on every core when the pages are
// first touched in parallel; registering pages already present is fast: 11 GB/s end to end.
// Returns null (and the CUDA error) when the memory cannot be mapped or locked.
void* map_and_pin(std::size_t size, cudaError_t& status) {
  void* raw = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    status = cudaErrorMemoryAllocation;
    return nullptr;
  }
  constexpr std::int64_t kPage = 4096;  // touching every 4 KiB covers any page size
  auto* bytes = static_cast<volatile char*>(raw);
  const auto pages = static_cast<std::int64_t>((size + kPage - 1) / kPage);
  parallel_for(pages, /*grain=*/2048, [bytes](std::int64_t begin, std::int64_t end) {
    for (std::int64_t p = begin; p < end; ++p) bytes[p * kPage] = 0;
  });
  status = cudaHostRegister(raw, size, cudaHostRegisterPortable);
  if (status != cudaSuccess) {
    cudaGetLastError();
    ::munmap(raw, size);
    return nullptr;
  }
  return raw;
}

void unpin_and_unmap(void* base, std::size_t size) {
  if (cudaHostUnregister(base) != cudaSuccess) cudaGetLastError();
  ::munmap(base, size);
}

}  // namespace

void* PinnedAllocator::allocate(std::size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const std::size_t size = round_to_alignment(nbytes);
  std::lock_guard lock(mutex_);
  for (auto& [base, arena] : arenas_) {
    if (void* p = take_from(base, arena, size)) {
      stats_.allocated += nbytes;
      stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
      return p;
    }
  }
  const std::size_t arena_size = std::max(size, kArenaBytes);
  // Portable: usable for copies to and from every GPU, whichever is current.
  cudaError_t status = cudaSuccess;
  void* raw = map_and_pin(arena_size, status);
  if (raw == nullptr) {
    ++stats_.fallbacks;
    STRATA_THROW(OutOfMemory,
                 "could not pin {} of host memory ({} asked): {}; lower the pinned cpu budget or "
                 "raise the locked-memory limit (ulimit -l)",
                 format_bytes(arena_size), format_bytes(nbytes), cudaGetErrorString(status));
  }
  auto* base = static_cast<char*>(raw);
  Arena& arena = arenas_[base];
  arena.size = arena_size;
  arena.free.emplace(0, arena_size);
  stats_.reserved += arena_size;
  ++stats_.arenas;
  void* p = take_from(base, arena, size);
  stats_.allocated += nbytes;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  return p;
}

void* PinnedAllocator::take_from(char* base, Arena& arena, std::size_t size) {
  if (arena.size - arena.used < size) return nullptr;
  for (auto it = arena.free.begin(); it != arena.free.end(); ++it) {
    if (it->second < size) continue;
    const std::size_t offset = it->first;
    const std::size_t rest = it->second - size;
    arena.free.erase(it);
    if (rest > 0) arena.free.emplace(offset + size, rest);
    arena.used += size;
    live_.emplace(base + offset, size);
    return base + offset;
  }
  return nullptr;
}

void PinnedAllocator::deallocate(void* ptr, std::size_t nbytes) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard lock(mutex_);
  auto live = live_.find(static_cast<char*>(ptr));
  if (live == live_.end()) return;
  const std::size_t size = live->second;
  live_.erase(live);
  auto arena_it = std::prev(arenas_.upper_bound(static_cast<char*>(ptr)));
  Arena& arena = arena_it->second;
  std::size_t offset = static_cast<std::size_t>(static_cast<char*>(ptr) - arena_it->first);
  std::size_t length = size;
  auto next = arena.free.lower_bound(offset);
  if (next != arena.free.end() && next->first == offset + length) {
    length += next->second;
    next = arena.free.erase(next);
  }
  if (next != arena.free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      length += prev->second;
      arena.free.erase(prev);
    }
  }
  arena.free.emplace(offset, length);
  arena.used -= size;
  stats_.allocated -= std::min(stats_.allocated, nbytes);
}

PinnedMemoryStats PinnedAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void PinnedAllocator::release_free_arenas() {
  std::lock_guard lock(mutex_);
  for (auto it = arenas_.begin(); it != arenas_.end();) {
    if (it->second.used != 0) {
      ++it;
      continue;
    }
    unpin_and_unmap(it->first, it->second.size);
    stats_.reserved -= it->second.size;
    --stats_.arenas;
    it = arenas_.erase(it);
  }
}

PinnedAllocator& pinned_allocator() {
  static auto* allocator = new PinnedAllocator();  // never destroyed, like every allocator
  return *allocator;
}

}  // namespace strata::cuda::detail

namespace strata::cuda {

PinnedMemoryStats pinned_memory_stats() { return detail::pinned_allocator().stats(); }
void empty_pinned_cache() { detail::pinned_allocator().release_free_arenas(); }

}  // namespace strata::cuda
