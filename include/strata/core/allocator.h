#pragma once
// Allocators own raw bytes on one device. Storages remember the allocator that made them and give
// the bytes back to it; allocators therefore live for the whole process.

#include <cstddef>

#include "strata/core/device.h"

namespace strata {

class Allocator {
 public:
  virtual ~Allocator() = default;
  // At least `nbytes` bytes, aligned to 64. nbytes == 0 may return nullptr.
  // Throws OutOfMemory naming the device and the size.
  virtual void* allocate(std::size_t nbytes) = 0;
  virtual void deallocate(void* ptr, std::size_t nbytes) noexcept = 0;
  virtual Device device() const = 0;
  // True for page-locked host memory that devices can DMA from directly.
  virtual bool pinned() const { return false; }
};

// Plain (pageable) host memory, 64-byte aligned so vector loads never straddle a cache line.
Allocator& cpu_allocator();

inline constexpr std::size_t kStorageAlignment = 64;

}  // namespace strata
