// `sputnik quantize` (see models/convert.h). Three steps, as llama.cpp's convert_hf_to_gguf.py:
//   1. a plan: every output tensor with its GGUF name, shape, type and how each of its rows is
//      made from checkpoint tensors (copy, stack experts, split kv_b, permute q/k);
//   2. the tensor data, row block by row block: rows dequantised to f32 (FP8 with its block
//      scale), quantised with kernels/ref's quantize_row, appended to a scratch file;
//   3. the GGUF: metadata, tokenizer and tensors (GgufWriter, pointing into the scratch file's
//      mmap, so memory stays bounded by the page cache, not by the model size).
#include "models/convert.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/mmap.h"
#include "core/threads.h"
#include "formats/gguf_writer.h"
#include "formats/safetensors.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "models/deepseek.h"
#include "models/llama.h"
#include "models/weights.h"

namespace sputnik {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// --- The plan -------------------------------------------------------------------------------

// What a tensor is, for choosing its type.
enum class Role { Vector, Matrix, Expert, Router };

// One output tensor. Its rows (all dimensions but the last flattened) are made by `row`, which
// writes `cols` f32 values; `prepare` (optional) runs once before the first row, e.g. to
// dequantise a whole source that is read transposed.
struct PlannedTensor {
  std::string name;            // GGUF name
  std::vector<int64_t> shape;  // PyTorch order
  Role role = Role::Matrix;
  DType type = DType::F32;  // set by choose_types
  std::function<void(int64_t row, float* dst)> row;
  std::function<void()> prepare;
  std::function<void()> release;

  int64_t cols() const { return shape.back(); }
  int64_t rows() const {
    int64_t n = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) n *= shape[i];
    return n;
  }
};

// A plan and the checkpoint tensors it reads (to report those it does not).
struct Plan {
  std::vector<PlannedTensor> tensors;
  std::set<std::string> used;  // HF names
};

std::string fill_pattern(const char* pattern, int64_t layer, int64_t expert) {
  std::string s = pattern;
  for (const auto& [key, value] :
       {std::pair<std::string, int64_t>{"{L}", layer}, {"{E}", expert}}) {
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key)) {
      s.replace(at, key.size(), std::to_string(value));
    }
  }
  return s;
}

// Fetches checkpoint tensors with their shape checked, and records what was used.
class Source {
 public:
  Source(const WeightSource& weights, Plan& plan) : weights_(weights), plan_(plan) {}
  bool has(const std::string& name) const { return weights_.has(name); }
  Result<TensorView> get(const std::string& name, std::initializer_list<int64_t> shape) {
    SPUTNIK_ASSIGN_OR_RETURN(TensorView v, weights_.get(name, shape));
    if (v.dtype == DType::I32 || v.dtype == DType::I64 || v.dtype == DType::I8) {
      return make_error("{}: tensor '{}' has dtype {}, expected a float type", weights_.path(),
                        name, dtype_name(v.dtype));
    }
    if (v.dtype == DType::F8_E4M3 && v.scale == nullptr) {
      return make_error("{}: FP8 tensor '{}' has no '{}_scale_inv' block scales", weights_.path(),
                        name, name);
    }
    plan_.used.insert(name);
    if (v.scale) plan_.used.insert(name + "_scale_inv");
    return v;
  }

 private:
  const WeightSource& weights_;
  Plan& plan_;
};

// A tensor copied row for row (2-D, or 1-D as one row).
PlannedTensor copy_of(const std::string& name, const TensorView& v, Role role) {
  PlannedTensor t;
  t.name = name;
  t.shape.assign(v.shape.begin(), v.shape.begin() + v.n_dims);
  t.role = role;
  t.row = [v](int64_t r, float* dst) { dequantize_weight_row(v, r, dst); };
  return t;
}

// --- DeepSeek (conversion/deepseek.py DeepseekV2Model) -----------------------------------------

const DeepSeekTensorName& deepseek_name(const std::string& ours) {
  for (const DeepSeekTensorName& n : deepseek_tensor_names()) {
    if (ours == n.ours) return n;
  }
  // Internal invariant: every name used below is in deepseek.cpp's table.
  std::fprintf(stderr, "convert: '%s' is not in the DeepSeek name table\n", ours.c_str());
  std::abort();
}
std::string hf_name(const std::string& ours, int64_t layer = -1, int64_t expert = -1) {
  return fill_pattern(deepseek_name(ours).hf, layer, expert);
}
std::string gguf_name(const std::string& ours, int64_t layer = -1) {
  return fill_pattern(deepseek_name(ours).gguf, layer, -1);
}

Status plan_deepseek(const DeepSeekConfig& c, Source& src, Plan& plan) {
  auto& out = plan.tensors;
  auto matrix = [&](const std::string& ours, int64_t l, std::initializer_list<int64_t> shape,
                    Role role = Role::Matrix) -> Status {
    SPUTNIK_ASSIGN_OR_RETURN(TensorView v, src.get(hf_name(ours, l), shape));
    out.push_back(copy_of(gguf_name(ours, l), v, role));
    return ok_status();
  };
  auto vector = [&](const std::string& ours, int64_t l, int64_t n) {
    return matrix(ours, l, {n}, Role::Vector);
  };
  const int64_t H = c.n_heads, dim = c.dim, r = c.kv_lora_rank, nope = c.qk_nope_head_dim,
                vd = c.v_head_dim;
  SPUTNIK_CHECK_OK(matrix("embed", -1, {c.vocab_size, dim}));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    SPUTNIK_CHECK_OK(vector("attn_norm", l, dim));
    if (c.q_lora_rank == 0) {
      SPUTNIK_CHECK_OK(matrix("attn.wq", l, {H * c.qk_head_dim(), dim}));
    } else {
      SPUTNIK_CHECK_OK(matrix("attn.wq_a", l, {c.q_lora_rank, dim}));
      SPUTNIK_CHECK_OK(vector("attn.q_norm", l, c.q_lora_rank));
      SPUTNIK_CHECK_OK(matrix("attn.wq_b", l, {H * c.qk_head_dim(), c.q_lora_rank}));
    }
    SPUTNIK_CHECK_OK(matrix("attn.wkv_a", l, {r + c.qk_rope_head_dim, dim}));
    SPUTNIK_CHECK_OK(vector("attn.kv_norm", l, r));
    // kv_b_proj [H*(nope+v), r], per head nope K rows then v V rows. The converter writes
    //   attn_k_b [H, r, nope]: k_b[h][i][j] = kv_b[h*(nope+v) + j][i]  (transposed per head)
    //   attn_v_b [H, v, r]:    v_b[h][i][:] = kv_b[h*(nope+v) + nope + i][:]
    SPUTNIK_ASSIGN_OR_RETURN(TensorView kv_b,
                             src.get(hf_name("attn.wkv_b", l), {H * (nope + vd), r}));
    {
      PlannedTensor k_b;
      k_b.name = gguf_name("attn.wk_b", l);
      k_b.shape = {H, r, nope};
      auto full = std::make_shared<std::vector<float>>();  // kv_b as f32, only while writing k_b
      k_b.prepare = [kv_b, full] {
        full->resize(static_cast<size_t>(kv_b.rows() * kv_b.cols()));
        for (int64_t i = 0; i < kv_b.rows(); ++i)
          dequantize_weight_row(kv_b, i, full->data() + i * kv_b.cols());
      };
      k_b.release = [full] { std::vector<float>().swap(*full); };
      k_b.row = [full, r, nope, vd](int64_t row, float* dst) {
        const int64_t h = row / r, i = row % r;
        for (int64_t j = 0; j < nope; ++j) dst[j] = (*full)[(h * (nope + vd) + j) * r + i];
      };
      out.push_back(std::move(k_b));
      PlannedTensor v_b;
      v_b.name = gguf_name("attn.wv_b", l);
      v_b.shape = {H, vd, r};
      v_b.row = [kv_b, nope, vd](int64_t row, float* dst) {
        const int64_t h = row / vd, i = row % vd;
        dequantize_weight_row(kv_b, h * (nope + vd) + nope + i, dst);
      };
      out.push_back(std::move(v_b));
    }
    SPUTNIK_CHECK_OK(matrix("attn.wo", l, {dim, H * vd}));
    SPUTNIK_CHECK_OK(vector("ffn_norm", l, dim));
    if (!c.is_moe_layer(l)) {
      SPUTNIK_CHECK_OK(matrix("ffn.w1", l, {c.inter_dim, dim}));
      SPUTNIK_CHECK_OK(matrix("ffn.w2", l, {dim, c.inter_dim}));
      SPUTNIK_CHECK_OK(matrix("ffn.w3", l, {c.inter_dim, dim}));
      continue;
    }
    const int64_t E = c.n_routed_experts, inter = c.moe_inter_dim;
    // The router stays f32: llama.cpp's quantize never quantises ffn_gate_inp (llama-quant.cpp),
    // since a rounding error there changes which experts run, not just their output.
    SPUTNIK_CHECK_OK(matrix("ffn.gate", l, {E, dim}, Role::Router));
    if (src.has(hf_name("ffn.gate.bias", l))) {
      SPUTNIK_CHECK_OK(vector("ffn.gate.bias", l, E));
    } else if (c.topk_method == DeepSeekTopkMethod::NoauxTc) {
      return make_error(
          "layer {}: topk_method noaux_tc needs the router bias '{}', which is missing", l,
          hf_name("ffn.gate.bias", l));
    }
    // Routed experts, stacked: [E, inter, dim] (w1, w3) and [E, dim, inter] (w2).
    for (const char* w : {"ffn.experts.w1", "ffn.experts.w3", "ffn.experts.w2"}) {
      const bool down = std::string(w) == "ffn.experts.w2";
      const int64_t rows = down ? dim : inter, cols = down ? inter : dim;
      auto experts = std::make_shared<std::vector<TensorView>>();
      for (int64_t e = 0; e < E; ++e) {
        SPUTNIK_ASSIGN_OR_RETURN(TensorView v, src.get(hf_name(w, l, e), {rows, cols}));
        experts->push_back(v);
      }
      PlannedTensor t;
      t.name = gguf_name(w, l);
      t.shape = {E, rows, cols};
      t.role = Role::Expert;
      t.row = [experts, rows](int64_t row, float* dst) {
        dequantize_weight_row((*experts)[row / rows], row % rows, dst);
      };
      out.push_back(std::move(t));
    }
    if (c.n_shared_experts > 0) {
      const int64_t shared = c.n_shared_experts * inter;
      SPUTNIK_CHECK_OK(matrix("ffn.shared_experts.w1", l, {shared, dim}));
      SPUTNIK_CHECK_OK(matrix("ffn.shared_experts.w2", l, {dim, shared}));
      SPUTNIK_CHECK_OK(matrix("ffn.shared_experts.w3", l, {shared, dim}));
    }
  }
  SPUTNIK_CHECK_OK(vector("norm", -1, dim));
  SPUTNIK_CHECK_OK(matrix("head", -1, {c.vocab_size, dim}));
  return ok_status();
}

// Keys in the order DeepseekV2Model.set_gguf_parameters (after TextModel's) writes them; a key
// the converter writes only when config.json has the field is written the same way.
void deepseek_metadata(const DeepSeekConfig& c, const json& j, GgufWriter& w) {
  const std::string p = "deepseek2.";
  w.add_uint32(p + "block_count", static_cast<uint32_t>(c.n_layers));
  w.add_uint32(p + "context_length", static_cast<uint32_t>(c.max_seq_len));
  w.add_uint32(p + "embedding_length", static_cast<uint32_t>(c.dim));
  w.add_uint32(p + "feed_forward_length", static_cast<uint32_t>(c.inter_dim));
  w.add_uint32(p + "attention.head_count", static_cast<uint32_t>(c.n_heads));
  w.add_uint32(p + "attention.head_count_kv", 1);  // MLA as MQA with one wide head
  if (c.yarn) {
    w.add_string(p + "rope.scaling.type", "yarn");
    w.add_float32(p + "rope.scaling.factor", static_cast<float>(c.rope_factor));
    w.add_uint32(p + "rope.scaling.original_context_length",
                 static_cast<uint32_t>(c.original_seq_len));
    w.add_float32(p + "rope.scaling.yarn_beta_fast", static_cast<float>(c.beta_fast));
    w.add_float32(p + "rope.scaling.yarn_beta_slow", static_cast<float>(c.beta_slow));
  }
  w.add_float32(p + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_float32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  if (c.n_routed_experts > 0) {
    w.add_uint32(p + "expert_count", static_cast<uint32_t>(c.n_routed_experts));
    w.add_uint32(p + "expert_used_count", static_cast<uint32_t>(c.n_activated_experts));
    if (j.contains("n_group") && !j["n_group"].is_null()) {
      w.add_uint32(p + "expert_group_count", static_cast<uint32_t>(c.n_expert_groups));
    }
    if (j.contains("topk_group") && !j["topk_group"].is_null()) {
      w.add_uint32(p + "expert_group_used_count", static_cast<uint32_t>(c.n_limited_groups));
    }
    // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE: 1 softmax, 2 sigmoid.
    w.add_uint32(p + "expert_gating_func", c.score_func == DeepSeekScoreFunc::Sigmoid ? 2 : 1);
  }
  w.add_uint32(p + "attention.key_length",
               static_cast<uint32_t>(c.kv_lora_rank + c.qk_rope_head_dim));
  w.add_uint32(p + "attention.value_length", static_cast<uint32_t>(c.kv_lora_rank));
  w.add_uint32(p + "leading_dense_block_count", static_cast<uint32_t>(c.n_dense_layers));
  w.add_uint32(p + "vocab_size", static_cast<uint32_t>(c.vocab_size));
  // The converter omits q_lora_rank when config.json has null; llama.cpp then treats a model as
  // "lite" (wq instead of wq_a/wq_b) only when it has 26 or 27 layers (V2-Lite's). Writing the
  // 0 lets llama.cpp load any q-LoRA-free model; sputnik reads a missing key as 0 anyway.
  w.add_uint32(p + "attention.q_lora_rank", static_cast<uint32_t>(c.q_lora_rank));
  w.add_uint32(p + "attention.kv_lora_rank", static_cast<uint32_t>(c.kv_lora_rank));
  w.add_uint32(p + "attention.key_length_mla", static_cast<uint32_t>(c.qk_head_dim()));
  w.add_uint32(p + "attention.value_length_mla", static_cast<uint32_t>(c.v_head_dim));
  w.add_uint32(p + "expert_feed_forward_length",
               static_cast<uint32_t>(c.moe_inter_dim > 0 ? c.moe_inter_dim : c.inter_dim));
  w.add_uint32(p + "expert_shared_count", static_cast<uint32_t>(c.n_shared_experts));
  if (j.contains("routed_scaling_factor") && !j["routed_scaling_factor"].is_null()) {
    w.add_float32(p + "expert_weights_scale", c.route_scale);
  }
  if (c.norm_topk_prob) w.add_bool(p + "expert_weights_norm", true);
  w.add_uint32(p + "rope.dimension_count", static_cast<uint32_t>(c.qk_rope_head_dim));
  // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: 0.1 * mscale_all_dim, when config.json gives it.
  if (c.yarn && j["rope_scaling"].contains("mscale_all_dim")) {
    w.add_float32(p + "rope.scaling.yarn_log_multiplier",
                  static_cast<float>(0.1 * c.mscale_all_dim));
  }
}

// --- Llama / Qwen2 (conversion/llama.py LlamaModel, conversion/qwen.py Qwen2Model) -------------

std::string layer_name(const char* pattern, int64_t layer) {
  return fmt::format(fmt::runtime(pattern), layer);
}

// The rope_parameters / rope_scaling object of an HF config (transformers 5 / 4), or null.
const json* llama_rope(const json& j) {
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (j.contains(key) && j[key].is_object()) return &j[key];
  }
  return nullptr;
}
std::string llama_rope_type(const json& j) {
  const json* rope = llama_rope(j);
  if (!rope) return "default";
  if (rope->contains("rope_type") && (*rope)["rope_type"].is_string()) return (*rope)["rope_type"];
  if (rope->contains("type") && (*rope)["type"].is_string()) return (*rope)["type"];
  return "default";
}

Status plan_llama(const LlamaConfig& c, const json& j, Source& src, Plan& plan) {
  const LlamaTensorNames& hf = llama_tensor_names(false);
  const LlamaTensorNames& gg = llama_tensor_names(true);
  auto& out = plan.tensors;
  const bool permute = c.family == LlamaFamily::Llama;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  auto add = [&](const std::string& hf_name, const std::string& gguf_name,
                 std::initializer_list<int64_t> shape, Role role,
                 int64_t permute_heads = 0) -> Status {
    SPUTNIK_ASSIGN_OR_RETURN(TensorView v, src.get(hf_name, shape));
    PlannedTensor t = copy_of(gguf_name, v, role);
    if (permute_heads > 0) {
      // LlamaModel.permute: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2), so row
      // (h, i, s) of the output is row (h, s, i) of HF's: rotate_half pairs (i, i + d/2) become
      // the adjacent pairs (2i, 2i+1) llama.cpp's "normal" rope rotates.
      const int64_t head = v.shape[0] / permute_heads, half = head / 2;
      t.row = [v, head, half](int64_t r, float* dst) {
        const int64_t h = r / head, i = (r % head) / 2, s = r % 2;
        dequantize_weight_row(v, h * head + s * half + i, dst);
      };
    }
    out.push_back(std::move(t));
    return ok_status();
  };
  SPUTNIK_CHECK_OK(add(hf.tok_embeddings, gg.tok_embeddings, {c.vocab_size, c.dim}, Role::Matrix));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto n = [l](const char* pattern) { return layer_name(pattern, l); };
    SPUTNIK_CHECK_OK(add(n(hf.attention_norm), n(gg.attention_norm), {c.dim}, Role::Vector));
    SPUTNIK_CHECK_OK(
        add(n(hf.wq), n(gg.wq), {q_dim, c.dim}, Role::Matrix, permute ? c.n_heads : 0));
    SPUTNIK_CHECK_OK(
        add(n(hf.wk), n(gg.wk), {kv_dim, c.dim}, Role::Matrix, permute ? c.n_kv_heads : 0));
    SPUTNIK_CHECK_OK(add(n(hf.wv), n(gg.wv), {kv_dim, c.dim}, Role::Matrix));
    if (c.qkv_bias) {
      SPUTNIK_CHECK_OK(add(n(hf.bq), n(gg.bq), {q_dim}, Role::Vector));
      SPUTNIK_CHECK_OK(add(n(hf.bk), n(gg.bk), {kv_dim}, Role::Vector));
      SPUTNIK_CHECK_OK(add(n(hf.bv), n(gg.bv), {kv_dim}, Role::Vector));
    }
    SPUTNIK_CHECK_OK(add(n(hf.wo), n(gg.wo), {c.dim, q_dim}, Role::Matrix));
    SPUTNIK_CHECK_OK(add(n(hf.ffn_norm), n(gg.ffn_norm), {c.dim}, Role::Vector));
    SPUTNIK_CHECK_OK(add(n(hf.w1), n(gg.w1), {c.inter_dim, c.dim}, Role::Matrix));
    SPUTNIK_CHECK_OK(add(n(hf.w3), n(gg.w3), {c.inter_dim, c.dim}, Role::Matrix));
    SPUTNIK_CHECK_OK(add(n(hf.w2), n(gg.w2), {c.dim, c.inter_dim}, Role::Matrix));
  }
  SPUTNIK_CHECK_OK(add(hf.norm, gg.norm, {c.dim}, Role::Vector));
  if (c.tie_word_embeddings) {
    plan.used.insert(hf.output);  // a tied lm_head, if stored, is the embedding: not written
  } else {
    SPUTNIK_CHECK_OK(add(hf.output, gg.output, {c.vocab_size, c.dim}, Role::Matrix));
  }
  // Llama-3 rope scaling as llama.cpp's rope_freqs: per-pair divisors of the unscaled
  // frequencies (LlamaModel.generate_extra_tensors), here the ratio of the unscaled to the
  // config's scaled frequencies, which is the same number. (Linear scaling is metadata.)
  if (c.family == LlamaFamily::Llama && llama_rope_type(j) == "llama3") {
    const std::vector<float> plain = llama_inv_freq(c.rope_theta, c.rope_dim, nullptr);
    auto factors = std::make_shared<std::vector<float>>(plain.size());
    bool scaled = false;
    for (size_t i = 0; i < plain.size(); ++i) {
      (*factors)[i] = plain[i] / c.inv_freq[i];
      scaled = scaled || (*factors)[i] != 1.0f;
    }
    if (scaled) {
      PlannedTensor t;
      t.name = "rope_freqs.weight";
      t.shape = {static_cast<int64_t>(factors->size())};
      t.role = Role::Vector;
      t.row = [factors](int64_t, float* dst) { std::copy(factors->begin(), factors->end(), dst); };
      out.push_back(std::move(t));
    }
  }
  return ok_status();
}

void llama_metadata(const LlamaConfig& c, const json& j, GgufWriter& w) {
  const std::string p = c.architecture + ".";
  w.add_uint32(p + "block_count", static_cast<uint32_t>(c.n_layers));
  w.add_uint32(p + "context_length", static_cast<uint32_t>(c.max_seq_len));
  w.add_uint32(p + "embedding_length", static_cast<uint32_t>(c.dim));
  w.add_uint32(p + "feed_forward_length", static_cast<uint32_t>(c.inter_dim));
  w.add_uint32(p + "attention.head_count", static_cast<uint32_t>(c.n_heads));
  w.add_uint32(p + "attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  if (llama_rope_type(j) == "linear") {  // TextModel.set_gguf_parameters
    w.add_string(p + "rope.scaling.type", "linear");
    w.add_float32(p + "rope.scaling.factor", (*llama_rope(j)).value("factor", 1.0f));
  }
  w.add_float32(p + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_float32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    w.add_uint32(p + "attention.key_length", static_cast<uint32_t>(c.head_dim));
    w.add_uint32(p + "attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  if (c.family == LlamaFamily::Llama) {
    w.add_uint32(p + "vocab_size", static_cast<uint32_t>(c.vocab_size));
    w.add_uint32(p + "rope.dimension_count", static_cast<uint32_t>(c.rope_dim));
  }
}

// --- Types ------------------------------------------------------------------------------------

// llama.cpp's LLAMA_FTYPE of a file whose matrices are mostly `t` (K-quants: the _M mixes).
uint32_t llama_file_type(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q8_0:
      return 7;
    case DType::Q4_K:
      return 15;
    case DType::Q5_K:
      return 17;
    case DType::Q6_K:
      return 18;
    case DType::BF16:
      return 32;
    default:
      return 0;
  }
}

// Picks each tensor's type. 1-D tensors (norms, biases, router bias) and the router stay F32.
// A row that does not fill whole blocks of the asked type falls back, as llama.cpp's quantize
// does: K-quants (256) to Q8_0 when rows fill blocks of 32 (llama.cpp picks Q5_0/Q5_1/Q8_0; we
// take the more precise), otherwise F16.
void choose_types(Plan& plan, DType type, DType expert_type, ConvertReport& report) {
  for (PlannedTensor& t : plan.tensors) {
    if (t.role == Role::Vector || t.role == Role::Router) {
      t.type = DType::F32;
      continue;
    }
    const DType want = t.role == Role::Expert ? expert_type : type;
    DType got = want;
    if (t.cols() % dtype_traits(want).block_elements != 0) {
      got = t.cols() % dtype_traits(DType::Q8_0).block_elements == 0 ? DType::Q8_0 : DType::F16;
      report.fallbacks.push_back(fmt::format("{}: {} -> {} (rows of {})", t.name, dtype_name(want),
                                             dtype_name(got), t.cols()));
    }
    t.type = got;
  }
}

// --- Tokenizer (TextModel._set_vocab_gpt2 and gguf-py's SpecialVocab) ---------------------------

std::string json_regex(const json& step) {
  if (step.contains("pattern") && step["pattern"].is_object()) {
    const json& pat = step["pattern"];
    if (pat.contains("Regex") && pat["Regex"].is_string()) return pat["Regex"];
    if (pat.contains("String") && pat["String"].is_string()) return pat["String"];
  }
  return {};
}

// llama.cpp's token types.
constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4, kTokenUnused = 5;

// HF TextModel.does_token_look_special.
bool looks_special(const std::string& t) {
  auto wrapped = [&t](const std::string& open, const std::string& close) {
    return t.size() >= open.size() + close.size() && t.starts_with(open) && t.ends_with(close);
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<｜", "｜>") || wrapped("<unused", ">");
}

// The id of a token named in tokenizer_config.json (a string or {"content": ...}).
int64_t config_token_id(const json& config, const std::string& key,
                        const std::map<std::string, int64_t>& ids) {
  if (!config.contains(key)) return -1;
  const json& v = config[key];
  std::string text;
  if (v.is_string())
    text = v.get<std::string>();
  else if (v.is_object() && v.contains("content") && v["content"].is_string())
    text = v["content"];
  auto it = ids.find(text);
  return it == ids.end() ? -1 : it->second;
}

}  // namespace

Status add_tokenizer_metadata(const std::string& dir, const json& config, int64_t vocab_size,
                              const std::string& pre_override, GgufWriter& w) {
  const std::string path = dir + "/tokenizer.json";
  if (!fs::exists(path)) {
    return make_error(
        "{}: missing (quantize writes the tokenizer into the GGUF, and llama.cpp "
        "needs it)",
        path);
  }
  SPUTNIK_ASSIGN_OR_RETURN(json tok, read_json_file(path));
  std::string pre = pre_override;
  if (pre.empty()) {
    SPUTNIK_ASSIGN_OR_RETURN(pre, detect_tokenizer_pre(path));
  }
  if (!tok.contains("model") || !tok["model"].is_object() || !tok["model"].contains("vocab") ||
      !tok["model"]["vocab"].is_object()) {
    return make_error("{}: field 'model.vocab' is missing", path);
  }
  const json& model = tok["model"];
  if (model.contains("type") && model["type"] != "BPE") {
    return make_error("{}: field 'model.type' is {}, expected \"BPE\" (byte-level BPE)", path,
                      model["type"].dump());
  }
  std::map<std::string, int64_t> ids;
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<int64_t> types(static_cast<size_t>(vocab_size), kTokenUnused);
  std::vector<bool> present(static_cast<size_t>(vocab_size), false);
  auto put = [&](const std::string& text, const json& id_json, int32_t type) -> Status {
    if (!id_json.is_number_integer())
      return make_error("{}: token '{}' has id {}", path, text, id_json.dump());
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= vocab_size) {
      return make_error("{}: token '{}' has id {}, outside config.json vocab_size {}", path, text,
                        id, vocab_size);
    }
    tokens[id] = text;
    types[id] = type;
    present[id] = true;
    ids[text] = id;
    return ok_status();
  };
  for (const auto& [text, id] : model["vocab"].items())
    SPUTNIK_CHECK_OK(put(text, id, kTokenNormal));
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const json& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() ||
          !a.contains("id")) {
        return make_error("{}: an added_tokens entry lacks content or id: {}", path, a.dump());
      }
      std::string text = a["content"];
      const bool special = a.value("special", false) || looks_special(text);
      if (!special) {  // TextModel pre-normalises user-defined "▁" to spaces
        for (size_t at = text.find("\xe2\x96\x81"); at != std::string::npos;
             at = text.find("\xe2\x96\x81")) {
          text.replace(at, 3, " ");
        }
      }
      SPUTNIK_CHECK_OK(put(text, a["id"], special ? kTokenControl : kTokenUserDefined));
    }
  }
  for (int64_t i = 0; i < vocab_size; ++i) {
    if (!present[i]) tokens[i] = fmt::format("[PAD{}]", i);
  }
  std::vector<std::string> merges;
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const json& m : model["merges"]) {
      if (m.is_string())
        merges.push_back(m);
      else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      else
        return make_error("{}: a merges entry is neither \"a b\" nor [a, b]: {}", path, m.dump());
    }
  }
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", pre);
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  w.add_int_array("tokenizer.ggml.token_type", GgufValueType::Int32, types);
  // Always written, empty or not: llama.cpp refuses a BPE vocabulary without the key.
  w.add_string_array("tokenizer.ggml.merges", merges);

  // Special ids: tokenizer_config.json's tokens, else config.json's *_token_id (SpecialVocab).
  json tok_config = json::object();
  const std::string tok_config_path = dir + "/tokenizer_config.json";
  if (fs::exists(tok_config_path)) {
    SPUTNIK_ASSIGN_OR_RETURN(tok_config, read_json_file(tok_config_path));
  }
  for (const char* kind : {"bos", "eos", "unk", "sep", "pad"}) {
    int64_t id = config_token_id(tok_config, std::string(kind) + "_token", ids);
    const std::string key = std::string(kind) + "_token_id";
    if (id < 0 && config.contains(key) && config[key].is_number_integer()) id = config[key];
    if (id >= 0 && id < vocab_size)
      w.add_uint32(fmt::format("tokenizer.ggml.{}_token_id", kind), static_cast<uint32_t>(id));
  }
  for (const char* flag : {"add_bos_token", "add_eos_token"}) {
    if (tok_config.contains(flag) && tok_config[flag].is_boolean()) {
      w.add_bool(std::string("tokenizer.ggml.") + flag, tok_config[flag].get<bool>());
    }
  }
  if (tok_config.contains("chat_template")) {
    const json& t = tok_config["chat_template"];
    if (t.is_string()) {
      w.add_string("tokenizer.chat_template", t);
    } else if (t.is_array()) {  // [{name, template}, ...]: "default" is the chat template
      for (const json& e : t) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
            e["template"].is_string()) {
          w.add_string("tokenizer.chat_template", e["template"]);
        }
      }
    }
  }
  return ok_status();
}

// --- Writing ----------------------------------------------------------------------------------

namespace {

// A scratch file that holds the tensor data until the GGUF is written; removed when done.
struct ScratchFile {
  std::string path;
  std::FILE* file = nullptr;
  ~ScratchFile() {
    if (file) std::fclose(file);
    if (!path.empty()) {
      std::error_code ec;
      fs::remove(path, ec);
    }
  }
};

}  // namespace

Result<DType> parse_convert_type(const std::string& text) {
  std::string t = text;
  for (char& ch : t) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K,
                  DType::Q5_K, DType::Q6_K}) {
    if (t == dtype_name(d)) return d;
  }
  return make_error("unknown type '{}' (expected F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K or Q6_K)",
                    text);
}

Result<std::string> detect_tokenizer_pre(const std::string& path) {
  SPUTNIK_ASSIGN_OR_RETURN(json tok, read_json_file(path));
  const json pre = tok.value("pre_tokenizer", json());
  std::vector<json> steps;
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
    for (const json& s : pre["pretokenizers"]) steps.push_back(s);
  } else if (pre.is_object()) {
    steps.push_back(pre);
  }
  std::vector<std::string> regexes;
  bool digits = false, byte_level_regex = false;
  for (const json& s : steps) {
    const std::string type = s.value("type", "");
    if (type == "Split") regexes.push_back(json_regex(s));
    if (type == "Digits") digits = s.value("individual_digits", false);
    if (type == "ByteLevel") byte_level_regex = s.value("use_regex", true);
  }
  auto any = [&regexes](const std::string& needle) {
    return std::any_of(regexes.begin(), regexes.end(),
                       [&](const std::string& r) { return r.find(needle) != std::string::npos; });
  };
  if (any("\\p{N}{1,3}") && any("\u4e00-\u9fa5")) return std::string("deepseek-v3");
  if (regexes.size() >= 2 && regexes[0] == "[\r\n]" && any("\\s?[A-Za-z"))
    return std::string("deepseek-llm");
  const std::string contractions =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}";
  if (any(contractions + "{1,3}")) return std::string("llama-bpe");
  if (any(contractions + "| ?")) {
    // R1-Distill-Qwen keeps Qwen2's splitting; llama.cpp knows its tokenizer as deepseek-r1-qwen.
    const std::string dump = tok.value("added_tokens", json::array()).dump();
    return std::string(dump.find("begin\xe2\x96\x81of\xe2\x96\x81sentence") != std::string::npos
                           ? "deepseek-r1-qwen"
                           : "qwen2");
  }
  if (regexes.empty() && digits && byte_level_regex) return std::string("smollm");
  if (regexes.empty() && !digits && byte_level_regex) return std::string("gpt-2");
  return make_error(
      "{}: pre_tokenizer {} is not one sputnik knows the llama.cpp name of; pass "
      "--tokenizer-pre NAME (deepseek-v3, deepseek-llm, llama-bpe, qwen2, smollm, gpt-2)",
      path, pre.dump().substr(0, 200));
}

Result<ConvertReport> convert_to_gguf(const ConvertOptions& options,
                                      const ConvertProgressFn& progress) {
  const DType type = options.type;
  const DType expert_type = options.expert_type == DType::Count ? type : options.expert_type;
  for (DType t : {type, expert_type}) {
    auto known = parse_convert_type(std::string(dtype_name(t)));
    if (!known.ok()) return known.error();
  }
  if (!fs::is_directory(options.input)) {
    return make_error(
        "{}: not a directory (expected a Hugging Face checkpoint: config.json and "
        "*.safetensors)",
        options.input);
  }
  SPUTNIK_ASSIGN_OR_RETURN(std::shared_ptr<WeightSource> weights,
                           WeightSource::open(options.input));
  const SafetensorsCheckpoint& st = *weights->safetensors();
  const std::string config_path = st.directory() + "/config.json";
  if (!st.has_config()) return make_error("{}: missing or empty", config_path);
  const json& j = st.config();
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    arch = j["architectures"][0];
  }

  ConvertReport report;
  Plan plan;
  Source src(*weights, plan);
  GgufWriter w;
  std::string gguf_arch;
  int64_t vocab_size = 0, n_layers = 0;
  std::function<void(GgufWriter&)> arch_metadata;
  if (arch == "DeepseekV2ForCausalLM" || arch == "DeepseekV3ForCausalLM") {
    SPUTNIK_ASSIGN_OR_RETURN(DeepSeekConfig c, deepseek_config_from_json(j, config_path));
    gguf_arch = "deepseek2";  // V3 and R1 too: llama.cpp tells them apart by expert_gating_func
    vocab_size = c.vocab_size;
    n_layers = c.n_layers;
    SPUTNIK_CHECK_OK(plan_deepseek(c, src, plan));
    arch_metadata = [c, &j](GgufWriter& g) { deepseek_metadata(c, j, g); };
  } else if (arch == "LlamaForCausalLM" || arch == "Qwen2ForCausalLM") {
    SPUTNIK_ASSIGN_OR_RETURN(LlamaConfig c, llama_config_from_hf(*weights, arch));
    gguf_arch = c.architecture;
    vocab_size = c.vocab_size;
    n_layers = c.n_layers;
    SPUTNIK_CHECK_OK(plan_llama(c, j, src, plan));
    arch_metadata = [c, &j](GgufWriter& g) { llama_metadata(c, j, g); };
  } else {
    return make_error(
        "{}: architectures[0] = '{}'; quantize converts DeepseekV2ForCausalLM, "
        "DeepseekV3ForCausalLM, LlamaForCausalLM and Qwen2ForCausalLM",
        config_path, arch);
  }
  report.architecture = gguf_arch;

  // Every checkpoint tensor must be used, except those llama.cpp's converter drops too: the
  // MTP layers (index >= num_hidden_layers) and precomputed rotary tables.
  for (const std::string& name : st.tensor_names()) {
    if (plan.used.count(name) || name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    long long layer = -1;
    if (std::sscanf(name.c_str(), "model.layers.%lld.", &layer) == 1 && layer >= n_layers) {
      continue;
    }
    return make_error("{}: tensor '{}' is not one quantize knows where to put for {}",
                      options.input, name, arch);
  }
  choose_types(plan, type, expert_type, report);

  // Metadata: general.*, the architecture's keys, the tokenizer.
  w.add_string("general.architecture", gguf_arch);
  w.add_string("general.type", "model");
  // The checkpoint directory's name (config.json's _name_or_path is often a path on the
  // publisher's machine); llama.cpp's converter also starts from the directory name.
  w.add_string("general.name", fs::path(st.directory()).filename().string());
  arch_metadata(w);
  w.add_uint32("general.file_type", llama_file_type(type));
  w.add_uint32("general.quantization_version", 2);
  SPUTNIK_CHECK_OK(add_tokenizer_metadata(st.directory(), j, vocab_size, options.tokenizer_pre, w));

  // Tensor data into the scratch file, a block of rows at a time, rows in parallel.
  ScratchFile scratch;
  scratch.path = options.output + ".data.tmp";
  scratch.file = std::fopen(scratch.path.c_str(), "wb");
  if (!scratch.file)
    return make_error("{}: cannot create ({})", scratch.path, std::strerror(errno));
  uint64_t total = 0;
  for (const PlannedTensor& t : plan.tensors) total += dtype_row_bytes(t.type, t.cols()) * t.rows();
  ThreadPool pool(options.n_threads > 0 ? options.n_threads : hardware_threads());
  std::vector<std::vector<float>> row_f32(static_cast<size_t>(pool.size()));
  std::vector<uint64_t> offsets;
  uint64_t written = 0;
  constexpr uint64_t kBlockBytes = 64ull << 20;  // output bytes per block of rows
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    PlannedTensor& t = plan.tensors[i];
    const int64_t rows = t.rows(), cols = t.cols();
    const size_t row_bytes = dtype_row_bytes(t.type, cols);
    const int64_t block_rows = std::max<int64_t>(1, static_cast<int64_t>(kBlockBytes / row_bytes));
    if (t.prepare) t.prepare();
    std::vector<uint8_t> out(static_cast<size_t>(std::min(rows, block_rows)) * row_bytes);
    for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
      const int64_t n = std::min(block_rows, rows - r0);
      pool.parallel_for(n, [&](int64_t k, int thread) {
        std::vector<float>& buf = row_f32[static_cast<size_t>(thread)];
        buf.resize(static_cast<size_t>(cols));
        t.row(r0 + k, buf.data());
        ref::quantize_row(t.type, buf.data(), out.data() + k * row_bytes, cols);
      });
      const size_t bytes = static_cast<size_t>(n) * row_bytes;
      if (std::fwrite(out.data(), 1, bytes, scratch.file) != bytes) {
        return make_error("{}: write failed ({}); is the disk full?", scratch.path,
                          std::strerror(errno));
      }
    }
    if (t.release) t.release();
    offsets.push_back(written);
    written += static_cast<uint64_t>(rows) * row_bytes;
    if (progress) {
      progress({static_cast<int64_t>(i + 1), static_cast<int64_t>(plan.tensors.size()), t.name,
                t.type, written, total});
    }
  }
  if (std::fclose(scratch.file) != 0) {
    scratch.file = nullptr;
    return make_error("{}: write failed ({})", scratch.path, std::strerror(errno));
  }
  scratch.file = nullptr;
  SPUTNIK_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> data, MappedFile::open(scratch.path));
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const PlannedTensor& t = plan.tensors[i];
    const size_t bytes = dtype_row_bytes(t.type, t.cols()) * static_cast<size_t>(t.rows());
    w.add_tensor(t.name, t.type, t.shape, data->data() + offsets[i], bytes);
  }
  SPUTNIK_CHECK_OK(w.write(options.output));
  report.n_tensors = static_cast<int64_t>(plan.tensors.size());
  report.data_bytes = written;
  return report;
}

}  // namespace sputnik
