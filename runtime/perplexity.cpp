#include "runtime/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {

double log_softmax_at(const float* logits, int64_t n_vocab, int32_t token) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - max_logit);
  return logits[token] - max_logit - std::log(sum_exp);
}

Result<PerplexityResult> compute_perplexity(Model& model, const Tokenizer& tokenizer,
                                            std::string_view text, const PerplexityOptions& options,
                                            const PerplexityProgress& progress) {
  const int n_ctx = options.n_ctx;
  if (n_ctx < 4) return make_error("perplexity: context {} is too small (need at least 4)", n_ctx);
  if (options.n_batch <= 0) return make_error("perplexity: n_batch must be positive");
  const auto start_time = std::chrono::steady_clock::now();

  // llama.cpp: common_tokenize(ctx, text, add_special = true, parse_special = false).
  std::vector<int32_t> tokens = tokenizer.encode(text, /*parse_special=*/false);
  const bool add_bos = tokenizer.add_bos() && tokenizer.bos_id() >= 0;
  if (add_bos) tokens.insert(tokens.begin(), tokenizer.bos_id());

  PerplexityResult result;
  result.n_tokens = static_cast<int>(tokens.size());
  if (static_cast<int64_t>(tokens.size()) < 2 * static_cast<int64_t>(n_ctx)) {
    return make_error(
        "perplexity: the text tokenizes to {} tokens; a context of {} needs at least {} "
        "(use a longer text or a smaller -c)",
        tokens.size(), n_ctx, 2 * n_ctx);
  }
  const int n_chunk_max = static_cast<int>(tokens.size() / n_ctx);
  const int n_chunks = options.n_chunks < 0 ? n_chunk_max : std::min(options.n_chunks, n_chunk_max);
  const int64_t n_vocab = model.info().vocab_size;
  const int first = n_ctx / 2;

  std::vector<float> logits(static_cast<size_t>(n_ctx - first) * n_vocab);
  std::vector<BatchToken> batch;
  for (int chunk = 0; chunk < n_chunks; ++chunk) {
    const int start = chunk * n_ctx;
    model.truncate_sequence(0, 0);
    float* out = logits.data();
    for (int batch_start = 0; batch_start < n_ctx; batch_start += options.n_batch) {
      const int batch_size = std::min(n_ctx - batch_start, options.n_batch);
      batch.clear();
      int n_outputs = 0;
      for (int k = 0; k < batch_size; ++k) {
        const int pos = batch_start + k;
        BatchToken t;
        // Every chunk starts with BOS in place of its first token.
        t.token = (add_bos && pos == 0) ? tokenizer.bos_id() : tokens[start + pos];
        t.pos = pos;
        t.seq = 0;
        t.want_logits = pos >= first;
        n_outputs += t.want_logits;
        batch.push_back(t);
      }
      SPUTNIK_CHECK_OK(model.forward(batch, out));
      out += static_cast<size_t>(n_outputs) * n_vocab;
    }
    // Row i holds the logits at position first + i, which predict token first + i + 1.
    for (int i = 0; i < n_ctx - 1 - first; ++i) {
      const int32_t target = tokens[start + first + i + 1];
      result.nll -= log_softmax_at(logits.data() + static_cast<size_t>(i) * n_vocab, n_vocab, target);
      ++result.n_scored;
    }
    result.running_ppl.push_back(std::exp(result.nll / result.n_scored));
    if (progress) progress(chunk, n_chunks, result.running_ppl.back());
  }
  model.truncate_sequence(0, 0);
  result.n_chunks = n_chunks;
  result.ppl = std::exp(result.nll / result.n_scored);
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  return result;
}

}  // namespace sputnik
