// The background thread of the cpu experts (models/moe_beside.h): the work runs on another
// thread while the caller goes on, join() waits for it and rethrows its exception, the scope's
// end waits even when the caller throws, and a second Beside while the thread is busy runs its
// work inline at join().

#include "models/moe_beside.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

namespace strata::testing {
namespace {

using models::detail::Beside;

TEST(MoeBeside, WorkRunsOnAnotherThreadUntilJoin) {
  for (int round = 0; round < 50; ++round) {  // the thread is reused, sleeping or polling
    std::atomic<bool> release{false};
    std::thread::id ran_on;
    Beside beside([&] {
      while (!release.load()) std::this_thread::yield();
      ran_on = std::this_thread::get_id();
    });
    // The caller is not blocked by the work (it waits for this thread's release).
    release.store(true);
    beside.join();
    EXPECT_NE(ran_on, std::this_thread::get_id());
  }
}

TEST(MoeBeside, JoinRethrowsTheWorksException) {
  Beside beside([] { throw std::runtime_error("cpu experts failed"); });
  EXPECT_THROW(beside.join(), std::runtime_error);
  // The thread is free again.
  int value = 0;
  Beside next([&] { value = 7; });
  next.join();
  EXPECT_EQ(value, 7);
}

TEST(MoeBeside, TheScopesEndWaitsWhenTheCallerThrows) {
  std::atomic<int> done{0};
  try {
    Beside beside([&] {
      std::this_thread::yield();
      done.store(1);
    });
    throw std::runtime_error("a device expert failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(done.load(), 1) << "the destructor waited for the work";
}

TEST(MoeBeside, ABusyThreadOrDisabledRunsInlineAtJoin) {
  std::atomic<bool> release{false};
  Beside first([&] {
    while (!release.load()) std::this_thread::yield();
  });
  std::thread::id ran_on;
  Beside second([&] { ran_on = std::this_thread::get_id(); });
  second.join();
  EXPECT_EQ(ran_on, std::this_thread::get_id()) << "busy: inline";
  release.store(true);
  first.join();
  Beside off([&] { ran_on = std::thread::id(); }, /*enabled=*/false);
  ran_on = std::this_thread::get_id();
  off.join();
  EXPECT_EQ(ran_on, std::thread::id()) << "disabled: ran at join";
}

}  // namespace
}  // namespace strata::testing
