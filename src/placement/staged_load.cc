#include "staged_load.h"

#include <utility>

namespace strata::placement::detail {

StagedGpuLoad::~StagedGpuLoad() {
  try {
    finish();
  } catch (...) {  // reported by the finish() the loader calls; an unwinding load drops it
  }
}

std::optional<Tensor> StagedGpuLoad::load(const Tensor& src, Device device) {
  if (no_engine_) return std::nullopt;
  Queue& queue = queues_[device.index()];
  if (!queue.engine) {
    // Default staging: half the cores read (at most 8), two 8 MiB pinned chunks each.
    queue.engine = make_copy_engine(device.index(), PrefetchOptions{});
    if (!queue.engine) {
      no_engine_ = true;
      queues_.clear();
      return std::nullopt;
    }
  }
  Tensor dst = Tensor::empty(src.shape(), src.dtype(), device);
  queue.in_flight.push_back(queue.engine->start({dst}, {src}, queue.stats));
  if (queue.in_flight.size() > kInFlight) {
    // The device's compute stream waits for the oldest copies; the host only for their reads.
    queue.engine->retire(std::move(queue.in_flight.front()));
    queue.in_flight.pop_front();
  }
  return dst;
}

void StagedGpuLoad::finish() {
  for (auto& [device, queue] : queues_) {
    while (!queue.in_flight.empty()) {
      std::unique_ptr<CopyEngine::Ticket> ticket = std::move(queue.in_flight.front());
      queue.in_flight.pop_front();
      queue.engine->retire(std::move(ticket));
    }
    queue.engine->synchronize();
  }
}

}  // namespace strata::placement::detail
