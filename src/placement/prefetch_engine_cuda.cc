// The CUDA copy engine of the prefetch scheduler. Copies run on one copy stream per scheduler;
// the compute stream waits on events, so the host never blocks on a copy.

#include "prefetch_engine.h"

#if STRATA_WITH_CUDA

#include <cstring>
#include <deque>
#include <future>
#include <utility>

#include "disk_streamer.h"
#include "strata/cuda/stream.h"

namespace strata::placement::detail {
namespace {

struct CudaTicket final : CopyEngine::Ticket {
  std::vector<std::future<void>> reads;         // worker jobs (read, then copy)
  std::vector<std::unique_ptr<cuda::Event>> done;  // one per worker job, plus one for direct copies
  std::vector<Tensor> keep;                      // pinned staging and sources until the copies ran
  bool waited = false;
};

class CudaCopyEngine final : public CopyEngine {
 public:
  CudaCopyEngine(int device, const PrefetchOptions& options)
      : device_(device), copy_(device), compute_ready_(device), streamer_(options.io_threads) {}

  ~CudaCopyEngine() override {
    try {
      synchronize();
    } catch (...) {  // a failed read was reported by wait(); nothing left to do at teardown
    }
  }

  std::unique_ptr<Ticket> start(const std::vector<Tensor>& dsts, const std::vector<Tensor>& srcs,
                                PrefetchStats& stats) override {
    auto ticket = std::make_unique<CudaTicket>();
    // The destinations were cut from memory the compute stream may still be using.
    compute_ready_.record(compute());
    copy_.wait(compute_ready_);
    bool direct = false;
    for (std::size_t i = 0; i < dsts.size(); ++i) {
      const Tensor& dst = dsts[i];
      const Tensor& src = srcs[i];
      stats.bytes_copied += static_cast<std::int64_t>(src.nbytes());
      ticket->keep.push_back(src);
      if (src.is_pinned()) {
        cuda::copy_async(dst, src, copy_);
        direct = true;
        continue;
      }
      // Staging is allocated here: the pinned allocator is used from this thread only.
      Tensor staging = Tensor::empty(src.shape(), src.dtype(), Device::cpu(), MemoryKind::Pinned);
      stats.bytes_read += static_cast<std::int64_t>(src.nbytes());
      ticket->keep.push_back(staging);
      auto& event = ticket->done.emplace_back(std::make_unique<cuda::Event>(device_));
      ticket->reads.push_back(streamer_.submit([this, dst, src, staging, e = event.get()] {
        std::memcpy(staging.data_ptr(), src.data_ptr(), src.nbytes());
        cuda::copy_async(dst, staging, copy_);
        e->record(copy_);
      }));
    }
    if (direct) {
      auto& event = ticket->done.emplace_back(std::make_unique<cuda::Event>(device_));
      event->record(copy_);
    }
    return ticket;
  }

  void wait(Ticket& base) override {
    auto& ticket = static_cast<CudaTicket&>(base);
    if (ticket.waited) return;
    ticket.waited = true;
    for (std::future<void>& read : ticket.reads) read.get();
    for (const auto& event : ticket.done) compute().wait(*event);
  }

  void retire(std::unique_ptr<Ticket> base) override {
    auto ticket = std::unique_ptr<CudaTicket>(static_cast<CudaTicket*>(base.release()));
    wait(*ticket);  // an evicted unit: its memory is reused only after its copies
    cuda::Event passed(device_);
    passed.record(compute());
    retiring_.emplace_back(std::move(passed), std::move(ticket));
    while (!retiring_.empty() && retiring_.front().first.query()) retiring_.pop_front();
  }

  void synchronize() override {
    copy_.synchronize();
    compute().synchronize();
    retiring_.clear();
  }

 private:
  const cuda::Stream& compute() const { return cuda::Stream::compute(device_); }

  int device_;
  cuda::Stream copy_;
  cuda::Event compute_ready_;
  std::deque<std::pair<cuda::Event, std::unique_ptr<CudaTicket>>> retiring_;
  DiskStreamer streamer_;  // last: its workers finish before the stream goes away
};

}  // namespace

std::unique_ptr<CopyEngine> make_copy_engine(int device, const PrefetchOptions& options) {
  return std::make_unique<CudaCopyEngine>(device, options);
}

}  // namespace strata::placement::detail

#else

namespace strata::placement::detail {

std::unique_ptr<CopyEngine> make_copy_engine(int, const PrefetchOptions&) { return nullptr; }

}  // namespace strata::placement::detail

#endif
