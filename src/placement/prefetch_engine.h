#pragma once
// The device side of the prefetch scheduler: queues host-to-device copies of a unit's weights
// on a copy stream and lets the compute stream wait for them. Only the CUDA build has one
// (prefetch_engine_cuda.cc); make_copy_engine returns null elsewhere.

#include <memory>
#include <vector>

#include "strata/core/tensor.h"
#include "strata/placement/prefetch.h"

namespace strata::placement::detail {

class CopyEngine {
 public:
  // What one unit's copies left in flight: events to wait on and staging memory to keep.
  struct Ticket {
    virtual ~Ticket() = default;
  };

  virtual ~CopyEngine() = default;
  // Queues dsts[i] <- srcs[i] (dsts on the device, contiguous; srcs on the cpu, same dtype and
  // shape). Pinned sources are copied directly; others are read into pinned staging by worker
  // threads first. Updates the byte counters of `stats`.
  virtual std::unique_ptr<Ticket> start(const std::vector<Tensor>& dsts,
                                        const std::vector<Tensor>& srcs, PrefetchStats& stats) = 0;
  // The compute stream waits (on the device) until the ticket's copies are done; rethrows a
  // worker's read error.
  virtual void wait(Ticket& ticket) = 0;
  // The unit is done with the copies: its staging memory is freed once the compute stream has
  // passed this point.
  virtual void retire(std::unique_ptr<Ticket> ticket) = 0;
  // Blocks until every queued copy and retired unit has finished.
  virtual void synchronize() = 0;
};

// The engine for GPU `device`, or null in a build without CUDA.
std::unique_ptr<CopyEngine> make_copy_engine(int device, const PrefetchOptions& options);

}  // namespace strata::placement::detail
