#pragma once
// Page-locked host memory in large arenas (anonymous mappings faulted in over the cores, then
// cudaHostRegister'ed: about 4x faster than cudaHostAlloc). A request gets exactly its size,
// rounded only to the 64-byte storage alignment, first-fit from the arenas' free ranges; a
// request larger than an arena gets an arena of its own, of exactly its size. When the OS
// refuses to pin, allocate() throws OutOfMemory and the core falls back to pageable memory with
// a warning.

#include <cstddef>
#include <map>
#include <mutex>

#include "strata/core/allocator.h"
#include "strata/cuda/memory.h"

namespace strata::cuda::detail {

class PinnedAllocator final : public Allocator {
 public:
  static constexpr std::size_t kArenaBytes = std::size_t{128} << 20;

  PinnedAllocator() = default;
  PinnedAllocator(const PinnedAllocator&) = delete;
  PinnedAllocator& operator=(const PinnedAllocator&) = delete;

  void* allocate(std::size_t nbytes) override;
  void deallocate(void* ptr, std::size_t nbytes) noexcept override;
  Device device() const override { return Device::cpu(); }
  bool pinned() const override { return true; }

  PinnedMemoryStats stats() const;
  void release_free_arenas();

 private:
  struct Arena {
    std::size_t size = 0;
    std::size_t used = 0;
    std::map<std::size_t, std::size_t> free;  // offset -> length, coalesced
  };
  void* take_from(char* base, Arena& arena, std::size_t size);

  mutable std::mutex mutex_;
  std::map<char*, Arena> arenas_;            // by base address
  std::map<char*, std::size_t> live_;        // pointer -> rounded size
  PinnedMemoryStats stats_;
};

PinnedAllocator& pinned_allocator();

}  // namespace strata::cuda::detail
