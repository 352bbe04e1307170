// sputnik bench: llama-bench-like prompt-processing (pp) and generation (tg) throughput, the
// machine's measured read bandwidth and the decode roofline it implies, and peak resident memory
// against the bytes the model needs (mapped weights + KV cache).
#include <fmt/format.h>
#include <sys/resource.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>

#include "cli/cli.h"
#include "core/threads.h"
#include "kernels/kernels.h"
#include "runtime/machine_probe.h"

namespace sputnik::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  int n_prompt = 512;
  int n_gen = 128;
  int n_depth = 0;
  std::vector<int> threads;
  int repetitions = 3;
  int n_batch = 512;
  bool json = false;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// --- Timing --------------------------------------------------------------------------------------

// Peak resident set of this process so far, in bytes: VmHWM, the high-water mark of this
// process's own memory. Not getrusage's ru_maxrss: Linux carries that over fork and exec, so a
// bench started by a big parent (compare_llamacpp.py with llama.cpp loaded) would report the
// parent's peak. ru_maxrss only where /proc is missing.
size_t peak_resident_bytes() {
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    size_t kib = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof(line), f)) {
      found = std::sscanf(line, "VmHWM: %zu kB", &kib) == 1;
    }
    std::fclose(f);
    if (found) return kib * 1024;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // KiB on Linux
}

struct Sample {
  double mean = 0, stddev = 0, median = 0;
};

Sample summarize(std::vector<double> values) {
  Sample s;
  if (values.empty()) return s;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  if (values.size() > 1) {
    double sq = 0;
    for (double v : values) sq += (v - s.mean) * (v - s.mean);
    s.stddev = std::sqrt(sq / (values.size() - 1));
  }
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  s.median = values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
  return s;
}

// Feeds tokens at positions start, start+1, ... n_batch at a time (logits for the last only);
// returns the seconds it took.
Result<double> feed_batches(Model& model, const std::vector<int32_t>& tokens, int32_t start,
                            int n_batch) {
  std::vector<float> logits(model.info().vocab_size);
  std::vector<BatchToken> batch;
  const double t0 = now_seconds();
  for (size_t begin = 0; begin < tokens.size(); begin += n_batch) {
    const size_t end = std::min(tokens.size(), begin + n_batch);
    batch.clear();
    for (size_t i = begin; i < end; ++i) {
      batch.push_back({tokens[i], static_cast<int32_t>(start + i), 0, i + 1 == tokens.size()});
    }
    SPUTNIK_CHECK_OK(model.forward(batch, logits.data()));
  }
  return now_seconds() - t0;
}

// Text generation: single-token forward passes from position `start` (as llama-bench's tg).
Result<double> time_generation(Model& model, const std::vector<int32_t>& tokens, int32_t start) {
  std::vector<float> logits(model.info().vocab_size);
  const double t0 = now_seconds();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const BatchToken step{tokens[i], static_cast<int32_t>(start + i), 0, true};
    SPUTNIK_CHECK_OK(model.forward(std::span(&step, 1), logits.data()));
  }
  return now_seconds() - t0;
}

struct Test {
  std::string name;  // pp512, tg128, or with a depth pp512@d4096 (llama-bench: "pp512 @ d4096")
  int n;
  bool prompt;
};

int run_bench(BenchOptions o) {
  if (o.threads.empty()) o.threads = {hardware_threads()};
  std::string model_name;
  size_t weight_bytes = 0, active_bytes = 0, kv_bytes_per_token = 0, kv_cache_bytes = 0;
  std::vector<Test> tests;
  const std::string at_depth = o.n_depth > 0 ? fmt::format("@d{}", o.n_depth) : "";
  if (o.n_prompt > 0) tests.push_back({fmt::format("pp{}{}", o.n_prompt, at_depth), o.n_prompt, true});
  if (o.n_gen > 0) tests.push_back({fmt::format("tg{}{}", o.n_gen, at_depth), o.n_gen, false});

  struct Row {
    int threads;
    const Test* test;
    Sample rate;
    std::vector<double> samples;
  };
  std::vector<Row> rows;
  for (int threads : o.threads) {
    ModelOptions mo = o.model;
    mo.threads = threads;
    mo.ctx = o.n_depth + std::max<int64_t>(o.n_prompt, o.n_gen) + 1;
    auto loaded = load(mo);
    if (!loaded) return fail("bench", loaded.message());
    Model& model = *loaded->model;
    const ModelInfo& info = model.info();
    model_name = info.name.empty() ? info.architecture : info.name;
    weight_bytes = info.weight_bytes;
    active_bytes = info.active_weight_bytes_per_token;
    kv_bytes_per_token = info.kv_cache_bytes_per_token;
    kv_cache_bytes = kv_bytes_per_token * static_cast<size_t>(mo.ctx);
    // Random tokens, as llama-bench uses, from a fixed seed.
    std::mt19937_64 rng(1234);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(info.vocab_size - 1));
    auto random_tokens = [&](int n) {
      std::vector<int32_t> t(n);
      for (int32_t& x : t) x = pick(rng);
      return t;
    };
    // The context of depth tests: filled once (untimed); each run then cuts the cache back to it.
    model.truncate_sequence(0, 0);
    if (o.n_depth > 0) {
      auto filled = feed_batches(model, random_tokens(o.n_depth), 0, o.n_batch);
      if (!filled) return fail("bench", filled.message());
    }
    for (const Test& test : tests) {
      std::vector<double> rates;
      // One warm-up run (pages the weights in, sizes the buffers), then the timed repetitions.
      for (int r = -1; r < o.repetitions; ++r) {
        model.truncate_sequence(0, o.n_depth);
        const std::vector<int32_t> tokens = random_tokens(test.n);
        auto seconds = test.prompt ? feed_batches(model, tokens, o.n_depth, o.n_batch)
                                   : time_generation(model, tokens, o.n_depth);
        if (!seconds) return fail("bench", seconds.message());
        if (r >= 0) rates.push_back(test.n / *seconds);
      }
      rows.push_back({threads, &test, summarize(rates), rates});
      if (!o.json) {
        if (rows.size() == 1) {
          fmt::print("| {:<28} | {:>10} | {:>7} | {:>11} | {:>20} |\n", "model", "size", "threads",
                      "test", "t/s");
          fmt::print("|{:-<30}|{:->12}|{:->9}|{:->13}|{:->22}|\n", "", ":", ":", ":", ":");
        }
        fmt::print("| {:<28} | {:>6.1f} MiB | {:>7} | {:>11} | {:>11.2f} ± {:>6.2f} |\n",
                   model_name.substr(0, 28), weight_bytes / 1048576.0, threads, test.name,
                   rows.back().rate.mean, rows.back().rate.stddev);
        std::fflush(stdout);
      }
    }
  }
  // Before the bandwidth probe, whose buffer would count.
  const size_t peak_rss = peak_resident_bytes();
  const size_t needed_bytes = weight_bytes + kv_cache_bytes;

  // Decode reads the active weights plus the cached K/V of every earlier position: on average
  // depth + n_gen / 2 of them per generated token.
  const double tg_bytes_per_token =
      active_bytes + kv_bytes_per_token * (o.n_depth + 0.5 * std::max(o.n_gen, 0));
  std::vector<std::pair<int, double>> bandwidths;  // threads -> bytes/s
  for (int threads : o.threads) {
    if (std::none_of(bandwidths.begin(), bandwidths.end(), [&](auto& b) { return b.first == threads; }))
      bandwidths.emplace_back(threads, measure_read_bandwidth(threads));
  }
  auto bandwidth_at = [&](int threads) {
    return std::find_if(bandwidths.begin(), bandwidths.end(), [&](auto& b) { return b.first == threads; })
        ->second;
  };
  const int max_threads = *std::max_element(o.threads.begin(), o.threads.end());
  const double bandwidth = bandwidth_at(max_threads);
  const double roofline = tg_bytes_per_token > 0 ? bandwidth / tg_bytes_per_token : 0;

  if (o.json) {
    nlohmann::json json_rows = nlohmann::json::array();
    for (const Row& r : rows) {
      nlohmann::json row = {{"model", model_name}, {"threads", r.threads},
                            {"test", r.test->name}, {"n", r.test->n},
                            {"depth", o.n_depth}, {"mean", r.rate.mean},
                            {"stddev", r.rate.stddev}, {"median", r.rate.median},
                            {"samples", r.samples}};
      if (!r.test->prompt && tg_bytes_per_token > 0) {
        row["roofline_fraction"] = r.rate.median / (bandwidth_at(r.threads) / tg_bytes_per_token);
      }
      json_rows.push_back(row);
    }
    nlohmann::json by_threads = nlohmann::json::object();
    for (auto& [threads, bytes_per_second] : bandwidths)
      by_threads[std::to_string(threads)] = bytes_per_second / 1e9;
    nlohmann::json out = {
        {"rows", json_rows},
        {"machine",
         {{"kernel_isa", kernel_isa()},
          {"read_bandwidth_gbs", bandwidth / 1e9},
          {"bandwidth_threads", max_threads},
          {"read_bandwidth_gbs_by_threads", by_threads},
          {"active_weight_bytes_per_token", active_bytes},
          {"tg_bytes_per_token", tg_bytes_per_token},
          {"roofline_tg_tokens_per_second", roofline}}},
        {"memory",
         {{"peak_rss_bytes", peak_rss},
          {"weight_bytes", weight_bytes},
          {"kv_cache_bytes", kv_cache_bytes},
          {"peak_rss_over_needed", needed_bytes ? double(peak_rss) / needed_bytes : 0.0}}}};
    fmt::print("{}\n", out.dump(1));
    return 0;
  }
  std::string per_threads;
  for (auto& [threads, bytes_per_second] : bandwidths)
    per_threads += fmt::format("{}{:.1f} GB/s ({} thr)", per_threads.empty() ? "" : ", ",
                               bytes_per_second / 1e9, threads);
  fmt::print("\nmachine: kernels {}, read bandwidth {}; decode roofline {:.1f} tok/s = {:.1f} GB/s / "
             "{:.1f} MiB read per token ({:.1f} MiB active weights + K/V at depth {})\n",
             kernel_isa(), per_threads, roofline, bandwidth / 1e9, tg_bytes_per_token / 1048576.0,
             active_bytes / 1048576.0, o.n_depth);
  for (const Row& r : rows) {
    if (r.test->prompt || tg_bytes_per_token <= 0) continue;
    fmt::print("  {} with {} thread(s): {:.0f}% of the roofline at that thread count's bandwidth\n",
               r.test->name, r.threads,
               100 * r.rate.median / (bandwidth_at(r.threads) / tg_bytes_per_token));
  }
  fmt::print("memory: peak resident {:.1f} MiB; mapped weights {:.1f} MiB + KV cache {:.1f} MiB "
             "({} positions) = {:.1f} MiB; ratio {:.2f}\n",
             peak_rss / 1048576.0, weight_bytes / 1048576.0, kv_cache_bytes / 1048576.0,
             o.n_depth + std::max(o.n_prompt, o.n_gen) + 1, needed_bytes / 1048576.0,
             needed_bytes ? double(peak_rss) / needed_bytes : 0.0);
  return 0;
}

}  // namespace

Command register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench", "prompt (pp) and generation (tg) throughput, llama-bench style");
  auto o = std::make_shared<BenchOptions>();
  sub->add_option("-m,--model", o->model.path, "GGUF file or safetensors checkpoint directory")
      ->required();
  sub->add_option("--cache-type", o->model.cache_type, "K/V cache type: f16 or f32")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
  sub->add_option("-p,--n-prompt", o->n_prompt, "prompt tokens (0: skip pp)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("-n,--n-gen", o->n_gen, "generated tokens (0: skip tg)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("-d,--n-depth", o->n_depth,
                  "tokens already in the cache (random, untimed) before each pp and tg run")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "thread counts, comma separated (default: all)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("-r,--repetitions", o->repetitions, "timed runs per test")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("-b,--batch", o->n_batch, "prompt tokens per forward pass")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_flag("--json", o->json, "print JSON instead of the table");
  return {sub, [o] { return run_bench(*o); }};
}

}  // namespace sputnik::cli
