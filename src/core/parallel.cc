#include "strata/core/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace strata {

// How long an idle worker polls for the next loop before it sleeps (STRATA_SPIN_US, default
// 300 us). Decode runs a few hundred short loops per token back to back (each linear is a few
// hundred microseconds at memory bandwidth); waking 15 sleeping threads through a futex costs
// tens of microseconds per loop, polling costs nothing while the loops keep coming and gives the
// core back soon after they stop. 0 disables polling.
std::chrono::nanoseconds configured_spin() {
  long us = 300;
  if (const char* env = std::getenv("STRATA_SPIN_US")) us = std::max(0L, std::atol(env));
  return std::chrono::microseconds(us);
}

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
  std::atomic<std::int64_t> pending{0};
  std::exception_ptr error;  // guarded by the pool mutex, written before `pending` drops
};

// A fixed pool of workers. One parallel_for runs at a time; a second caller that finds the pool
// busy runs its loop serially instead of queueing (no deadlock, no priority inversion).
//
// A new loop is announced by bumping `generation_`: workers that are still polling see it at
// once; sleeping ones are woken through the condition variable only when some are asleep. The
// caller polls for the end of its loop the same way, then sleeps.
class ThreadPool {
 public:
  ThreadPool(int threads, std::chrono::nanoseconds spin) : spin_(spin) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_.store(true);
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
    job->pending.store(chunks);
    bool wake = false;
    {
      std::lock_guard lock(mutex_);
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
      wake = sleepers_ > 0;
    }
    if (wake) wake_.notify_all();
    run_chunks(*job);
    wait_until_done(*job);
    {
      std::lock_guard lock(mutex_);
      job_.reset();
    }
    if (job->error) std::rethrow_exception(job->error);
    return true;
  }

 private:
  // Polls while `keep_waiting()` for up to the spin time; true if it is still waiting after it.
  template <typename Pred>
  bool spin_while(Pred keep_waiting) const {
    if (spin_.count() == 0) return keep_waiting();
    const auto start = std::chrono::steady_clock::now();
    for (unsigned i = 1; keep_waiting(); ++i) {
      cpu_relax();
      if (i % 256 == 0 && std::chrono::steady_clock::now() - start > spin_) return keep_waiting();
    }
    return false;
  }

  void wait_until_done(Job& job) {
    const auto running = [&] { return job.pending.load(std::memory_order_acquire) != 0; };
    if (!spin_while(running)) return;
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return !running(); });
  }

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
    if (finished == 0) return;
    if (error) {
      std::lock_guard lock(mutex_);
      if (!job.error) job.error = error;
    }
    if (job.pending.fetch_sub(finished, std::memory_order_acq_rel) == finished) {
      // The caller may be asleep in wait_until_done; taking the mutex orders this notify after
      // its check of `pending`.
      std::lock_guard lock(mutex_);
      done_.notify_all();
    }
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      spin_while(
          [&] { return generation_.load(std::memory_order_acquire) == seen && !stopping_.load(); });
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mutex_);
        if (generation_.load() == seen && !stopping_.load()) {
          ++sleepers_;
          wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
          --sleepers_;
        }
        if (stopping_.load()) return;
        seen = generation_.load();
        job = job_;
      }
      if (job) run_chunks(*job);
    }
  }

  const std::chrono::nanoseconds spin_;
  std::vector<std::thread> workers_;
  std::mutex busy_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::shared_ptr<Job> job_;                  // guarded by mutex_
  std::atomic<std::uint64_t> generation_{0};  // written under mutex_, polled without it
  int sleepers_ = 0;                          // guarded by mutex_
  std::atomic<bool> stopping_{false};
};

ThreadPool& pool() {
  static ThreadPool p(configured_threads(), configured_spin());
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
