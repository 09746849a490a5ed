#include "disk_streamer.h"

#include <algorithm>

namespace strata::placement::detail {

DiskStreamer::DiskStreamer(int threads) {
  const int count = std::max(1, threads);
  workers_.reserve(count);
  for (int i = 0; i < count; ++i) workers_.emplace_back([this] { run(); });
}

DiskStreamer::~DiskStreamer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

std::future<void> DiskStreamer::submit(std::function<void()> job) {
  std::packaged_task<void()> task(std::move(job));
  std::future<void> done = task.get_future();
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(task));
  }
  ready_.notify_one();
  return done;
}

void DiskStreamer::run() {
  for (;;) {
    std::packaged_task<void()> task;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to do
      task = std::move(jobs_.front());
      jobs_.pop_front();
    }
    task();  // an exception lands in the task's future
  }
}

}  // namespace strata::placement::detail
