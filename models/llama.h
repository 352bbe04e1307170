// Dense decoder-only transformers of the Llama family: Llama 2/3 (and the DeepSeek-R1-Distill
// Llama models) and Qwen2 (and the R1-Distill Qwen models). The math follows Hugging Face
// transformers' modeling_llama.py / modeling_qwen2.py: pre-RMSNorm blocks, rotary attention
// with grouped-query heads, SwiGLU MLP. Config, weights and run state are three plain structs;
// models/llama.cpp holds the two name tables (GGUF, HF safetensors) and the forward pass.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/tensor.h"
#include "models/model.h"

namespace sputnik {

enum class LlamaFamily { Llama, Qwen2 };

// How rotary embedding pairs up the dimensions of a head. Picked from the checkpoint's source
// and architecture, never guessed from a shape:
//  - Interleaved ("normal" in llama.cpp): pairs (x[2i], x[2i+1]). GGUF llama files, because
//    llama.cpp's converter permutes the rows of q/k weights to this order.
//  - NeoX (HF rotate_half): pairs (x[i], x[i + rope_dim/2]). HF Llama and Qwen2 everywhere,
//    and GGUF qwen2 (whose weights are stored unpermuted).
enum class RopeLayout { Interleaved, NeoX };

// Llama-3 frequency scaling (HF rope_scaling.rope_type == "llama3",
// transformers/modeling_rope_utils.py _compute_llama3_parameters).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  LlamaFamily family = LlamaFamily::Llama;
  std::string architecture;  // "llama" or "qwen2" (ModelInfo::architecture)
  std::string name;
  int64_t dim = 0;            // hidden_size
  int64_t n_layers = 0;       // num_hidden_layers
  int64_t n_heads = 0;        // num_attention_heads
  int64_t n_kv_heads = 0;     // num_key_value_heads (GQA: n_heads / n_kv_heads query heads share one)
  int64_t head_dim = 0;       // dim / n_heads unless the checkpoint says otherwise
  int64_t inter_dim = 0;      // intermediate_size of the SwiGLU MLP
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;    // max_position_embeddings / context_length (n_ctx_train)
  float norm_eps = 1e-5f;     // rms_norm_eps
  double rope_theta = 10000.0;
  int64_t rope_dim = 0;       // rotated dimensions of each head (== head_dim for these models)
  RopeLayout rope_layout = RopeLayout::NeoX;
  // Per-pair rotary frequencies, rope_dim/2 of them: theta_i = pos * inv_freq[i]. Holds
  // rope_theta^(-2i/rope_dim) with any scaling (llama3 / linear / GGUF rope_freqs) applied.
  std::vector<float> inv_freq;
  // GGUF checkpoints rotate exactly as llama.cpp (ggml-cpu ops.cpp ggml_rope_cache_init and
  // rotate_pairs), so that its activations are reproduced bit for bit: theta_i = freq_scale *
  // (pos * theta_scale^i) / freq_factors[i] with theta_scale = powf(rope_theta, -2/rope_dim) and
  // the power built by repeated f32 multiplication; cosf / sinf; each rotated value one fused
  // multiply-add (x0*cos - x1*sin as fma(x0, cos, -(x1*sin))), as GCC contracts ggml's code.
  // HF checkpoints keep transformers' pos * inv_freq.
  bool rope_as_ggml = false;
  float rope_freq_scale = 1.0f;          // rope_as_ggml: 1 / the linear scaling factor
  std::vector<float> rope_freq_factors;  // rope_as_ggml: rope_freqs.weight, empty when absent
  bool qkv_bias = false;      // Qwen2: q_proj/k_proj/v_proj have biases (the family's definition)
  bool tie_word_embeddings = false;  // output projection is the token embedding
};

// One decoder block. Shapes in PyTorch order {out, in}; names after Meta's llama model.py.
struct LlamaLayerWeights {
  std::vector<float> attention_norm;  // [dim]            attn_norm / input_layernorm
  TensorView wq;                      // [n_heads*head_dim, dim]     attn_q / q_proj
  TensorView wk;                      // [n_kv_heads*head_dim, dim]  attn_k / k_proj
  TensorView wv;                      // [n_kv_heads*head_dim, dim]  attn_v / v_proj
  TensorView wo;                      // [dim, n_heads*head_dim]     attn_output / o_proj
  std::vector<float> bq, bk, bv;      // [n_heads*head_dim], [n_kv_heads*head_dim] x2; qkv_bias only
  std::vector<float> ffn_norm;        // [dim]            ffn_norm / post_attention_layernorm
  TensorView w1;                      // [inter_dim, dim] ffn_gate / gate_proj
  TensorView w3;                      // [inter_dim, dim] ffn_up / up_proj
  TensorView w2;                      // [dim, inter_dim] ffn_down / down_proj
};

struct LlamaWeights {
  TensorView tok_embeddings;   // [vocab, dim]  token_embd / embed_tokens
  std::vector<LlamaLayerWeights> layers;
  std::vector<float> norm;     // [dim]         output_norm / norm
  TensorView output;           // [vocab, dim]  output / lm_head (== tok_embeddings when tied)
};

// Positions per transposed value block (see LlamaRunState).
constexpr int64_t kLlamaValueBlock = 64;

// Activations for one chunk of T tokens (at most 256, fewer for small models: llama.cpp's
// llama_chunk_tokens), and the KV cache.
struct LlamaRunState {
  std::vector<float> x;       // [T, dim]  residual stream
  std::vector<float> xb;      // [T, dim]  normed input of attention / MLP
  std::vector<float> q;       // [T, n_heads*head_dim]
  std::vector<float> k;       // [T, n_kv_heads*head_dim]
  std::vector<float> v;       // [T, n_kv_heads*head_dim]
  std::vector<float> att_out; // [T, n_heads*head_dim]  attention output before wo
  std::vector<float> proj;    // [T, dim]  wo or w2 output, added to x
  std::vector<float> gate;    // [T, inter_dim]
  std::vector<float> up;      // [T, inter_dim]
  // Per thread, for one (token, kv head): the scores of the query heads sharing it, then their
  // softmax weights; that sequence's cached values as f32, and transposed for the P @ V matmul.
  std::vector<float> scores;       // [n_threads, n_heads/n_kv_heads, n_ctx_padded]
  std::vector<float> att_part;     // [n_threads, n_heads/n_kv_heads, head_dim]  one block's P @ V
  std::vector<float> rope_cos, rope_sin;  // [T, rope_dim/2]
  std::vector<float> logits_in;           // [T, dim]  final-normed rows that want logits
  // KV cache of kv_type (F32 or F16) elements, per layer. Keys [n_seq_max, n_kv_heads, n_ctx,
  // head_dim]: the keys one head attends to are one matrix. Values transposed in blocks of
  // kLlamaValueBlock positions, [n_seq_max, n_kv_heads, n_ctx_padded / block, head_dim, block]:
  // each block is the weight of one P @ V matmul (as llama.cpp stores V transposed). Zeroed at
  // allocation (calloc: lazily), so the unused tail of the last block holds finite values.
  struct FreeDelete {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  DType kv_type = DType::F32;
  int64_t n_ctx = 0;
  int64_t n_ctx_padded = 0;  // n_ctx rounded up to kLlamaValueBlock
  int n_seq_max = 0;
  std::vector<std::unique_ptr<uint8_t, FreeDelete>> key_cache, value_cache;
  std::vector<int32_t> seq_len;  // [n_seq_max] tokens cached per sequence
};

// The checkpoint names of each weight, one table per format (llama.cpp's two tables: GGUF and
// HF safetensors). Exposed, with the HF config reader, for `sputnik quantize` (models/convert.cpp).
struct LlamaTensorNames {
  const char* tok_embeddings;
  const char* norm;
  const char* output;
  // Per layer; {} is the layer index.
  const char* attention_norm;
  const char* wq;
  const char* wk;
  const char* wv;
  const char* wo;
  const char* bq;
  const char* bk;
  const char* bv;
  const char* ffn_norm;
  const char* w1;
  const char* w3;
  const char* w2;
};
const LlamaTensorNames& llama_tensor_names(bool gguf);
// The config of an HF checkpoint (architectures[0] LlamaForCausalLM / Qwen2ForCausalLM).
Result<LlamaConfig> llama_config_from_hf(const WeightSource& source, const std::string& arch);

// Called with every named intermediate of a forward pass, as llama.cpp names its graph nodes
// ("inp_tokens" (the token ids as floats, one column), "inp_embd", "attn_norm", "Qcur", "Kcur",
// "Vcur" (after bias and rope), "kqv_out", "attn_out", "ffn_inp", "ffn_norm", "ffn_out", "l_out",
// "result_norm"), with the layer (-1: none) and the rows x cols f32 values (one row per token of
// the chunk; result_norm: rows wanting logits). For comparing activations with the reference or
// with llama.cpp's eval callback (tools/compare_llamacpp_tensors.py, via SPUTNIK_DUMP_TENSORS).
using LlamaTap = std::function<void(const std::string& name, int64_t layer, const float* data,
                                    int64_t rows, int64_t cols)>;
// Sets the tap of a model load_llama built; false if `model` is not one.
bool set_llama_tap(Model& model, LlamaTap tap);

// Builds a Llama or Qwen2 model from a GGUF file (general.architecture "llama"/"qwen2") or an
// HF checkpoint (architectures[0] "LlamaForCausalLM"/"Qwen2ForCausalLM"). Every tensor's
// presence, dtype and shape is checked here. Called through models/loader.cpp's table.
Result<std::unique_ptr<Model>> load_llama(const ModelSource& source);

// The rotary frequencies of a config (exposed for tests): rope_theta^(-2i/rope_dim), then the
// Llama-3 scaling when given.
std::vector<float> llama_inv_freq(double rope_theta, int64_t rope_dim,
                                  const Llama3RopeScaling* llama3);

}  // namespace sputnik
