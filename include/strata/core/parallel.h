#pragma once
// Parallel loops over the cores. One process-wide pool of worker threads (sized by
// STRATA_NUM_THREADS or the hardware), so kernels never create threads of their own. Idle
// workers poll for the next loop for STRATA_SPIN_US microseconds (default 300) before they sleep,
// so back-to-back loops (decode: hundreds per token) start without a futex wake-up each.

#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace strata {

// Calls fn(begin, end) on disjoint chunks covering [0, n): a few chunks per thread, claimed as
// threads become free. Chunks hold at least `grain` iterations, so small loops stay on the
// calling thread. Exceptions thrown by fn are rethrown on the calling thread (the first one
// wins). Nested calls run serially.
void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t begin, std::int64_t end)>& fn);

// Number of threads parallel_for uses (including the caller).
int num_threads();

// One step of a polling loop: a pause hint to the core (another hyperthread gets the pipeline).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long an idle polling thread keeps polling before it sleeps (STRATA_SPIN_US, default 300 us;
// 0 disables polling): the thread pool's workers and the MoE beside thread.
std::chrono::nanoseconds configured_spin();

}  // namespace strata
