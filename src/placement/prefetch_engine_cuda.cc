// The CUDA copy engine of the prefetch scheduler. Copies run on one copy stream per scheduler;
// the compute stream waits on one event per unit, so the host never blocks on a copy. Pinned
// sources are copied directly; the others go through the DiskStreamer's pool of pinned staging
// chunks (disk_streamer.h), each chunk fenced by an event recorded after its copy.

#include "prefetch_engine.h"
#include "staging_chunks.h"

#if STRATA_WITH_CUDA

#include <fmt/format.h>

#include <deque>
#include <utility>

#include "disk_streamer.h"
#include "strata/cuda/device.h"
#include "strata/cuda/stream.h"

namespace strata::placement::detail {
namespace {

const cuda::Stream& compute_stream(int device) { return cuda::Stream::compute(device); }

// The staging chunks: one pinned allocation cut into chunks, and an event per chunk recorded
// after the copy last queued out of it.
class CudaStagingChunks final : public StagingDevice {
 public:
  CudaStagingChunks(int device, const cuda::Stream& copy) : device_(device), copy_(copy) {}

  void allocate(int chunks, std::size_t chunk_bytes) override {
    chunk_bytes_ = chunk_bytes;
    // Pageable only if the OS refuses to pin (Tensor::empty warns); a copy out of pageable memory
    // has read it when cudaMemcpyAsync returns, so the fences stay right.
    memory_ = Tensor::empty({static_cast<std::int64_t>(chunk_bytes * chunks)}, DType::UInt8,
                            Device::cpu(), MemoryKind::Pinned);
    fences_.clear();
    fences_.reserve(static_cast<std::size_t>(chunks));
    for (int c = 0; c < chunks; ++c) fences_.emplace_back(device_);
  }
  void* chunk_data(int chunk) override {
    return static_cast<std::uint8_t*>(memory_.data_ptr()) + chunk_offset(chunk);
  }
  void wait_chunk(int chunk) override { fences_[static_cast<std::size_t>(chunk)].synchronize(); }
  void start_worker() override { cuda::set_device(device_); }

  // dst's bytes [job.offset, job.offset + job.bytes) <- chunk `chunk`, then the chunk's fence.
  void copy(int chunk, const Tensor& dst, const ChunkJob& job) {
    const auto size = static_cast<std::int64_t>(dst.element_size());
    const auto count = static_cast<std::int64_t>(job.bytes) / size;
    const Tensor to =
        dst.view({dst.numel()}).narrow(0, static_cast<std::int64_t>(job.offset) / size, count);
    const Tensor from = Tensor::from_storage(memory_.storage(), dst.dtype(), {count},
                                             static_cast<std::int64_t>(chunk_offset(chunk)) / size);
    cuda::copy_async(to, from, copy_);
    fences_[static_cast<std::size_t>(chunk)].record(copy_);
  }

 private:
  std::size_t chunk_offset(int chunk) const {
    return static_cast<std::size_t>(chunk) * chunk_bytes_;
  }

  int device_;
  const cuda::Stream& copy_;
  std::size_t chunk_bytes_ = 0;
  Tensor memory_;
  std::vector<cuda::Event> fences_;
};

// One unit's copies. Holds its destinations and sources until the unit retires.
class CudaTransfer final : public StagedTransfer {
 public:
  CudaTransfer(int device, const cuda::Stream& copy, CudaStagingChunks& chunks,
               std::vector<Tensor> dsts, std::vector<Tensor> srcs)
      : copy_(copy),
        chunks_(chunks),
        dsts_(std::move(dsts)),
        srcs_(std::move(srcs)),
        ready_(device),
        done_(device) {
    ready_.record(compute_stream(device));  // the destinations may be memory compute just freed
  }

  // Sorts the sources: pinned ones are copied directly in begin(), the others (but empty ones)
  // are returned for staging.
  std::vector<StagedSource> staged_sources() {
    std::vector<StagedSource> staged;
    for (std::size_t i = 0; i < srcs_.size(); ++i) {
      if (srcs_[i].is_pinned()) {
        direct_.push_back(i);
      } else if (srcs_[i].nbytes() > 0) {
        staged.push_back({i, srcs_[i].data_ptr(), srcs_[i].nbytes()});
      }
    }
    return staged;
  }
  const cuda::Event& done() const { return done_; }

  void begin() override {
    copy_.wait(ready_);
    for (std::size_t i : direct_) cuda::copy_async(dsts_[i], srcs_[i], copy_);
  }
  void copy_chunk(int chunk, const ChunkJob& job) override {
    chunks_.copy(chunk, dsts_[job.tensor], job);
  }
  void end() override { done_.record(copy_); }
  std::string describe(std::size_t tensor) const override {
    const Tensor& src = srcs_[tensor];
    return fmt::format("{} {} tensor {} of the unit", dtype_name(src.dtype()),
                       shape_str(src.shape()), tensor);
  }

 private:
  const cuda::Stream& copy_;
  CudaStagingChunks& chunks_;
  std::vector<Tensor> dsts_;
  std::vector<Tensor> srcs_;
  std::vector<std::size_t> direct_;  // pinned sources
  cuda::Event ready_;                // on the compute stream, when the unit was issued
  cuda::Event done_;                 // on the copy stream, after the unit's last copy
};

struct CudaTicket final : CopyEngine::Ticket {
  std::shared_ptr<CudaTransfer> transfer;  // shared with the streamer's jobs
  bool waited = false;
};

class CudaCopyEngine final : public CopyEngine {
 public:
  CudaCopyEngine(int device, const StagingConfig& staging)
      : device_(device), copy_(device), chunks_(device, copy_), streamer_(staging, chunks_) {}

  ~CudaCopyEngine() override {
    try {
      synchronize();
    } catch (...) {  // a failed read was reported by wait(); nothing left to do at teardown
    }
  }

  std::unique_ptr<Ticket> start(const std::vector<Tensor>& dsts, const std::vector<Tensor>& srcs,
                                PrefetchStats& stats) override {
    auto transfer = std::make_shared<CudaTransfer>(device_, copy_, chunks_, dsts, srcs);
    const std::vector<StagedSource> staged = transfer->staged_sources();
    for (const Tensor& src : srcs) stats.bytes_copied += static_cast<std::int64_t>(src.nbytes());
    for (const StagedSource& source : staged) {
      stats.bytes_read += static_cast<std::int64_t>(source.bytes);
    }
    stats.staged_chunks += static_cast<std::int64_t>(streamer_.submit(transfer, staged));
    auto ticket = std::make_unique<CudaTicket>();
    ticket->transfer = std::move(transfer);
    return ticket;
  }

  void wait(Ticket& base) override {
    auto& ticket = static_cast<CudaTicket&>(base);
    if (ticket.waited) return;
    ticket.waited = true;
    streamer_.wait_queued(*ticket.transfer);
    compute_stream(device_).wait(ticket.transfer->done());
  }

  void retire(std::unique_ptr<Ticket> base) override {
    auto ticket = std::unique_ptr<CudaTicket>(static_cast<CudaTicket*>(base.release()));
    wait(*ticket);  // an evicted unit: its memory is reused only after its copies
    cuda::Event passed(device_);
    passed.record(compute_stream(device_));
    retiring_.emplace_back(std::move(passed), std::move(ticket));
    while (!retiring_.empty() && retiring_.front().first.query()) retiring_.pop_front();
  }

  void synchronize() override {
    streamer_.drain();
    copy_.synchronize();
    compute_stream(device_).synchronize();
    retiring_.clear();
  }

 private:
  int device_;
  cuda::Stream copy_;
  CudaStagingChunks chunks_;
  std::deque<std::pair<cuda::Event, std::unique_ptr<CudaTicket>>> retiring_;
  DiskStreamer streamer_;  // last: its workers finish before the chunks and the stream go away
};

}  // namespace

std::unique_ptr<CopyEngine> make_copy_engine(int device, const PrefetchOptions& options) {
  return std::make_unique<CudaCopyEngine>(device, resolve_staging(options));
}

}  // namespace strata::placement::detail

#else

namespace strata::placement::detail {

std::unique_ptr<CopyEngine> make_copy_engine(int, const PrefetchOptions&) { return nullptr; }

}  // namespace strata::placement::detail

#endif
