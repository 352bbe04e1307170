#include "runtime/generate.h"

#include <algorithm>
#include <chrono>

#include "models/model.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {

namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Length of the longest tail of `text` that is a proper prefix of `tag`.
size_t partial_tag_length(const std::string& text, std::string_view tag) {
  for (size_t len = std::min(tag.size() - 1, text.size()); len > 0; --len) {
    if (text.compare(text.size() - len, len, tag.data(), len) == 0) return len;
  }
  return 0;
}

}  // namespace

// --- ReasoningSplitter ----------------------------------------------------------------------

void ReasoningSplitter::emit(std::vector<Piece>& out, std::string text) {
  const Channel channel = thinking_ ? Channel::Thinking : Channel::Answer;
  if (after_close_ && channel == Channel::Answer) {
    const size_t first = text.find_first_not_of("\r\n");
    text.erase(0, first == std::string::npos ? text.size() : first);
    if (!text.empty()) after_close_ = false;
  }
  if (text.empty()) return;
  if (!out.empty() && out.back().channel == channel) {
    out.back().text += text;
  } else {
    out.push_back({channel, std::move(text)});
  }
}

std::vector<ReasoningSplitter::Piece> ReasoningSplitter::push(std::string_view text) {
  std::vector<Piece> out;
  pending_.append(text);
  while (true) {
    const std::string_view tag = thinking_ ? kThinkClose : kThinkOpen;
    const size_t pos = pending_.find(tag);
    if (pos == std::string::npos) break;
    emit(out, pending_.substr(0, pos));
    pending_.erase(0, pos + tag.size());
    after_close_ = thinking_;
    thinking_ = !thinking_;
  }
  const size_t hold = partial_tag_length(pending_, thinking_ ? kThinkClose : kThinkOpen);
  emit(out, pending_.substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::vector<ReasoningSplitter::Piece> ReasoningSplitter::flush() {
  std::vector<Piece> out;
  emit(out, std::move(pending_));
  pending_.clear();
  return out;
}

// --- Session ----------------------------------------------------------------------------------

Session::Session(Model& model, const Tokenizer& tokenizer, int64_t n_ctx, int32_t seq)
    : model_(model), tokenizer_(tokenizer), n_ctx_(n_ctx), seq_(seq) {}

void Session::reset() {
  model_.truncate_sequence(seq_, 0);
  tokens_.clear();
}

std::vector<int32_t> Session::tokenize_prompt(std::string_view prompt) const {
  std::vector<int32_t> ids = tokenizer_.encode(prompt, /*parse_special=*/true);
  const int32_t bos = tokenizer_.bos_id();
  // Chat formats that write BOS as text (DeepSeek) already have it; never add a second.
  if (tokenizer_.add_bos() && bos >= 0 && (ids.empty() || ids[0] != bos)) {
    ids.insert(ids.begin(), bos);
  }
  return ids;
}

Status Session::prefill(std::span<const int32_t> tokens, int n_batch, std::vector<float>* logits) {
  if (n_batch <= 0) return make_error("n_batch must be positive, got {}", n_batch);
  if (static_cast<int64_t>(tokens_.size() + tokens.size()) > n_ctx_) {
    return make_error("{} tokens do not fit the context: {} cached, capacity {}", tokens.size(),
                      tokens_.size(), n_ctx_);
  }
  const int64_t vocab = model_.info().vocab_size;
  std::vector<BatchToken> batch;
  for (size_t begin = 0; begin < tokens.size(); begin += n_batch) {
    const size_t end = std::min(tokens.size(), begin + static_cast<size_t>(n_batch));
    batch.clear();
    for (size_t i = begin; i < end; ++i) {
      BatchToken t;
      t.token = tokens[i];
      t.pos = static_cast<int32_t>(tokens_.size() + (i - begin));
      t.seq = seq_;
      t.want_logits = logits != nullptr && i + 1 == tokens.size();
      batch.push_back(t);
    }
    if (logits != nullptr) logits->resize(vocab);
    SPUTNIK_CHECK_OK(model_.forward(batch, logits != nullptr ? logits->data() : nullptr));
    tokens_.insert(tokens_.end(), tokens.begin() + begin, tokens.begin() + end);
  }
  return ok_status();
}

Result<GenerationStats> Session::generate(std::string_view prompt, const GenerateOptions& options,
                                          const TextCallback& on_text) {
  return generate_tokens(tokenize_prompt(prompt), options, on_text);
}

Result<GenerationStats> Session::generate_tokens(std::vector<int32_t> prompt,
                                                 const GenerateOptions& options,
                                                 const TextCallback& on_text) {
  if (prompt.empty()) return make_error("the prompt is empty (no tokens to start from)");
  if (static_cast<int64_t>(prompt.size()) >= n_ctx_) {
    return make_error(
        "the prompt is {} tokens but the context holds {}, leaving no room to generate; "
        "raise the context size (-c) or shorten the prompt",
        prompt.size(), n_ctx_);
  }
  GenerationStats stats;

  // Reuse the cached prefix; at least the last prompt token is run again for its logits.
  size_t n_common = 0;
  while (n_common < tokens_.size() && n_common < prompt.size() &&
         tokens_[n_common] == prompt[n_common]) {
    ++n_common;
  }
  n_common = std::min(n_common, prompt.size() - 1);
  model_.truncate_sequence(seq_, static_cast<int32_t>(n_common));
  tokens_.resize(n_common);
  stats.n_cached = static_cast<int>(n_common);

  std::vector<float> logits;
  const auto prompt_start = std::chrono::steady_clock::now();
  SPUTNIK_CHECK_OK(prefill(std::span(prompt).subspan(n_common), options.n_batch, &logits));
  stats.n_prompt = static_cast<int>(prompt.size() - n_common);
  stats.prompt_seconds = seconds_since(prompt_start);

  // As llama-cli does, the prompt counts towards the repetition penalties.
  Sampler sampler(options.sampling);
  for (int32_t t : prompt) sampler.accept(t);
  StreamDecoder decoder(tokenizer_);
  StopStringMatcher stopper(options.stop);
  ReasoningSplitter splitter(options.starts_in_reasoning);
  bool callback_stopped = false;
  auto deliver = [&](const std::vector<ReasoningSplitter::Piece>& pieces) {
    for (const auto& piece : pieces) {
      if (!callback_stopped && !piece.text.empty() && on_text && !on_text(piece.channel, piece.text)) {
        callback_stopped = true;
      }
    }
  };
  auto route = [&](const std::string& text) {
    if (text.empty()) return;
    if (options.split_reasoning) {
      deliver(splitter.push(text));
    } else {
      deliver({{Channel::Answer, text}});
    }
  };

  const auto generation_start = std::chrono::steady_clock::now();
  const int64_t vocab = model_.info().vocab_size;
  while (true) {
    if (options.n_predict >= 0 && stats.n_generated >= options.n_predict) {
      stats.stop_reason = "length";
      break;
    }
    const int32_t token = sampler.sample(std::span<const float>(logits.data(), vocab));
    sampler.accept(token);
    ++stats.n_generated;
    if (tokenizer_.is_end_of_generation(token)) {
      stats.stop_reason = "eog";
      break;
    }
    route(stopper.push(decoder.push(token)));
    if (stopper.stopped()) {
      stats.stop_reason = "stop";
      break;
    }
    if (callback_stopped) {
      stats.stop_reason = "callback";
      break;
    }
    if (static_cast<int64_t>(tokens_.size()) >= n_ctx_) {
      stats.stop_reason = "context";
      break;
    }
    // Decode step: the sampled token goes into the cache and yields the next logits.
    const BatchToken step{token, static_cast<int32_t>(tokens_.size()), seq_, true};
    SPUTNIK_CHECK_OK(model_.forward(std::span(&step, 1), logits.data()));
    tokens_.push_back(token);
  }
  if (!stopper.stopped()) {
    route(stopper.push(decoder.flush()));
    route(stopper.flush());
  }
  if (options.split_reasoning) deliver(splitter.flush());
  stats.generation_seconds = seconds_since(generation_start);
  return stats;
}

}  // namespace sputnik
