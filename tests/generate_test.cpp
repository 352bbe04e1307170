// Session (runtime/generate.h) on the demo model: stop strings, seeds, cache reuse, errors.
// Needs SPUTNIK_DEMO_MODEL (tools/test.sh sets it); without it every test fails.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/threads.h"
#include "models/model.h"
#include "runtime/generate.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {
namespace {

constexpr int64_t kCtx = 256;

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("SPUTNIK_DEMO_MODEL");
    if (path == nullptr || *path == '\0') {
      error_ = "SPUTNIK_DEMO_MODEL is not set (tools/test.sh sets it: tools/fetch_demo_model.sh)";
      return;
    }
    LoadOptions options;
    options.n_ctx = kCtx;
    options.n_threads = hardware_threads();
    auto loaded = load_model(path, options);
    if (!loaded) {
      error_ = loaded.message();
      return;
    }
    model_ = std::move(loaded->model).release();
    tokenizer_ = std::move(loaded->tokenizer).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    model_ = nullptr;
    tokenizer_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(model_ != nullptr) << error_; }

  struct Output {
    std::string text;
    GenerationStats stats;
  };
  static Output generate(Session& session, const std::string& prompt, const GenerateOptions& o) {
    Output out;
    auto stats = session.generate(prompt, o, [&](Channel, std::string_view piece) {
      out.text += piece;
      return true;
    });
    EXPECT_TRUE(stats.ok()) << (stats.ok() ? "" : stats.message());
    if (stats.ok()) out.stats = *stats;
    return out;
  }

  static inline Model* model_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline std::string error_;
};

GenerateOptions greedy(int n) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.n_predict = n;
  return o;
}

TEST_F(SessionTest, StopStringEndsGenerationAndIsNotEmitted) {
  Session session(*model_, *tokenizer_, kCtx);
  // Greedy, llama.cpp continues with " Paris.\n\nThe United States ..." (tests/data/llamacpp).
  GenerateOptions o = greedy(32);
  o.stop = {"\n\n"};
  const Output out = generate(session, "The capital of France is", o);
  EXPECT_EQ(out.text, " Paris.");
  EXPECT_EQ(out.stats.stop_reason, "stop");
  EXPECT_LT(out.stats.n_generated, 32);
}

TEST_F(SessionTest, LengthLimitAndCacheReuse) {
  Session session(*model_, *tokenizer_, kCtx);
  const Output first = generate(session, "Once upon a time,", greedy(8));
  EXPECT_EQ(first.stats.n_generated, 8);
  EXPECT_EQ(first.stats.stop_reason, "length");
  const int n_prompt = static_cast<int>(session.tokenize_prompt("Once upon a time,").size());
  EXPECT_EQ(first.stats.n_prompt, n_prompt);
  // Same prompt again: all but the last prompt token come from the cache, same greedy text.
  const Output second = generate(session, "Once upon a time,", greedy(8));
  EXPECT_EQ(second.stats.n_cached, n_prompt - 1);
  EXPECT_EQ(second.stats.n_prompt, 1);
  EXPECT_EQ(second.text, first.text);
}

TEST_F(SessionTest, SeedReproducesSampling) {
  GenerateOptions o;
  o.n_predict = 24;
  o.sampling.temperature = 1.0f;
  o.sampling.top_k = 0;
  o.sampling.top_p = 1.0f;
  o.sampling.min_p = 0.0f;
  auto run = [&](uint64_t seed) {
    Session session(*model_, *tokenizer_, kCtx);
    o.sampling.seed = seed;
    return generate(session, "My favourite animal is", o).text;
  };
  const std::string a = run(7);
  EXPECT_EQ(a, run(7));
  EXPECT_NE(a, run(8));  // 24 tokens at temperature 1: equal only by a vanishing chance
}

TEST_F(SessionTest, OverLongPromptIsAClearError) {
  Session session(*model_, *tokenizer_, 8);
  auto stats = session.generate("one two three four five six seven eight nine ten", greedy(4),
                                [](Channel, std::string_view) { return true; });
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.message().find("context"), std::string::npos) << stats.message();
}

TEST_F(SessionTest, CallbackCanStop) {
  Session session(*model_, *tokenizer_, kCtx);
  int calls = 0;
  auto stats = session.generate("The capital of France is", greedy(32),
                                [&](Channel, std::string_view) { return ++calls < 2; });
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(stats->stop_reason, "callback");
}

}  // namespace
}  // namespace sputnik
