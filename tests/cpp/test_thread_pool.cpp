// The thread pool's contract: static partition (task -> thread depends only on the task count and
// thread count), every task runs exactly once, and an exception in any worker reaches the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/thread_pool.h"

namespace {

TEST(ThreadPool, EveryTaskRunsOnceOnItsStaticThread) {
  for (int threads : {1, 2, 3, 5}) {
    for (int64_t n : {0, 1, 7, 100}) {
      std::vector<std::atomic<int>> runs(n);
      std::vector<int> owner(n, -1);
      openmla::parallel_for(n, threads, [&](int64_t task, int thread) {
        runs[task]++;
        owner[task] = thread;
      });
      const int used = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
      for (int64_t t = 0; t < n; ++t) {
        EXPECT_EQ(runs[t].load(), 1) << "task " << t << " threads " << threads;
        int expected = 0;
        while (n * (expected + 1) / used <= t) ++expected;
        EXPECT_EQ(owner[t], expected) << "task " << t << " threads " << threads;
      }
    }
  }
}

TEST(ThreadPool, ExceptionInAWorkerIsRethrownOnTheCaller) {
  for (int64_t bad_task : {0, 5}) {
    std::atomic<int> ran{0};
    EXPECT_THROW(openmla::parallel_for(6, 2,
                                       [&](int64_t task, int) {
                                         ran++;
                                         if (task == bad_task) throw std::runtime_error("boom");
                                       }),
                 std::runtime_error);
    EXPECT_GE(ran.load(), 1);
  }
  std::atomic<int> after{0};
  openmla::parallel_for(4, 2, [&](int64_t, int) { after++; });
  EXPECT_EQ(after.load(), 4) << "the pool must stay usable after an exception";
}

}  // namespace
