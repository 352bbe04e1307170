// ThreadPool dispatch cost: one parallel_for of near-empty tasks, i.e. the hand-out and the
// barrier that every kernel call of a decode step pays (SmolLM2-135M: ~7-10 per layer, 30 layers,
// against ~100 us of work per layer at 2 threads).
//
//   build-smol/bench/threads_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <atomic>

#include "core/threads.h"

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

}  // namespace
}  // namespace sputnik

BENCHMARK_MAIN();
