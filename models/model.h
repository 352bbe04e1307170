// The interface every architecture family implements (models/llama.cpp for Llama/Qwen2,
// models/deepseek.cpp for DeepSeek-V2/V3/R1). runtime/ drives it; it never sees weights.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"
#include "core/threads.h"

namespace sputnik {

class Tokenizer;

// One token of a batch. A batch mixes prefill chunks and decode steps of several sequences;
// positions of one sequence must continue its cache (pos == tokens already cached for seq).
struct BatchToken {
  int32_t token = 0;
  int32_t pos = 0;
  int32_t seq = 0;
  bool want_logits = false;
};

struct ModelInfo {
  std::string architecture;  // "llama", "qwen2", "deepseek2", "deepseek3"
  std::string name;
  int64_t vocab_size = 0;
  int64_t n_ctx_train = 0;
  int64_t n_layers = 0;
  int64_t hidden_size = 0;
  size_t kv_cache_bytes_per_token = 0;  // all layers, one sequence
  size_t weight_bytes = 0;             // bytes of weights read from the file(s)
  // Bytes of weights read to generate one token (MoE: only active experts). For rooflines.
  size_t active_weight_bytes_per_token = 0;
  std::string chat_template;  // Jinja source from the checkpoint, if any
};

struct LoadOptions {
  int n_threads = 0;        // 0: hardware threads
  int64_t n_ctx = 4096;     // KV cache capacity per sequence
  int n_seq_max = 1;        // sequences the cache holds at once
  bool show_progress = false;
  // Element type of the Llama/Qwen2 K/V cache: F16 (llama.cpp's default: half the memory; the
  // attention then also rounds q and the softmax weights to f16, as ggml's f16 mul_mat does) or
  // F32 (exact; the transformers comparisons use it). DeepSeek's MLA cache is always f32.
  DType kv_type = DType::F16;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelInfo& info() const = 0;
  // Runs the batch; writes vocab_size logits for each token with want_logits, in batch order,
  // to `logits` (which the caller sizes). Errors on a bad position, sequence or token id.
  virtual Status forward(std::span<const BatchToken> batch, float* logits) = 0;
  // Forgets the cached tokens of `seq` from position `from` on.
  virtual void truncate_sequence(int32_t seq, int32_t from) = 0;
  // Tokens cached for seq.
  virtual int32_t sequence_length(int32_t seq) const = 0;
  virtual ThreadPool& thread_pool() = 0;
};

// Opens a GGUF file or a safetensors checkpoint directory and builds the model its
// architecture names. The tokenizer comes from the same source (GGUF metadata, tokenizer.json).
struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};
// A safetensors checkpoint without tokenizer.json loads with a null tokenizer (the tiny
// random-weight test models have none); a GGUF file without tokenizer metadata is an error.
Result<LoadedModel> load_model(const std::string& path, const LoadOptions& options);

// --- For family loaders (models/loader.cpp's table) ----------------------------------------

class WeightSource;

// What load_model hands a family's loader.
struct ModelSource {
  std::shared_ptr<WeightSource> weights;
  std::string architecture;  // GGUF general.architecture, or HF config.json architectures[0]
  LoadOptions options;
  // Filled by load_model (name, weight_bytes, chat_template); the family fills the rest.
  ModelInfo info;
  // Called as layers are loaded when progress is shown (null otherwise).
  void (*progress)(int64_t layers_done, int64_t n_layers) = nullptr;
};
using FamilyLoader = Result<std::unique_ptr<Model>> (*)(const ModelSource& source);

}  // namespace sputnik
