#pragma once
// A small pool of worker threads for the disk tier: each job reads a stored tensor (usually a
// view of a memory-mapped offload file, served from the page cache when it is cached) into a
// pinned staging buffer and queues its copy to the GPU, so reads overlap compute.

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace strata::placement::detail {

class DiskStreamer {
 public:
  explicit DiskStreamer(int threads);
  // Finishes the queued jobs, then joins the workers.
  ~DiskStreamer();
  DiskStreamer(const DiskStreamer&) = delete;
  DiskStreamer& operator=(const DiskStreamer&) = delete;

  // Runs `job` on a worker; the future carries its exception.
  std::future<void> submit(std::function<void()> job);

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace strata::placement::detail
