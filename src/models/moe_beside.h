#pragma once
// One background thread that computes a mixture-of-experts block's cpu experts beside the
// caller (private to src/models, docs/moe-execution.md): the caller (the thread that owns the
// GPU work) launches the device experts (cache hits, resident ones) while the cpu experts run
// on this thread and the pool, instead of before or after them. It polls for work for
// STRATA_SPIN_US microseconds (default 300, as the pool's workers) before it sleeps.

#include <functional>

namespace strata::models::detail {

class BesideThread {
 public:
  // The process-wide one.
  static BesideThread& instance();

  // Starts `work` on the thread; false (nothing started) when it is already running work.
  virtual bool try_start(std::function<void()> work) = 0;
  // Waits for the started work to end and rethrows its exception, if any.
  virtual void wait() = 0;

 protected:
  BesideThread() = default;
  ~BesideThread() = default;
};

// Runs `work` beside the caller for the scope's duration: the destructor waits (an exception of
// the caller's own work then does not leave the thread with dangling references); join() waits
// and rethrows the work's exception. Without the thread (busy), `work` runs inline in join().
class Beside {
 public:
  explicit Beside(std::function<void()> work, bool enabled = true);
  ~Beside();
  Beside(const Beside&) = delete;
  Beside& operator=(const Beside&) = delete;
  void join();

 private:
  std::function<void()> work_;
  bool started_ = false, joined_ = false;
};

// Whether blocks compute their cpu experts beside their device experts: only with
// STRATA_MOE_BESIDE=1. Off by default: on the 16-core H100 host (device call 1 of session 7) the
// beside thread, the pool's 15 workers and the launching thread oversubscribed the cores and
// woke from sleep between layers, and the cpu products ran at 68 GB/s instead of 117 (decode 69
// tokens/s against 85 with the products after the device experts' launches; 77 with
// STRATA_SPIN_US=2000).
bool beside_enabled();

}  // namespace strata::models::detail
