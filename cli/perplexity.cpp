// sputnik perplexity: llama-perplexity's chunked perplexity on a text file.
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "cli/cli.h"
#include "runtime/perplexity.h"

namespace sputnik::cli {

namespace {

struct PerplexityCliOptions {
  ModelOptions model;
  std::string text_path;
  int n_batch = 512;
  int n_chunks = -1;
};

int run_perplexity(PerplexityCliOptions o) {
  std::ifstream in(o.text_path, std::ios::binary);
  if (!in) return fail("perplexity", fmt::format("{}: cannot open the text file", o.text_path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  auto loaded = load(o.model);
  if (!loaded) return fail("perplexity", loaded.message());
  PerplexityOptions options;
  options.n_ctx = static_cast<int>(o.model.ctx);
  options.n_batch = o.n_batch;
  options.n_chunks = o.n_chunks;
  fmt::print(stderr, "perplexity: {} at n_ctx={}, scoring the second half of each chunk\n",
             o.text_path, options.n_ctx);
  auto result = compute_perplexity(*loaded->model, *loaded->tokenizer, text, options,
                                   [](int chunk, int, double ppl) {
                                     fmt::print("[{}]{:.4f},", chunk + 1, ppl);
                                     std::fflush(stdout);
                                   });
  if (!result) return fail("perplexity", result.message());
  fmt::print("\nperplexity: {:.4f} over {} chunks of {} ({} tokens scored of {}), {:.1f} s\n",
             result->ppl, result->n_chunks, options.n_ctx, result->n_scored, result->n_tokens,
             result->seconds);
  return 0;
}

}  // namespace

Command register_perplexity(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "perplexity", "perplexity of a text, chunked exactly as llama.cpp's llama-perplexity");
  auto o = std::make_shared<PerplexityCliOptions>();
  o->model.ctx = 512;
  add_model_options(*sub, o->model);
  sub->add_option("-f,--file", o->text_path, "text file")->required();
  sub->add_option("-b,--batch", o->n_batch, "tokens per forward pass")->capture_default_str();
  sub->add_option("--chunks", o->n_chunks, "chunks to score at most (-1: all)")
      ->capture_default_str();
  return {sub, [o] { return run_perplexity(*o); }};
}

}  // namespace sputnik::cli
