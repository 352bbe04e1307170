// Machine peaks (runtime/machine_probe.h). The arithmetic probes run independent chains of
// multiply-adds, enough to cover the instructions' latency, in every thread at once.
#include "runtime/machine_probe.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace sputnik {
namespace {

// 64 bytes of lanes; GCC lowers the arithmetic to the widest vectors the clone's target has.
typedef uint64_t Lanes8 __attribute__((vector_size(64)));
typedef float Floats16 __attribute__((vector_size(64)));

// XOR of `n_lines` 64-byte lines read as four independent streams (one per quarter of the range),
// so the load units and the hardware prefetcher see several misses in flight, as a 4-row matvec
// tile does. Cloned for AVX-512 (one zmm load per line), AVX2 and baseline x86-64; the loader
// picks the clone once, by CPU. (Vectors stay inside: GCC 12 crashes on cloned vector returns.)
__attribute__((target_clones("avx512f", "avx2", "default"))) uint64_t xor_lines(const Lanes8* lines,
                                                                                 size_t n_lines) {
  const size_t quarter = n_lines / 4;
  const Lanes8 *a = lines, *b = lines + quarter, *c = lines + 2 * quarter, *d = lines + 3 * quarter;
  Lanes8 sa{}, sb{}, sc{}, sd{};
  for (size_t i = 0; i < quarter; ++i) {
    sa ^= a[i];
    sb ^= b[i];
    sc ^= c[i];
    sd ^= d[i];
  }
  sa ^= sb ^ sc ^ sd;
  uint64_t x = 0;
  for (int i = 0; i < 8; ++i) x ^= sa[i];
  return x;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void pin_to_cpu(int thread) {  // best effort
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(thread % std::max(1u, std::thread::hardware_concurrency()), &cpus);
  pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
}

// Runs work(thread) `trials` times on n_threads pinned threads, each trial starting when the last
// thread arrives at a spinning barrier and lasting until the last thread ends; returns the
// shortest trial in seconds. The calling thread only waits in join, so it takes no core.
double best_trial_seconds(int n_threads, int trials, const std::function<void(int)>& work) {
  std::atomic<int> arrived{0};
  std::vector<double> starts(static_cast<size_t>(n_threads) * trials), ends(starts.size());
  auto runner = [&](int thread) {
    pin_to_cpu(thread);
    for (int t = 0; t < trials; ++t) {
      arrived.fetch_add(1);
      while (arrived.load() < n_threads * (t + 1)) {
      }
      starts[t * n_threads + thread] = now_seconds();
      work(thread);
      ends[t * n_threads + thread] = now_seconds();
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < n_threads; ++i) threads.emplace_back(runner, i);
  for (std::thread& th : threads) th.join();
  double best = 1e300;
  for (int t = 0; t < trials; ++t) {
    const double start = *std::min_element(starts.begin() + t * n_threads, starts.begin() + (t + 1) * n_threads);
    const double end = *std::max_element(ends.begin() + t * n_threads, ends.begin() + (t + 1) * n_threads);
    best = std::min(best, end - start);
  }
  return best;
}

constexpr int kChains = 12;  // independent accumulators: > latency x issue ports of an FMA unit
constexpr int64_t kComputeSteps = 1 << 22;

// kChains x kComputeSteps multiply-adds of 16 floats, fused where the clone's target has FMA
// (ISO C++ mode contracts a * b + c only when asked); returns one lane so nothing is elided.
__attribute__((target_clones("avx512f", "arch=haswell", "default"), optimize("fp-contract=fast")))
float fma_chains(float seed) {
  Floats16 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = Floats16{} + (seed + c);
  const Floats16 a = Floats16{} + 0.999f, b = Floats16{} + 1e-6f;
  for (int64_t i = 0; i < kComputeSteps; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;
  }
  float s = 0;
  for (int c = 0; c < kChains; ++c) s += acc[c][0];
  return s;
}

// kChains x kComputeSteps vpdpbusd (64 8-bit multiply-adds each); returns one lane.
__attribute__((target("avx512f,avx512vnni"))) int32_t vnni_chains(int32_t seed) {
  __m512i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_epi32(seed + c);
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(-1);
  for (int64_t i = 0; i < kComputeSteps; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
  }
  int32_t s = 0;
  for (int c = 0; c < kChains; ++c) s += _mm512_cvtsi512_si32(acc[c]);
  return s;
}

}  // namespace

// 1 GiB: several times any last-level cache we target, so the bytes come from DRAM.
double measure_read_bandwidth(int n_threads) {
  constexpr size_t kBufferBytes = size_t{1} << 30;
  const size_t n_lines = kBufferBytes / sizeof(Lanes8);
  std::unique_ptr<Lanes8[]> buffer(new Lanes8[n_lines]);
  for (size_t i = 0; i < n_lines; ++i) buffer[i] = Lanes8{i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7};
  const size_t lines_per_thread = n_lines / n_threads / 4 * 4;
  std::vector<uint64_t> sinks(n_threads);
  const double seconds = best_trial_seconds(n_threads, 7, [&](int thread) {
    const Lanes8* slice = buffer.get() + thread * lines_per_thread;
    sinks[thread] ^= xor_lines(slice, lines_per_thread);
  });
  volatile uint64_t sink = 0;
  for (uint64_t s : sinks) sink = sink + s;  // keeps the loads from being optimised away
  return n_threads * lines_per_thread * sizeof(Lanes8) / seconds;
}

double measure_f32_fma_peak(int n_threads) {
  if (!__builtin_cpu_supports("avx512f") && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return 0;
  std::vector<float> sinks(n_threads);
  const double seconds = best_trial_seconds(n_threads, 3, [&](int thread) { sinks[thread] += fma_chains(thread); });
  volatile float sink = sinks[0];
  (void)sink;
  return 2.0 * 16 * kChains * kComputeSteps * n_threads / seconds;
}

double measure_int8_dot_peak(int n_threads) {
  if (!__builtin_cpu_supports("avx512vnni")) return 0;
  std::vector<int32_t> sinks(n_threads);
  const double seconds = best_trial_seconds(n_threads, 3, [&](int thread) { sinks[thread] += vnni_chains(thread); });
  volatile int32_t sink = sinks[0];
  (void)sink;
  return 2.0 * 64 * kChains * kComputeSteps * n_threads / seconds;
}

}  // namespace sputnik
