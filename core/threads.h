// A fixed pool of worker threads. The calling thread takes part, so n_threads = 1 runs inline.
// Kernels split work as parallel_for(n_tasks, fn(task, thread)); tasks are handed out by an
// atomic counter, so uneven tasks balance themselves.
//
// Decode issues hundreds of small parallel_for calls per token, a few microseconds apart, so a
// futex wake per call would cost more than the work (measured: 2 threads ran at half the speed
// of 1). Workers therefore spin on the job counter for a while before sleeping on the condition
// variable, and the caller spins for completion.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sputnik {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Runs fn(task, thread) for task in [0, n_tasks); returns when all are done. Not reentrant:
  // one caller at a time, and fn must not call parallel_for on the same pool.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  void worker_loop(int thread);
  void run_tasks(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  // The caller writes these once per parallel_for, the workers read them.
  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<uint64_t> generation_{0};  // bumped once per parallel_for; workers watch it
  std::atomic<bool> stopping_{false};
  // Apart on their own cache lines: a thread that has run out of tasks polls generation_ (worker)
  // or busy_workers_ (caller) while the other still takes tasks from next_task_; on one line,
  // every task taken would pull the line back from the polling core.
  alignas(64) std::atomic<int64_t> next_task_{0};
  alignas(64) std::atomic<int> busy_workers_{0};  // the class's 64-byte alignment pads the line
};

// Number of hardware threads, at least 1.
int hardware_threads();

}  // namespace sputnik
