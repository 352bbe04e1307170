// ThreadPool (core/threads.h): every task runs exactly once per parallel_for, on a thread index
// below size(), across many back-to-back dispatches (decode issues hundreds per token) and after
// the workers have gone to sleep.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "core/threads.h"

namespace sputnik {
namespace {

// Runs n_tasks tasks and checks each ran once, on a valid thread.
void expect_each_task_once(ThreadPool& pool, int64_t n_tasks) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(n_tasks));
  std::atomic<int> bad_thread{0};
  pool.parallel_for(n_tasks, [&](int64_t task, int thread) {
    runs[static_cast<size_t>(task)].fetch_add(1, std::memory_order_relaxed);
    if (thread < 0 || thread >= pool.size()) bad_thread.fetch_add(1, std::memory_order_relaxed);
  });
  for (int64_t i = 0; i < n_tasks; ++i) ASSERT_EQ(runs[static_cast<size_t>(i)].load(), 1) << "task " << i;
  EXPECT_EQ(bad_thread.load(), 0);
}

TEST(ThreadPool, EveryTaskRunsOnceForManyDispatches) {
  for (int n_threads : {1, 2, 3, 4}) {
    ThreadPool pool(n_threads);
    EXPECT_EQ(pool.size(), n_threads);
    for (int round = 0; round < 2000; ++round) expect_each_task_once(pool, 1 + round % 37);
  }
}

TEST(ThreadPool, ZeroTasksReturnAtOnce) {
  ThreadPool pool(2);
  bool ran = false;
  pool.parallel_for(0, [&](int64_t, int) { ran = true; });
  pool.parallel_for(-3, [&](int64_t, int) { ran = true; });
  EXPECT_FALSE(ran);
}

TEST(ThreadPool, NonPositiveThreadCountMeansOne) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.size(), 1);
  expect_each_task_once(pool, 5);
}

// Workers sleep after spinning idle for a while; a later dispatch must wake them (and all its tasks
// run even if only the caller were awake, so check that a worker took part).
TEST(ThreadPool, WorkersWakeAfterSleeping) {
  ThreadPool pool(2);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::atomic<int> worker_tasks{0};
    pool.parallel_for(64, [&](int64_t, int thread) {
      if (thread != 0) worker_tasks.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // long enough for the worker to join
    });
    EXPECT_GT(worker_tasks.load(), 0) << "round " << round;
  }
}

// The work of every task is visible to the caller when parallel_for returns.
TEST(ThreadPool, ResultsVisibleAfterReturn) {
  ThreadPool pool(2);
  std::vector<int64_t> out(1000);
  for (int round = 1; round <= 200; ++round) {
    pool.parallel_for(static_cast<int64_t>(out.size()), [&](int64_t task, int) { out[static_cast<size_t>(task)] = task * round; });
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], static_cast<int64_t>(i) * round);
  }
}

}  // namespace
}  // namespace sputnik
