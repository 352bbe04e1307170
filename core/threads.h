// A fixed pool of worker threads. The calling thread takes part, so n_threads = 1 runs inline.
// Kernels split work as parallel_for(n_tasks, fn(task, thread)); tasks are handed out by an
// atomic counter, so uneven tasks balance themselves.
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
  // Runs fn(task, thread) for task in [0, n_tasks); returns when all are done.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t task, int thread)>& fn);

 private:
  void worker_loop(int thread);
  void run_tasks(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int)>* job_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> busy_workers_{0};
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

// Number of hardware threads, at least 1.
int hardware_threads();

}  // namespace sputnik
