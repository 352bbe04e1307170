// The sputnik command line: one function per subcommand, each a thin layer over runtime/.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "core/result.h"
#include "models/model.h"
#include "runtime/sampling.h"
#include "tokenizer/tokenizer.h"

namespace sputnik::cli {

// Options shared by the commands that load a model.
struct ModelOptions {
  std::string path;
  int threads = 0;  // 0: all hardware threads
  int64_t ctx = 4096;
  std::string cache_type = "f16";  // K/V cache element type (Llama/Qwen2): f16 or f32
};

void add_model_options(CLI::App& app, ModelOptions& options, bool with_ctx = true);
void add_sampling_options(CLI::App& app, SamplingParams& params);

// Loads the model (progress on a TTY) and checks it has a tokenizer.
Result<LoadedModel> load(const ModelOptions& options, int n_seq_max = 1);

bool stdout_is_tty();
bool stdin_is_tty();

// Prints "sputnik <command>: error: message" to stderr; returns 1 for main to exit with.
int fail(const std::string& command, const std::string& message);

// Each registers its subcommand; the returned function runs it after parsing (exit status).
struct Command {
  CLI::App* app;
  std::function<int()> run;
};
Command register_run(CLI::App& app);
Command register_chat(CLI::App& app);
Command register_inspect(CLI::App& app);
Command register_perplexity(CLI::App& app);
Command register_bench(CLI::App& app);

}  // namespace sputnik::cli
