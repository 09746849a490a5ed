#pragma once
// The disk tier's pipeline, without the GPU. A transfer (one unit's copies) hands over its
// non-pinned sources (usually views of memory-mapped offload files, served from the page cache
// when cached); they are split into chunks that worker threads read in parallel into a fixed pool
// of staging chunks (pinned memory in the CUDA engine). Each chunk's copy to the device is queued
// as soon as the chunk is read; the chunk then returns to the pool, and the next worker to take
// it first waits for that copy to finish (the chunk's fence), in that worker: nothing else has to
// run for a chunk to come free, so a tensor larger than the whole pool only recycles chunks.
//
// Transfers queue their copies in the order they were submitted: a transfer's copies (and its
// end(), which the compute stream waits on) are all queued before any of the next one's, so the
// compute stream waits on its unit's copies only, not on later units'.
//
// The device side is two interfaces: StagingDevice (the chunks' memory and fences) and
// StagedTransfer (queue a unit's copies). The CUDA engine implements them with a copy stream and
// events (prefetch_engine_cuda.cc); the tests with a host thread.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "staging_chunks.h"

namespace strata::placement::detail {

class StagingDevice {
 public:
  virtual ~StagingDevice() = default;
  // Called once, on the submitting thread, before the first chunk is used.
  virtual void allocate(int chunks, std::size_t chunk_bytes) = 0;
  // Where chunk `chunk` starts (chunk_bytes long).
  virtual void* chunk_data(int chunk) = 0;
  // Blocks until the copy last queued out of `chunk` has finished (none queued yet: at once).
  virtual void wait_chunk(int chunk) = 0;
  // Once on each worker thread before its first job (the CUDA engine makes its GPU current).
  virtual void start_worker() {}
};

// One unit's copies. The streamer calls begin, copy_chunk and end one at a time (under its queue
// lock), from the submitting thread or a worker.
class StagedTransfer {
 public:
  virtual ~StagedTransfer() = default;
  // First, when the transfer's turn comes: what its copies wait for, and the copies that need no
  // staging (pinned sources).
  virtual void begin() = 0;
  // Queues the copy of `job` out of chunk `chunk` (which holds the job's bytes) and records the
  // chunk's fence after it.
  virtual void copy_chunk(int chunk, const ChunkJob& job) = 0;
  // After the last copy: what the unit's consumer waits on.
  virtual void end() = 0;
  // Staged source `tensor` in an error message, e.g. "bf16 [8192, 8192] tensor 3 of the unit".
  virtual std::string describe(std::size_t tensor) const = 0;

 private:
  friend class DiskStreamer;
  // Guarded by the streamer's queue lock.
  std::size_t pending_ = 0;  // chunk jobs not yet queued
  bool opened_ = false;      // begin() ran: chunks may be queued
  bool ended_ = false;       // end() ran: everything is queued
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};  // read without the lock: skip the remaining reads
};

// A non-pinned source of a transfer: `bytes` at `data`, copied into the transfer's tensor
// `tensor`.
struct StagedSource {
  std::size_t tensor = 0;
  const void* data = nullptr;
  std::size_t bytes = 0;
};

class DiskStreamer {
 public:
  DiskStreamer(const StagingConfig& config, StagingDevice& device);
  // Finishes the queued jobs, then joins the workers.
  ~DiskStreamer();
  DiskStreamer(const DiskStreamer&) = delete;
  DiskStreamer& operator=(const DiskStreamer&) = delete;

  // Queues `transfer`'s copies (begin, the sources' chunks, end); returns the number of chunk
  // jobs. A transfer without sources, whose turn has come, is queued before this returns. The
  // sources must stay valid until wait_queued(transfer) returns.
  std::size_t submit(std::shared_ptr<StagedTransfer> transfer,
                     const std::vector<StagedSource>& sources);
  // Blocks until every copy of `transfer` is queued and its end() ran; rethrows the first error
  // of its reads or copies (an IoError naming the tensor and file for a failed read).
  void wait_queued(StagedTransfer& transfer);
  // Blocks until every submitted transfer is queued.
  void drain();

  const StagingConfig& config() const { return config_; }
  int peak_chunks_taken() const { return pool_.peak_taken(); }

 private:
  struct Job {
    std::shared_ptr<StagedTransfer> transfer;
    const void* source = nullptr;  // the start of the job's tensor
    ChunkJob chunk;
  };
  void work();
  void run(Job& job);
  // Opens and ends transfers at the front of the queue while they can (queue lock held).
  void advance();
  void fail(StagedTransfer& transfer, std::exception_ptr error);

  const StagingConfig config_;
  StagingDevice& device_;
  ChunkPool pool_;
  bool allocated_ = false;  // submitting thread only

  std::mutex jobs_mutex_;
  std::condition_variable jobs_ready_;
  std::deque<Job> jobs_;
  bool stopping_ = false;

  std::mutex queue_mutex_;
  std::condition_variable turn_;                      // a transfer opened or ended
  std::deque<std::shared_ptr<StagedTransfer>> open_;  // submitted, not yet ended, in order

  std::vector<std::thread> workers_;  // last: started once the rest is ready
};

}  // namespace strata::placement::detail
