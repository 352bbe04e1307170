// Llama and Qwen2 (see models/llama.h). Reads like HF modeling_llama.py: LlamaAttention,
// LlamaMLP, LlamaDecoderLayer, LlamaModel.forward, each below as one function over a chunk of
// T tokens. Linear layers run as one matmul over all T tokens of the batch (prefill speed);
// attention runs per token against its own sequence's cache.
#include "models/llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numbers>

#include "core/mmap.h"
#include "formats/gguf.h"
#include "formats/json_fields.h"
#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "models/weights.h"

namespace sputnik {

namespace {

static_assert(kLlamaValueBlock == kAttentionValueBlock, "the value cache layout is the kernel's");

// Tokens per internal chunk of a batch: bounds the activations ([T, inter_dim] floats).
constexpr int64_t kLlamaMaxChunk = 256;

// The chunk a model runs: kLlamaMaxChunk, halved (down to 32) while the chunk's activations
// (LlamaRunState's [T, ...] buffers) exceed 1/64 of the weights, so that peak memory stays close
// to weights + KV cache on small models: SmolLM2-135M takes 28 KiB per token against 92 MiB of
// weights, 32 tokens (0.9 MiB); R1-Distill-Qwen-1.5B 111 KiB per token against 954 MiB, 128.
int64_t llama_chunk_tokens(const LlamaConfig& c, size_t weight_bytes) {
  const int64_t floats_per_token = 4 * c.dim + 2 * c.n_heads * c.head_dim +
                                   2 * c.n_kv_heads * c.head_dim + 2 * c.inter_dim + c.rope_dim;
  const auto bytes_per_token = static_cast<size_t>(floats_per_token) * sizeof(float);
  int64_t chunk = kLlamaMaxChunk;
  while (chunk > 32 && static_cast<size_t>(chunk) * bytes_per_token > weight_bytes / 64) chunk /= 2;
  return chunk;
}

// --- Config ------------------------------------------------------------------------------------

Result<LlamaConfig> config_from_gguf(const WeightSource& source, const std::string& arch) {
  const GgufFile& g = *source.gguf();
  LlamaConfig c;
  c.architecture = arch;
  c.family = arch == "qwen2" ? LlamaFamily::Qwen2 : LlamaFamily::Llama;
  const std::string p = arch + ".";
  if (g.has("general.name")) {
    SPUTNIK_ASSIGN_OR_RETURN(c.name, g.get_string("general.name"));
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.dim, g.get_int(p + "embedding_length"));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_layers, g.get_int(p + "block_count"));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_heads, g.get_int(p + "attention.head_count"));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_kv_heads, g.get_int_or(p + "attention.head_count_kv", c.n_heads));
  SPUTNIK_ASSIGN_OR_RETURN(c.inter_dim, g.get_int(p + "feed_forward_length"));
  SPUTNIK_ASSIGN_OR_RETURN(c.max_seq_len, g.get_int(p + "context_length"));
  SPUTNIK_ASSIGN_OR_RETURN(double eps, g.get_float(p + "attention.layer_norm_rms_epsilon"));
  c.norm_eps = static_cast<float>(eps);
  SPUTNIK_ASSIGN_OR_RETURN(c.rope_theta, g.get_float_or(p + "rope.freq_base", 10000.0));
  if (c.n_heads <= 0 || c.dim % c.n_heads != 0) {
    return make_error("{}: {}attention.head_count = {} does not divide embedding_length = {}",
                      source.path(), p, c.n_heads, c.dim);
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.head_dim, g.get_int_or(p + "attention.key_length", c.dim / c.n_heads));
  SPUTNIK_ASSIGN_OR_RETURN(int64_t value_length, g.get_int_or(p + "attention.value_length", c.head_dim));
  if (value_length != c.head_dim) {
    return make_error("{}: {}attention.value_length = {} differs from key_length = {} (unsupported)",
                      source.path(), p, value_length, c.head_dim);
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.rope_dim, g.get_int_or(p + "rope.dimension_count", c.head_dim));
  if (g.has(p + "vocab_size")) {
    SPUTNIK_ASSIGN_OR_RETURN(c.vocab_size, g.get_int(p + "vocab_size"));
  } else {
    const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
    if (!embd) return make_error("{}: tensor 'token_embd.weight' is missing", source.path());
    c.vocab_size = embd->view.shape[0];
  }
  // llama.cpp's converter permutes llama q/k rows for interleaved rope; qwen2 is stored as in HF.
  c.rope_layout = c.family == LlamaFamily::Llama ? RopeLayout::Interleaved : RopeLayout::NeoX;
  // Qwen2 has q/k/v biases by definition (modeling_qwen2.py: bias=True); GGUF llama has none.
  c.qkv_bias = c.family == LlamaFamily::Qwen2;
  // GGUF's convention: a file without output.weight ties the output to token_embd.
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;

  if (c.rope_dim <= 0 || c.rope_dim % 2 != 0 || c.rope_dim > c.head_dim) {
    return make_error("{}: {}rope.dimension_count = {} must be even and at most the head size {}",
                      source.path(), p, c.rope_dim, c.head_dim);
  }
  c.inv_freq = llama_inv_freq(c.rope_theta, c.rope_dim, nullptr);
  std::string scaling_type = "none";
  if (g.has(p + "rope.scaling.type")) {
    SPUTNIK_ASSIGN_OR_RETURN(scaling_type, g.get_string(p + "rope.scaling.type"));
  }
  if (scaling_type == "linear") {
    SPUTNIK_ASSIGN_OR_RETURN(double factor, g.get_float(p + "rope.scaling.factor"));
    if (!(factor > 0)) return make_error("{}: {}rope.scaling.factor = {} must be > 0", source.path(), p, factor);
    for (float& f : c.inv_freq) f = static_cast<float>(f / factor);
    c.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling_type != "none") {
    return make_error("{}: {}rope.scaling.type = '{}' is not supported (expected none or linear)",
                      source.path(), p, scaling_type);
  }
  // Llama 3.1+ GGUF files carry the llama3 scaling as per-pair divisors (llama.cpp
  // rope_freqs / "freq_factors": theta_i = pos * base^(-2i/d) / rope_freqs[i]).
  if (g.find_tensor("rope_freqs.weight")) {
    SPUTNIK_ASSIGN_OR_RETURN(std::vector<float> factors,
                             source.get_f32("rope_freqs.weight", {c.rope_dim / 2}));
    for (int64_t i = 0; i < c.rope_dim / 2; ++i) c.inv_freq[i] /= factors[i];
    c.rope_freq_factors = std::move(factors);
  }
  c.rope_as_ggml = true;
  return c;
}

Result<LlamaConfig> config_from_hf(const WeightSource& source, const std::string& arch) {
  const nlohmann::json& j = source.safetensors()->config();
  const std::string file = source.safetensors()->directory() + "/config.json";
  LlamaConfig c;
  c.family = arch == "Qwen2ForCausalLM" ? LlamaFamily::Qwen2 : LlamaFamily::Llama;
  c.architecture = c.family == LlamaFamily::Qwen2 ? "qwen2" : "llama";
  if (j.contains("_name_or_path") && j["_name_or_path"].is_string()) c.name = j["_name_or_path"];
  SPUTNIK_ASSIGN_OR_RETURN(c.dim, json_int(j, "hidden_size", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_layers, json_int(j, "num_hidden_layers", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_heads, json_int(j, "num_attention_heads", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_kv_heads, json_int_or(j, "num_key_value_heads", c.n_heads, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.inter_dim, json_int(j, "intermediate_size", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.vocab_size, json_int(j, "vocab_size", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.max_seq_len, json_int_or(j, "max_position_embeddings", 4096, file));
  SPUTNIK_ASSIGN_OR_RETURN(double eps, json_float_or(j, "rms_norm_eps", 1e-6, file));
  c.norm_eps = static_cast<float>(eps);
  if (c.n_heads <= 0 || c.dim % c.n_heads != 0) {
    return make_error("{}: num_attention_heads = {} does not divide hidden_size = {}", file,
                      c.n_heads, c.dim);
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.head_dim, json_int_or(j, "head_dim", c.dim / c.n_heads, file));
  c.rope_dim = c.head_dim;
  // Both tie defaults are False in LlamaConfig and Qwen2Config.
  SPUTNIK_ASSIGN_OR_RETURN(c.tie_word_embeddings, json_bool_or(j, "tie_word_embeddings", false, file));
  c.rope_layout = RopeLayout::NeoX;  // HF rotate_half, both families
  c.qkv_bias = c.family == LlamaFamily::Qwen2;
  if (c.family == LlamaFamily::Llama) {
    SPUTNIK_ASSIGN_OR_RETURN(bool attention_bias, json_bool_or(j, "attention_bias", false, file));
    SPUTNIK_ASSIGN_OR_RETURN(bool mlp_bias, json_bool_or(j, "mlp_bias", false, file));
    if (attention_bias || mlp_bias) {
      return make_error("{}: attention_bias / mlp_bias = true is not supported for Llama", file);
    }
  } else {
    SPUTNIK_ASSIGN_OR_RETURN(bool sliding, json_bool_or(j, "use_sliding_window", false, file));
    if (sliding) return make_error("{}: use_sliding_window = true is not supported", file);
  }

  // Rotary: transformers <= 4 writes rope_theta + rope_scaling; 5 writes rope_parameters
  // (rope_theta and rope_type inside). Read whichever is there.
  nlohmann::json rope = nlohmann::json::object();
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    rope = j["rope_parameters"];
  } else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    rope = j["rope_scaling"];
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.rope_theta, json_float_or(j, "rope_theta", 10000.0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.rope_theta, json_float_or(rope, "rope_theta", c.rope_theta, file));
  std::string rope_type = "default";
  if (rope.contains("rope_type") && rope["rope_type"].is_string()) rope_type = rope["rope_type"];
  else if (rope.contains("type") && rope["type"].is_string()) rope_type = rope["type"];
  if (rope_type == "llama3") {
    Llama3RopeScaling s;
    SPUTNIK_ASSIGN_OR_RETURN(s.factor, json_float_or(rope, "factor", s.factor, file));
    SPUTNIK_ASSIGN_OR_RETURN(s.low_freq_factor, json_float_or(rope, "low_freq_factor", s.low_freq_factor, file));
    SPUTNIK_ASSIGN_OR_RETURN(s.high_freq_factor, json_float_or(rope, "high_freq_factor", s.high_freq_factor, file));
    SPUTNIK_ASSIGN_OR_RETURN(s.original_max_position_embeddings,
                             json_int_or(rope, "original_max_position_embeddings",
                                         s.original_max_position_embeddings, file));
    if (!(s.factor > 0) || !(s.high_freq_factor > s.low_freq_factor)) {
      return make_error("{}: rope_scaling llama3 needs factor > 0 and high_freq_factor > "
                        "low_freq_factor, got {}, {}, {}",
                        file, s.factor, s.low_freq_factor, s.high_freq_factor);
    }
    c.inv_freq = llama_inv_freq(c.rope_theta, c.rope_dim, &s);
  } else if (rope_type == "linear") {
    SPUTNIK_ASSIGN_OR_RETURN(double factor, json_float_or(rope, "factor", 1.0, file));
    if (!(factor > 0)) return make_error("{}: rope_scaling factor = {} must be > 0", file, factor);
    c.inv_freq = llama_inv_freq(c.rope_theta, c.rope_dim, nullptr);
    for (float& f : c.inv_freq) f = static_cast<float>(f / factor);
  } else if (rope_type == "default") {
    c.inv_freq = llama_inv_freq(c.rope_theta, c.rope_dim, nullptr);
  } else {
    return make_error("{}: rope type '{}' is not supported (expected default, linear or llama3)",
                      file, rope_type);
  }
  return c;
}

// --- Weights: one name table per checkpoint format -----------------------------------------


constexpr LlamaTensorNames kGgufNames = {
    "token_embd.weight",         "output_norm.weight",       "output.weight",
    "blk.{}.attn_norm.weight",   "blk.{}.attn_q.weight",     "blk.{}.attn_k.weight",
    "blk.{}.attn_v.weight",      "blk.{}.attn_output.weight", "blk.{}.attn_q.bias",
    "blk.{}.attn_k.bias",        "blk.{}.attn_v.bias",       "blk.{}.ffn_norm.weight",
    "blk.{}.ffn_gate.weight",    "blk.{}.ffn_up.weight",     "blk.{}.ffn_down.weight",
};

constexpr LlamaTensorNames kHfNames = {
    "model.embed_tokens.weight",
    "model.norm.weight",
    "lm_head.weight",
    "model.layers.{}.input_layernorm.weight",
    "model.layers.{}.self_attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight",
    "model.layers.{}.self_attn.q_proj.bias",
    "model.layers.{}.self_attn.k_proj.bias",
    "model.layers.{}.self_attn.v_proj.bias",
    "model.layers.{}.post_attention_layernorm.weight",
    "model.layers.{}.mlp.gate_proj.weight",
    "model.layers.{}.mlp.up_proj.weight",
    "model.layers.{}.mlp.down_proj.weight",
};

}  // namespace

const LlamaTensorNames& llama_tensor_names(bool gguf) { return gguf ? kGgufNames : kHfNames; }
Result<LlamaConfig> llama_config_from_hf(const WeightSource& source, const std::string& arch) {
  return config_from_hf(source, arch);
}

namespace {

bool is_matmul_dtype(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K:
    case DType::Q6_K: case DType::F8_E4M3:
    case DType::Q8_0x16: case DType::Q4_0x16: case DType::Q4_Kx16: case DType::Q5_0x16:  // repacked by get_matrix
    case DType::Q4_1x16:
      return true;
    default:
      return false;
  }
}

// A matrix weight: present, of a type the kernels multiply, of the expected shape. Repacked for
// the active kernels (WeightSource::get_matrix) unless it is a row table (see load_weights).
enum class MatrixUse { Multiplied, RowTable };
Result<TensorView> get_matrix(const WeightSource& source, const std::string& name, int64_t rows,
                              int64_t cols, MatrixUse use = MatrixUse::Multiplied) {
  SPUTNIK_ASSIGN_OR_RETURN(TensorView view, use == MatrixUse::Multiplied
                                                ? source.get_matrix(name, {rows, cols})
                                                : source.get(name, {rows, cols}));
  if (!is_matmul_dtype(view.dtype)) {
    return make_error("{}: tensor '{}' has type {}, which is not a weight type sputnik multiplies",
                      source.path(), name, dtype_name(view.dtype));
  }
  if (cols % dtype_traits(view.dtype).block_elements != 0) {
    return make_error("{}: tensor '{}' has {} columns, not a multiple of its {} block size {}",
                      source.path(), name, cols, dtype_name(view.dtype),
                      dtype_traits(view.dtype).block_elements);
  }
  return view;
}

std::string layer_name(const char* pattern, int64_t layer) {
  return fmt::format(fmt::runtime(pattern), layer);
}

// Reads one byte per page so the first forward pass does not stall on disk (progress only).
void touch_pages(const TensorView& w) {
  volatile uint8_t sink = 0;
  const uint8_t* p = static_cast<const uint8_t*>(w.data);
  for (size_t i = 0; i < w.bytes(); i += 4096) sink = sink + p[i];
}

Result<LlamaWeights> load_weights(const ModelSource& ms, const LlamaConfig& c) {
  const WeightSource& s = *ms.weights;
  const LlamaTensorNames& n = s.gguf() ? kGgufNames : kHfNames;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  LlamaWeights w;
  SPUTNIK_ASSIGN_OR_RETURN(w.norm, s.get_f32(n.norm, {c.dim}));
  if (c.tie_word_embeddings) {
    // The output projection: repacked, and the embedding rows are read from that copy.
    SPUTNIK_ASSIGN_OR_RETURN(w.tok_embeddings, get_matrix(s, n.tok_embeddings, c.vocab_size, c.dim));
    w.output = w.tok_embeddings;
  } else {
    // Read one row per token: kept as stored, so only the rows of tokens seen page in from the
    // map; repacking would read and keep all of it (125 MiB of R1-Distill-Qwen-1.5B at Q4_0).
    SPUTNIK_ASSIGN_OR_RETURN(w.tok_embeddings, get_matrix(s, n.tok_embeddings, c.vocab_size, c.dim,
                                                          MatrixUse::RowTable));
    SPUTNIK_ASSIGN_OR_RETURN(w.output, get_matrix(s, n.output, c.vocab_size, c.dim));
  }
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    LlamaLayerWeights& l = w.layers[static_cast<size_t>(i)];
    SPUTNIK_ASSIGN_OR_RETURN(l.attention_norm, s.get_f32(layer_name(n.attention_norm, i), {c.dim}));
    SPUTNIK_ASSIGN_OR_RETURN(l.wq, get_matrix(s, layer_name(n.wq, i), q_dim, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(l.wk, get_matrix(s, layer_name(n.wk, i), kv_dim, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(l.wv, get_matrix(s, layer_name(n.wv, i), kv_dim, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(l.wo, get_matrix(s, layer_name(n.wo, i), c.dim, q_dim));
    if (c.qkv_bias) {
      SPUTNIK_ASSIGN_OR_RETURN(l.bq, s.get_f32(layer_name(n.bq, i), {q_dim}));
      SPUTNIK_ASSIGN_OR_RETURN(l.bk, s.get_f32(layer_name(n.bk, i), {kv_dim}));
      SPUTNIK_ASSIGN_OR_RETURN(l.bv, s.get_f32(layer_name(n.bv, i), {kv_dim}));
    }
    SPUTNIK_ASSIGN_OR_RETURN(l.ffn_norm, s.get_f32(layer_name(n.ffn_norm, i), {c.dim}));
    SPUTNIK_ASSIGN_OR_RETURN(l.w1, get_matrix(s, layer_name(n.w1, i), c.inter_dim, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(l.w3, get_matrix(s, layer_name(n.w3, i), c.inter_dim, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(l.w2, get_matrix(s, layer_name(n.w2, i), c.dim, c.inter_dim));
    if (ms.progress) {
      for (const TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w3, &l.w2}) touch_pages(*t);
      ms.progress(i + 1, c.n_layers);
    }
  }
  return w;
}

// --- The model ----------------------------------------------------------------------------------

class LlamaModel final : public Model {
 public:
  LlamaModel(LlamaConfig config, LlamaWeights weights, const ModelSource& source)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        source_(source.weights),
        pool_(source.options.n_threads > 0 ? source.options.n_threads : hardware_threads()),
        info_(source.info),
        max_chunk_(llama_chunk_tokens(config_, source.info.weight_bytes)) {
    const LlamaConfig& c = config_;
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    LlamaRunState& s = state_;
    s.n_ctx = source.options.n_ctx;
    s.n_seq_max = source.options.n_seq_max;
    s.seq_len.assign(static_cast<size_t>(s.n_seq_max), 0);
    s.kv_type = source.options.kv_type;
    // calloc: the OS hands out zero pages as the cache fills, so nothing is touched up front.
    s.n_ctx_padded = (s.n_ctx + kLlamaValueBlock - 1) / kLlamaValueBlock * kLlamaValueBlock;
    const size_t cache_bytes = static_cast<size_t>(s.n_seq_max * s.n_ctx * kv_dim) * kv_elem_bytes();
    const size_t value_bytes = static_cast<size_t>(s.n_seq_max * s.n_ctx_padded * kv_dim) * kv_elem_bytes();
    for (int64_t l = 0; l < c.n_layers; ++l) {
      s.key_cache.emplace_back(static_cast<uint8_t*>(std::calloc(cache_bytes, 1)));
      s.value_cache.emplace_back(static_cast<uint8_t*>(std::calloc(value_bytes, 1)));
      if (!s.key_cache.back() || !s.value_cache.back()) alloc_failed_ = true;
    }
    const int64_t group = c.n_heads / c.n_kv_heads;
    // Per thread: scores rows, then one [group, block] slice of softmax weights (a chunk's
    // per-(token, kv head) tasks); or all heads' rows of one token (f16 decode).
    s.scores.resize(static_cast<size_t>(std::max(pool_.size() * scores_per_thread(), c.n_heads * s.n_ctx_padded)));
    s.att_part.resize(static_cast<size_t>(pool_.size() * group * c.head_dim));
    // The attention's small matmuls run inside one parallel task: each task gets an inline pool.
    for (int i = 0; i < pool_.size(); ++i) inline_pools_.push_back(std::make_unique<ThreadPool>(1));

    info_.architecture = c.architecture;
    if (info_.name.empty()) info_.name = c.name;
    info_.vocab_size = c.vocab_size;
    info_.n_ctx_train = c.max_seq_len;
    info_.n_layers = c.n_layers;
    info_.hidden_size = c.dim;
    info_.kv_cache_bytes_per_token = static_cast<size_t>(c.n_layers * 2 * kv_dim) * kv_elem_bytes();
    // Per generated token: every layer matrix and the output projection are read in full, the
    // embedding table one row.
    size_t active = weights_.output.bytes() + weights_.tok_embeddings.row_bytes();
    for (const LlamaLayerWeights& l : weights_.layers) {
      for (const TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w3, &l.w2}) active += t->bytes();
    }
    info_.active_weight_bytes_per_token = active;
  }

  const ModelInfo& info() const override { return info_; }
  ThreadPool& thread_pool() override { return pool_; }

  int32_t sequence_length(int32_t seq) const override {
    if (seq < 0 || seq >= state_.n_seq_max) return 0;
    return state_.seq_len[static_cast<size_t>(seq)];
  }

  void truncate_sequence(int32_t seq, int32_t from) override {
    if (seq < 0 || seq >= state_.n_seq_max) return;
    int32_t& len = state_.seq_len[static_cast<size_t>(seq)];
    len = std::min(len, std::max(from, 0));
  }

  Status forward(std::span<const BatchToken> batch, float* logits) override {
    SPUTNIK_CHECK_OK(validate(batch));
    const auto max_chunk = static_cast<size_t>(max_chunk_);
    for (size_t start = 0; start < batch.size(); start += max_chunk) {
      const auto chunk = batch.subspan(start, std::min(max_chunk, batch.size() - start));
      logits += forward_chunk(chunk, logits) * config_.vocab_size;
    }
    return ok_status();
  }

 private:
  // Every check happens before the cache changes, so a bad batch leaves the model as it was.
  Status validate(std::span<const BatchToken> batch) const {
    const LlamaRunState& s = state_;
    std::vector<int64_t> next(s.seq_len.begin(), s.seq_len.end());  // next position per seq
    for (size_t i = 0; i < batch.size(); ++i) {
      const BatchToken& b = batch[i];
      if (b.seq < 0 || b.seq >= s.n_seq_max) {
        return make_error("batch token {}: sequence {} is out of range: the cache holds {} "
                          "sequence(s) (LoadOptions::n_seq_max)", i, b.seq, s.n_seq_max);
      }
      if (b.token < 0 || b.token >= config_.vocab_size) {
        return make_error("batch token {}: token id {} is out of range [0, {})", i, b.token,
                          config_.vocab_size);
      }
      int64_t& expected = next[static_cast<size_t>(b.seq)];
      if (b.pos != expected) {
        return make_error("batch token {}: position {} of sequence {} does not continue its cache "
                          "(next position is {})", i, b.pos, b.seq, expected);
      }
      ++expected;
    }
    for (int32_t seq = 0; seq < s.n_seq_max; ++seq) {
      if (next[static_cast<size_t>(seq)] > s.n_ctx) {
        return make_error("sequence {}: prompt of {} tokens exceeds the context of {}", seq,
                          next[static_cast<size_t>(seq)], s.n_ctx);
      }
    }
    return ok_status();
  }

  void resize_buffers(int64_t T) {
    const LlamaConfig& c = config_;
    LlamaRunState& s = state_;
    const auto n = [T](int64_t per_token) { return static_cast<size_t>(T * per_token); };
    if (s.x.size() >= n(c.dim)) return;
    s.x.resize(n(c.dim));
    s.xb.resize(n(c.dim));
    s.q.resize(n(c.n_heads * c.head_dim));
    s.k.resize(n(c.n_kv_heads * c.head_dim));
    s.v.resize(n(c.n_kv_heads * c.head_dim));
    s.att_out.resize(n(c.n_heads * c.head_dim));
    s.proj.resize(n(c.dim));
    s.gate.resize(n(c.inter_dim));
    s.up.resize(n(c.inter_dim));
    s.rope_cos.resize(n(c.rope_dim / 2));
    s.rope_sin.resize(n(c.rope_dim / 2));
    s.logits_in.resize(n(c.dim));
  }

  size_t kv_elem_bytes() const { return state_.kv_type == DType::F16 ? 2 : 4; }
  // Row index of (seq, kv head, pos) in a layer's cache [n_seq_max, n_kv_heads, n_ctx, head_dim].
  size_t cache_row(int32_t seq, int64_t kvh, int64_t pos) const {
    return static_cast<size_t>(((seq * config_.n_kv_heads + kvh) * state_.n_ctx + pos) * config_.head_dim);
  }
  int64_t scores_per_thread() const {
    return config_.n_heads / config_.n_kv_heads * (state_.n_ctx_padded + kLlamaValueBlock);
  }
  // First element of value block `block` of (seq, kv head): [head_dim, kLlamaValueBlock].
  int64_t value_block(int32_t seq, int64_t kvh, int64_t block) const {
    return ((seq * config_.n_kv_heads + kvh) * state_.n_ctx_padded + block * kLlamaValueBlock) *
           config_.head_dim;
  }
  // Writes n values to the cache, `stride` elements apart.
  void store_row(const float* x, int64_t n, int64_t stride, uint8_t* dst) const {
    if (state_.kv_type == DType::F16) {
      auto* h = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i * stride] = f32_to_fp16(x[i]);
    } else {
      auto* f = reinterpret_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) f[i * stride] = x[i];
    }
  }
  // x = fp16_to_f32(f32_to_fp16(x)) (round to nearest even), without leaving f32: fp16
  // subnormals (|x| < 2^-14) are multiples of 2^-24; normals keep 10 mantissa bits. Checked
  // bit-exact against the conversions for |x| < 65504 (softmax weights and q stay far below).
  static void round_to_f16(float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      if (std::fabs(x[i]) < 6.103515625e-05f) {
        x[i] = std::nearbyint(x[i] * 16777216.0f) * 5.9604644775390625e-08f;
      } else {
        uint32_t u = f32_to_bits(x[i]);
        u = (u + 0xFFF + ((u >> 13) & 1)) & 0xFFFFE000u;
        x[i] = bits_to_f32(u);
      }
    }
  }

  // cos and sin of the rope_dim/2 angles of position pos (see LlamaConfig::rope_as_ggml).
  void rope_angles(int32_t pos, float* cos, float* sin) const {
    const LlamaConfig& c = config_;
    const int64_t half = c.rope_dim / 2;
    if (!c.rope_as_ggml) {
      // theta_i = pos * inv_freq[i], in f32 as HF's LlamaRotaryEmbedding computes it.
      for (int64_t i = 0; i < half; ++i) {
        const float theta = static_cast<float>(pos) * c.inv_freq[static_cast<size_t>(i)];
        cos[i] = static_cast<float>(std::cos(static_cast<double>(theta)));
        sin[i] = static_cast<float>(std::sin(static_cast<double>(theta)));
      }
      return;
    }
    const float theta_scale = std::pow(static_cast<float>(c.rope_theta), -2.0f / static_cast<float>(c.rope_dim));
    float theta = static_cast<float>(pos);
    for (int64_t i = 0; i < half; ++i, theta *= theta_scale) {
      const float ff = c.rope_freq_factors.empty() ? 1.0f : c.rope_freq_factors[static_cast<size_t>(i)];
      const float angle = c.rope_freq_scale * (theta / ff);
      cos[i] = std::cos(angle);
      sin[i] = std::sin(angle);
    }
  }

  // a * b + c rounded once to f32 (fmaf): the f64 product of two floats is exact, so only the
  // f64 sum rounds before the final rounding to f32, which then differs from fmaf's single
  // rounding only when that sum lands exactly on an f32 tie (about 2^-29 of cases). Plain C++
  // (model files get no FMA instructions), and it vectorises.
  static float fused_multiply_add(float a, float b, float c) {
    return static_cast<float>(static_cast<double>(a) * b + c);
  }

  // Rotates the first rope_dim dimensions of each of n_heads heads of one token's vector.
  // HF apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, per layout (see RopeLayout); GGUF
  // models with llama.cpp's fused products (LlamaConfig::rope_as_ggml).
  void apply_rope(float* vec, int64_t n_heads, const float* cos, const float* sin) const {
    const LlamaConfig& c = config_;
    const int64_t half = c.rope_dim / 2;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x = vec + h * c.head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = c.rope_layout == RopeLayout::NeoX ? i : 2 * i;
        const int64_t b = c.rope_layout == RopeLayout::NeoX ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        if (c.rope_as_ggml) {
          x[a] = fused_multiply_add(x0, cos[i], -(x1 * sin[i]));
          x[b] = fused_multiply_add(x0, sin[i], x1 * cos[i]);
        } else {
          x[a] = x0 * cos[i] - x1 * sin[i];
          x[b] = x1 * cos[i] + x0 * sin[i];
        }
      }
    }
  }

  // Independent projections of the same input (q, k, v; gate, up). Decode runs them in one
  // dispatch (matmul_batch): threads stream from the first matrix's first byte to the last one's
  // last without a barrier and an idle DRAM between them. Prefill runs them one by one, each
  // split by itself so that its slabs stay in L2 across token tiles.
  void project(int64_t T, std::span<const MatmulJob> jobs) {
    if (T <= kMatmulOnePassTokens) {
      matmul_batch(jobs, pool_);
      return;
    }
    for (const MatmulJob& j : jobs) matmul(*j.w, j.x, j.n_tokens, j.y, pool_);
  }

  // LlamaAttention.forward over the chunk: xb [T, dim] -> proj [T, dim]. K/V of the chunk go
  // into the cache first, so a token sees the chunk's earlier tokens of its own sequence.
  void attention(const LlamaLayerWeights& l, int64_t layer, std::span<const BatchToken> batch) {
    const LlamaConfig& c = config_;
    LlamaRunState& s = state_;
    const int64_t T = static_cast<int64_t>(batch.size());
    const int64_t hd = c.head_dim, q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
    const int64_t half = c.rope_dim / 2;
    project(T, {{{&l.wq, s.xb.data(), T, s.q.data()},     // q = xb @ wq.T  [T, n_heads*hd]
                 {&l.wk, s.xb.data(), T, s.k.data()},     // k = xb @ wk.T  [T, n_kv_heads*hd]
                 {&l.wv, s.xb.data(), T, s.v.data()}}});  // v = xb @ wv.T  [T, n_kv_heads*hd]
    uint8_t* key_cache = s.key_cache[static_cast<size_t>(layer)].get();
    uint8_t* value_cache = s.value_cache[static_cast<size_t>(layer)].get();
    const bool f16 = s.kv_type == DType::F16;
    const size_t elem = kv_elem_bytes();
    for (int64_t t = 0; t < T; ++t) {
      float* q = s.q.data() + t * q_dim;
      float* k = s.k.data() + t * kv_dim;
      float* v = s.v.data() + t * kv_dim;
      if (c.qkv_bias) {
        axpy(1.0f, l.bq.data(), q_dim, q);
        axpy(1.0f, l.bk.data(), kv_dim, k);
        axpy(1.0f, l.bv.data(), kv_dim, v);
      }
      apply_rope(q, c.n_heads, &s.rope_cos[t * half], &s.rope_sin[t * half]);
      apply_rope(k, c.n_kv_heads, &s.rope_cos[t * half], &s.rope_sin[t * half]);
      // ggml's f16 mul_mat converts its f32 operand (here q) to f16 first; so do we.
      if (f16) round_to_f16(q, q_dim);
      const BatchToken& b = batch[static_cast<size_t>(t)];
      for (int64_t kvh = 0; kvh < c.n_kv_heads; ++kvh) {
        store_row(k + kvh * hd, hd, 1, key_cache + cache_row(b.seq, kvh, b.pos) * elem);
        // Column pos % block of the transposed block: stride `block` elements.
        const size_t block = static_cast<size_t>(value_block(b.seq, kvh, b.pos / kLlamaValueBlock));
        store_row(v + kvh * hd, hd, kLlamaValueBlock,
                  value_cache + (block + b.pos % kLlamaValueBlock) * elem);
      }
    }
    tap("Qcur", layer, s.q.data(), T, q_dim);
    tap("Kcur", layer, s.k.data(), T, kv_dim);
    tap("Vcur", layer, s.v.data(), T, kv_dim);
    // softmax(q k^T / sqrt(hd)) v per token and query head, causal: keys 0..pos of the token's
    // sequence. GQA: the `group` query heads h of kv head h / group are contiguous in q and
    // att_out. An f16 cache sums in llama.cpp's order (kernels.h attention_*_f16).
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    if (f16 && T == 1) {
      // One token over an f16 cache: the fused kernel splits keys, rows and value rows across the
      // threads (one task per kv head would leave threads idle and convert K once per query head).
      const BatchToken& b = batch[0];
      GroupedQueryAttentionF16 a;
      a.q = s.q.data();
      a.n_heads = c.n_heads;
      a.n_kv_heads = c.n_kv_heads;
      a.head_dim = hd;
      a.keys = reinterpret_cast<const uint16_t*>(key_cache) + cache_row(b.seq, 0, 0);
      a.key_head_stride = s.n_ctx * hd;
      a.values = reinterpret_cast<const uint16_t*>(value_cache) + value_block(b.seq, 0, 0);
      a.value_head_stride = s.n_ctx_padded * hd;
      a.scale = scale;
      a.scores = s.scores.data();
      attention_decode_f16(a, b.pos + 1, s.att_out.data(), pool_);
    } else {
      attention_per_kv_head(layer, batch, scale);
    }
    tap("kqv_out", layer, s.att_out.data(), T, q_dim);
    matmul(l.wo, s.att_out.data(), T, s.proj.data(), pool_);  // proj = att_out @ wo.T  [T, dim]
    tap("attn_out", layer, s.proj.data(), T, c.dim);
  }

  // The attention of a chunk of tokens (or over an f32 cache): each (token, kv head) task is small
  // matmuls straight on the cache: scores [group, n_keys] = q_group @ K^T, then att_out_group =
  // P @ V over the value blocks (the tail of the last block gets weight 0); an f16 cache through
  // attention_scores_f16 / attention_values_f16, an f32 cache through matmul, block by block.
  void attention_per_kv_head(int64_t layer, std::span<const BatchToken> batch, float scale) {
    const LlamaConfig& c = config_;
    LlamaRunState& s = state_;
    const int64_t T = static_cast<int64_t>(batch.size());
    const int64_t hd = c.head_dim, q_dim = c.n_heads * hd;
    const uint8_t* key_cache = s.key_cache[static_cast<size_t>(layer)].get();
    const uint8_t* value_cache = s.value_cache[static_cast<size_t>(layer)].get();
    const bool f16 = s.kv_type == DType::F16;
    const size_t elem = kv_elem_bytes();
    const int64_t group = c.n_heads / c.n_kv_heads, vb = kLlamaValueBlock;
    pool_.parallel_for(T * c.n_kv_heads, [&](int64_t task, int thread) {
      const int64_t t = task / c.n_kv_heads, kvh = task % c.n_kv_heads;
      const BatchToken& b = batch[static_cast<size_t>(t)];
      const int64_t n_keys = b.pos + 1, n_blocks = (n_keys + vb - 1) / vb, n_padded = n_blocks * vb;
      ThreadPool& inline_pool = *inline_pools_[static_cast<size_t>(thread)];
      TensorView keys;  // [n_keys, hd]
      keys.dtype = s.kv_type;
      keys.n_dims = 2;
      keys.shape = {n_keys, hd, 0, 0};
      keys.data = key_cache + cache_row(b.seq, kvh, 0) * elem;
      float* scores = s.scores.data() + static_cast<int64_t>(thread) * scores_per_thread();
      const float* q_group = s.q.data() + t * q_dim + kvh * group * hd;
      float* out = s.att_out.data() + t * q_dim + kvh * group * hd;  // [group, hd]
      // An f16 cache takes llama.cpp's summation order (kernels.h), which differs between a
      // batch of one token and a longer one, as ggml's matmul does.
      const bool single_token = T == 1;
      if (f16) {
        attention_scores_f16(static_cast<const uint16_t*>(keys.data), n_keys, hd, q_group, group, single_token, scores);
      } else {
        matmul(keys, q_group, group, scores, inline_pool);
      }
      // Re-lay the [group, n_keys] scores as [group, n_padded] rows, zero-padded, back to front.
      for (int64_t g = group - 1; g >= 0; --g) {
        float* row = scores + g * n_padded;
        std::memmove(row, scores + g * n_keys, static_cast<size_t>(n_keys) * sizeof(float));
        for (int64_t j = 0; j < n_keys; ++j) row[j] *= scale;
        softmax(row, n_keys);
        if (f16) round_to_f16(row, n_keys);  // ggml: kq is converted to f16 for kq @ v
        std::fill(row + n_keys, row + n_padded, 0.0f);
      }
      if (f16) {
        const auto* values = reinterpret_cast<const uint16_t*>(value_cache) + value_block(b.seq, kvh, 0);
        attention_values_f16(values, n_blocks, hd, scores, group, single_token, out);
        return;
      }
      float* part = s.att_part.data() + static_cast<int64_t>(thread) * group * hd;
      TensorView values;  // one block of V^T: [hd, vb]
      values.dtype = s.kv_type;
      values.n_dims = 2;
      values.shape = {hd, vb, 0, 0};
      // P_block: rows of `scores` with stride n_padded; matmul wants them contiguous, so copy.
      float* p_block = scores + group * n_padded;  // [group, vb] scratch past the scores
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        for (int64_t g = 0; g < group; ++g) {
          std::memcpy(p_block + g * vb, scores + g * n_padded + blk * vb, static_cast<size_t>(vb) * sizeof(float));
        }
        values.data = value_cache + static_cast<size_t>(value_block(b.seq, kvh, blk)) * elem;
        matmul(values, p_block, group, blk == 0 ? out : part, inline_pool);
        if (blk > 0) axpy(1.0f, part, group * hd, out);
      }
    });
  }

  // LlamaMLP.forward: down(silu(gate(xb)) * up(xb)), xb [T, dim] -> proj [T, dim].
  void mlp(const LlamaLayerWeights& l, int64_t T) {
    LlamaRunState& s = state_;
    project(T, {{{&l.w1, s.xb.data(), T, s.gate.data()},  // [T, inter_dim]
                 {&l.w3, s.xb.data(), T, s.up.data()}}});   // [T, inter_dim]
    silu_mul(s.gate.data(), s.up.data(), T * config_.inter_dim, s.gate.data());
    matmul(l.w2, s.gate.data(), T, s.proj.data(), pool_);  // [T, dim]
  }

  // LlamaModel.forward + lm_head over one chunk; returns the number of logit rows written.
  int64_t forward_chunk(std::span<const BatchToken> batch, float* logits) {
    const LlamaConfig& c = config_;
    LlamaRunState& s = state_;
    const int64_t T = static_cast<int64_t>(batch.size()), dim = c.dim, half = c.rope_dim / 2;
    resize_buffers(T);
    for (int64_t t = 0; t < T; ++t) {
      const BatchToken& b = batch[static_cast<size_t>(t)];
      dequantize_weight_row(weights_.tok_embeddings, b.token, s.x.data() + t * dim);  // embed
      rope_angles(b.pos, &s.rope_cos[t * half], &s.rope_sin[t * half]);
    }
    // An untied table stays in the file map (load_weights): once its rows are copied, its pages
    // leave the resident set (fault-around would otherwise keep 64 KiB around every row read).
    if (!config_.tie_word_embeddings) {
      release_file_pages(weights_.tok_embeddings.data, weights_.tok_embeddings.bytes());
    }
    if (tap_) {  // the token ids (exact as floats), so a comparison can replay them
      std::vector<float> ids;
      for (const BatchToken& b : batch) ids.push_back(static_cast<float>(b.token));
      tap("inp_tokens", -1, ids.data(), T, 1);
    }
    tap("inp_embd", -1, s.x.data(), T, dim);
    // LlamaDecoderLayer: x = x + attn(norm(x)); x = x + mlp(norm(x)).
    for (int64_t layer = 0; layer < c.n_layers; ++layer) {
      const LlamaLayerWeights& l = weights_.layers[static_cast<size_t>(layer)];
      for (int64_t t = 0; t < T; ++t) {
        rms_norm(s.x.data() + t * dim, l.attention_norm.data(), c.norm_eps, dim, s.xb.data() + t * dim);
      }
      tap("attn_norm", layer, s.xb.data(), T, dim);
      attention(l, layer, batch);
      axpy(1.0f, s.proj.data(), T * dim, s.x.data());
      tap("ffn_inp", layer, s.x.data(), T, dim);
      for (int64_t t = 0; t < T; ++t) {
        rms_norm(s.x.data() + t * dim, l.ffn_norm.data(), c.norm_eps, dim, s.xb.data() + t * dim);
      }
      tap("ffn_norm", layer, s.xb.data(), T, dim);
      mlp(l, T);
      tap("ffn_out", layer, s.proj.data(), T, dim);
      axpy(1.0f, s.proj.data(), T * dim, s.x.data());
      tap("l_out", layer, s.x.data(), T, dim);
    }
    for (const BatchToken& b : batch) {
      int32_t& len = s.seq_len[static_cast<size_t>(b.seq)];
      len = std::max(len, b.pos + 1);
    }
    // Final norm and lm_head, only for the rows that want logits.
    int64_t n_out = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (!batch[static_cast<size_t>(t)].want_logits) continue;
      rms_norm(s.x.data() + t * dim, weights_.norm.data(), c.norm_eps, dim, s.logits_in.data() + n_out * dim);
      ++n_out;
    }
    tap("result_norm", -1, s.logits_in.data(), n_out, dim);
    if (n_out > 0) matmul(weights_.output, s.logits_in.data(), n_out, logits, pool_);  // [n_out, vocab]
    return n_out;
  }

  void tap(const char* name, int64_t layer, const float* data, int64_t rows, int64_t cols) const {
    if (tap_) tap_(name, layer, data, rows, cols);
  }

 public:
  void set_tap(LlamaTap tap) { tap_ = std::move(tap); }

 private:
  LlamaTap tap_;
  std::vector<std::unique_ptr<ThreadPool>> inline_pools_;  // [n_threads], one thread each
 public:
  bool alloc_failed_ = false;  // the KV cache did not fit in memory
 private:
  LlamaConfig config_;
  LlamaWeights weights_;
  LlamaRunState state_;
  std::shared_ptr<WeightSource> source_;  // keeps the mapped weights alive
  ThreadPool pool_;
  ModelInfo info_;
  int64_t max_chunk_;  // tokens per forward_chunk (llama_chunk_tokens)
};

}  // namespace

std::vector<float> llama_inv_freq(double rope_theta, int64_t rope_dim, const Llama3RopeScaling* llama3) {
  std::vector<float> inv_freq(static_cast<size_t>(rope_dim / 2));
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in f32.
    inv_freq[static_cast<size_t>(i)] =
        static_cast<float>(1.0 / std::pow(rope_theta, static_cast<double>(2 * i) / rope_dim));
  }
  if (!llama3) return inv_freq;
  // _compute_llama3_parameters: long wavelengths are slowed by `factor`, short ones kept, and
  // the band between blends the two.
  const double old_ctx = static_cast<double>(llama3->original_max_position_embeddings);
  const double low_freq_wavelen = old_ctx / llama3->low_freq_factor;
  const double high_freq_wavelen = old_ctx / llama3->high_freq_factor;
  for (float& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f = static_cast<float>(f / llama3->factor);
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth = (old_ctx / wavelen - llama3->low_freq_factor) /
                            (llama3->high_freq_factor - llama3->low_freq_factor);
      f = static_cast<float>((1.0 - smooth) * f / llama3->factor + smooth * f);
    }
  }
  return inv_freq;
}

bool set_llama_tap(Model& model, LlamaTap tap) {
  auto* llama = dynamic_cast<LlamaModel*>(&model);
  if (!llama) return false;
  llama->set_tap(std::move(tap));
  return true;
}

Result<std::unique_ptr<Model>> load_llama(const ModelSource& source) {
  const WeightSource& w = *source.weights;
  LlamaConfig config;
  if (w.gguf()) {
    SPUTNIK_ASSIGN_OR_RETURN(config, config_from_gguf(w, source.architecture));
  } else {
    SPUTNIK_ASSIGN_OR_RETURN(config, config_from_hf(w, source.architecture));
  }
  const LlamaConfig& c = config;
  if (c.n_layers <= 0 || c.dim <= 0 || c.inter_dim <= 0 || c.vocab_size <= 0 || c.head_dim <= 0 ||
      c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0) {
    return make_error("{}: bad {} config: dim {}, layers {}, heads {}, kv heads {}, head size {}, "
                      "ffn {}, vocab {} (kv heads must divide heads)",
                      w.path(), c.architecture, c.dim, c.n_layers, c.n_heads, c.n_kv_heads,
                      c.head_dim, c.inter_dim, c.vocab_size);
  }
  if (source.options.kv_type != DType::F32 && source.options.kv_type != DType::F16) {
    return make_error("KV cache type {} is not supported (F32 or F16)", dtype_name(source.options.kv_type));
  }
  if (source.options.n_ctx <= 0 || source.options.n_seq_max <= 0) {
    return make_error("n_ctx ({}) and n_seq_max ({}) must be positive", source.options.n_ctx,
                      source.options.n_seq_max);
  }
  SPUTNIK_ASSIGN_OR_RETURN(LlamaWeights weights, load_weights(source, config));
  auto model = std::make_unique<LlamaModel>(std::move(config), std::move(weights), source);
  // SPUTNIK_DUMP_TENSORS=DIR appends every tap to DIR/<name>-<layer>.f32, for
  // tools/compare_llamacpp_tensors.py (a debugging aid: write errors are ignored).
  if (const char* dir = std::getenv("SPUTNIK_DUMP_TENSORS"); dir != nullptr && *dir != '\0') {
    model->set_tap([dir = std::string(dir)](const std::string& name, int64_t layer,
                                             const float* data, int64_t rows, int64_t cols) {
      const std::string path = fmt::format("{}/{}-{}.f32", dir, name, layer);
      if (std::FILE* f = std::fopen(path.c_str(), "ab")) {
        std::fwrite(data, sizeof(float), static_cast<size_t>(rows * cols), f);
        std::fclose(f);
      }
    });
  }
  if (model->alloc_failed_) {
    return make_error("{}: the KV cache ({} bytes per token, n_ctx {}, n_seq_max {}) does not fit "
                      "in memory; lower n_ctx or n_seq_max", w.path(),
                      model->info().kv_cache_bytes_per_token, source.options.n_ctx,
                      source.options.n_seq_max);
  }
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace sputnik
