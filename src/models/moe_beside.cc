// The background thread of the cpu experts (moe_beside.h).

#include "models/moe_beside.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "strata/core/parallel.h"

namespace strata::models::detail {
namespace {

class Thread final : public BesideThread {
 public:
  Thread() : spin_(configured_spin()), thread_([this] { loop(); }) {}
  ~Thread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      posted_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    thread_.join();
  }

  bool try_start(std::function<void()> work) override {
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true)) return false;
    {
      std::lock_guard lock(mutex_);
      work_ = std::move(work);
      error_ = nullptr;
      done_.store(false, std::memory_order_relaxed);
      posted_.store(true, std::memory_order_release);
    }
    wake_.notify_one();
    return true;
  }

  void wait() override {
    // The work takes hundreds of microseconds: poll politely (the pool's threads need the cores).
    for (unsigned i = 1; !done_.load(std::memory_order_acquire); ++i) {
      if (i % 64 == 0) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
    }
    std::exception_ptr error;
    {
      std::lock_guard lock(mutex_);
      error = error_;
      work_ = nullptr;
    }
    busy_.store(false, std::memory_order_release);
    if (error) std::rethrow_exception(error);
  }

 private:
  void loop() {
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      for (unsigned i = 1; !posted_.load(std::memory_order_acquire); ++i) {
        cpu_relax();
        if (i % 256 == 0 && std::chrono::steady_clock::now() - start > spin_) break;
      }
      std::function<void()> work;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return posted_.load(std::memory_order_acquire); });
        if (stopping_) return;
        posted_.store(false, std::memory_order_relaxed);
        work = work_;
      }
      std::exception_ptr error;
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard lock(mutex_);
        error_ = error;
      }
      done_.store(true, std::memory_order_release);
    }
  }

  const std::chrono::nanoseconds spin_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::function<void()> work_;  // guarded by mutex_
  std::exception_ptr error_;    // guarded by mutex_
  bool stopping_ = false;       // guarded by mutex_
  std::atomic<bool> posted_{false}, done_{true}, busy_{false};
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace

BesideThread& BesideThread::instance() {
  static Thread thread;
  return thread;
}

Beside::Beside(std::function<void()> work, bool enabled) : work_(std::move(work)) {
  if (enabled) started_ = BesideThread::instance().try_start(work_);
}

Beside::~Beside() {
  if (started_ && !joined_) {
    try {
      BesideThread::instance().wait();
    } catch (...) {  // the caller's own exception is already on its way
    }
  }
}

void Beside::join() {
  joined_ = true;
  if (started_) {
    BesideThread::instance().wait();
  } else {
    work_();
  }
}

bool beside_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("STRATA_MOE_BESIDE");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return enabled;
}

}  // namespace strata::models::detail
