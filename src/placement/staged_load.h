#pragma once
// Checkpoint tensors bound for a GPU, copied through the prefetch engine's pinned staging: worker
// threads read the mapped shard (page cache or disk) into pinned chunks while the copy stream
// sends earlier chunks to the device, so reading and PCIe overlap and the transfer runs from
// pinned memory. A plain `view.to(cuda)` instead copies from pageable memory, one tensor at a
// time, page faults on the calling thread included.

#include <deque>
#include <map>
#include <memory>
#include <optional>

#include "prefetch_engine.h"
#include "strata/core/tensor.h"

namespace strata::placement::detail {

class StagedGpuLoad {
 public:
  StagedGpuLoad() = default;
  // Waits for whatever is still queued (errors are reported by finish() only).
  ~StagedGpuLoad();
  StagedGpuLoad(const StagedGpuLoad&) = delete;
  StagedGpuLoad& operator=(const StagedGpuLoad&) = delete;

  // A new contiguous tensor on `device` (a GPU) that will hold `src` (a cpu tensor, usually a
  // view of a mapped file) once finish() returns; compute on the device is ordered after the
  // copy. nullopt when this build has no copy engine (no CUDA): the caller copies itself.
  std::optional<Tensor> load(const Tensor& src, Device device);
  // Blocks until every queued copy is done; rethrows the first read error (an IoError naming
  // the tensor).
  void finish();

 private:
  struct Queue {
    std::unique_ptr<CopyEngine> engine;
    std::deque<std::unique_ptr<CopyEngine::Ticket>> in_flight;
    PrefetchStats stats;
  };
  // Tensors queued per device before the oldest is waited for: enough to keep every reading
  // thread busy across small tensors (norms, biases) without holding unbounded tickets.
  static constexpr std::size_t kInFlight = 64;
  std::map<int, Queue> queues_;
  bool no_engine_ = false;
};

}  // namespace strata::placement::detail
