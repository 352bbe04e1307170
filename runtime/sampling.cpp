#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace sputnik {

namespace {

bool by_logit_descending(const Candidate& a, const Candidate& b) { return a.logit > b.logit; }

// Uniform in [0, 1) from the top 53 bits: portable, unlike std::uniform_real_distribution,
// so a seed gives the same tokens with every standard library.
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace

std::vector<Candidate> make_candidates(std::span<const float> logits) {
  std::vector<Candidate> c(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {static_cast<int32_t>(i), logits[i], 0.0f};
  return c;
}

void softmax_candidates(std::vector<Candidate>& c) {
  if (c.empty()) return;
  std::sort(c.begin(), c.end(), by_logit_descending);
  const float max_logit = c[0].logit;
  double sum = 0.0;
  for (Candidate& x : c) {
    x.p = std::exp(x.logit - max_logit);
    sum += x.p;
  }
  for (Candidate& x : c) x.p = static_cast<float>(x.p / sum);
}

void apply_penalties(std::vector<Candidate>& c, std::span<const int32_t> history, float repeat,
                     float frequency, float presence) {
  if (history.empty() || (repeat == 1.0f && frequency == 0.0f && presence == 0.0f)) return;
  std::unordered_map<int32_t, int> counts;
  for (int32_t t : history) ++counts[t];
  for (Candidate& x : c) {
    auto it = counts.find(x.id);
    if (it == counts.end()) continue;
    const int count = it->second;
    // llama.cpp: a positive logit shrinks by division, a negative one grows by multiplication,
    // so the penalty always makes the token less likely.
    if (x.logit <= 0) {
      x.logit *= repeat;
    } else {
      x.logit /= repeat;
    }
    x.logit -= static_cast<float>(count) * frequency + (count > 0 ? 1.0f : 0.0f) * presence;
  }
}

void top_k_filter(std::vector<Candidate>& c, int k) {
  if (k <= 0 || static_cast<size_t>(k) >= c.size()) {
    return;
  }
  std::partial_sort(c.begin(), c.begin() + k, c.end(), by_logit_descending);
  c.resize(k);
}

void top_p_filter(std::vector<Candidate>& c, float p) {
  if (p >= 1.0f || c.empty()) return;
  softmax_candidates(c);
  double cumulative = 0.0;
  size_t keep = c.size();
  for (size_t i = 0; i < c.size(); ++i) {
    cumulative += c[i].p;
    if (cumulative >= p) {
      keep = i + 1;
      break;
    }
  }
  c.resize(keep);
}

void min_p_filter(std::vector<Candidate>& c, float p) {
  if (p <= 0.0f || c.empty()) return;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& x : c) max_logit = std::max(max_logit, x.logit);
  // p_i >= p * p_max  <=>  logit_i >= max_logit + log(p)   (softmax shares its denominator)
  const float min_logit = max_logit + std::log(p);
  std::erase_if(c, [&](const Candidate& x) { return x.logit < min_logit; });
}

void apply_temperature(std::vector<Candidate>& c, float temperature) {
  if (temperature <= 0.0f) {
    // llama.cpp's temp sampler at t <= 0 keeps only the best token.
    auto best = std::max_element(c.begin(), c.end(),
                                 [](const Candidate& a, const Candidate& b) { return a.logit < b.logit; });
    if (best != c.end()) c = {*best};
    return;
  }
  for (Candidate& x : c) x.logit /= temperature;
}

int32_t draw(std::vector<Candidate>& c, std::mt19937_64& rng) {
  softmax_candidates(c);
  const double u = uniform01(rng);
  double cumulative = 0.0;
  for (const Candidate& x : c) {
    cumulative += x.p;
    if (u < cumulative) return x.id;
  }
  return c.back().id;  // u landed in the rounding gap at the top of the cumulative sum
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

void Sampler::reset() {
  rng_.seed(params_.seed);
  history_.clear();
}

void Sampler::accept(int32_t token) {
  if (params_.penalty_last_n == 0) return;
  history_.push_back(token);
  if (params_.penalty_last_n > 0 && history_.size() > static_cast<size_t>(params_.penalty_last_n)) {
    history_.pop_front();
  }
}

int32_t Sampler::sample(std::span<const float> logits) {
  std::vector<Candidate> c = make_candidates(logits);
  if (!history_.empty()) {
    std::vector<int32_t> history(history_.begin(), history_.end());
    apply_penalties(c, history, params_.repeat_penalty, params_.frequency_penalty,
                    params_.presence_penalty);
  }
  if (params_.temperature <= 0.0f) {
    // Greedy; the first of equal maxima wins, as with argmax.
    size_t best = 0;
    for (size_t i = 1; i < c.size(); ++i) {
      if (c[i].logit > c[best].logit) best = i;
    }
    return c[best].id;
  }
  top_k_filter(c, params_.top_k);
  top_p_filter(c, params_.top_p);
  min_p_filter(c, params_.min_p);
  apply_temperature(c, params_.temperature);
  return draw(c, rng_);
}

std::string StopStringMatcher::push(std::string_view piece) {
  if (stopped_) return {};
  pending_.append(piece);
  // The earliest complete stop string wins.
  size_t best_pos = std::string::npos;
  for (const std::string& s : stops_) {
    if (s.empty()) continue;
    const size_t pos = pending_.find(s);
    if (pos < best_pos) {
      best_pos = pos;
      matched_ = s;
    }
  }
  if (best_pos != std::string::npos) {
    std::string out = pending_.substr(0, best_pos);
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    const size_t max_len = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size());
    for (size_t len = max_len; len > hold; --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace sputnik
