// Token sampling with llama.cpp's semantics (src/llama-sampling.cpp) and its default chain order:
// penalties -> top-k -> top-p -> min-p -> temperature -> draw. Greedy (temperature <= 0) takes the
// argmax after penalties. Every draw comes from one std::mt19937_64 seeded explicitly, so a seed
// reproduces a generation exactly.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sputnik {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  // Penalties over the last penalty_last_n sampled tokens (llama.cpp "penalties" sampler).
  float repeat_penalty = 1.0f;     // 1: off. logit > 0 is divided by it, logit <= 0 multiplied.
  float frequency_penalty = 0.0f;  // subtracted once per occurrence
  float presence_penalty = 0.0f;   // subtracted once if the token occurred at all
  int penalty_last_n = 64;
  uint64_t seed = 0;
};

// One entry of the candidate list the samplers narrow down (llama_token_data).
struct Candidate {
  int32_t id;
  float logit;
  float p;  // filled by softmax_candidates
};

// The individual steps, exposed for tests. Each keeps at least one candidate.
std::vector<Candidate> make_candidates(std::span<const float> logits);
// Sorts by logit, descending, and sets p to the softmax of the logits.
void softmax_candidates(std::vector<Candidate>& c);
// llama.cpp penalties: for a token seen `count` times in `history`:
//   logit = logit <= 0 ? logit * repeat : logit / repeat;
//   logit -= count * frequency + (count > 0) * presence.
void apply_penalties(std::vector<Candidate>& c, std::span<const int32_t> history,
                     float repeat, float frequency, float presence);
void top_k_filter(std::vector<Candidate>& c, int k);
// Keeps the smallest prefix (by probability) whose cumulative probability reaches p.
void top_p_filter(std::vector<Candidate>& c, float p);
// Keeps tokens whose probability is at least p times the top token's: logit >= max + log(p).
void min_p_filter(std::vector<Candidate>& c, float p);
void apply_temperature(std::vector<Candidate>& c, float temperature);
// Draws from the softmax of the candidates with one uniform number from rng.
int32_t draw(std::vector<Candidate>& c, std::mt19937_64& rng);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from one row of vocab logits (does not record it; call accept()).
  int32_t sample(std::span<const float> logits);
  // Records a token in the penalty window (prompt tokens too, if the caller wants them counted).
  void accept(int32_t token);
  void reset();
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::deque<int32_t> history_;
};

// Holds back text that could be the start of a stop string, so a stop string is never emitted
// even when it spans several tokens. Feed it complete UTF-8 pieces; because a stop string starts
// on a character boundary, what it releases is complete UTF-8 too.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Returns the text that is now safe to emit; stopped() turns true when a stop string matched
  // (the text before it is returned, the stop string and anything after it never are).
  std::string push(std::string_view piece);
  // At the end of generation: the held-back text (empty after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace sputnik
