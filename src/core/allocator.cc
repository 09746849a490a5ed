#include "strata/core/allocator.h"

#include <cstdlib>
#include <new>

#include "strata/core/error.h"

namespace strata {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(std::size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    // aligned_alloc needs a size that is a multiple of the alignment.
    const std::size_t rounded =
        (nbytes + kStorageAlignment - 1) / kStorageAlignment * kStorageAlignment;
    void* p = std::aligned_alloc(kStorageAlignment, rounded);
    STRATA_CHECK(p != nullptr, OutOfMemory,
                 "out of host memory: could not allocate {} bytes on cpu; free memory, lower the "
                 "cpu budget in max_memory, or offload more to disk", nbytes);
    return p;
  }
  void deallocate(void* ptr, std::size_t) noexcept override { std::free(ptr); }
  Device device() const override { return Device::cpu(); }
};

}  // namespace

Allocator& cpu_allocator() {
  // Never destroyed: storages released during static destruction still find it.
  static auto* allocator = new CpuAllocator();
  return *allocator;
}

}  // namespace strata
