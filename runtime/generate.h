// The generation loop over a Model and its Tokenizer: tokenize, prefill in chunks of n_batch,
// then sample and decode one token at a time, streaming UTF-8-complete text to a callback.
// A Session keeps one sequence's cache between calls, so a chat only prefills what is new.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "runtime/sampling.h"

namespace sputnik {

class Model;
class Tokenizer;

// Where a piece of generated text belongs. Reasoning models write their chain of thought
// between <think> and </think>; the rest is the answer.
enum class Channel { Thinking, Answer };

// Splits a text stream at <think> / </think>, even when a tag spans pieces. The tags are dropped,
// and so are the newlines that follow </think> (R1 writes "</think>\n\n" before the answer).
class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(bool starts_in_reasoning) : thinking_(starts_in_reasoning) {}
  struct Piece {
    Channel channel;
    std::string text;
  };
  std::vector<Piece> push(std::string_view text);
  std::vector<Piece> flush();
  bool thinking() const { return thinking_; }

 private:
  void emit(std::vector<Piece>& out, std::string text);
  bool thinking_;
  bool after_close_ = false;  // swallowing the newlines after </think>
  std::string pending_;
};

// Returns false to stop the generation.
using TextCallback = std::function<bool(Channel channel, std::string_view text)>;

struct GenerateOptions {
  int n_predict = 128;  // < 0: until an end-of-generation token or a full context
  int n_batch = 512;    // prompt tokens per forward call
  SamplingParams sampling;
  std::vector<std::string> stop;      // stop strings, never emitted
  bool starts_in_reasoning = false;   // the prompt opened a <think> block (R1 chat format)
  bool split_reasoning = true;        // route <think>...</think> to Channel::Thinking
};

struct GenerationStats {
  int n_prompt = 0;       // tokens prefilled by this call (cached ones excluded)
  int n_cached = 0;       // prompt tokens reused from the session's cache
  int n_generated = 0;    // tokens sampled (the end-of-generation token included)
  double prompt_seconds = 0;
  double generation_seconds = 0;
  std::string stop_reason;  // "eog", "length", "stop", "context", "callback"
  double prompt_tokens_per_second() const {
    return prompt_seconds > 0 ? n_prompt / prompt_seconds : 0;
  }
  double generation_tokens_per_second() const {
    return generation_seconds > 0 ? n_generated / generation_seconds : 0;
  }
};

class Session {
 public:
  // n_ctx: the cache capacity the model was loaded with (LoadOptions::n_ctx).
  Session(Model& model, const Tokenizer& tokenizer, int64_t n_ctx, int32_t seq = 0);

  // Tokenizes `prompt` (special tokens parsed; BOS added when the tokenizer asks for it and the
  // text does not already start with it), reuses the longest cached prefix, prefills the rest
  // and generates. An over-long prompt is an error that names both lengths.
  Result<GenerationStats> generate(std::string_view prompt, const GenerateOptions& options,
                                   const TextCallback& on_text);
  // The same from token ids.
  Result<GenerationStats> generate_tokens(std::vector<int32_t> prompt,
                                          const GenerateOptions& options,
                                          const TextCallback& on_text);

  // Prompt ids as generate() would use them.
  std::vector<int32_t> tokenize_prompt(std::string_view prompt) const;
  // Feeds tokens to the cache after what is there, n_batch at a time; when `logits` is given it
  // receives the last token's vocab logits.
  Status prefill(std::span<const int32_t> tokens, int n_batch, std::vector<float>* logits);
  void reset();
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t n_ctx() const { return n_ctx_; }

 private:
  Model& model_;
  const Tokenizer& tokenizer_;
  int64_t n_ctx_;
  int32_t seq_;
  std::vector<int32_t> tokens_;  // what the cache holds for seq_
};

}  // namespace sputnik
