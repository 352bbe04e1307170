// sputnik quantize: a Hugging Face safetensors checkpoint to a GGUF file (models/convert.h).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "cli/cli.h"
#include "models/convert.h"

namespace sputnik::cli {

namespace {

struct QuantizeCliOptions {
  std::string input, output, type = "Q8_0", expert_type, tokenizer_pre;
  int threads = 0;
};

int run_quantize(const QuantizeCliOptions& o) {
  ConvertOptions options;
  options.input = o.input;
  options.output = o.output;
  options.n_threads = o.threads;
  options.tokenizer_pre = o.tokenizer_pre;
  auto type = parse_convert_type(o.type);
  if (!type) return fail("quantize", fmt::format("--type: {}", type.message()));
  options.type = *type;
  if (!o.expert_type.empty()) {
    auto expert_type = parse_convert_type(o.expert_type);
    if (!expert_type)
      return fail("quantize", fmt::format("--expert-type: {}", expert_type.message()));
    options.expert_type = *expert_type;
  }
  // One line redrawn in place on a terminal; one line per tensor in a log.
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  auto progress = [tty](const ConvertProgress& p) {
    const std::string line =
        fmt::format("[{}/{}] {:<36} {:<5} {:8.1f} / {:.1f} MB", p.tensor, p.n_tensors, p.name,
                    dtype_name(p.type), p.bytes_written / 1e6, p.bytes_total / 1e6);
    if (tty) {
      fmt::print(stderr, "\r{}\x1b[K", line);
      if (p.tensor == p.n_tensors) fmt::print(stderr, "\n");
    } else {
      fmt::print(stderr, "{}\n", line);
    }
  };
  auto report = convert_to_gguf(options, progress);
  if (!report) {
    if (tty) fmt::print(stderr, "\n");
    return fail("quantize", report.message());
  }
  for (const std::string& f : report->fallbacks) fmt::print(stderr, "quantize: fallback {}\n", f);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print(stderr, "quantize: wrote {} ({}, {} tensors, {:.1f} MB of tensor data) in {:.1f} s\n",
             o.output, report->architecture, report->n_tensors, report->data_bytes / 1e6, seconds);
  return 0;
}

}  // namespace

Command register_quantize(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "quantize", "convert a Hugging Face safetensors checkpoint to GGUF (llama.cpp's layout)");
  auto o = std::make_shared<QuantizeCliOptions>();
  sub->add_option("-i,--input", o->input,
                  "checkpoint directory (config.json, *.safetensors, "
                  "tokenizer.json)")
      ->required();
  sub->add_option("-o,--output", o->output, "GGUF file to write")->required();
  sub->add_option("--type", o->type,
                  "type of the matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K "
                  "(norms, biases and the MoE router stay F32)")
      ->capture_default_str();
  sub->add_option("--expert-type", o->expert_type, "type of the routed experts (default: --type)");
  sub->add_option("--tokenizer-pre", o->tokenizer_pre,
                  "tokenizer.ggml.pre to write (default: recognised from tokenizer.json)");
  sub->add_option("-t,--threads", o->threads, "worker threads (0: all hardware threads)")
      ->check(CLI::NonNegativeNumber);
  return {sub, [o] { return run_quantize(*o); }};
}

}  // namespace sputnik::cli
