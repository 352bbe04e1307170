// sputnik bench: llama-bench-like prompt-processing (pp) and generation (tg) throughput, plus the
// machine's measured read bandwidth and the decode roofline it implies.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "cli/cli.h"
#include "core/threads.h"
#include "kernels/kernels.h"

namespace sputnik::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  int n_prompt = 512;
  int n_gen = 128;
  std::vector<int> threads;
  int repetitions = 3;
  int n_batch = 512;
  bool json = false;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Read bandwidth in bytes/s: `threads` threads sum disjoint slices of a buffer much larger than
// the caches; the best of several passes, as STREAM reports.
double measure_read_bandwidth(int threads) {
  const size_t n_words = (size_t{256} << 20) / sizeof(uint64_t);  // 256 MiB
  std::vector<uint64_t> buffer(n_words);
  for (size_t i = 0; i < n_words; ++i) buffer[i] = i;
  ThreadPool pool(threads);
  std::vector<uint64_t> sums(threads * 8);
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const double t0 = now_seconds();
    pool.parallel_for(threads, [&](int64_t task, int) {
      const size_t begin = n_words * task / threads, end = n_words * (task + 1) / threads;
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      size_t i = begin;
      for (; i + 4 <= end; i += 4) {
        s0 += buffer[i];
        s1 += buffer[i + 1];
        s2 += buffer[i + 2];
        s3 += buffer[i + 3];
      }
      for (; i < end; ++i) s0 += buffer[i];
      sums[task * 8] = s0 + s1 + s2 + s3;  // kept, so the loads are not optimised away
    });
    const double seconds = now_seconds() - t0;
    best = std::max(best, n_words * sizeof(uint64_t) / seconds);
  }
  volatile uint64_t sink = std::accumulate(sums.begin(), sums.end(), uint64_t{0});
  (void)sink;
  return best;
}

struct Sample {
  double mean = 0, stddev = 0;
};

Sample summarize(const std::vector<double>& values) {
  Sample s;
  if (values.empty()) return s;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  if (values.size() > 1) {
    double sq = 0;
    for (double v : values) sq += (v - s.mean) * (v - s.mean);
    s.stddev = std::sqrt(sq / (values.size() - 1));
  }
  return s;
}

// Prompt processing: n tokens into an empty cache, n_batch at a time, logits for the last only.
Result<double> time_prompt(Model& model, const std::vector<int32_t>& tokens, int n_batch) {
  model.truncate_sequence(0, 0);
  std::vector<float> logits(model.info().vocab_size);
  std::vector<BatchToken> batch;
  const double t0 = now_seconds();
  for (size_t begin = 0; begin < tokens.size(); begin += n_batch) {
    const size_t end = std::min(tokens.size(), begin + n_batch);
    batch.clear();
    for (size_t i = begin; i < end; ++i) {
      batch.push_back({tokens[i], static_cast<int32_t>(i), 0, i + 1 == tokens.size()});
    }
    SPUTNIK_CHECK_OK(model.forward(batch, logits.data()));
  }
  return now_seconds() - t0;
}

// Text generation: n single-token forward passes from an empty cache (as llama-bench's tg).
Result<double> time_generation(Model& model, const std::vector<int32_t>& tokens) {
  model.truncate_sequence(0, 0);
  std::vector<float> logits(model.info().vocab_size);
  const double t0 = now_seconds();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const BatchToken step{tokens[i], static_cast<int32_t>(i), 0, true};
    SPUTNIK_CHECK_OK(model.forward(std::span(&step, 1), logits.data()));
  }
  return now_seconds() - t0;
}

int run_bench(BenchOptions o) {
  if (o.threads.empty()) o.threads = {hardware_threads()};
  std::string model_name;
  size_t weight_bytes = 0, active_bytes = 0;
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) {
    fmt::print("| {:<28} | {:>10} | {:>7} | {:>6} | {:>20} |\n", "model", "size", "threads", "test",
               "t/s");
    fmt::print("|{:-<30}|{:->12}|{:->9}|{:->8}|{:->22}|\n", "", ":", ":", ":", ":");
  }
  for (int threads : o.threads) {
    ModelOptions mo = o.model;
    mo.threads = threads;
    mo.ctx = std::max<int64_t>(o.n_prompt, o.n_gen) + 1;
    auto loaded = load(mo);
    if (!loaded) return fail("bench", loaded.message());
    Model& model = *loaded->model;
    const ModelInfo& info = model.info();
    model_name = info.name.empty() ? info.architecture : info.name;
    weight_bytes = info.weight_bytes;
    active_bytes = info.active_weight_bytes_per_token;
    // Random tokens, as llama-bench uses, from a fixed seed.
    std::mt19937_64 rng(1234);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(info.vocab_size - 1));
    auto random_tokens = [&](int n) {
      std::vector<int32_t> t(n);
      for (int32_t& x : t) x = pick(rng);
      return t;
    };
    struct Test {
      std::string name;
      int n;
      bool prompt;
    };
    std::vector<Test> tests;
    if (o.n_prompt > 0) tests.push_back({fmt::format("pp{}", o.n_prompt), o.n_prompt, true});
    if (o.n_gen > 0) tests.push_back({fmt::format("tg{}", o.n_gen), o.n_gen, false});
    for (const Test& test : tests) {
      std::vector<double> rates;
      // One warm-up run (pages the weights in, sizes the buffers), then the timed repetitions.
      for (int r = -1; r < o.repetitions; ++r) {
        const std::vector<int32_t> tokens = random_tokens(test.n);
        auto seconds = test.prompt ? time_prompt(model, tokens, o.n_batch) : time_generation(model, tokens);
        if (!seconds) return fail("bench", seconds.message());
        if (r >= 0) rates.push_back(test.n / *seconds);
      }
      const Sample s = summarize(rates);
      std::vector<double> sorted = rates;
      std::sort(sorted.begin(), sorted.end());
      const double median = sorted.empty() ? 0 : (sorted.size() % 2 ? sorted[sorted.size() / 2]
          : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]));
      if (o.json) {
        rows.push_back({{"model", model_name}, {"threads", threads}, {"test", test.name},
                        {"n", test.n}, {"mean", s.mean}, {"stddev", s.stddev},
                        {"median", median}, {"samples", rates}});
      } else {
        fmt::print("| {:<28} | {:>6.1f} MiB | {:>7} | {:>6} | {:>11.2f} ± {:>6.2f} |\n",
                   model_name.substr(0, 28), weight_bytes / 1048576.0, threads, test.name, s.mean,
                   s.stddev);
        std::fflush(stdout);
      }
    }
  }
  const int max_threads = *std::max_element(o.threads.begin(), o.threads.end());
  const double bandwidth = measure_read_bandwidth(max_threads);
  const double roofline = active_bytes > 0 ? bandwidth / active_bytes : 0;
  if (o.json) {
    nlohmann::json out = {{"rows", rows},
                          {"machine", {{"kernel_isa", kernel_isa()},
                                       {"read_bandwidth_gbs", bandwidth / 1e9},
                                       {"bandwidth_threads", max_threads},
                                       {"active_weight_bytes_per_token", active_bytes},
                                       {"roofline_tg_tokens_per_second", roofline}}}};
    fmt::print("{}\n", out.dump(1));
  } else {
    fmt::print("\nmachine: kernels {}, read bandwidth {:.1f} GB/s ({} threads); decode roofline "
               "{:.1f} tok/s = bandwidth / {:.1f} MiB of weights read per token\n",
               kernel_isa(), bandwidth / 1e9, max_threads, roofline, active_bytes / 1048576.0);
  }
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
  sub->add_option("-p,--n-prompt", o->n_prompt, "prompt tokens (0: skip pp)")->capture_default_str();
  sub->add_option("-n,--n-gen", o->n_gen, "generated tokens (0: skip tg)")->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "thread counts, comma separated (default: all)")
      ->delimiter(',');
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
