#include "cuda/caching_allocator.h"

#include <algorithm>
#include <memory>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/stream_internal.h"
#include "strata/cuda/device.h"

namespace strata::cuda::detail {
namespace {

constexpr std::size_t kMinBlock = 512;
constexpr std::size_t kSmallRequest = 1 << 20;       // <= 1 MiB: carved from small segments
constexpr std::size_t kSmallSegment = 2 << 20;       // 2 MiB
constexpr std::size_t kMediumSegment = 20 << 20;     // for requests in (1 MiB, 10 MiB)
constexpr std::size_t kMediumLimit = 10 << 20;
constexpr std::size_t kSegmentRounding = 2 << 20;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

std::string format_bytes(std::size_t nbytes) {
  const double b = static_cast<double>(nbytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.2f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.2f} KiB", b / 1024.0);
  return fmt::format("{} bytes", nbytes);
}

bool CachingAllocator::BySize::operator()(const Block* a, const Block* b) const {
  if (a->stream != b->stream) return a->stream < b->stream;
  if (a->size != b->size) return a->size < b->size;
  return a->ptr < b->ptr;
}

void* CachingAllocator::allocate(std::size_t nbytes) {
  return allocate_on(nbytes, compute_stream_handle(device_));
}

void* CachingAllocator::allocate_on(std::size_t nbytes, cudaStream_t stream) {
  if (nbytes == 0) return nullptr;
  const std::size_t size = round_up(std::max(nbytes, kMinBlock), kMinBlock);
  const bool small = size <= kSmallRequest;
  std::lock_guard lock(mutex_);
  process_events(false);
  Pool& pool = small ? small_pool_ : large_pool_;
  Block* block = find_free_block(pool, size, stream);
  if (block != nullptr) {
    pool.erase(block);
    ++stats_.cache_hits;
  } else {
    const std::size_t segment = small                  ? kSmallSegment
                                : size < kMediumLimit ? kMediumSegment
                                                      : round_up(size, kSegmentRounding);
    block = malloc_segment(segment, nbytes, stream, small);
  }
  if (block->size - size >= (small ? kMinBlock : kSmallRequest + 1)) {
    pool.insert(split(block, size));
  }
  block->allocated = true;
  live_.emplace(block->ptr, block);
  ++stats_.allocations;
  stats_.allocated += block->size;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  return block->ptr;
}

CachingAllocator::Block* CachingAllocator::find_free_block(Pool& pool, std::size_t size,
                                                           cudaStream_t stream) {
  Block key;
  key.stream = stream;
  key.size = size;
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  // A large block much bigger than asked would pin a big segment for a small tensor.
  if (!(*it)->small && (*it)->size > size + kMediumSegment && (*it)->size > 2 * size) {
    return nullptr;
  }
  return *it;
}

CachingAllocator::Block* CachingAllocator::malloc_segment(std::size_t size, std::size_t asked,
                                                          cudaStream_t stream, bool small) {
  DeviceGuard guard(device_);
  // More than the whole device can never succeed: say so without a cudaMalloc that is bound to
  // fail (compute-sanitizer reports every failed runtime call as an error).
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
    cudaGetLastError();  // not fatal: cudaMalloc decides
  } else if (size > total) {
    throw_out_of_memory(asked, cudaErrorMemoryAllocation);
  }
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, size);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    // Give cached segments back to the driver and try once more.
    process_events(true);
    release_cached_segments();
    status = cudaMalloc(&ptr, size);
  }
  if (status == cudaErrorMemoryAllocation) throw_out_of_memory(asked, status);
  check(status, "cudaMalloc", device_);
  auto* block = new Block();
  block->stream = stream;
  block->size = size;
  block->ptr = static_cast<char*>(ptr);
  block->small = small;
  ++stats_.device_mallocs;
  stats_.reserved += size;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  return block;
}

void CachingAllocator::throw_out_of_memory(std::size_t asked, cudaError_t status) {
  cudaGetLastError();
  std::size_t free = 0;
  std::size_t total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) cudaGetLastError();
  STRATA_THROW(OutOfMemory,
               "out of memory on cuda:{}: tried to allocate {}; the driver reports {} free of {}; "
               "Strata holds {} reserved, {} of it in live tensors. Lower the memory budget of "
               "cuda:{} (max_memory), offload more layers to cpu or disk, or use a smaller batch "
               "or sequence length",
               device_, format_bytes(asked), format_bytes(free), format_bytes(total),
               format_bytes(stats_.reserved), format_bytes(stats_.allocated), device_);
}

CachingAllocator::Block* CachingAllocator::split(Block* block, std::size_t size) {
  auto* rest = new Block();
  rest->stream = block->stream;
  rest->size = block->size - size;
  rest->ptr = block->ptr + size;
  rest->small = block->small;
  rest->prev = block;
  rest->next = block->next;
  if (rest->next != nullptr) rest->next->prev = rest;
  block->next = rest;
  block->size = size;
  return rest;
}

void CachingAllocator::deallocate(void* ptr, std::size_t) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard lock(mutex_);
  auto it = live_.find(static_cast<char*>(ptr));
  if (it == live_.end()) return;  // not ours: nothing sane to do in a noexcept path
  Block* block = it->second;
  live_.erase(it);
  block->allocated = false;
  stats_.allocated -= block->size;
  for (const StreamUse& use : block->uses) {
    cudaEvent_t event = nullptr;
    try {
      event = take_event(use.device);
      DeviceGuard guard(use.device);
      if (cudaEventRecord(event, use.stream) != cudaSuccess) {
        cudaGetLastError();
        spare_events_[use.device].push_back(event);
        continue;
      }
    } catch (const Error&) {
      continue;
    }
    ++block->pending_events;
    pending_.push_back({event, use.device, block});
  }
  block->uses.clear();
  if (block->pending_events == 0) free_block(block);
}

void CachingAllocator::record_stream(const void* ptr, cudaStream_t stream, int stream_device) {
  std::lock_guard lock(mutex_);
  auto* p = static_cast<char*>(const_cast<void*>(ptr));
  auto it = live_.upper_bound(p);
  STRATA_ASSERT(it != live_.begin(), "record_stream: {} is not memory of cuda:{}", ptr, device_);
  Block* block = std::prev(it)->second;
  STRATA_ASSERT(p < block->ptr + block->size, "record_stream: {} is not memory of cuda:{}", ptr,
                device_);
  if (stream == block->stream) return;
  const bool known = std::any_of(block->uses.begin(), block->uses.end(),
                                 [&](const StreamUse& use) { return use.stream == stream; });
  if (!known) block->uses.push_back({stream, stream_device});
}

void CachingAllocator::forget_stream(cudaStream_t stream) {
  std::lock_guard lock(mutex_);
  for (auto& [ptr, block] : live_) {
    std::erase_if(block->uses, [&](const StreamUse& use) { return use.stream == stream; });
  }
}

void CachingAllocator::free_block(Block* block) {
  if (block->prev != nullptr && !block->prev->allocated && block->prev->pending_events == 0) {
    Block* prev = block->prev;
    (prev->small ? small_pool_ : large_pool_).erase(prev);
    merge_into(prev, block);
    block = prev;
  }
  if (block->next != nullptr && !block->next->allocated && block->next->pending_events == 0) {
    Block* next = block->next;
    (next->small ? small_pool_ : large_pool_).erase(next);
    merge_into(block, next);
  }
  (block->small ? small_pool_ : large_pool_).insert(block);
}

// `neighbour` directly follows `block` in memory; it is absorbed and deleted.
void CachingAllocator::merge_into(Block* block, Block* neighbour) {
  block->size += neighbour->size;
  block->next = neighbour->next;
  if (block->next != nullptr) block->next->prev = block;
  delete neighbour;
}

void CachingAllocator::process_events(bool wait) {
  while (!pending_.empty()) {
    const auto [event, device, block] = pending_.front();
    const cudaError_t status = wait ? cudaEventSynchronize(event) : cudaEventQuery(event);
    if (status == cudaErrorNotReady) {
      cudaGetLastError();
      break;
    }
    if (status != cudaSuccess) cudaGetLastError();  // a failed stream cannot use the block later
    pending_.pop_front();
    spare_events_[device].push_back(event);
    if (--block->pending_events == 0) free_block(block);
  }
}

void CachingAllocator::release_cached_segments() {
  for (Pool* pool : {&small_pool_, &large_pool_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* block = *it;
      if (block->prev != nullptr || block->next != nullptr) {
        ++it;
        continue;
      }
      if (cudaFree(block->ptr) != cudaSuccess) cudaGetLastError();
      stats_.reserved -= block->size;
      delete block;
      it = pool->erase(it);
    }
  }
}

cudaEvent_t CachingAllocator::take_event(int device) {
  std::vector<cudaEvent_t>& spare = spare_events_[device];
  if (!spare.empty()) {
    cudaEvent_t event = spare.back();
    spare.pop_back();
    return event;
  }
  DeviceGuard guard(device);
  cudaEvent_t event = nullptr;
  STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), device);
  return event;
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak_stats() {
  std::lock_guard lock(mutex_);
  stats_.peak_allocated = stats_.allocated;
  stats_.peak_reserved = stats_.reserved;
}

void CachingAllocator::empty_cache() {
  std::lock_guard lock(mutex_);
  DeviceGuard guard(device_);
  process_events(true);
  release_cached_segments();
}

CachingAllocator& device_allocator(int index) {
  static std::once_flag once;
  static std::vector<CachingAllocator*>* allocators = nullptr;  // never destroyed
  std::call_once(once, [] {
    allocators = new std::vector<CachingAllocator*>();
    for (int d = 0; d < device_count(); ++d) allocators->push_back(new CachingAllocator(d));
  });
  STRATA_CHECK(index >= 0 && index < static_cast<int>(allocators->size()), DeviceError,
               "cuda:{} does not exist: this machine has {} GPU(s)", index, allocators->size());
  return *(*allocators)[static_cast<std::size_t>(index)];
}

}  // namespace strata::cuda::detail

namespace strata::cuda {

MemoryStats memory_stats(int device) { return detail::device_allocator(device).stats(); }

void reset_peak_memory_stats(int device) { detail::device_allocator(device).reset_peak_stats(); }

void empty_cache(int device) {
  if (device >= 0) {
    detail::device_allocator(device).empty_cache();
    return;
  }
  for (int d = 0; d < device_count(); ++d) detail::device_allocator(d).empty_cache();
}

}  // namespace strata::cuda
