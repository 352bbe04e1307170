// Thread scaling of decode: ThreadPool dispatch cost (one parallel_for of near-empty tasks, i.e.
// the hand-out and the barrier that every kernel call of a decode step pays; SmolLM2-135M: ~7-10
// per layer, 30 layers, against ~100 us of work per layer at 2 threads), and the read bandwidth
// one and two cores get from a hot L3-sized buffer.
//
//   build-smol/bench/threads_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "core/threads.h"
#include "kernels/kernels.h"

namespace sputnik {
namespace {

void BM_ParallelFor(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t n_tasks = state.range(1);
  std::atomic<int64_t> sum{0};
  for (auto _ : state) {
    pool.parallel_for(n_tasks, [&](int64_t task, int) { sum.fetch_add(task, std::memory_order_relaxed); });
  }
  benchmark::DoNotOptimize(sum.load());
  state.SetItemsProcessed(state.iterations());  // items/s = dispatches per second
}
BENCHMARK(BM_ParallelFor)->ArgNames({"threads", "tasks"})->Args({1, 16})->Args({2, 2})->Args({2, 16})->Args({2, 64})->UseRealTime();

// What a second core adds to streaming reads of a working set that sits in the shared L3 (SmolLM2's
// 92 MiB of weights in this machine's 260 MiB L3): the ceiling of decode's 2-thread / 1-thread
// speed-up on that model. Each thread reads its share of the buffer as four streams (a 4-row tile)
// with the dispatched dot kernel, the buffer hot from the previous iteration.
void BM_HotRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  std::vector<float> buf(static_cast<size_t>(state.range(1)) << 18, 1.0f);  // range(1) MiB
  const int64_t n = static_cast<int64_t>(buf.size());
  std::vector<float> partial(static_cast<size_t>(threads));
  for (auto _ : state) {
    pool.parallel_for(threads, [&](int64_t t, int) {
      const int64_t len = n / threads / 4, chunk = 4096;
      const float* base = buf.data() + n / threads * t;
      float sum = 0;
      for (int64_t c = 0; c < len; c += chunk) {
        for (int k = 0; k < 4; ++k) sum += dot_f32(base + k * len + c, base + k * len + c, std::min(chunk, len - c));
      }
      partial[static_cast<size_t>(t)] = sum;
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<int64_t>(sizeof(float)));
}
BENCHMARK(BM_HotRead)->ArgNames({"threads", "MiB"})->Args({1, 92})->Args({2, 92})->Args({1, 8})->Args({2, 8})->UseRealTime();

}  // namespace
}  // namespace sputnik

BENCHMARK_MAIN();
