// Sampling steps against hand-computed values (llama.cpp semantics, src/llama-sampling.cpp).
#include "runtime/sampling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

namespace sputnik {
namespace {

std::vector<int32_t> ids(const std::vector<Candidate>& c) {
  std::vector<int32_t> out;
  for (const Candidate& x : c) out.push_back(x.id);
  return out;
}

// logits 0, ln 2, ln 4 -> probabilities 1/7, 2/7, 4/7.
std::vector<float> sevenths() { return {0.0f, std::log(2.0f), std::log(4.0f)}; }

TEST(Sampling, SoftmaxSortsAndNormalises) {
  std::vector<Candidate> c = make_candidates(sevenths());
  softmax_candidates(c);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_NEAR(c[0].p, 4.0 / 7.0, 1e-6);
  EXPECT_NEAR(c[1].p, 2.0 / 7.0, 1e-6);
  EXPECT_NEAR(c[2].p, 1.0 / 7.0, 1e-6);
}

TEST(Sampling, PenaltiesFollowLlamaCpp) {
  std::vector<Candidate> c = make_candidates(std::vector<float>{2.0f, -1.0f, 0.5f, 3.0f});
  const std::vector<int32_t> history = {0, 0, 1};
  apply_penalties(c, history, /*repeat=*/2.0f, /*frequency=*/0.5f, /*presence=*/0.25f);
  // token 0, seen twice, positive: 2 / 2 - 2 * 0.5 - 0.25
  EXPECT_FLOAT_EQ(c[0].logit, -0.25f);
  // token 1, seen once, negative: -1 * 2 - 1 * 0.5 - 0.25
  EXPECT_FLOAT_EQ(c[1].logit, -2.75f);
  EXPECT_FLOAT_EQ(c[2].logit, 0.5f);  // unseen
  EXPECT_FLOAT_EQ(c[3].logit, 3.0f);
}

TEST(Sampling, TopK) {
  std::vector<Candidate> c = make_candidates(std::vector<float>{1.0f, 5.0f, 3.0f, 4.0f});
  top_k_filter(c, 2);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{1, 3}));
  std::vector<Candidate> all = make_candidates(std::vector<float>{1.0f, 5.0f});
  top_k_filter(all, 0);  // off
  EXPECT_EQ(all.size(), 2u);
}

TEST(Sampling, TopPKeepsSmallestPrefixReachingP) {
  // Cumulative: 4/7 = 0.571, 6/7 = 0.857, 1.
  std::vector<Candidate> c = make_candidates(sevenths());
  top_p_filter(c, 0.8f);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{2, 1}));
  c = make_candidates(sevenths());
  top_p_filter(c, 0.5f);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{2}));
  c = make_candidates(sevenths());
  top_p_filter(c, 0.9f);
  EXPECT_EQ(c.size(), 3u);
}

TEST(Sampling, MinPIsRelativeToTheTopProbability) {
  // Threshold 0.3 * 4/7 = 0.171: keeps 4/7 and 2/7, drops 1/7 = 0.143.
  std::vector<Candidate> c = make_candidates(sevenths());
  min_p_filter(c, 0.3f);
  EXPECT_EQ((std::set<int32_t>{c[0].id, c[1].id}), (std::set<int32_t>{1, 2}));
  EXPECT_EQ(c.size(), 2u);
  c = make_candidates(sevenths());
  min_p_filter(c, 0.2f);  // threshold 0.114 keeps all
  EXPECT_EQ(c.size(), 3u);
}

TEST(Sampling, TemperatureDividesLogits) {
  std::vector<Candidate> c = make_candidates(std::vector<float>{1.0f, -3.0f});
  apply_temperature(c, 0.5f);
  EXPECT_FLOAT_EQ(c[0].logit, 2.0f);
  EXPECT_FLOAT_EQ(c[1].logit, -6.0f);
  apply_temperature(c, 0.0f);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{0}));
}

TEST(Sampling, DrawFollowsTheDistribution) {
  // p = 3/4 and 1/4: over 20000 draws the share of token 0 is 0.75 +- 0.015 (5 sigma = 0.015).
  std::mt19937_64 rng(1234);
  int zeros = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<Candidate> c = make_candidates(std::vector<float>{std::log(3.0f), 0.0f});
    zeros += draw(c, rng) == 0;
  }
  EXPECT_NEAR(zeros / static_cast<double>(n), 0.75, 0.015);
}

TEST(Sampling, GreedyAppliesPenaltiesFirst) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.repeat_penalty = 1.1f;
  Sampler sampler(params);
  const std::vector<float> logits = {3.0f, 2.9f};
  EXPECT_EQ(sampler.sample(logits), 0);
  sampler.accept(0);  // now 3 / 1.1 = 2.73 < 2.9
  EXPECT_EQ(sampler.sample(logits), 1);
}

TEST(Sampling, PenaltyWindowForgetsOldTokens) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.presence_penalty = 1.0f;
  params.penalty_last_n = 2;
  Sampler sampler(params);
  const std::vector<float> logits = {3.0f, 2.5f, 0.0f};
  sampler.accept(0);
  EXPECT_EQ(sampler.sample(logits), 1);  // 3 - 1 < 2.5
  sampler.accept(2);
  sampler.accept(2);  // token 0 has left the window of 2
  EXPECT_EQ(sampler.sample(logits), 0);
}

TEST(Sampling, SeedReproducesAndDiffers) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  std::vector<float> logits(50, 0.0f);  // uniform over 50 tokens
  auto run = [&](uint64_t seed) {
    params.seed = seed;
    Sampler s(params);
    std::vector<int32_t> out;
    for (int i = 0; i < 32; ++i) out.push_back(s.sample(logits));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
  Sampler s(params);
  const int32_t first = s.sample(logits);
  s.sample(logits);
  s.reset();
  EXPECT_EQ(s.sample(logits), first);
}

TEST(StopStrings, NeverEmitsAStopStringSpanningPieces) {
  StopStringMatcher m({"STOP"});
  std::string out = m.push("Hello Wo");
  out += m.push("rld. ST");
  EXPECT_EQ(out, "Hello World. ");  // "ST" is held back
  EXPECT_FALSE(m.stopped());
  out += m.push("OP here");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "Hello World. ");
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStrings, ReleasesHeldTextWhenItIsNotAStop) {
  StopStringMatcher m({"\nUser:"});
  EXPECT_EQ(m.push("abc\nUs"), "abc");
  EXPECT_EQ(m.push("ually"), "\nUsually");
  EXPECT_EQ(m.push("x\n"), "x");
  EXPECT_EQ(m.flush(), "\n");
  EXPECT_FALSE(m.stopped());
}

TEST(StopStrings, EarliestOfSeveralWins) {
  StopStringMatcher m({"world", "lo"});
  EXPECT_EQ(m.push("hello world"), "hel");
  EXPECT_EQ(m.matched(), "lo");
}

}  // namespace
}  // namespace sputnik
