// Perplexity over a text, computed exactly as llama.cpp's llama-perplexity does
// (tools/perplexity/perplexity.cpp, perplexity()): the text is tokenized once (BOS first when the
// tokenizer adds one), cut into chunks of n_ctx tokens, each chunk's first token replaced by BOS
// (when add_bos), each chunk run from an empty cache, and only the second half of every chunk
// scored: positions first = n_ctx/2 .. n_ctx-2 predict the next token. ppl = exp(mean NLL).
#pragma once

#include <functional>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace sputnik {

class Model;
class Tokenizer;

struct PerplexityOptions {
  int n_ctx = 512;    // chunk length; the model's cache must hold at least this many tokens
  int n_batch = 512;  // tokens per forward call
  int n_chunks = -1;  // < 0: all whole chunks
};

struct PerplexityResult {
  double ppl = 0;
  double nll = 0;      // summed negative log-likelihood (nats)
  int n_tokens = 0;    // tokens of the text (BOS included)
  int n_chunks = 0;
  int n_scored = 0;    // predictions scored: n_chunks * (n_ctx - n_ctx/2 - 1)
  std::vector<double> running_ppl;  // after each chunk, as llama-perplexity prints [i]ppl
  double seconds = 0;
};

// progress(chunk, n_chunks, running_ppl) after every chunk.
using PerplexityProgress = std::function<void(int chunk, int n_chunks, double running_ppl)>;

Result<PerplexityResult> compute_perplexity(Model& model, const Tokenizer& tokenizer,
                                            std::string_view text, const PerplexityOptions& options,
                                            const PerplexityProgress& progress = {});

// log p(token) under softmax(logits), as llama.cpp's log_softmax(): float max, double sum.
double log_softmax_at(const float* logits, int64_t n_vocab, int32_t token);

}  // namespace sputnik
