// sputnik against llama.cpp on the demo model (SmolLM2-135M-Instruct Q4_1): prompt token ids,
// top-1 token at every prompt position, a 64-token greedy continuation and the perplexity on a
// fixed text. Goldens: tools/gen_llamacpp_goldens.py (llama-cpp-python 0.3.36).
// Needs SPUTNIK_DEMO_MODEL (tools/test.sh sets it); without it every test fails.
//
// On AVX-512 (this machine and CI) and AVX2 sputnik computes every op of the forward pass in
// the order of llama.cpp's AVX-512 build, so its activations are llama.cpp's bit for bit through
// all 30 layers (checked op by op with tools/compare_llamacpp_tensors.py): Q8_1 activations with
// fp16 d and s, Q4_1 x Q8_1 in ggml_vec_dot_q4_1_q8_1's lanes and reduction, rms_norm summed in
// f64, rope angles by repeated f32 products with fused rotations, the f16 attention products in
// vec_dot / tinyBLAS order (kernels.h attention_*_f16), softmax and SiLU with ggml's vector expf
// (emulated on AVX2). There the test demands what issue 2 asks: the top-1 token at every prompt
// position and all 64 greedy tokens of every prompt equal to llama.cpp's, and logits equal up to
// the output head's summation order (the head may take another kernel than llama.cpp's, e.g. the
// interleaved Q8_0 layout, which only moves the last bits of the logits: 1e-5 measured).
//
// The scalar set keeps f32 activations (no ggml activation rounding), so for it the tolerances
// come from llama.cpp itself: llama.cpp run with an f32 instead of its default f16 KV cache moves
// its own logits by up to ~2, changes its top-1 token at one of 93 prompt positions, and moves its
// greedy continuations apart after 5-12 tokens on three of the five prompts (meta.f32_kv_* and
// f32_kv_continuation_agreement in the goldens). sputnik must agree with llama.cpp at least as
// well as llama.cpp agrees with itself under that change. (Its largest logit difference, 2.57,
// exceeds llama.cpp's 2.16 and did before these changes too: that check fails on scalar.)
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/threads.h"
#include "kernels/kernels.h"
#include "models/model.h"
#include "runtime/generate.h"
#include "runtime/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

int32_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

// True where sputnik reproduces llama.cpp's arithmetic bit for bit (see the top of the file).
bool ggml_exact() { return kernel_isa() == "avx512" || kernel_isa() == "avx2"; }

// Largest |logit difference| allowed where ggml_exact(): the output head's rounding only.
constexpr double kExactLogitTolerance = 1e-3;

class LlamaCppGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("SPUTNIK_DEMO_MODEL");
    if (path == nullptr || *path == '\0') {
      load_error_ = "SPUTNIK_DEMO_MODEL is not set (tools/test.sh sets it: tools/fetch_demo_model.sh)";
      return;
    }
    LoadOptions options;
    options.n_ctx = 1024;
    options.n_threads = hardware_threads();
    auto loaded = load_model(path, options);
    if (!loaded) {
      load_error_ = loaded.message();
      return;
    }
    model_ = std::move(loaded->model).release();
    tokenizer_ = std::move(loaded->tokenizer).release();
    goldens_ = new nlohmann::json(read_json(std::string(SPUTNIK_TEST_DATA) + "/llamacpp/prompts.json"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete goldens_;
    model_ = nullptr;
    tokenizer_ = nullptr;
    goldens_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(model_ != nullptr) << load_error_; }

  static std::vector<int32_t> encode(const std::string& text) {
    std::vector<int32_t> ids = tokenizer_->encode(text, /*parse_special=*/true);
    if (tokenizer_->add_bos()) ids.insert(ids.begin(), tokenizer_->bos_id());
    return ids;
  }

  // Logits at every position of `ids`, from an empty cache in one batch.
  static std::vector<float> all_logits(const std::vector<int32_t>& ids) {
    model_->truncate_sequence(0, 0);
    std::vector<BatchToken> batch;
    for (size_t i = 0; i < ids.size(); ++i) batch.push_back({ids[i], static_cast<int32_t>(i), 0, true});
    std::vector<float> logits(ids.size() * model_->info().vocab_size);
    auto status = model_->forward(batch, logits.data());
    EXPECT_TRUE(status.ok()) << status.message();
    return logits;
  }

  static inline Model* model_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline nlohmann::json* goldens_ = nullptr;
  static inline std::string load_error_;
};

TEST_F(LlamaCppGolden, PromptTokenIds) {
  for (const auto& p : (*goldens_)["prompts"]) {
    const std::string text = p["prompt"];
    EXPECT_EQ(encode(text), p["ids"].get<std::vector<int32_t>>()) << text;
  }
}

TEST_F(LlamaCppGolden, TopOneAndLogitsAtEveryPromptPosition) {
  const int64_t vocab = model_->info().vocab_size;
  const auto& meta = (*goldens_)["meta"];
  const double self_max = meta["f32_kv_max_logit_diff"];
  const double self_mean = meta["f32_kv_mean_position_max_logit_diff"];
  const int self_flips = meta["f32_kv_top1_flips"];
  int flips = 0;
  double max_diff = 0, sum_of_maxima = 0;
  int positions = 0;
  for (const auto& p : (*goldens_)["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const std::vector<float> logits = all_logits(ids);
    double prompt_max = 0, sum = 0;
    int n = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      double position_max = 0;
      const auto& g = p["positions"][i];
      const float* row = logits.data() + i * vocab;
      const int32_t top1 = argmax(row, vocab);
      if (top1 != g["top1"].get<int32_t>()) {
        ++flips;
        std::printf("  top-1 differs: %s position %zu: %d, llama.cpp %d (its margin %.4f)\n",
                    p["prompt"].dump().c_str(), i, top1, g["top1"].get<int32_t>(),
                    g["margin"].get<double>());
        // Only a near-tie may flip: llama.cpp's own margin within its self-noise.
        EXPECT_LT(g["margin"].get<double>(), self_max) << p["prompt"] << " position " << i;
      }
      const auto top_ids = g["top_ids"].get<std::vector<int32_t>>();
      const auto top_logits = g["top_logits"].get<std::vector<float>>();
      for (size_t k = 0; k < top_ids.size(); ++k) {
        const double d = std::fabs(double(row[top_ids[k]]) - top_logits[k]);
        prompt_max = std::max(prompt_max, d);
        position_max = std::max(position_max, d);
        sum += d;
        ++n;
      }
      sum_of_maxima += position_max;
      ++positions;
    }
    std::printf("  %-40.40s %3zu positions: max |logit diff| %.4f, mean %.4f\n",
                p["prompt"].dump().c_str(), ids.size(), prompt_max, sum / n);
    max_diff = std::max(max_diff, prompt_max);
  }
  std::printf("top-1 agreement: %d of %d positions (llama.cpp f32 vs f16 KV cache: %d changes)\n",
              positions - flips, positions, self_flips);
  std::printf("largest logit difference from llama.cpp (top-20 logits, %d positions): %.3g, mean "
              "per position %.3g; llama.cpp f32 vs f16 KV cache: %.4f, %.4f\n",
              positions, max_diff, sum_of_maxima / positions, self_max, self_mean);
  if (ggml_exact()) {
    EXPECT_EQ(flips, 0) << kernel_isa();
    EXPECT_LE(max_diff, kExactLogitTolerance) << kernel_isa();
    return;
  }
  // The scalar kernels keep f32 activations (no ggml activation rounding): llama.cpp's self-noise.
  if (matmul_quantizes_activations(DType::Q4_1))
    EXPECT_EQ(flips, 0) << kernel_isa();
  else
    EXPECT_LE(flips, self_flips) << kernel_isa();
  EXPECT_LE(max_diff, self_max);
  EXPECT_LE(sum_of_maxima / positions, 1.1 * self_mean);
}

TEST_F(LlamaCppGolden, GreedyContinuationMatches) {
  const int64_t vocab = model_->info().vocab_size;
  for (const auto& p : (*goldens_)["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const auto expected = p["continuation"].get<std::vector<int32_t>>();
    const auto margins = p["continuation_margins"].get<std::vector<double>>();
    std::vector<float> logits = all_logits(ids);
    std::vector<float> last(logits.end() - vocab, logits.end());
    // Required agreement: where ggml_exact(), all of it; elsewhere as many tokens as llama.cpp
    // keeps with itself when its KV cache goes from f16 to f32, and never past a step where its
    // top-2 margin is under kTieMargin (a tie).
    constexpr double kTieMargin = 0.01;
    size_t required = ggml_exact() ? expected.size() : p["f32_kv_continuation_agreement"].get<size_t>();
    for (size_t i = 0; i < required && !ggml_exact(); ++i) {
      if (margins[i] < kTieMargin) {
        required = i;
        break;
      }
    }
    size_t agreed = 0;
    for (size_t step = 0; step < expected.size(); ++step) {
      const int32_t token = argmax(last.data(), vocab);
      if (token != expected[step]) break;
      ++agreed;
      const BatchToken t{token, static_cast<int32_t>(ids.size() + step), 0, true};
      ASSERT_TRUE(model_->forward(std::span(&t, 1), last.data()).ok());
    }
    std::printf("  %-40.40s greedy: %2zu of %zu tokens as llama.cpp (required %2zu; llama.cpp "
                "with an f32 KV cache: %d)\n",
                p["prompt"].dump().c_str(), agreed, expected.size(), required,
                p["f32_kv_continuation_agreement"].get<int>());
    EXPECT_GE(agreed, required) << p["prompt"] << ": first disagreement at step " << agreed
                                << " (llama.cpp's margin there " << margins[std::min(agreed, margins.size() - 1)] << ")";
  }
}

TEST_F(LlamaCppGolden, SessionGreedyMatchesRawLoop) {
  // The runtime's loop (chunked prefill, sampler, stream decoder) gives the same text as argmax
  // over Model::forward, and the demo model knows its capitals.
  const auto& p = (*goldens_)["prompts"][0];
  const auto ids = p["ids"].get<std::vector<int32_t>>();
  const int64_t vocab = model_->info().vocab_size;
  std::vector<float> logits = all_logits(ids);
  std::vector<float> last(logits.end() - vocab, logits.end());
  std::vector<int32_t> expected;
  for (int step = 0; step < 24; ++step) {
    const int32_t token = argmax(last.data(), vocab);
    if (tokenizer_->is_end_of_generation(token)) break;
    expected.push_back(token);
    const BatchToken t{token, static_cast<int32_t>(ids.size() + step), 0, true};
    ASSERT_TRUE(model_->forward(std::span(&t, 1), last.data()).ok());
  }
  Session session(*model_, *tokenizer_, 1024);
  GenerateOptions options;
  options.sampling.temperature = 0;
  options.n_predict = static_cast<int>(expected.size());
  options.n_batch = 2;  // several prefill chunks
  std::string text;
  auto stats = session.generate(p["prompt"].get<std::string>(), options,
                                [&](Channel, std::string_view piece) {
                                  text += piece;
                                  return true;
                                });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(text, tokenizer_->decode(expected));
  EXPECT_NE(text.find("Paris"), std::string::npos) << text;
}

TEST_F(LlamaCppGolden, PerplexityAsLlamaCpp) {
  const nlohmann::json golden = read_json(std::string(SPUTNIK_TEST_DATA) + "/llamacpp/perplexity.json");
  std::ifstream in(std::string(SPUTNIK_SOURCE_DIR) + "/" + golden["text"].get<std::string>(),
                   std::ios::binary);
  ASSERT_TRUE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  PerplexityOptions options;
  options.n_ctx = golden["n_ctx"];
  auto result = compute_perplexity(*model_, *tokenizer_, buffer.str(), options);
  ASSERT_TRUE(result.ok()) << result.message();
  const double expected = golden["ppl"];
  std::printf("perplexity: sputnik %.4f, llama.cpp %.4f (%+.3f%%), %d chunks of %d\n", result->ppl,
              expected, 100.0 * (result->ppl / expected - 1.0), result->n_chunks, options.n_ctx);
  EXPECT_EQ(result->n_tokens, golden["n_tokens"].get<int>());
  EXPECT_EQ(result->n_scored, golden["n_scored"].get<int>());
  EXPECT_NEAR(result->ppl, expected, (ggml_exact() ? 1e-4 : 0.01) * expected);
}

}  // namespace
}  // namespace sputnik
