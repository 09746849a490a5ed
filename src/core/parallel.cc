#include "strata/core/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace strata {
namespace {

thread_local bool t_inside_parallel_region = false;

int configured_threads() {
  if (const char* env = std::getenv("STRATA_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// One parallel loop: chunks are claimed from `next`; the caller waits until `pending` is zero.
// Workers hold the job by shared_ptr, so a worker that wakes late only finds no chunk left.
struct Job {
  const std::function<void(std::int64_t)>* chunk_fn = nullptr;
  std::int64_t chunks = 0;
  std::atomic<std::int64_t> next{0};
  std::int64_t pending = 0;  // guarded by the pool mutex
  std::exception_ptr error;  // guarded by the pool mutex
};

// A fixed pool of workers. One parallel_for runs at a time; a second caller that finds the pool
// busy runs its loop serially instead of queueing (no deadlock, no priority inversion).
class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  bool try_run(std::int64_t chunks, const std::function<void(std::int64_t)>& chunk_fn) {
    std::unique_lock busy(busy_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    auto job = std::make_shared<Job>();
    job->chunk_fn = &chunk_fn;
    job->chunks = chunks;
    job->pending = chunks;
    {
      std::lock_guard lock(mutex_);
      job_ = job;
    }
    wake_.notify_all();
    run_chunks(*job);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return job->pending == 0; });
    job_.reset();
    if (job->error) std::rethrow_exception(job->error);
    return true;
  }

 private:
  void run_chunks(Job& job) {
    const bool was_inside = t_inside_parallel_region;
    t_inside_parallel_region = true;
    std::int64_t finished = 0;
    std::exception_ptr error;
    for (std::int64_t c; (c = job.next.fetch_add(1)) < job.chunks;) {
      try {
        (*job.chunk_fn)(c);
      } catch (...) {
        if (!error) error = std::current_exception();
      }
      ++finished;
    }
    t_inside_parallel_region = was_inside;
    if (finished > 0) {
      std::lock_guard lock(mutex_);
      if (error && !job.error) job.error = error;
      job.pending -= finished;
      if (job.pending == 0) done_.notify_all();
    }
  }

  void worker_loop() {
    std::shared_ptr<Job> last;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || (job_ != nullptr && job_ != last); });
        if (stopping_) return;
        job = job_;
      }
      last = job;
      run_chunks(*job);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::shared_ptr<Job> job_;
  bool stopping_ = false;
};

ThreadPool& pool() {
  static ThreadPool p(configured_threads());
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }

void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t max_chunks = (n + grain - 1) / grain;
  if (max_chunks <= 1 || t_inside_parallel_region) {
    fn(0, n);
    return;
  }
  ThreadPool& p = pool();
  // A few chunks per thread, claimed dynamically: a thread that the OS pre-empts (other
  // processes, a busy machine) then delays only its current chunk, not a whole share.
  constexpr std::int64_t kChunksPerThread = 4;
  const std::int64_t chunks = std::min<std::int64_t>(max_chunks, kChunksPerThread * p.size());
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  const std::int64_t per_chunk = (n + chunks - 1) / chunks;
  const std::function<void(std::int64_t)> chunk_fn = [&](std::int64_t c) {
    const std::int64_t begin = c * per_chunk;
    const std::int64_t end = std::min(n, begin + per_chunk);
    if (begin < end) fn(begin, end);
  };
  if (!p.try_run(chunks, chunk_fn)) fn(0, n);
}

}  // namespace strata
