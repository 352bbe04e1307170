// `sputnik quantize`: a Hugging Face safetensors checkpoint (f32, bf16, or DeepSeek FP8 with
// weight_scale_inv) to a GGUF file that sputnik and llama.cpp both read, with the metadata keys,
// tensor names and tensor layouts llama.cpp's convert_hf_to_gguf.py writes:
//   DeepseekV2ForCausalLM / DeepseekV3ForCausalLM -> "deepseek2" (conversion/deepseek.py,
//     DeepseekV2Model): routed experts stacked per layer into ffn_{gate,up,down}_exps, kv_b_proj
//     split into attn_k_b (K rows of each head, transposed) and attn_v_b, the V3 router bias as
//     exp_probs_b.bias, MTP layers dropped.
//   LlamaForCausalLM -> "llama" (q/k rows permuted for llama.cpp's interleaved rope, llama3
//     scaling as rope_freqs.weight), Qwen2ForCausalLM -> "qwen2" (stored as in HF).
// The names come from the model files' own tables (deepseek_tensor_names, llama_tensor_names);
// the quantisation math is kernels/ref's.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"

namespace sputnik {

struct ConvertOptions {
  std::string input;   // checkpoint directory: config.json, *.safetensors, tokenizer.json
  std::string output;  // the .gguf to write (through a temporary file; nothing on failure)
  // Every matrix but the routed experts and the MoE router: attention, dense and shared-expert
  // MLPs, token embedding and output head. F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K.
  DType type = DType::Q8_0;
  // The routed experts (ffn_*_exps); DType::Count means `type`.
  DType expert_type = DType::Count;
  int n_threads = 0;          // 0: hardware threads
  std::string tokenizer_pre;  // tokenizer.ggml.pre; empty: recognised from tokenizer.json
};

// Reported after each tensor is quantised.
struct ConvertProgress {
  int64_t tensor = 0;  // 1-based
  int64_t n_tensors = 0;
  std::string name;  // GGUF name
  DType type = DType::F32;
  uint64_t bytes_written = 0;  // tensor data so far
  uint64_t bytes_total = 0;    // tensor data of the whole file
};
using ConvertProgressFn = std::function<void(const ConvertProgress&)>;

struct ConvertReport {
  std::string architecture;  // GGUF general.architecture
  int64_t n_tensors = 0;
  uint64_t data_bytes = 0;
  // Tensors stored at another type than asked because their rows do not fill whole blocks,
  // e.g. "blk.0.attn_k_b.weight: Q4_K -> Q8_0 (rows of 128)".
  std::vector<std::string> fallbacks;
};

// Converts options.input to options.output. Errors name the file, field or tensor.
Result<ConvertReport> convert_to_gguf(const ConvertOptions& options,
                                      const ConvertProgressFn& progress = nullptr);

// "Q8_0", "q4_k", "f32", ... -> DType; only the types convert_to_gguf writes.
Result<DType> parse_convert_type(const std::string& text);

class GgufWriter;

// The tokenizer.ggml.* (and tokenizer.chat_template) metadata of checkpoint_dir's tokenizer.json
// and tokenizer_config.json, as llama.cpp's converter writes them (TextModel._set_vocab_gpt2,
// gguf-py SpecialVocab): vocab_size tokens (ids without a token become [PAD<id>], UNUSED), their
// types, the merges, bos/eos/unk/sep/pad ids (tokenizer_config.json, else config.json's
// *_token_id), add_bos/add_eos and the chat template. `pre` empty: detect_tokenizer_pre.
Status add_tokenizer_metadata(const std::string& checkpoint_dir, const nlohmann::json& config,
                              int64_t vocab_size, const std::string& pre, GgufWriter& writer);

// The tokenizer.ggml.pre name llama.cpp uses for a tokenizer.json's pre_tokenizer (and, for
// Qwen2-style splitting, its vocabulary): deepseek-v3, deepseek-llm, llama-bpe, qwen2,
// deepseek-r1-qwen, smollm, gpt-2; an error when none fits (pass ConvertOptions::tokenizer_pre).
Result<std::string> detect_tokenizer_pre(const std::string& tokenizer_json_path);

}  // namespace sputnik
