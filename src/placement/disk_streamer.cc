#include "disk_streamer.h"

#include <system_error>
#include <utility>

#include "strata/core/error.h"

namespace strata::placement::detail {

DiskStreamer::DiskStreamer(const StagingConfig& config, StagingDevice& device)
    : config_(config), device_(device), pool_(config.chunks) {
  STRATA_ASSERT(config_.workers >= 1 && config_.workers <= config_.chunks,
                "DiskStreamer: {} workers for {} chunks", config_.workers, config_.chunks);
  workers_.reserve(static_cast<std::size_t>(config_.workers));
  for (int i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { work(); });
}

DiskStreamer::~DiskStreamer() {
  {
    std::lock_guard lock(jobs_mutex_);
    stopping_ = true;
  }
  jobs_ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

std::size_t DiskStreamer::submit(std::shared_ptr<StagedTransfer> transfer,
                                 const std::vector<StagedSource>& sources) {
  std::vector<std::size_t> sizes;
  sizes.reserve(sources.size());
  for (const StagedSource& source : sources) sizes.push_back(source.bytes);
  const std::vector<ChunkJob> chunks = plan_chunks(sizes, config_.chunk_bytes);
  if (!chunks.empty() && !allocated_) {
    device_.allocate(config_.chunks, config_.chunk_bytes);
    allocated_ = true;
  }
  {
    std::lock_guard lock(queue_mutex_);
    transfer->pending_ = chunks.size();
    open_.push_back(transfer);
    advance();
  }
  if (chunks.empty()) return 0;
  {
    std::lock_guard lock(jobs_mutex_);
    for (const ChunkJob& chunk : chunks) {
      const StagedSource& source = sources[chunk.tensor];
      jobs_.push_back({transfer, source.data, {source.tensor, chunk.offset, chunk.bytes}});
    }
  }
  jobs_ready_.notify_all();
  return chunks.size();
}

void DiskStreamer::wait_queued(StagedTransfer& transfer) {
  std::unique_lock lock(queue_mutex_);
  turn_.wait(lock, [&] { return transfer.ended_; });
  if (transfer.error_) std::rethrow_exception(transfer.error_);
}

void DiskStreamer::drain() {
  std::unique_lock lock(queue_mutex_);
  turn_.wait(lock, [this] { return open_.empty(); });
}

void DiskStreamer::work() {
  try {
    device_.start_worker();
  } catch (...) {  // the device calls of this worker's jobs fail and report it
  }
  for (;;) {
    Job job;
    {
      std::unique_lock lock(jobs_mutex_);
      jobs_ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to do
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    run(job);
  }
}

// Read into a chunk (after its last copy finished), wait for the transfer's turn, queue the
// chunk's copy, give the chunk back. Every job ends its transfer's pending count, error or not.
void DiskStreamer::run(Job& job) {
  StagedTransfer& transfer = *job.transfer;  // kept alive by open_ until it ends
  std::exception_ptr error;
  const int chunk = pool_.acquire();
  try {
    device_.wait_chunk(chunk);
    const auto* from = static_cast<const std::uint8_t*>(job.source) + job.chunk.offset;
    if (!transfer.failed_) {
      if (const int e = read_source(device_.chunk_data(chunk), from, job.chunk.bytes); e != 0) {
        STRATA_THROW(IoError,
                     "cannot read {} (bytes [{}, {}) of it, from {}): {}; the offload file is "
                     "shorter than when it was mapped or the disk failed: rewrite the offload "
                     "folder or checkpoint",
                     transfer.describe(job.chunk.tensor), job.chunk.offset,
                     job.chunk.offset + job.chunk.bytes, describe_address(from),
                     std::generic_category().message(e));
      }
    }
  } catch (...) {
    error = std::current_exception();
  }
  {
    std::unique_lock lock(queue_mutex_);
    turn_.wait(lock, [&] { return transfer.opened_; });
    if (error) {
      fail(transfer, error);
    } else if (!transfer.failed_) {
      try {
        transfer.copy_chunk(chunk, job.chunk);
      } catch (...) {
        fail(transfer, std::current_exception());
      }
    }
    // Dropped here, while open_ (and the engine's ticket, which waits for the transfer before it
    // lets go) still hold it: a transfer (its tensors, its events) is not destroyed on a worker.
    job.transfer.reset();
    --transfer.pending_;
    advance();
  }
  pool_.release(chunk);
}

void DiskStreamer::advance() {
  while (!open_.empty()) {
    StagedTransfer& transfer = *open_.front();
    if (!transfer.opened_) {
      transfer.opened_ = true;
      try {
        transfer.begin();
      } catch (...) {
        fail(transfer, std::current_exception());
      }
      turn_.notify_all();
    }
    if (transfer.pending_ > 0) return;
    try {
      transfer.end();
    } catch (...) {
      fail(transfer, std::current_exception());
    }
    transfer.ended_ = true;
    open_.pop_front();
    turn_.notify_all();
  }
}

void DiskStreamer::fail(StagedTransfer& transfer, std::exception_ptr error) {
  if (!transfer.error_) transfer.error_ = std::move(error);
  transfer.failed_ = true;
}

}  // namespace strata::placement::detail
