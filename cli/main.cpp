// sputnik: run DeepSeek-family and dense Llama/Qwen2 models locally on CPU.
#include <fmt/format.h>
#include <unistd.h>

#include "cli/cli.h"
#include "kernels/kernels.h"
#include "tokenizer/tokenizer.h"

namespace sputnik::cli {

void add_model_options(CLI::App& app, ModelOptions& options, bool with_ctx) {
  app.add_option("-m,--model", options.path, "GGUF file or safetensors checkpoint directory")
      ->required();
  app.add_option("-t,--threads", options.threads, "worker threads (0: all hardware threads)")
      ->check(CLI::NonNegativeNumber);
  if (with_ctx) {
    app.add_option("-c,--ctx", options.ctx, "context size: KV-cache tokens per sequence")
        ->check(CLI::PositiveNumber);
  }
  app.add_option("--cache-type", options.cache_type,
                 "K/V cache type of Llama/Qwen2 models: f16 (as llama.cpp) or f32")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
}

void add_sampling_options(CLI::App& app, SamplingParams& p) {
  app.add_option("--temp", p.temperature, "temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k", p.top_k, "top-k (0: off)")->capture_default_str();
  app.add_option("--top-p", p.top_p, "top-p (1: off)")->capture_default_str();
  app.add_option("--min-p", p.min_p, "min-p (0: off)")->capture_default_str();
  app.add_option("--repeat-penalty", p.repeat_penalty, "repetition penalty (1: off)")
      ->capture_default_str();
  app.add_option("--presence-penalty", p.presence_penalty, "presence penalty (0: off)")
      ->capture_default_str();
  app.add_option("--frequency-penalty", p.frequency_penalty, "frequency penalty (0: off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", p.penalty_last_n, "tokens the penalties look back over")
      ->capture_default_str();
  app.add_option("--seed", p.seed, "sampling seed")->capture_default_str();
}

Result<LoadedModel> load(const ModelOptions& options, int n_seq_max) {
  LoadOptions load_options;
  load_options.n_threads = options.threads;
  load_options.n_ctx = options.ctx;
  load_options.n_seq_max = n_seq_max;
  load_options.show_progress = true;  // the loader shows it only when stderr is a TTY
  load_options.kv_type = options.cache_type == "f32" ? DType::F32 : DType::F16;
  SPUTNIK_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(options.path, load_options));
  if (!loaded.tokenizer) {
    return make_error("{}: no tokenizer found (a safetensors checkpoint needs tokenizer.json)",
                      options.path);
  }
  return loaded;
}

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) != 0; }
bool stdin_is_tty() { return ::isatty(STDIN_FILENO) != 0; }

int fail(const std::string& command, const std::string& message) {
  fmt::print(stderr, "sputnik {}: error: {}\n", command, message);
  return 1;
}

Command register_quantize(CLI::App& app);  // cli/quantize.cpp

}  // namespace sputnik::cli

int main(int argc, char** argv) {
  using namespace sputnik::cli;
  CLI::App app{"sputnik: local inference for DeepSeek-family and dense Llama/Qwen2 models"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "print the kernel set and exit");
  std::vector<Command> commands = {register_run(app), register_chat(app), register_inspect(app),
                                   register_perplexity(app), register_bench(app),
                                   register_quantize(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (version) {
    fmt::print("sputnik (kernels: {})\n", sputnik::kernel_isa());
    return 0;
  }
  for (const Command& c : commands) {
    if (c.app->parsed()) return c.run();
  }
  fmt::print(stderr, "{}", app.help());
  return 1;
}
