#pragma once
// Statistics and cache control of the CUDA caching allocator and the pinned host allocator.

#include <cstddef>
#include <cstdint>

namespace strata::cuda {

struct MemoryStats {
  std::size_t allocated = 0;       // bytes in live blocks (rounded sizes)
  std::size_t reserved = 0;        // bytes obtained from cudaMalloc and not yet released
  std::size_t peak_allocated = 0;
  std::size_t peak_reserved = 0;
  std::uint64_t allocations = 0;   // allocate() calls that returned memory
  std::uint64_t cache_hits = 0;    // ... served without cudaMalloc
  std::uint64_t device_mallocs = 0;  // cudaMalloc calls
};
MemoryStats memory_stats(int device);
// Peaks restart from the current values.
void reset_peak_memory_stats(int device);
// Returns every cached, unused segment to the driver (all devices when `device` is -1), after the
// pending uses recorded with record_stream have finished.
void empty_cache(int device = -1);

struct PinnedMemoryStats {
  std::size_t allocated = 0;  // bytes handed out (exactly what was asked, 64-byte aligned)
  std::size_t reserved = 0;   // bytes pinned in arenas
  std::size_t peak_allocated = 0;
  std::uint64_t arenas = 0;   // arenas currently held
  std::uint64_t fallbacks = 0;  // requests that could not be pinned
};
PinnedMemoryStats pinned_memory_stats();
// Unpins and frees arenas with nothing allocated in them.
void empty_pinned_cache();

}  // namespace strata::cuda
