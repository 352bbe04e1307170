// Llama / Qwen2 (models/llama.cpp) against Hugging Face transformers' logits on tiny random
// checkpoints (tools/gen_dense_fixtures.py), the same checkpoints converted to GGUF here (q/k
// rows permuted as llama.cpp's converter does, llama3 scaling as rope_freqs), differential tests
// (cached decode vs full forward, batched vs alone), error paths, and the demo model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "kernels/kernels.h"
#include "models/llama.h"
#include "models/model.h"
#include "models/weights.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {
namespace {

const std::string kDense = std::string(SPUTNIK_TEST_DATA) + "/dense/";

struct Reference {
  std::vector<int32_t> tokens;
  int64_t n_prefill = 0;
  int64_t vocab = 0;
  std::vector<float> logits;  // [tokens, vocab]
  float scale = 0;            // max |logit|
};

Reference read_reference(const std::string& name) {
  Reference r;
  auto json = read_json_file(kDense + name + "/reference.json");
  EXPECT_TRUE(json.ok()) << (json.ok() ? "" : json.message());
  if (!json.ok()) return r;
  r.tokens = (*json)["tokens"].get<std::vector<int32_t>>();
  r.n_prefill = (*json)["n_prefill"].get<int64_t>();
  r.vocab = (*json)["vocab_size"].get<int64_t>();
  r.logits.resize(r.tokens.size() * r.vocab);
  std::ifstream in(kDense + name + "/reference_logits.f32", std::ios::binary);
  in.read(reinterpret_cast<char*>(r.logits.data()), static_cast<std::streamsize>(r.logits.size() * 4));
  EXPECT_TRUE(in.good());
  for (float v : r.logits) r.scale = std::max(r.scale, std::fabs(v));
  return r;
}

// F32 cache: the comparisons with transformers are exact up to summation order.
LoadOptions small_options(int n_seq_max = 1, int64_t n_ctx = 64, DType kv_type = DType::F32) {
  LoadOptions o;
  o.n_threads = 2;
  o.n_ctx = n_ctx;
  o.n_seq_max = n_seq_max;
  o.kv_type = kv_type;
  return o;
}

std::unique_ptr<Model> load_dense(const std::string& name, const LoadOptions& options) {
  auto loaded = load_model(kDense + name, options);
  EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : loaded.message());
  if (!loaded.ok()) return nullptr;
  EXPECT_EQ(loaded->tokenizer, nullptr);  // no tokenizer.json in the fixtures
  return std::move(loaded->model);
}

std::vector<BatchToken> sequence_batch(std::span<const int32_t> tokens, int32_t start_pos,
                                       int32_t seq = 0, bool want_logits = true) {
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.push_back({tokens[i], start_pos + static_cast<int32_t>(i), seq, want_logits});
  }
  return batch;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// Prefill n_prefill tokens, then decode the rest one by one; all logits, [tokens, vocab].
std::vector<float> prefill_then_decode(Model& model, const Reference& ref) {
  std::vector<float> logits(ref.logits.size());
  auto prefill = sequence_batch(std::span(ref.tokens).first(ref.n_prefill), 0);
  Status st = model.forward(prefill, logits.data());
  EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.message());
  for (size_t t = ref.n_prefill; t < ref.tokens.size(); ++t) {
    BatchToken step{ref.tokens[t], static_cast<int32_t>(t), 0, true};
    st = model.forward({&step, 1}, logits.data() + t * ref.vocab);
    EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.message());
  }
  return logits;
}

// Tolerance against transformers' f32 forward: 1e-4 of the logit scale (f32 cache).
void expect_matches_reference(Model& model, const std::string& name, float tolerance = 1e-4f) {
  const Reference ref = read_reference(name);
  ASSERT_GT(ref.scale, 1.0f) << "fixture logits too small to test anything";
  ASSERT_EQ(model.info().vocab_size, ref.vocab);
  const std::vector<float> logits = prefill_then_decode(model, ref);
  const float diff = max_abs_diff(logits.data(), ref.logits.data(), logits.size());
  std::printf("%s: max |logit - transformers| = %.3g (logit scale %.3g)\n", name.c_str(), diff,
              ref.scale);
  EXPECT_LE(diff, tolerance * ref.scale);
  EXPECT_EQ(model.sequence_length(0), static_cast<int32_t>(ref.tokens.size()));
}

TEST(LlamaModel, HfLlamaMatchesTransformers) {
  auto model = load_dense("llama", small_options());
  ASSERT_NE(model, nullptr);
  const ModelInfo& info = model->info();
  EXPECT_EQ(info.architecture, "llama");
  EXPECT_EQ(info.n_layers, 2);
  EXPECT_EQ(info.hidden_size, 64);
  EXPECT_EQ(info.n_ctx_train, 128);
  // 2 layers x (K + V) x 2 kv heads x 16 x f32
  EXPECT_EQ(info.kv_cache_bytes_per_token, 2u * 2 * 2 * 16 * 4);
  EXPECT_GT(info.weight_bytes, 0u);
  expect_matches_reference(*model, "llama");
}

TEST(LlamaModel, HfQwen2MatchesTransformers) {
  auto model = load_dense("qwen2", small_options());
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->info().architecture, "qwen2");
  expect_matches_reference(*model, "qwen2");
}

// The f16 cache (the default, as llama.cpp's) rounds q, k, v and the attention weights to 11
// significant bits: relative errors ~5e-4 each, so allow 1e-2 of the logit scale.
TEST(LlamaModel, F16CacheStaysCloseToTransformers) {
  for (const std::string name : {"llama", "qwen2"}) {
    auto model = load_dense(name, small_options(1, 64, DType::F16));
    ASSERT_NE(model, nullptr);
    EXPECT_EQ(model->info().kv_cache_bytes_per_token, name == "llama" ? 2u * 2 * 2 * 16 * 2 : 2u * 2 * 1 * 16 * 2);
    expect_matches_reference(*model, name, 1e-2f);
  }
}

TEST(LlamaModel, Llama3RopeFrequencies) {
  // transformers' inv_freq for the fixture (rope_theta 1e4, head 16, factor 4, low 1, high 4,
  // original 32): band i=0 kept, i=1 blended, the rest divided by 4.
  Llama3RopeScaling s{4.0, 1.0, 4.0, 32};
  const std::vector<float> f = llama_inv_freq(10000.0, 16, &s);
  const float expected[] = {1.0f, 1.2732e-01f, 2.5e-02f, 7.9057e-03f, 2.5e-03f, 7.9057e-04f,
                            2.5e-04f, 7.9057e-05f};
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(f[i], expected[i], 1e-4 * expected[i]) << i;
}

// Named activations: each decoder layer's output ("l_out") against transformers' (forward hooks).
TEST(LlamaModel, LayerOutputsMatchTransformers) {
  for (const std::string name : {"llama", "qwen2"}) {
    const Reference ref = read_reference(name);
    auto model = load_dense(name, small_options());
    ASSERT_NE(model, nullptr);
    const int64_t T = static_cast<int64_t>(ref.tokens.size()), dim = model->info().hidden_size;
    const int64_t n_layers = model->info().n_layers;
    std::vector<float> expected(static_cast<size_t>(n_layers * T * dim));
    std::ifstream in(kDense + name + "/reference_l_out.f32", std::ios::binary);
    in.read(reinterpret_cast<char*>(expected.data()), static_cast<std::streamsize>(expected.size() * 4));
    ASSERT_TRUE(in.good());
    std::vector<float> got(expected.size());
    std::vector<std::string> names;
    ASSERT_TRUE(set_llama_tap(*model, [&](const std::string& n, int64_t layer, const float* data,
                                          int64_t rows, int64_t cols) {
      if (layer <= 0) names.push_back(n);
      if (n != "l_out") return;
      ASSERT_EQ(rows, T);
      ASSERT_EQ(cols, dim);
      std::copy(data, data + rows * cols, got.begin() + layer * T * dim);
    }));
    std::vector<float> logits(ref.logits.size());
    ASSERT_TRUE(model->forward(sequence_batch(ref.tokens, 0), logits.data()).ok());
    float scale = 0;
    for (float v : expected) scale = std::max(scale, std::fabs(v));
    const float diff = max_abs_diff(got.data(), expected.data(), got.size());
    std::printf("%s: max |l_out - transformers| = %.3g (scale %.3g)\n", name.c_str(), diff, scale);
    EXPECT_LE(diff, 1e-4f * scale);
    const std::vector<std::string> order = {"inp_tokens", "inp_embd", "attn_norm", "Qcur", "Kcur", "Vcur",
                                            "kqv_out",
                                            "attn_out", "ffn_inp", "ffn_norm", "ffn_out", "l_out"};
    ASSERT_GE(names.size(), order.size());
    EXPECT_TRUE(std::equal(order.begin(), order.end(), names.begin()));
    EXPECT_EQ(names.back(), "result_norm");
  }
}

// --- The fixtures as GGUF ----------------------------------------------------------------------

// llama.cpp's convert_hf_to_gguf.py permutes llama q/k rows from HF's rotate-half order to
// interleaved pairs: within each head, row s*hd/2 + j moves to 2j + s.
std::vector<float> permute_rows_for_interleaved_rope(const TensorView& w, int64_t n_heads) {
  const int64_t rows = w.rows(), cols = w.cols(), hd = rows / n_heads;
  const float* src = static_cast<const float*>(w.data);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t s = 0; s < 2; ++s) {
      for (int64_t j = 0; j < hd / 2; ++j) {
        const float* from = src + (h * hd + s * hd / 2 + j) * cols;
        std::copy(from, from + cols, out.begin() + (h * hd + 2 * j + s) * cols);
      }
    }
  }
  return out;
}

// Writes the HF fixture `name` as a llama.cpp-style GGUF (no tokenizer) and returns its path.
std::string write_gguf_fixture(const std::string& name) {
  auto source = WeightSource::open(kDense + name);
  EXPECT_TRUE(source.ok());
  const SafetensorsCheckpoint& st = *(*source)->safetensors();
  const nlohmann::json& c = st.config();
  const bool llama = name == "llama";
  const std::string arch = llama ? "llama" : "qwen2";
  const int64_t n_heads = c["num_attention_heads"], n_kv_heads = c["num_key_value_heads"];
  const int64_t dim = c["hidden_size"], n_layers = c["num_hidden_layers"];
  GgufWriter w;
  w.add_string("general.architecture", arch);
  w.add_uint32(arch + ".embedding_length", static_cast<uint32_t>(dim));
  w.add_uint32(arch + ".block_count", static_cast<uint32_t>(n_layers));
  w.add_uint32(arch + ".feed_forward_length", c["intermediate_size"].get<uint32_t>());
  w.add_uint32(arch + ".context_length", c["max_position_embeddings"].get<uint32_t>());
  w.add_uint32(arch + ".attention.head_count", static_cast<uint32_t>(n_heads));
  w.add_uint32(arch + ".attention.head_count_kv", static_cast<uint32_t>(n_kv_heads));
  w.add_float32(arch + ".attention.layer_norm_rms_epsilon", c["rms_norm_eps"].get<float>());
  w.add_uint32(arch + ".rope.dimension_count", static_cast<uint32_t>(dim / n_heads));
  const double theta = llama ? c["rope_theta"].get<double>() : c["rope_parameters"]["rope_theta"].get<double>();
  w.add_float32(arch + ".rope.freq_base", static_cast<float>(theta));

  auto keep = std::make_shared<std::vector<std::vector<float>>>();
  auto add = [&](const std::string& gguf_name, const std::string& hf_name, int64_t permute_heads) {
    auto t = st.tensor(hf_name);
    ASSERT_TRUE(t.ok()) << hf_name;
    std::vector<int64_t> shape(t->shape.begin(), t->shape.begin() + t->n_dims);
    if (permute_heads > 0) {
      std::vector<float> p = permute_rows_for_interleaved_rope(*t, permute_heads);
      std::vector<uint8_t> bytes(p.size() * 4);
      std::memcpy(bytes.data(), p.data(), bytes.size());
      w.add_tensor(gguf_name, DType::F32, shape, std::move(bytes));
    } else {
      w.add_tensor(gguf_name, t->dtype, shape, t->data, t->bytes());
    }
  };
  add("token_embd.weight", "model.embed_tokens.weight", 0);
  add("output_norm.weight", "model.norm.weight", 0);
  if (!llama) add("output.weight", "lm_head.weight", 0);
  if (llama) {  // llama3 scaling as llama.cpp stores it: per-pair divisors of the frequencies
    const auto& rs = c["rope_scaling"];
    Llama3RopeScaling s{rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"],
                        rs["original_max_position_embeddings"]};
    const int64_t hd = dim / n_heads;
    const auto base = llama_inv_freq(theta, hd, nullptr), scaled = llama_inv_freq(theta, hd, &s);
    std::vector<uint8_t> bytes(base.size() * 4);
    for (size_t i = 0; i < base.size(); ++i) {
      const float f = base[i] / scaled[i];
      std::memcpy(bytes.data() + 4 * i, &f, 4);
    }
    w.add_tensor("rope_freqs.weight", DType::F32, {hd / 2}, std::move(bytes));
  }
  for (int64_t i = 0; i < n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", h + "input_layernorm.weight", 0);
    add(b + "attn_q.weight", h + "self_attn.q_proj.weight", llama ? n_heads : 0);
    add(b + "attn_k.weight", h + "self_attn.k_proj.weight", llama ? n_kv_heads : 0);
    add(b + "attn_v.weight", h + "self_attn.v_proj.weight", 0);
    add(b + "attn_output.weight", h + "self_attn.o_proj.weight", 0);
    if (!llama) {
      add(b + "attn_q.bias", h + "self_attn.q_proj.bias", 0);
      add(b + "attn_k.bias", h + "self_attn.k_proj.bias", 0);
      add(b + "attn_v.bias", h + "self_attn.v_proj.bias", 0);
    }
    add(b + "ffn_norm.weight", h + "post_attention_layernorm.weight", 0);
    add(b + "ffn_gate.weight", h + "mlp.gate_proj.weight", 0);
    add(b + "ffn_up.weight", h + "mlp.up_proj.weight", 0);
    add(b + "ffn_down.weight", h + "mlp.down_proj.weight", 0);
  }
  const std::string path = ::testing::TempDir() + "/sputnik_dense_" + name + "_" +
                           std::to_string(::getpid()) + ".gguf";
  Status written = w.write(path);
  EXPECT_TRUE(written.ok()) << (written.ok() ? "" : written.message());
  return path;
}

// GGUF files here carry no tokenizer, so go straight to the family loader.
std::unique_ptr<Model> load_llama_gguf(const std::string& path, const std::string& arch) {
  auto weights = WeightSource::open(path);
  EXPECT_TRUE(weights.ok()) << (weights.ok() ? "" : weights.message());
  if (!weights.ok()) return nullptr;
  ModelSource source;
  source.weights = *weights;
  source.architecture = arch;
  source.options = small_options();
  auto model = load_llama(source);
  EXPECT_TRUE(model.ok()) << (model.ok() ? "" : model.message());
  return model.ok() ? std::move(*model) : nullptr;
}

TEST(LlamaModel, GgufLlamaInterleavedRopeMatchesTransformers) {
  const std::string path = write_gguf_fixture("llama");
  auto model = load_llama_gguf(path, "llama");
  ASSERT_NE(model, nullptr);
  expect_matches_reference(*model, "llama");
  model.reset();
  std::filesystem::remove(path);
}

TEST(LlamaModel, GgufQwen2MatchesTransformers) {
  const std::string path = write_gguf_fixture("qwen2");
  auto model = load_llama_gguf(path, "qwen2");
  ASSERT_NE(model, nullptr);
  expect_matches_reference(*model, "qwen2");
  model.reset();
  std::filesystem::remove(path);
}

// --- Differential --------------------------------------------------------------------------------

TEST(LlamaModel, CachedDecodeEqualsFullForward) {
  for (const std::string name : {"llama", "qwen2", "llama-f16"}) {
    const bool f16 = name == "llama-f16";
    const Reference ref = read_reference(f16 ? "llama" : name);
    auto model = load_dense(f16 ? "llama" : name, small_options(1, 64, f16 ? DType::F16 : DType::F32));
    ASSERT_NE(model, nullptr);
    const std::vector<float> stepped = prefill_then_decode(*model, ref);
    model->truncate_sequence(0, 0);
    EXPECT_EQ(model->sequence_length(0), 0);
    std::vector<float> full(ref.logits.size());
    ASSERT_TRUE(model->forward(sequence_batch(ref.tokens, 0), full.data()).ok());
    const float diff = max_abs_diff(stepped.data(), full.data(), full.size());
    std::printf("%s: max |cached decode - full forward| = %.3g\n", name.c_str(), diff);
    EXPECT_LE(diff, 1e-5f * ref.scale);
    // Truncate to the middle and redo the tail: the same logits again.
    model->truncate_sequence(0, 10);
    EXPECT_EQ(model->sequence_length(0), 10);
    std::vector<float> tail((ref.tokens.size() - 10) * ref.vocab);
    ASSERT_TRUE(model->forward(sequence_batch(std::span(ref.tokens).subspan(10), 10), tail.data()).ok());
    EXPECT_LE(max_abs_diff(tail.data(), full.data() + 10 * ref.vocab, tail.size()), 1e-5f * ref.scale);
  }
}

// A batch longer than the internal chunk (256 tokens) gives what smaller batches give.
TEST(LlamaModel, LongBatchEqualsPieces) {
  const int32_t n = 300, V = 256;
  std::vector<int32_t> tokens(n);
  for (int32_t i = 0; i < n; ++i) tokens[i] = (i * 37 + 11) % V;
  auto whole = load_dense("llama", small_options(1, 512, DType::F16));
  auto pieces = load_dense("llama", small_options(1, 512, DType::F16));
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(pieces, nullptr);
  std::vector<float> a(static_cast<size_t>(n) * V), b(static_cast<size_t>(n) * V);
  ASSERT_TRUE(whole->forward(sequence_batch(tokens, 0), a.data()).ok());
  for (int32_t start = 0; start < n; start += 100) {
    const int32_t len = std::min(100, n - start);
    ASSERT_TRUE(pieces->forward(sequence_batch(std::span(tokens).subspan(start, len), start),
                                b.data() + static_cast<size_t>(start) * V).ok());
  }
  // Equal up to summation order, should a kernel tile tokens differently for other batch sizes.
  EXPECT_LE(max_abs_diff(a.data(), b.data(), a.size()), 1e-4f);
  EXPECT_EQ(whole->sequence_length(0), n);
}

// With the f16 cache (the default), whose extra rounding must not depend on the batch either.
TEST(LlamaModel, BatchOfThreeSequencesEqualsEachAlone) {
  const Reference ref = read_reference("qwen2");
  const int64_t V = ref.vocab;
  // Three different prompts cut from the reference tokens (reversed / shifted to differ).
  std::vector<std::vector<int32_t>> prompts(3);
  for (size_t i = 0; i < ref.tokens.size(); ++i) {
    prompts[0].push_back(ref.tokens[i]);
    prompts[1].push_back(ref.tokens[ref.tokens.size() - 1 - i]);
    prompts[2].push_back((ref.tokens[i] * 7 + 3) % static_cast<int32_t>(V));
  }
  const int32_t first[3] = {5, 11, 2};  // tokens each sequence prefills alone first
  const int32_t second[3] = {1, 6, 1};  // then one mixed batch: decode, prefill chunk, decode

  auto batched = load_dense("qwen2", small_options(3, 64, DType::F16));
  ASSERT_NE(batched, nullptr);
  for (int32_t s = 0; s < 3; ++s) {
    std::vector<float> scratch(first[s] * V);
    ASSERT_TRUE(batched->forward(sequence_batch(std::span(prompts[s]).first(first[s]), 0, s), scratch.data()).ok());
  }
  // Interleave the three sequences' tokens in one batch; only the last token of each wants logits.
  std::vector<BatchToken> mixed;
  for (int32_t k = 0; k < 6; ++k) {
    for (int32_t s = 0; s < 3; ++s) {
      if (k < second[s]) mixed.push_back({prompts[s][first[s] + k], first[s] + k, s, k == second[s] - 1});
    }
  }
  std::vector<float> mixed_logits(3 * V);
  Status st = batched->forward(mixed, mixed_logits.data());
  ASSERT_TRUE(st.ok()) << st.message();
  // Rows come out in batch order: the order in which each sequence's last token appears.
  std::vector<int32_t> row_seq;
  for (const BatchToken& b : mixed) if (b.want_logits) row_seq.push_back(b.seq);

  for (int32_t s = 0; s < 3; ++s) {
    EXPECT_EQ(batched->sequence_length(s), first[s] + second[s]);
    auto alone = load_dense("qwen2", small_options(1, 64, DType::F16));
    ASSERT_NE(alone, nullptr);
    const int32_t n = first[s] + second[s];
    std::vector<float> logits(n * V);
    ASSERT_TRUE(alone->forward(sequence_batch(std::span(prompts[s]).first(n), 0), logits.data()).ok());
    const size_t row = std::find(row_seq.begin(), row_seq.end(), s) - row_seq.begin();
    const float diff = max_abs_diff(mixed_logits.data() + row * V, logits.data() + (n - 1) * V, V);
    std::printf("sequence %d: max |batched - alone| = %.3g\n", s, diff);
    EXPECT_LE(diff, 1e-5f * ref.scale);
  }
}

// --- Errors ---------------------------------------------------------------------------------------

TEST(LlamaModel, BadBatchesAreErrorsAndLeaveTheCacheAlone) {
  auto model = load_dense("llama", small_options(2, 8));
  ASSERT_NE(model, nullptr);
  std::vector<float> logits(16 * 256);
  auto expect_error = [&](std::vector<BatchToken> batch, const std::string& needle) {
    Status st = model->forward(batch, logits.data());
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  expect_error({{256, 0, 0, true}}, "token id 256 is out of range [0, 256)");
  expect_error({{-1, 0, 0, true}}, "token id -1");
  expect_error({{1, 0, 2, true}}, "sequence 2 is out of range");
  expect_error({{1, 1, 0, true}}, "does not continue its cache (next position is 0)");
  expect_error({{1, 0, 0, true}, {1, 2, 0, true}}, "position 2 of sequence 0");
  std::vector<BatchToken> long_prompt;
  for (int32_t i = 0; i < 9; ++i) long_prompt.push_back({1, i, 1, false});
  expect_error(long_prompt, "prompt of 9 tokens exceeds the context of 8");
  EXPECT_EQ(model->sequence_length(0), 0);
  EXPECT_EQ(model->sequence_length(1), 0);
  // A valid batch still works afterwards, and fills the context exactly.
  long_prompt.pop_back();
  ASSERT_TRUE(model->forward(long_prompt, logits.data()).ok());
  EXPECT_EQ(model->sequence_length(1), 8);
  expect_error({{1, 8, 1, true}}, "prompt of 9 tokens exceeds the context of 8");
}

TEST(LlamaModel, CheckpointErrorsNameTheTensorOrField) {
  const std::string dir = ::testing::TempDir() + "/sputnik_dense_bad_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kDense + "llama/model.safetensors", dir + "/model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  auto config = read_json_file(kDense + "llama/config.json");
  ASSERT_TRUE(config.ok());
  auto try_config = [&](const nlohmann::json& c) {
    std::ofstream(dir + "/config.json") << c.dump();
    auto loaded = load_model(dir, small_options());
    EXPECT_FALSE(loaded.ok());
    return loaded.ok() ? std::string() : loaded.message();
  };
  nlohmann::json c = *config;
  c["num_hidden_layers"] = 3;
  EXPECT_NE(try_config(c).find("model.layers.2.input_layernorm.weight"), std::string::npos);
  c = *config;
  c["intermediate_size"] = 128;
  const std::string shape_error = try_config(c);
  EXPECT_NE(shape_error.find("mlp.gate_proj.weight"), std::string::npos) << shape_error;
  EXPECT_NE(shape_error.find("[128, 64]"), std::string::npos) << shape_error;
  c = *config;
  c["tie_word_embeddings"] = false;
  EXPECT_NE(try_config(c).find("lm_head.weight"), std::string::npos);
  c = *config;
  c["architectures"] = {"MistralForCausalLM"};
  EXPECT_NE(try_config(c).find("architecture 'MistralForCausalLM' is not supported"), std::string::npos);
  c = *config;
  c.erase("hidden_size");
  EXPECT_NE(try_config(c).find("'hidden_size' is missing"), std::string::npos);
  c = *config;
  c["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_NE(try_config(c).find("rope type 'yarn' is not supported"), std::string::npos);
  std::filesystem::remove_all(dir);
}

// --- The demo model (SmolLM2-135M-Instruct, Q4_1 GGUF) --------------------------------------------

TEST(LlamaModel, DemoModelSaysParis) {
  const char* path = std::getenv("SPUTNIK_DEMO_MODEL");
  ASSERT_NE(path, nullptr) << "SPUTNIK_DEMO_MODEL is not set (tools/test.sh sets it; "
                              "tools/fetch_demo_model.sh prints the path)";
  LoadOptions options = small_options(1, 256, LoadOptions().kv_type);
  auto loaded = load_model(path, options);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  Model& model = *loaded->model;
  const ModelInfo& info = model.info();
  EXPECT_EQ(info.architecture, "llama");
  EXPECT_EQ(info.n_layers, 30);
  EXPECT_EQ(info.vocab_size, 49152);
  EXPECT_EQ(info.kv_cache_bytes_per_token, 30u * 2 * 3 * 64 * 2);  // f16 cache by default
  EXPECT_NE(info.chat_template.find("<|im_start|>"), std::string::npos);
  EXPECT_GT(info.active_weight_bytes_per_token, 50u << 20);
  ASSERT_NE(loaded->tokenizer, nullptr);
  const Tokenizer& tok = *loaded->tokenizer;
  std::vector<int32_t> ids;
  if (tok.add_bos() && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  for (int32_t id : tok.encode("The capital of France is")) ids.push_back(id);
  std::vector<BatchToken> batch = sequence_batch(ids, 0, 0, false);
  batch.back().want_logits = true;
  std::vector<float> logits(info.vocab_size);
  Status st = model.forward(batch, logits.data());
  ASSERT_TRUE(st.ok()) << st.message();
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  EXPECT_EQ(tok.decode(std::span(&next, 1)), " Paris");
}

// Peak resident memory of this process (VmHWM; ctest runs each test in its own process).
size_t peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Issue 4's memory target: the peak over loading and a 256-token prompt stays near the weights
// plus the KV cache (measured 1.104 with this dynamically linked test binary's code, 1.115 with
// 64-token chunks; it was 1.30 when the GGUF tokenizer arrays stayed parsed, the tokenizer used
// node maps and prefill ran 256-token chunks). cli_bench_memory checks the static binary.
TEST(LlamaModel, DemoModelPeakMemoryStaysNearWeightsAndCache) {
  const char* path = std::getenv("SPUTNIK_DEMO_MODEL");
  ASSERT_NE(path, nullptr) << "SPUTNIK_DEMO_MODEL is not set (tools/test.sh sets it)";
  const int32_t n_prompt = 256;
  auto loaded = load_model(path, small_options(1, n_prompt + 1, LoadOptions().kv_type));
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  Model& model = *loaded->model;
  const ModelInfo& info = model.info();
  std::vector<int32_t> tokens(n_prompt);
  for (int32_t i = 0; i < n_prompt; ++i) tokens[i] = (i * 7919 + 13) % static_cast<int32_t>(info.vocab_size);
  std::vector<BatchToken> batch = sequence_batch(tokens, 0, 0, false);
  batch.back().want_logits = true;
  std::vector<float> logits(info.vocab_size);
  ASSERT_TRUE(model.forward(batch, logits.data()).ok());
  const double needed = static_cast<double>(info.weight_bytes) +
                        static_cast<double>(info.kv_cache_bytes_per_token) * (n_prompt + 1);
  const double ratio = static_cast<double>(peak_resident_bytes()) / needed;
  EXPECT_GT(ratio, 0.5);  // the weights are read: a broken measurement would read near 0
  EXPECT_LE(ratio, 1.13) << "peak resident " << peak_resident_bytes() / 1048576.0 << " MiB";
  std::printf("peak resident / (weights + KV cache) = %.3f\n", ratio);
}

}  // namespace
}  // namespace sputnik
