#pragma once
// The caching device allocator, one per GPU. Freed blocks stay cached and are reused by later
// allocations on the same stream without a cudaMalloc or a synchronisation; a block used on
// other streams (record_stream) is reused only once events recorded there at free time have
// completed. Small requests (<= 1 MiB) are carved from 2 MiB segments, large ones from their own
// segments; neighbouring free blocks of one segment merge again.

#include <cuda_runtime.h>

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "strata/core/allocator.h"
#include "strata/cuda/memory.h"

namespace strata::cuda::detail {

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator() override = default;
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Memory for use on the device's compute stream.
  void* allocate(std::size_t nbytes) override;
  // Memory whose first use is on `stream`; reuse is ordered by that stream.
  void* allocate_on(std::size_t nbytes, cudaStream_t stream);
  void deallocate(void* ptr, std::size_t nbytes) noexcept override;
  Device device() const override { return Device::cuda(device_); }

  // `ptr` (anywhere inside a live block) is also used on `stream`, a stream of GPU
  // `stream_device` (another GPU's for a peer copy: its reuse then waits on an event made on
  // that GPU, since an event can only be recorded on a stream of its own device).
  void record_stream(const void* ptr, cudaStream_t stream, int stream_device);
  // `stream` is being destroyed after its work finished: drop it from the blocks' users (its
  // handle may be reused by a new stream). Streams of every GPU may use any allocator's blocks,
  // so a stream tells every allocator.
  void forget_stream(cudaStream_t stream);
  MemoryStats stats() const;
  void reset_peak_stats();
  void empty_cache();

 private:
  struct StreamUse {
    cudaStream_t stream = nullptr;
    int device = 0;
  };
  struct Block {
    cudaStream_t stream = nullptr;
    std::size_t size = 0;
    char* ptr = nullptr;
    bool allocated = false;
    bool small = false;
    int pending_events = 0;
    Block* prev = nullptr;  // neighbours inside one cudaMalloc segment
    Block* next = nullptr;
    std::vector<StreamUse> uses;  // other streams that touched the block
  };
  // A freed block waits for the streams that used it: one event per stream.
  struct PendingFree {
    cudaEvent_t event = nullptr;
    int device = 0;  // the event's
    Block* block = nullptr;
  };
  struct BySize {
    bool operator()(const Block* a, const Block* b) const;
  };
  using Pool = std::set<Block*, BySize>;

  Block* find_free_block(Pool& pool, std::size_t size, cudaStream_t stream);
  Block* malloc_segment(std::size_t size, std::size_t asked, cudaStream_t stream, bool small);
  Block* split(Block* block, std::size_t size);
  void free_block(Block* block);
  void merge_into(Block* block, Block* neighbour);
  void process_events(bool wait);
  void release_cached_segments();
  cudaEvent_t take_event(int device);
  [[noreturn]] void throw_out_of_memory(std::size_t asked, cudaError_t status);

  const int device_;
  mutable std::mutex mutex_;
  Pool small_pool_;
  Pool large_pool_;
  std::map<char*, Block*> live_;  // by address, so interior pointers find their block
  std::deque<PendingFree> pending_;
  std::map<int, std::vector<cudaEvent_t>> spare_events_;  // by the events' device
  MemoryStats stats_;
};

// The allocator of device `index`; never destroyed (storages may be freed during static
// destruction).
CachingAllocator& device_allocator(int index);

// "1.50 GiB", for messages.
std::string format_bytes(std::size_t nbytes);

}  // namespace strata::cuda::detail
