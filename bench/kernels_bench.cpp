// Kernel benchmarks: matvec (decode, n_tokens = 1) and matmul (prefill, n_tokens = 64 / 512) per
// weight type at real shapes, decode attention over an f16 cache, plus a plain memory-read
// baseline for the machine's bandwidth peak.
//
// Counters: weight_GB/s = bytes of weights read per second (decode is bound by this; compare with
// BM_MemoryRead), GFLOP/s = 2 * rows * cols * n_tokens per second; %bw and %compute = those as
// shares of the machine's peaks measured at the same thread count (runtime/machine_probe.h: pinned
// 4-stream read bandwidth; 8-bit VNNI dot-product peak for weights whose matmul quantises the
// activations, f32 FMA peak otherwise). Decode benchmarks rotate over
// enough copies of the weights (>= 512 MiB) that they come from DRAM, not the L3.
//
//   build-kern/bench/kernels_bench --benchmark_filter='Matvec' --benchmark_repetitions=5
//   SPUTNIK_ISA=avx2 ... compares instruction sets (or see the isa argument of BM_Matvec).
#include <benchmark/benchmark.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/repack.h"
#include "runtime/machine_probe.h"

namespace sputnik {
namespace {

constexpr size_t kRotateBytes = size_t{512} << 20;

struct Weights {
  std::vector<std::vector<uint8_t>> copies;
  std::vector<float> scales;
  TensorView view(size_t i) const {
    TensorView v = base;
    v.data = copies[i % copies.size()].data();
    return v;
  }
  TensorView base;
};

// Random weights of `type`; rotate = enough copies to exceed the last-level cache. Only the
// latest set is kept (each rotating set is 512 MiB). Interleaved types (Q4_0x16 ...) are
// quantised as their plain type, then repacked as the loader does.
const Weights& weights(DType type, int64_t rows, int64_t cols, bool rotate) {
  static std::string cached_key;
  static std::unique_ptr<Weights> cached;
  const std::string key = std::string(dtype_name(type)) + ":" + std::to_string(rows) + "x" +
                          std::to_string(cols) + (rotate ? "r" : "");
  if (cached && key == cached_key) return *cached;
  cached.reset();
  auto w = std::make_unique<Weights>();
  const bool interleaved = dtype_row_group(type) > 1;
  const DType plain = interleaved ? ref::plain_type(type) : type;
  const size_t rb = dtype_row_bytes(plain, cols);
  std::vector<uint8_t> first(rb * rows);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng) * 0.02f;
    if (!ref::quantize_row(plain, row.data(), first.data() + r * rb, cols)) {
      // Q4_1 / Q5_x / FP8: bytes from a quantised neighbour type are fine for timing.
      for (size_t i = 0; i < rb; ++i) first[r * rb + i] = static_cast<uint8_t>(rng() & 0x3F);
    }
  }
  if (interleaved) {
    std::vector<uint8_t> packed(dtype_row_bytes(type, cols) * rows);
    ref::repack_interleaved(plain, first.data(), rows, cols, packed.data());
    first.swap(packed);
  }
  const size_t n_copies = rotate ? std::max<size_t>(1, kRotateBytes / first.size()) : 1;
  for (size_t i = 0; i < n_copies; ++i) w->copies.push_back(first);
  w->base.dtype = type;
  w->base.n_dims = 2;
  w->base.shape = {rows, cols};
  if (type == DType::F8_E4M3) {
    w->scales.assign(((rows + 127) / 128) * ((cols + 127) / 128), 0.01f);
    w->base.scale = w->scales.data();
  }
  cached = std::move(w);
  cached_key = key;
  return *cached;
}

ThreadPool& pool(int n) {
  static std::vector<std::unique_ptr<ThreadPool>> pools(64);
  if (!pools[n]) pools[n] = std::make_unique<ThreadPool>(n);
  return *pools[n];
}

const char* kIsas[] = {"scalar", "avx2", "avx512"};

struct MachinePeaks {
  double read_bytes, f32_flops, int8_ops;  // per second
};

// Measured once per thread count (runtime/machine_probe.h), outside any timed loop.
const MachinePeaks& machine_peaks(int threads) {
  static std::map<int, MachinePeaks> peaks;
  auto it = peaks.find(threads);
  if (it == peaks.end())
    it = peaks.emplace(threads, MachinePeaks{measure_read_bandwidth(threads), measure_f32_fma_peak(threads),
                                             measure_int8_dot_peak(threads)}).first;
  return it->second;
}

// Args: type, rows, cols, n_tokens, threads, isa (index into kIsas; -1 = detected), hot.
void BM_Matmul(benchmark::State& state) {
  const auto type = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), T = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const std::string before = kernel_isa();
  if (state.range(5) >= 0 && !set_kernel_isa(kIsas[state.range(5)])) {
    state.SkipWithError("ISA not available");
    return;
  }
  // Decode reads weights from DRAM (rotating copies); "hot" runs keep one small copy in L2 to
  // show the compute-bound ceiling of the kernel.
  const bool hot = state.range(6) != 0;
  const Weights& w = weights(type, rows, cols, T == 1 && !hot);
  std::vector<float> x(T * cols), y(T * rows);
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  size_t i = 0;
  for (auto _ : state) {
    matmul(w.view(i++), x.data(), T, y.data(), pool(threads));
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(w.base.row_bytes() * rows), flops = 2.0 * rows * cols * T;
  const auto rate = benchmark::Counter::kIsIterationInvariantRate;
  state.counters["weight_GB/s"] = benchmark::Counter(bytes * 1e-9, rate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, rate);
  // Shares of the machine's measured peaks at this thread count: read bandwidth, and the
  // arithmetic the kernel runs on (8-bit dot products where activations are quantised).
  const MachinePeaks& peak = machine_peaks(threads);
  const double compute_peak = matmul_quantizes_activations(type) && peak.int8_ops > 0 ? peak.int8_ops : peak.f32_flops;
  state.counters["%bw"] = benchmark::Counter(100 * bytes / peak.read_bytes, rate);
  if (compute_peak > 0) state.counters["%compute"] = benchmark::Counter(100 * flops / compute_peak, rate);
  state.SetLabel(std::string(dtype_name(type)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                 " T=" + std::to_string(T) + " " + kernel_isa() + " threads=" + std::to_string(threads));
  set_kernel_isa(before);
}

// Reads a 1 GiB buffer with n threads: the bandwidth a perfect matvec could reach.
void BM_MemoryRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  static std::vector<float> buf(size_t{1} << 28, 1.0f);
  const int64_t n = static_cast<int64_t>(buf.size());
  std::vector<float> partial(threads);
  for (auto _ : state) {
    pool(threads).parallel_for(threads, [&](int64_t t, int) {
      // Four interleaved streams per thread, like a 4-row matvec tile; a dot product keeps the
      // compiler from eliding the reads.
      const int64_t len = n / threads / 4, chunk = 4096;
      const float* base = buf.data() + n / threads * t;
      float s = 0;
      for (int64_t c = 0; c < len; c += chunk)
        for (int k = 0; k < 4; ++k) s += dot_f32(base + k * len + c, base + k * len + c, std::min(chunk, len - c));
      partial[t] = s;
    });
    benchmark::DoNotOptimize(partial.data());
  }
  state.counters["GB/s"] = benchmark::Counter(4e-9 * n, benchmark::Counter::kIsIterationInvariantRate);
}

// One decode token's f16-cache GQA attention (kernels.h attention_decode_f16) at the
// R1-Distill-Qwen-1.5B shape (12 query heads, 2 kv heads, head_dim 128) over n_keys positions.
// Args: n_keys, threads, isa (index into kIsas; -1 = detected), cold. Cold runs rotate over
// copies of K and V totalling >= 512 MiB, so that they come from DRAM as in the model (where each
// layer's cache is evicted by the other layers' weights); hot runs reuse one copy (L2/L3).
// kv_GB/s: K and V bytes per second.
void BM_AttentionDecodeF16(benchmark::State& state) {
  const int64_t n_keys = state.range(0), n_heads = 12, n_kv_heads = 2, hd = 128;
  const int threads = static_cast<int>(state.range(1));
  const bool cold = state.range(3) != 0;
  const std::string before = kernel_isa();
  if (state.range(2) >= 0 && !set_kernel_isa(kIsas[state.range(2)])) {
    state.SkipWithError("ISA not available");
    return;
  }
  const int64_t n_padded = (n_keys + kAttentionValueBlock - 1) / kAttentionValueBlock * kAttentionValueBlock;
  const size_t k_elems = n_kv_heads * n_keys * hd, v_elems = n_kv_heads * n_padded * hd;
  const size_t set_elems = k_elems + v_elems;  // one copy: K then V
  const size_t n_copies = cold ? std::max<size_t>(1, kRotateBytes / (2 * set_elems)) : 1;
  std::vector<uint16_t> kv(n_copies * set_elems);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (size_t i = 0; i < set_elems; ++i) kv[i] = f32_to_fp16(nd(rng));
  for (size_t c = 1; c < n_copies; ++c) std::memcpy(&kv[c * set_elems], kv.data(), set_elems * sizeof(uint16_t));
  std::vector<float> q(n_heads * hd), scores(n_heads * n_padded), out(n_heads * hd);
  for (auto& x : q) x = fp16_to_f32(f32_to_fp16(nd(rng)));
  GroupedQueryAttentionF16 a;
  a.q = q.data();
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv_heads;
  a.head_dim = hd;
  a.key_head_stride = n_keys * hd;
  a.value_head_stride = n_padded * hd;
  a.scale = 0.088f;
  a.scores = scores.data();
  size_t copy = 0;
  for (auto _ : state) {
    a.keys = &kv[copy * set_elems];
    a.values = a.keys + k_elems;
    copy = (copy + 1) % n_copies;
    attention_decode_f16(a, n_keys, out.data(), pool(threads));
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = 2.0 * static_cast<double>(set_elems);
  state.counters["kv_GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(n_keys) + " keys " + kernel_isa() + " threads=" + std::to_string(threads) +
                 (cold ? " cold" : " hot"));
  set_kernel_isa(before);
}

// One decode token's absorbed MLA attention (kernels.h multi_query_attention) at the
// DeepSeek-V2-Lite shape: 16 heads over f16 cache rows of 512 latent + 64 rope values (dk 576,
// dv 512 = the latent part of the same rows). Args: n_keys (at 1024 the cache fits in L2),
// threads, cold (as BM_AttentionDecodeF16: cold rotates over >= 512 MiB of caches so that rows
// come from DRAM, as in the model). GFLOP/s counts 2 * 16 * (576 + 512) flops per key.
void BM_MlaAttentionDecode(benchmark::State& state) {
  const int64_t n_keys = state.range(0), n_heads = 16, dk = 576, dv = 512;
  const int threads = static_cast<int>(state.range(1));
  const bool cold = state.range(2) != 0;
  const size_t cache_elems = static_cast<size_t>(n_keys * dk);
  const size_t n_copies = cold ? std::max<size_t>(1, kRotateBytes / (2 * cache_elems)) : 1;
  std::vector<uint16_t> cache(n_copies * cache_elems);
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  for (size_t i = 0; i < cache_elems; ++i) cache[i] = f32_to_fp16(nd(rng));
  for (size_t c = 1; c < n_copies; ++c)
    std::memcpy(&cache[c * cache_elems], cache.data(), cache_elems * sizeof(uint16_t));
  std::vector<float> q(n_heads * dk), out(n_heads * dv);
  for (auto& x : q) x = nd(rng);
  MultiQueryAttention a;
  a.q = q.data();
  a.n_heads = n_heads;
  a.dk = dk;
  a.dv = dv;
  a.keys = {nullptr, DType::F16, dk};
  a.scale = 1.0f / 13.856f;  // 1 / sqrt(qk_head_dim 192)
  size_t copy = 0;
  for (auto _ : state) {
    a.keys.data = &cache[copy * cache_elems];
    a.values = a.keys;
    copy = (copy + 1) % n_copies;
    multi_query_attention(a, n_keys, out.data(), pool(threads));
    benchmark::DoNotOptimize(out.data());
  }
  const double flops = 2.0 * n_heads * (dk + dv) * static_cast<double>(n_keys);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(n_keys) + " keys " + kernel_isa() + " threads=" + std::to_string(threads) +
                 (cold ? " cold" : " hot"));
}

struct Shape {
  int64_t rows, cols;
};
// Qwen2-1.5B FFN down (1536 x 8960) and up/gate (8960 x 1536); DeepSeek-V2-Lite routed expert
// down (2048 x 1408) and gate/up (1408 x 2048).
constexpr Shape kShapes[] = {{1536, 8960}, {8960, 1536}, {2048, 1408}, {1408, 2048}};

void register_all() {
  // Q4_0x16 / Q4_1x16 / Q8_0x16 / Q4_Kx16: the layouts the loader repacks Q4_0 / Q4_1 / Q8_0 / Q4_K
  // into on AVX-512 (kernels.h preferred_weight_type); compare with the rows of their plain types.
  const DType types[] = {DType::Q4_0, DType::Q4_0x16, DType::Q4_1, DType::Q4_1x16, DType::Q8_0, DType::Q8_0x16, DType::Q4_K,
                         DType::Q4_Kx16, DType::Q5_K, DType::Q6_K, DType::F16, DType::BF16, DType::F32,
                         DType::F8_E4M3};
  for (int threads : {1, 2}) benchmark::RegisterBenchmark("BM_MemoryRead", BM_MemoryRead)->Arg(threads)->UseRealTime();
  // Hot at 1024 keys (K + V 1 MiB, in L2): the kernel's compute ceiling; cold at 4096: as in
  // the model at depth 4096.
  for (int64_t n_keys : {128, 1024, 4096})
    for (int threads : {1, 2})
      for (int isa : {-1, 1})
        for (int cold : {0, 1}) {
          if (cold && (n_keys != 4096 || isa != -1)) continue;
          benchmark::RegisterBenchmark("AttentionDecodeF16", BM_AttentionDecodeF16)
              ->Args({n_keys, threads, isa, cold})
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond)
              ->MinTime(0.3);
        }
  for (int64_t n_keys : {128, 1024, 4096})
    for (int threads : {1, 2})
      for (int cold : {0, 1}) {
        if (cold && n_keys != 4096) continue;
        benchmark::RegisterBenchmark("MlaAttentionDecode", BM_MlaAttentionDecode)
            ->Args({n_keys, threads, cold})
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond)
            ->MinTime(0.3);
      }
  for (const DType t : types) {
    for (const Shape s : kShapes) {
      if (dtype_traits(t).block_elements == 256 && s.cols % 256) continue;  // 1408 = 5.5 x 256
      const std::string name = std::string("Matvec/") + std::string(dtype_name(t));
      for (int threads : {1, 2})
        for (int isa : {-1, 1}) {
          // AVX2: one point per type; none for the interleaved types (AVX-512 only).
          if (isa == 1 && (threads == 1 || s.rows != kShapes[0].rows || dtype_row_group(t) > 1)) continue;
          benchmark::RegisterBenchmark(name.c_str(), BM_Matmul)
              ->Args({static_cast<int64_t>(t), s.rows, s.cols, 1, threads, isa, 0})
              ->UseRealTime()
              ->MinTime(0.3);
        }
    }
    for (int isa : {-1, 1})
      if (isa == -1 || dtype_row_group(t) == 1)
        benchmark::RegisterBenchmark((std::string("MatvecHot/") + std::string(dtype_name(t))).c_str(), BM_Matmul)
          ->Args({static_cast<int64_t>(t), 256, 2048, 1, 1, isa, 1})
          ->MinTime(0.3);
    for (int64_t T : {64, 512}) {
      const Shape s = kShapes[0];
      const std::string name = std::string("Matmul/") + std::string(dtype_name(t));
      for (int threads : {1, 2})
        benchmark::RegisterBenchmark(name.c_str(), BM_Matmul)
            ->Args({static_cast<int64_t>(t), s.rows, s.cols, T, threads, -1, 0})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond)
            ->MinTime(0.3);
    }
  }
}

}  // namespace
}  // namespace sputnik

int main(int argc, char** argv) {
  sputnik::register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
