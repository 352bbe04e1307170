// DeepSeek-V2/V3 (models/deepseek*.cpp).
//  - Golden: the reference fixtures under tests/data/deepseek/<name>/ (model.py on tiny
//    random-weight configs; skipped while absent).
//  - Differential, on tiny random checkpoints written here for each variant (V2-Lite: no q_lora,
//    greedy softmax; V2: group_limited_greedy; V3: sigmoid + noaux_tc bias + MTP; V3 FP8):
//    cached decode == full forward, naive MLA == absorbed MLA, a batch of three sequences ==
//    each alone, FP8 == the f32 checkpoint of its dequantised values, and GGUF (llama.cpp's
//    deepseek2 layout, split attn_k_b/attn_v_b or fused attn_kv_b) == safetensors.
//  - Units: Gate routing on hand-made scores, YaRN frequencies and softmax scale, cache size.
#include "models/deepseek.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "formats/gguf.h"
#include "formats/gguf_writer.h"
#include "formats/safetensors.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "models/model.h"
#include "models/weights.h"
#include "tokenizer/tokenizer.h"

namespace sputnik {
namespace {

namespace fs = std::filesystem;

// --- Tiny checkpoints
// ------------------------------------------------------------------------------

enum class Variant { V2Lite, V2, V3, V3Fp8 };

struct Dims {
  int64_t vocab = 64, dim = 32, inter = 48, moe_inter = 16, heads = 4, nope = 8, rope = 4, v = 8,
          kv_lora = 16, q_lora = 12, experts = 8, shared = 1, topk = 2, groups = 4, topk_groups = 2,
          layers = 2;
};

Dims dims_of(Variant v) {
  Dims d;
  if (v == Variant::V2Lite) d.q_lora = 0;
  if (v == Variant::V3Fp8) {
    // Wider than one 128x128 scale block in both directions for most weights (wkv_b has
    // heads * (nope + v) = 256 rows: two row blocks, so per-head row slices cross blocks).
    d.dim = 160;
    d.heads = 8;
    d.nope = 16;
    d.v = 16;
    d.inter = 144;
    d.moe_inter = 136;
  }
  return d;
}

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
  bool fp8 = false;  // a Linear weight that the FP8 checkpoint stores as F8_E4M3
};

struct Checkpoint {
  nlohmann::json config;
  std::map<std::string, Tensor> tensors;  // HF names
};

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  float normal(float stddev) { return std::normal_distribution<float>(0.0f, stddev)(gen); }
};

// float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, 0x7f/0xff NaN.
float fp8_decode(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
  if (exp == 15 && man == 7) return NAN;
  const float v = exp == 0 ? std::ldexp(static_cast<float>(man) / 8.0f, -6)
                           : std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
  return sign ? -v : v;
}
uint8_t fp8_encode(float x) {  // nearest of the finite codes
  static const std::vector<std::pair<float, uint8_t>> table = [] {
    std::vector<std::pair<float, uint8_t>> t;
    for (int b = 0; b < 256; ++b) {
      const float v = fp8_decode(static_cast<uint8_t>(b));
      if (!std::isnan(v)) t.push_back({v, static_cast<uint8_t>(b)});
    }
    std::sort(t.begin(), t.end());
    return t;
  }();
  auto hi = std::lower_bound(table.begin(), table.end(), std::pair<float, uint8_t>{x, 0});
  if (hi == table.end()) return table.back().second;
  if (hi == table.begin()) return hi->second;
  auto lo = std::prev(hi);
  return x - lo->first <= hi->first - x ? lo->second : hi->second;
}

Checkpoint make_checkpoint(Variant variant, uint64_t seed) {
  const Dims d = dims_of(variant);
  const bool v3 = variant == Variant::V3 || variant == Variant::V3Fp8;
  Checkpoint ck;
  nlohmann::json& c = ck.config;
  c["architectures"] = {v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"};
  c["vocab_size"] = d.vocab;
  c["hidden_size"] = d.dim;
  c["intermediate_size"] = d.inter;
  c["moe_intermediate_size"] = d.moe_inter;
  c["num_hidden_layers"] = d.layers;
  c["num_attention_heads"] = d.heads;
  c["num_key_value_heads"] = d.heads;
  c["n_routed_experts"] = d.experts;
  c["n_shared_experts"] = d.shared;
  c["num_experts_per_tok"] = d.topk;
  c["first_k_dense_replace"] = 1;
  c["moe_layer_freq"] = 1;
  c["q_lora_rank"] = d.q_lora > 0 ? nlohmann::json(d.q_lora) : nlohmann::json(nullptr);
  c["kv_lora_rank"] = d.kv_lora;
  c["qk_nope_head_dim"] = d.nope;
  c["qk_rope_head_dim"] = d.rope;
  c["v_head_dim"] = d.v;
  c["rms_norm_eps"] = 1e-6;
  c["rope_theta"] = 10000.0;
  c["max_position_embeddings"] = 163840;
  c["tie_word_embeddings"] = false;
  const double mscale = v3 ? 1.0 : 0.707;
  c["rope_scaling"] = {
      {"type", "yarn"},          {"factor", 40.0}, {"original_max_position_embeddings", 4096},
      {"beta_fast", 32},         {"beta_slow", 1}, {"mscale", mscale},
      {"mscale_all_dim", mscale}};
  if (variant == Variant::V2Lite) {
    c["topk_method"] = "greedy";
    c["scoring_func"] = "softmax";
    c["n_group"] = 1;
    c["topk_group"] = 1;
    c["norm_topk_prob"] = false;
    c["routed_scaling_factor"] = 1.0;
  } else if (variant == Variant::V2) {
    c["topk_method"] = "group_limited_greedy";
    c["scoring_func"] = "softmax";
    c["n_group"] = d.groups;
    c["topk_group"] = d.topk_groups;
    c["norm_topk_prob"] = false;
    c["routed_scaling_factor"] = 1.5;
  } else {
    c["topk_method"] = "noaux_tc";
    c["scoring_func"] = "sigmoid";
    c["n_group"] = d.groups;
    c["topk_group"] = d.topk_groups;
    c["norm_topk_prob"] = true;
    c["routed_scaling_factor"] = 2.5;
    c["num_nextn_predict_layers"] = 1;
  }

  Rng rng(seed);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float stddev,
                 bool fp8 = false, float mean = 0.0f) {
    Tensor t;
    t.shape = shape;
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    t.values.resize(static_cast<size_t>(n));
    for (float& v : t.values) v = mean + rng.normal(stddev);
    t.fp8 = fp8 && variant == Variant::V3Fp8;
    ck.tensors[name] = std::move(t);
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool fp8 = true) {
    add(name, {out, in}, 1.0f / std::sqrt(static_cast<float>(in)), fp8);
  };
  auto norm = [&](const std::string& name, int64_t n) { add(name, {n}, 0.1f, false, 1.0f); };
  auto block = [&](int64_t l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    norm(p + "input_layernorm.weight", d.dim);
    if (d.q_lora == 0) {
      linear(p + "self_attn.q_proj.weight", d.heads * (d.nope + d.rope), d.dim);
    } else {
      linear(p + "self_attn.q_a_proj.weight", d.q_lora, d.dim);
      norm(p + "self_attn.q_a_layernorm.weight", d.q_lora);
      linear(p + "self_attn.q_b_proj.weight", d.heads * (d.nope + d.rope), d.q_lora);
    }
    linear(p + "self_attn.kv_a_proj_with_mqa.weight", d.kv_lora + d.rope, d.dim);
    norm(p + "self_attn.kv_a_layernorm.weight", d.kv_lora);
    linear(p + "self_attn.kv_b_proj.weight", d.heads * (d.nope + d.v), d.kv_lora);
    linear(p + "self_attn.o_proj.weight", d.dim, d.heads * d.v);
    norm(p + "post_attention_layernorm.weight", d.dim);
    if (l < 1) {
      linear(p + "mlp.gate_proj.weight", d.inter, d.dim);
      linear(p + "mlp.up_proj.weight", d.inter, d.dim);
      linear(p + "mlp.down_proj.weight", d.dim, d.inter);
      return;
    }
    // A wide router so that routing differs from token to token.
    add(p + "mlp.gate.weight", {d.experts, d.dim}, 1.0f);
    if (v3) add(p + "mlp.gate.e_score_correction_bias", {d.experts}, 0.3f);
    for (int64_t e = 0; e < d.experts; ++e) {
      const std::string pe = p + "mlp.experts." + std::to_string(e) + ".";
      linear(pe + "gate_proj.weight", d.moe_inter, d.dim);
      linear(pe + "up_proj.weight", d.moe_inter, d.dim);
      linear(pe + "down_proj.weight", d.dim, d.moe_inter);
    }
    linear(p + "mlp.shared_experts.gate_proj.weight", d.shared * d.moe_inter, d.dim);
    linear(p + "mlp.shared_experts.up_proj.weight", d.shared * d.moe_inter, d.dim);
    linear(p + "mlp.shared_experts.down_proj.weight", d.dim, d.shared * d.moe_inter);
  };
  add("model.embed_tokens.weight", {d.vocab, d.dim}, 1.0f);
  for (int64_t l = 0; l < d.layers; ++l) block(l);
  norm("model.norm.weight", d.dim);
  linear("lm_head.weight", d.vocab, d.dim, false);
  if (v3) {  // MTP module, layer index num_hidden_layers
    const std::string p = "model.layers." + std::to_string(d.layers) + ".";
    block(d.layers);
    add(p + "embed_tokens.weight", {d.vocab, d.dim}, 1.0f);
    norm(p + "enorm.weight", d.dim);
    norm(p + "hnorm.weight", d.dim);
    linear(p + "eh_proj.weight", d.dim, 2 * d.dim, false);
    norm(p + "shared_head.norm.weight", d.dim);
    linear(p + "shared_head.head.weight", d.vocab, d.dim, false);
  }
  // FP8 weights: quantise per 128x128 block (scale = amax / 448) and keep, as the f32 values, the
  // exact dequantised weights, so the f32 checkpoint is what the FP8 one means.
  for (auto& [name, t] : ck.tensors) {
    if (!t.fp8) continue;
    const int64_t rows = t.shape[0], cols = t.shape[1];
    for (int64_t br = 0; br < rows; br += 128) {
      for (int64_t bc = 0; bc < cols; bc += 128) {
        float amax = 0;
        for (int64_t r = br; r < std::min(rows, br + 128); ++r)
          for (int64_t cc = bc; cc < std::min(cols, bc + 128); ++cc)
            amax = std::max(amax, std::fabs(t.values[r * cols + cc]));
        const float scale = amax / 448.0f;
        for (int64_t r = br; r < std::min(rows, br + 128); ++r)
          for (int64_t cc = bc; cc < std::min(cols, bc + 128); ++cc) {
            float& v = t.values[r * cols + cc];
            v = fp8_decode(fp8_encode(v / scale)) * scale;
          }
      }
    }
  }
  return ck;
}

// Writes config.json and model.safetensors: f32, or F8_E4M3 + `_scale_inv` for fp8 tensors.
void write_safetensors_dir(const Checkpoint& ck, const fs::path& dir, bool fp8) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << ck.config.dump(2);
  nlohmann::json header = nlohmann::json::object();
  std::vector<uint8_t> data;
  auto put = [&](const std::string& name, const std::string& dtype,
                 const std::vector<int64_t>& shape, const void* bytes, size_t n) {
    header[name] = {
        {"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + n}}};
    data.insert(data.end(), static_cast<const uint8_t*>(bytes),
                static_cast<const uint8_t*>(bytes) + n);
  };
  for (const auto& [name, t] : ck.tensors) {
    if (!(fp8 && t.fp8)) {
      put(name, "F32", t.shape, t.values.data(), t.values.size() * 4);
      continue;
    }
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const int64_t srows = (rows + 127) / 128, scols = (cols + 127) / 128;
    std::vector<float> scale(static_cast<size_t>(srows * scols));
    std::vector<uint8_t> q(static_cast<size_t>(rows * cols));
    for (int64_t br = 0; br < srows; ++br)
      for (int64_t bc = 0; bc < scols; ++bc) {
        float amax = 0;
        for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
          for (int64_t cc = bc * 128; cc < std::min(cols, bc * 128 + 128); ++cc)
            amax = std::max(amax, std::fabs(t.values[r * cols + cc]));
        scale[br * scols + bc] = amax / 448.0f;
      }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t cc = 0; cc < cols; ++cc)
        q[r * cols + cc] =
            fp8_encode(t.values[r * cols + cc] / scale[(r / 128) * scols + cc / 128]);
    put(name, "F8_E4M3", t.shape, q.data(), q.size());
    std::string scale_name = name;
    scale_name.replace(scale_name.size() - std::string("weight").size(), 6, "weight_scale_inv");
    put(scale_name, "F32", {srows, scols}, scale.data(), scale.size() * 4);
  }
  const std::string h = header.dump();
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// The same checkpoint as llama.cpp's convert_hf_to_gguf.py (DeepseekV2Model) writes it: experts
// stacked, kv_b split into attn_k_b (K part transposed per head) and attn_v_b, or kept fused as
// attn_kv_b (older converters). f32 tensors; MTP dropped as the converter does.
// quant: Q8_0 stores every matrix whose rows are a whole number of 32-blocks as Q8_0 (norms,
// biases and the rest stay f32), as a quantised llama.cpp file would.
void write_gguf(const Checkpoint& ck, const fs::path& path, bool split_kv_b,
                DType quant = DType::F32) {
  const nlohmann::json& c = ck.config;
  const int64_t H = c["num_attention_heads"], nope = c["qk_nope_head_dim"], v = c["v_head_dim"],
                r = c["kv_lora_rank"], rope = c["qk_rope_head_dim"], E = c["n_routed_experts"],
                L = c["num_hidden_layers"], dim = c["hidden_size"];
  const bool v3 = c["architectures"][0] == "DeepseekV3ForCausalLM";
  GgufWriter w;
  const std::string p = "deepseek2.";
  w.add_string("general.architecture", "deepseek2");
  w.add_string("general.name", "tiny");
  w.add_uint32(p + "block_count", static_cast<uint32_t>(L));
  w.add_uint32(p + "context_length", c["max_position_embeddings"].get<uint32_t>());
  w.add_uint32(p + "embedding_length", static_cast<uint32_t>(dim));
  w.add_uint32(p + "feed_forward_length", c["intermediate_size"].get<uint32_t>());
  w.add_uint32(p + "attention.head_count", static_cast<uint32_t>(H));
  w.add_uint32(p + "attention.head_count_kv", 1);
  w.add_float32(p + "rope.freq_base", c["rope_theta"].get<float>());
  w.add_float32(p + "attention.layer_norm_rms_epsilon", c["rms_norm_eps"].get<float>());
  w.add_uint32(p + "leading_dense_block_count", c["first_k_dense_replace"].get<uint32_t>());
  w.add_uint32(p + "vocab_size", c["vocab_size"].get<uint32_t>());
  if (!c["q_lora_rank"].is_null())
    w.add_uint32(p + "attention.q_lora_rank", c["q_lora_rank"].get<uint32_t>());
  w.add_uint32(p + "attention.kv_lora_rank", static_cast<uint32_t>(r));
  w.add_uint32(p + "attention.key_length", static_cast<uint32_t>(r + rope));
  w.add_uint32(p + "attention.value_length", static_cast<uint32_t>(r));
  w.add_uint32(p + "attention.key_length_mla", static_cast<uint32_t>(nope + rope));
  w.add_uint32(p + "attention.value_length_mla", static_cast<uint32_t>(v));
  w.add_uint32(p + "expert_feed_forward_length", c["moe_intermediate_size"].get<uint32_t>());
  w.add_uint32(p + "expert_count", static_cast<uint32_t>(E));
  w.add_uint32(p + "expert_shared_count", c["n_shared_experts"].get<uint32_t>());
  w.add_uint32(p + "expert_used_count", c["num_experts_per_tok"].get<uint32_t>());
  w.add_uint32(p + "expert_group_count", c["n_group"].get<uint32_t>());
  w.add_uint32(p + "expert_group_used_count", c["topk_group"].get<uint32_t>());
  w.add_float32(p + "expert_weights_scale", c["routed_scaling_factor"].get<float>());
  if (c["norm_topk_prob"].get<bool>()) w.add_bool(p + "expert_weights_norm", true);
  w.add_uint32(p + "expert_gating_func", c["scoring_func"] == "sigmoid" ? 2 : 1);
  w.add_uint32(p + "rope.dimension_count", static_cast<uint32_t>(rope));
  const nlohmann::json& rs = c["rope_scaling"];
  w.add_string(p + "rope.scaling.type", "yarn");
  w.add_float32(p + "rope.scaling.factor", rs["factor"].get<float>());
  w.add_uint32(p + "rope.scaling.original_context_length",
               rs["original_max_position_embeddings"].get<uint32_t>());
  w.add_float32(p + "rope.scaling.yarn_log_multiplier", 0.1f * rs["mscale_all_dim"].get<float>());

  auto tensor = [&](const std::string& name, std::vector<int64_t> shape,
                    std::vector<float> values) {
    const int64_t cols = shape.back();
    if (quant == DType::Q8_0 && shape.size() >= 2 && cols % 32 == 0) {
      const int64_t rows = static_cast<int64_t>(values.size()) / cols;
      std::vector<uint8_t> bytes(static_cast<size_t>(rows) * dtype_row_bytes(DType::Q8_0, cols));
      for (int64_t r = 0; r < rows; ++r) {
        ref::quantize_row_q8_0(values.data() + r * cols,
                               bytes.data() + r * dtype_row_bytes(DType::Q8_0, cols), cols);
      }
      w.add_tensor(name, DType::Q8_0, shape, std::move(bytes));
      return;
    }
    std::vector<uint8_t> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    w.add_tensor(name, DType::F32, shape, std::move(bytes));
  };
  auto copy = [&](const std::string& gguf_name, const std::string& hf_name) {
    const Tensor& t = ck.tensors.at(hf_name);
    tensor(gguf_name, t.shape, t.values);
  };
  copy("token_embd.weight", "model.embed_tokens.weight");
  copy("output_norm.weight", "model.norm.weight");
  copy("output.weight", "lm_head.weight");
  for (int64_t l = 0; l < L; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".",
                      g = "blk." + std::to_string(l) + ".";
    copy(g + "attn_norm.weight", hf + "input_layernorm.weight");
    if (c["q_lora_rank"].is_null()) {
      copy(g + "attn_q.weight", hf + "self_attn.q_proj.weight");
    } else {
      copy(g + "attn_q_a.weight", hf + "self_attn.q_a_proj.weight");
      copy(g + "attn_q_a_norm.weight", hf + "self_attn.q_a_layernorm.weight");
      copy(g + "attn_q_b.weight", hf + "self_attn.q_b_proj.weight");
    }
    copy(g + "attn_kv_a_mqa.weight", hf + "self_attn.kv_a_proj_with_mqa.weight");
    copy(g + "attn_kv_a_norm.weight", hf + "self_attn.kv_a_layernorm.weight");
    const Tensor& kv_b = ck.tensors.at(hf + "self_attn.kv_b_proj.weight");  // [H*(nope+v), r]
    if (split_kv_b) {
      // kv_b.view(H, nope + v, r); k_b = kv_b[:, :nope].transpose(1, 2); v_b = kv_b[:, nope:]
      std::vector<float> k_b(static_cast<size_t>(H * r * nope)),
          v_b(static_cast<size_t>(H * v * r));
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t dd = 0; dd < nope; ++dd)
          for (int64_t ci = 0; ci < r; ++ci)
            k_b[(h * r + ci) * nope + dd] = kv_b.values[(h * (nope + v) + dd) * r + ci];
        for (int64_t dd = 0; dd < v; ++dd)
          for (int64_t ci = 0; ci < r; ++ci)
            v_b[(h * v + dd) * r + ci] = kv_b.values[(h * (nope + v) + nope + dd) * r + ci];
      }
      tensor(g + "attn_k_b.weight", {H, r, nope}, k_b);
      tensor(g + "attn_v_b.weight", {H, v, r}, v_b);
    } else {
      copy(g + "attn_kv_b.weight", hf + "self_attn.kv_b_proj.weight");
    }
    copy(g + "attn_output.weight", hf + "self_attn.o_proj.weight");
    copy(g + "ffn_norm.weight", hf + "post_attention_layernorm.weight");
    if (l < c["first_k_dense_replace"].get<int64_t>()) {
      copy(g + "ffn_gate.weight", hf + "mlp.gate_proj.weight");
      copy(g + "ffn_up.weight", hf + "mlp.up_proj.weight");
      copy(g + "ffn_down.weight", hf + "mlp.down_proj.weight");
      continue;
    }
    copy(g + "ffn_gate_inp.weight", hf + "mlp.gate.weight");
    if (v3) copy(g + "exp_probs_b.bias", hf + "mlp.gate.e_score_correction_bias");
    for (const auto& [hf_w, g_w] : {std::pair{"gate_proj", "ffn_gate_exps"},
                                    {"up_proj", "ffn_up_exps"},
                                    {"down_proj", "ffn_down_exps"}}) {
      std::vector<float> stacked;
      std::vector<int64_t> shape;
      for (int64_t e = 0; e < E; ++e) {
        const Tensor& t =
            ck.tensors.at(hf + "mlp.experts." + std::to_string(e) + "." + hf_w + ".weight");
        stacked.insert(stacked.end(), t.values.begin(), t.values.end());
        shape = {E, t.shape[0], t.shape[1]};
      }
      tensor(g + g_w + ".weight", shape, stacked);
    }
    copy(g + "ffn_gate_shexp.weight", hf + "mlp.shared_experts.gate_proj.weight");
    copy(g + "ffn_up_shexp.weight", hf + "mlp.shared_experts.up_proj.weight");
    copy(g + "ffn_down_shexp.weight", hf + "mlp.shared_experts.down_proj.weight");
  }
  const Status st = w.write(path.string());
  ASSERT_TRUE(st.ok()) << st.message();
}

fs::path temp_dir(const std::string& name) {
  fs::path p =
      fs::temp_directory_path() / ("sputnik_deepseek_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// An f32 MLA cache: the golden comparisons hold f32 arithmetic to 1e-4 of the logits; the f16
// cache (LoadOptions' default) has its own tests below (F16Cache*).
LoadOptions options(int n_seq_max = 1, int64_t n_ctx = 64, DType kv_type = DType::F32) {
  LoadOptions o;
  o.kv_type = kv_type;
  o.n_threads = 2;
  o.n_ctx = n_ctx;
  o.n_seq_max = n_seq_max;
  return o;
}

std::unique_ptr<DeepSeekModel> load(const std::string& path, const LoadOptions& o) {
  ModelSource source;
  auto weights = WeightSource::open(path);
  EXPECT_TRUE(weights.ok()) << (weights.ok() ? "" : weights.message());
  if (!weights.ok()) return nullptr;
  source.weights = *weights;
  source.options = o;
  auto model = load_deepseek(source);
  EXPECT_TRUE(model.ok()) << (model.ok() ? "" : model.message());
  if (!model.ok()) return nullptr;
  return std::unique_ptr<DeepSeekModel>(static_cast<DeepSeekModel*>(model->release()));
}

// --- Running
// --------------------------------------------------------------------------------------

// All tokens of one sequence in one batch, logits for each: [n, vocab].
std::vector<float> run_full(DeepSeekModel& m, const std::vector<int32_t>& tokens, int32_t seq = 0,
                            std::vector<float>* hidden = nullptr) {
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < tokens.size(); ++i)
    batch.push_back({tokens[i], static_cast<int32_t>(i), seq, true});
  std::vector<float> logits(tokens.size() * m.info().vocab_size);
  if (hidden) hidden->resize(tokens.size() * m.config().dim);
  const Status st = m.forward_hidden(batch, logits.data(), hidden ? hidden->data() : nullptr);
  EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.message());
  return logits;
}

// Prefill of n_prefill tokens, then one forward per remaining token.
std::vector<float> run_cached(DeepSeekModel& m, const std::vector<int32_t>& tokens,
                              size_t n_prefill) {
  const int64_t V = m.info().vocab_size;
  std::vector<float> logits(tokens.size() * V);
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < n_prefill; ++i)
    batch.push_back({tokens[i], static_cast<int32_t>(i), 0, true});
  EXPECT_TRUE(m.forward(batch, logits.data()).ok());
  for (size_t i = n_prefill; i < tokens.size(); ++i) {
    BatchToken b{tokens[i], static_cast<int32_t>(i), 0, true};
    const Status st = m.forward(std::span(&b, 1), logits.data() + i * V);
    EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.message());
  }
  return logits;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}
// max |a - b| / max |b|
// max |a - b| / max |b|; infinite when either holds a NaN or b is all zeros (never a pass).
float rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    d = std::max(d, std::fabs(a[i] - b[i]));
  }
  const float scale = max_abs(b);
  return scale > 0 ? d / scale : INFINITY;
}

std::vector<int32_t> some_tokens(size_t n, uint64_t seed, int64_t vocab) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(g() % static_cast<uint64_t>(vocab));
  return t;
}

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::V2Lite:
      return "v2_lite";
    case Variant::V2:
      return "v2";
    case Variant::V3:
      return "v3";
    case Variant::V3Fp8:
      return "v3_fp8";
  }
  return "?";
}

class deepseek_tiny : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    dir_ = temp_dir(variant_name(GetParam()));
    checkpoint_ = make_checkpoint(GetParam(), 1234 + static_cast<int>(GetParam()));
    write_safetensors_dir(checkpoint_, dir_, GetParam() == Variant::V3Fp8);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  Checkpoint checkpoint_;
};

// Tolerances: every path computes the same f32 sums in a different order (cache vs batch,
// latent vs expanded heads); 1e-4 of the largest logit is the golden tolerance and far above
// that rounding.
constexpr float kTol = 1e-4f;

TEST_P(deepseek_tiny, CachedDecodeEqualsFullForward) {
  auto m = load(dir_.string(), options());
  ASSERT_TRUE(m);
  const auto tokens = some_tokens(24, 7, m->info().vocab_size);
  const auto full = run_full(*m, tokens);
  m->truncate_sequence(0, 0);
  const auto cached = run_cached(*m, tokens, 8);
  const float d = rel_diff(cached, full);
  std::printf("[%s] prefill 8 + 16 decode vs full forward: max|d|/max|logit| = %.3g\n",
              variant_name(GetParam()), d);
  EXPECT_LT(d, kTol);
}

// A batch longer than kDeepSeekMaxChunk runs in chunks; the second chunk attends to the first's
// cache rows. Same logits as three batches of a third.
TEST_P(deepseek_tiny, BatchLongerThanAChunkEqualsShortBatches) {
  const int n = static_cast<int>(kDeepSeekMaxChunk) / 3 * 3 + 45, piece = n / 3;
  auto m = load(dir_.string(), options(1, n + 20));
  ASSERT_TRUE(m);
  const int64_t V = m->info().vocab_size;
  const auto tokens = some_tokens(n, 12, V);
  ASSERT_GT(tokens.size(), static_cast<size_t>(kDeepSeekMaxChunk));
  const auto full = run_full(*m, tokens);
  m->truncate_sequence(0, 0);
  std::vector<float> pieces(tokens.size() * V);
  for (int start = 0; start < n; start += piece) {
    std::vector<BatchToken> batch;
    for (int i = start; i < start + piece; ++i) batch.push_back({tokens[i], i, 0, true});
    ASSERT_TRUE(m->forward(batch, pieces.data() + start * V).ok());
  }
  const float d = rel_diff(pieces, full);
  std::printf("[%s] %d-token batch (2 chunks) vs 3 batches of %d: %.3g\n",
              variant_name(GetParam()), n, piece, d);
  EXPECT_LT(d, kTol);
}

TEST_P(deepseek_tiny, NaiveMlaEqualsAbsorbed) {
  auto m = load(dir_.string(), options());
  ASSERT_TRUE(m);
  const auto tokens = some_tokens(20, 8, m->info().vocab_size);
  m->set_mla_path(MlaPath::Naive);
  const auto naive = run_full(*m, tokens);
  m->truncate_sequence(0, 0);
  m->set_mla_path(MlaPath::Absorbed);
  const auto absorbed = run_full(*m, tokens);
  m->truncate_sequence(0, 0);
  // Mixed: naive prefill then absorbed decode over the same cache.
  m->set_mla_path(MlaPath::Naive);
  std::vector<BatchToken> prefill;
  for (int i = 0; i < 12; ++i) prefill.push_back({tokens[i], i, 0, false});
  ASSERT_TRUE(m->forward(prefill, nullptr).ok());
  m->set_mla_path(MlaPath::Absorbed);
  std::vector<BatchToken> rest;
  for (int i = 12; i < 20; ++i) rest.push_back({tokens[i], i, 0, true});
  std::vector<float> mixed(8 * m->info().vocab_size);
  ASSERT_TRUE(m->forward(rest, mixed.data()).ok());
  const std::vector<float> naive_tail(naive.end() - static_cast<long>(mixed.size()), naive.end());
  const float d = rel_diff(absorbed, naive), d_mixed = rel_diff(mixed, naive_tail);
  std::printf("[%s] absorbed vs naive MLA: %.3g; naive prefill + absorbed decode: %.3g\n",
              variant_name(GetParam()), d, d_mixed);
  EXPECT_LT(d, kTol);
  EXPECT_LT(d_mixed, kTol);
}

// Beyond 64 cached positions multi_query_attention splits the positions across threads and
// merges the partial softmaxes; naive MLA (plain softmax over expanded heads) checks the merge.
TEST_P(deepseek_tiny, NaiveEqualsAbsorbedOverLongContext) {
  auto m = load(dir_.string(), options(1, 400));
  ASSERT_TRUE(m);
  const auto tokens = some_tokens(400, 21, m->info().vocab_size);
  std::vector<BatchToken> prefill;
  for (int i = 0; i < 390; ++i) prefill.push_back({tokens[i], i, 0, false});
  std::vector<BatchToken> decode;
  for (int i = 390; i < 400; ++i) decode.push_back({tokens[i], i, 0, true});
  std::vector<float> naive(10 * m->info().vocab_size), absorbed(naive.size());
  m->set_mla_path(MlaPath::Naive);
  ASSERT_TRUE(m->forward(prefill, nullptr).ok());
  ASSERT_TRUE(m->forward(decode, naive.data()).ok());
  m->set_mla_path(MlaPath::Absorbed);
  m->truncate_sequence(0, 390);
  ASSERT_TRUE(m->forward(decode, absorbed.data()).ok());
  const float d = rel_diff(absorbed, naive);
  std::printf("[%s] 10 tokens after 390 cached: absorbed vs naive %.3g\n", variant_name(GetParam()),
              d);
  EXPECT_LT(d, kTol);
}

// The f16 cache: both paths read the same rounded rows, so they agree as closely as with f32;
// against the f32 cache the logits move by the rounding of the latents (2^-11 relative each),
// measured ~1e-4..1e-3 of the largest logit on these random models; 5e-3 bounds it with room
// (a routing flip in a MoE layer would show as ~1e-2 and more).
TEST_P(deepseek_tiny, F16CacheNaiveEqualsAbsorbedAndStaysNearF32) {
  auto m16 = load(dir_.string(), options(1, 64, DType::F16));
  auto m32 = load(dir_.string(), options(1, 64, DType::F32));
  ASSERT_TRUE(m16 && m32);
  EXPECT_EQ(m16->info().kv_cache_bytes_per_token * 2, m32->info().kv_cache_bytes_per_token);
  const auto tokens = some_tokens(40, 13, m16->info().vocab_size);
  m16->set_mla_path(MlaPath::Naive);
  const auto naive16 = run_cached(*m16, tokens, 24);
  m16->truncate_sequence(0, 0);
  m16->set_mla_path(MlaPath::Absorbed);
  const auto absorbed16 = run_cached(*m16, tokens, 24);
  const auto f32 = run_cached(*m32, tokens, 24);
  const float d_paths = rel_diff(absorbed16, naive16), d_f32 = rel_diff(absorbed16, f32);
  std::printf("[%s] f16 cache: absorbed vs naive %.3g; vs f32 cache %.3g\n",
              variant_name(GetParam()), d_paths, d_f32);
  EXPECT_LT(d_paths, kTol);
  EXPECT_LT(d_f32, 5e-3f);
  EXPECT_GT(d_f32, 0.0f);  // the cache really is rounded
}

TEST_P(deepseek_tiny, BatchOfThreeSequencesEqualsEachAlone) {
  auto m = load(dir_.string(), options(3));
  ASSERT_TRUE(m);
  const int64_t V = m->info().vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {some_tokens(9, 1, V), some_tokens(5, 2, V),
                                                     some_tokens(13, 3, V)};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    alone.push_back(run_full(*m, p));
    m->truncate_sequence(0, 0);
  }
  // Interleave the three prompts token by token in one batch, in three sequences.
  std::vector<BatchToken> batch;
  std::vector<std::pair<int, int>> where;
  for (size_t i = 0; i < 13; ++i) {
    for (int s = 0; s < 3; ++s) {
      if (i >= prompts[s].size()) continue;
      batch.push_back({prompts[s][i], static_cast<int32_t>(i), s, true});
      where.push_back({s, static_cast<int>(i)});
    }
  }
  std::vector<float> logits(batch.size() * V);
  ASSERT_TRUE(m->forward(batch, logits.data()).ok());
  float d = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const auto [s, i] = where[b];
    std::vector<float> row(logits.begin() + b * V, logits.begin() + (b + 1) * V);
    std::vector<float> ref(alone[s].begin() + i * V, alone[s].begin() + (i + 1) * V);
    d = std::max(d, rel_diff(row, ref));
  }
  std::printf("[%s] batch of 3 interleaved sequences vs each alone: %.3g\n",
              variant_name(GetParam()), d);
  EXPECT_LT(d, kTol);
  EXPECT_EQ(m->sequence_length(0), 9);
  EXPECT_EQ(m->sequence_length(1), 5);
  EXPECT_EQ(m->sequence_length(2), 13);
}

// GGUF holds no FP8 (llama.cpp's converter dequantises it), so these run on the other variants.
class deepseek_tiny_gguf : public deepseek_tiny {};

TEST_P(deepseek_tiny_gguf, GgufMatchesSafetensors) {
  auto st = load(dir_.string(), options());
  ASSERT_TRUE(st);
  const auto tokens = some_tokens(16, 9, st->info().vocab_size);
  const auto ref = run_full(*st, tokens);
  for (bool split : {true, false}) {
    const fs::path path = dir_ / (split ? "split.gguf" : "fused.gguf");
    write_gguf(checkpoint_, path, split);
    auto g = load(path.string(), options());
    ASSERT_TRUE(g);
    EXPECT_EQ(g->info().architecture, st->info().architecture);
    for (MlaPath p : {MlaPath::Naive, MlaPath::Absorbed}) {
      g->set_mla_path(p);
      g->truncate_sequence(0, 0);
      const float d = rel_diff(run_full(*g, tokens), ref);
      std::printf("[%s] GGUF (%s kv_b, %s) vs safetensors: %.3g\n", variant_name(GetParam()),
                  split ? "split attn_k_b/attn_v_b" : "fused attn_kv_b",
                  p == MlaPath::Naive ? "naive" : "absorbed", d);
      EXPECT_LT(d, kTol);
    }
  }
}

// Q8_0 GGUF: stacked expert tensors sliced per expert, quantised embedding rows, matrices of
// every shape. Compared with an f32 checkpoint of the same (Q8_0-rounded) weights: with the
// scalar kernels (f32 activations) they must agree like any two f32 paths; with the dispatched
// ones the matmul also rounds activations to 8 bits (as llama.cpp does), which moves these tiny
// random models' logits by 1-3%. A wrong slice or row would move them by O(1).
TEST_P(deepseek_tiny_gguf, QuantisedGgufMatchesItsDequantisedWeights) {
  Checkpoint rounded = checkpoint_;
  for (auto& [name, t] : rounded.tensors) {
    const int64_t cols = t.shape.back();
    if (t.shape.size() < 2 || cols % 32 != 0) continue;
    std::vector<uint8_t> block(dtype_row_bytes(DType::Q8_0, cols));
    for (size_t r = 0; r * cols < t.values.size(); ++r) {
      ref::quantize_row_q8_0(t.values.data() + r * cols, block.data(), cols);
      ref::dequantize_row(DType::Q8_0, block.data(), t.values.data() + r * cols, cols);
    }
  }
  const fs::path st_dir = dir_ / "rounded";
  write_safetensors_dir(rounded, st_dir, false);
  auto st = load(st_dir.string(), options());
  ASSERT_TRUE(st);
  const fs::path path = dir_ / "q8_0.gguf";
  write_gguf(checkpoint_, path, true, DType::Q8_0);
  auto g = load(path.string(), options());
  ASSERT_TRUE(g);
  const auto tokens = some_tokens(16, 10, st->info().vocab_size);
  const std::string isa = kernel_isa();
  for (const std::string& kernels : {std::string("scalar"), isa}) {
    ASSERT_TRUE(set_kernel_isa(kernels));
    st->truncate_sequence(0, 0);
    const auto ref = run_full(*st, tokens);
    for (MlaPath p : {MlaPath::Naive, MlaPath::Absorbed}) {
      g->set_mla_path(p);
      g->truncate_sequence(0, 0);
      const float d = rel_diff(run_full(*g, tokens), ref);
      std::printf("[%s] Q8_0 GGUF (%s, %s kernels) vs f32 of its dequantised weights: %.3g\n",
                  variant_name(GetParam()), p == MlaPath::Naive ? "naive" : "absorbed",
                  kernels.c_str(), d);
      EXPECT_LT(d, kernels == "scalar" ? kTol : 0.05f);
    }
  }
  set_kernel_isa(isa);
}

// V2 checkpoints have no MTP module: has_mtp() must say so; V3 ones run it.
TEST_P(deepseek_tiny, HasMtpExactlyForV3) {
  auto m = load(dir_.string(), options());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->has_mtp(), GetParam() == Variant::V3 || GetParam() == Variant::V3Fp8);
}

class deepseek_tiny_mtp : public deepseek_tiny {};

TEST_P(deepseek_tiny_mtp, MtpCachedEqualsFull) {
  auto m = load(dir_.string(), options());
  ASSERT_TRUE(m);
  ASSERT_TRUE(m->has_mtp());
  const int64_t V = m->info().vocab_size, dim = m->config().dim;
  const auto tokens = some_tokens(14, 11, V);
  std::vector<float> hidden;
  run_full(*m, tokens, 0, &hidden);
  // MTP over positions 0..n-2: hidden h_t with token t+1.
  const size_t n = tokens.size() - 1;
  std::vector<BatchToken> batch;
  for (size_t t = 0; t < n; ++t) batch.push_back({tokens[t + 1], static_cast<int32_t>(t), 0, true});
  std::vector<float> full(n * V), step(n * V);
  ASSERT_TRUE(m->predict_next_next(batch, hidden.data(), full.data()).ok());
  EXPECT_EQ(m->mtp_sequence_length(0), static_cast<int32_t>(n));
  m->truncate_sequence(0, 0);
  for (size_t t = 0; t < n; ++t) {
    ASSERT_TRUE(
        m->predict_next_next(std::span(&batch[t], 1), hidden.data() + t * dim, step.data() + t * V)
            .ok());
  }
  const float d = rel_diff(step, full);
  std::printf("[%s] MTP one step at a time vs all at once: %.3g\n", variant_name(GetParam()), d);
  EXPECT_LT(d, kTol);
}

INSTANTIATE_TEST_SUITE_P(variant, deepseek_tiny,
                         ::testing::Values(Variant::V2Lite, Variant::V2, Variant::V3,
                                           Variant::V3Fp8),
                         [](const auto& info) { return std::string(variant_name(info.param)); });
INSTANTIATE_TEST_SUITE_P(variant, deepseek_tiny_gguf,
                         ::testing::Values(Variant::V2Lite, Variant::V2, Variant::V3),
                         [](const auto& info) { return std::string(variant_name(info.param)); });
INSTANTIATE_TEST_SUITE_P(variant, deepseek_tiny_mtp, ::testing::Values(Variant::V3, Variant::V3Fp8),
                         [](const auto& info) { return std::string(variant_name(info.param)); });

TEST(deepseek, Fp8CheckpointEqualsItsDequantisedF32) {
  const Checkpoint ck = make_checkpoint(Variant::V3Fp8, 99);
  const fs::path dir = temp_dir("fp8_vs_f32");
  write_safetensors_dir(ck, dir / "fp8", true);
  write_safetensors_dir(ck, dir / "f32", false);
  auto fp8 = load((dir / "fp8").string(), options());
  auto f32 = load((dir / "f32").string(), options());
  ASSERT_TRUE(fp8 && f32);
  const auto tokens = some_tokens(12, 5, fp8->info().vocab_size);
  for (MlaPath p : {MlaPath::Naive, MlaPath::Absorbed}) {
    fp8->set_mla_path(p);
    f32->set_mla_path(p);
    fp8->truncate_sequence(0, 0);
    f32->truncate_sequence(0, 0);
    const float d = rel_diff(run_full(*fp8, tokens), run_full(*f32, tokens));
    std::printf("FP8 (F8_E4M3 + 128x128 scales) vs f32 of the same values (%s): %.3g\n",
                p == MlaPath::Naive ? "naive" : "absorbed", d);
    EXPECT_LT(d, kTol);
  }
  fs::remove_all(dir);
}

TEST(deepseek, LoadModelDispatchesHfArchitectures) {
  for (Variant v : {Variant::V2Lite, Variant::V3}) {
    const fs::path dir = temp_dir(std::string("dispatch_") + variant_name(v));
    write_safetensors_dir(make_checkpoint(v, 3), dir, false);
    auto loaded = load_model(dir.string(), options());
    ASSERT_TRUE(loaded.ok()) << loaded.message();
    EXPECT_EQ(loaded->model->info().architecture, v == Variant::V3 ? "deepseek3" : "deepseek2");
    fs::remove_all(dir);
  }
}

// --- Gate
// ------------------------------------------------------------------------------------------

DeepSeekConfig gate_config(DeepSeekTopkMethod method, DeepSeekScoreFunc f) {
  DeepSeekConfig c;
  c.n_routed_experts = 8;
  c.n_activated_experts = 2;
  c.n_expert_groups = 4;
  c.n_limited_groups = 2;
  c.topk_method = method;
  c.score_func = f;
  return c;
}

TEST(deepseek_gate, V3SigmoidNoauxTcPicksGroupsByBiasedTopTwoButWeighsUnbiased) {
  DeepSeekConfig c = gate_config(DeepSeekTopkMethod::NoauxTc, DeepSeekScoreFunc::Sigmoid);
  c.norm_topk_prob = true;
  c.route_scale = 2.5f;
  // logit 0 -> sigmoid 0.5 everywhere, so the bias decides. Groups (2 experts each): {0,1} {2,3}
  // {4,5} {6,7}. Expert 1 has the best biased score (0.95) but its group sums 0.95, below {2,3}
  // (1.4) and {6,7} (1.2).
  const float logits[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const float bias[8] = {-0.5f, 0.45f, 0.2f, 0.2f, 0.0f, 0.0f, 0.1f, 0.1f};
  int32_t idx[2];
  float w[2];
  deepseek_gate(c, logits, bias, idx, w);
  std::sort(idx, idx + 2);
  // The best biased scores of the kept groups: 2 and 3 (0.7 each).
  EXPECT_EQ(idx[0], 2);
  EXPECT_EQ(idx[1], 3);
  // Weights from the unbiased sigmoid (0.5 each), renormalised, times route_scale.
  EXPECT_FLOAT_EQ(w[0], 1.25f);
  EXPECT_FLOAT_EQ(w[1], 1.25f);
}

TEST(deepseek_gate, V2GroupLimitedGreedyRanksGroupsByTheirBestExpert) {
  DeepSeekConfig c =
      gate_config(DeepSeekTopkMethod::GroupLimitedGreedy, DeepSeekScoreFunc::Softmax);
  c.n_limited_groups = 1;
  c.route_scale = 16.0f;
  // Group maxima: g0 3.0, g1 2.9, g2 2.8, g3 1.0 -> only g0 is kept, so its weak expert 1 is
  // chosen over experts 2 and 4 of the dropped groups.
  const float logits[8] = {3.0f, -1.0f, 2.9f, 2.85f, 2.8f, 2.7f, 1.0f, 0.9f};
  int32_t idx[2];
  float w[2];
  deepseek_gate(c, logits, nullptr, idx, w);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  // softmax weights over all experts, not renormalised, times routed_scaling_factor
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  EXPECT_NEAR(w[0], 16.0 * std::exp(3.0) / z, 1e-5);
  EXPECT_NEAR(w[1], 16.0 * std::exp(-1.0) / z, 1e-5);
}

TEST(deepseek_gate, V2GreedyIgnoresGroupsAndNeverRenormalises) {
  DeepSeekConfig c = gate_config(DeepSeekTopkMethod::Greedy, DeepSeekScoreFunc::Softmax);
  const float logits[8] = {3.0f, 2.95f, 0, 0, 0, 0, 0, 0};  // both in group 0
  int32_t idx[2];
  float w[2];
  deepseek_gate(c, logits, nullptr, idx, w);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  EXPECT_LT(w[0] + w[1], 1.0f);
}

TEST(deepseek_gate, DroppedGroupsAreMinusInfinityNotZero) {
  // With negative biased scores a zero-filled group would win over kept experts; model.py fills
  // -inf. Sigmoid(-10) + bias(-1) < 0 for every expert of kept groups.
  DeepSeekConfig c = gate_config(DeepSeekTopkMethod::NoauxTc, DeepSeekScoreFunc::Sigmoid);
  c.norm_topk_prob = true;
  const float logits[8] = {-10, -10, -10, -10, -10, -10, -10, -10};
  const float bias[8] = {-1.0f, -1.1f, -1.2f, -1.3f, -3, -3, -3, -3};
  int32_t idx[2];
  float w[2];
  deepseek_gate(c, logits, bias, idx, w);
  for (int32_t i : idx) EXPECT_LT(i, 4);
}

// --- YaRN and sizes
// -------------------------------------------------------------------------------

TEST(deepseek, YarnFrequenciesAndSoftmaxScaleOfV3) {
  // DeepSeek-V3: qk_rope_head_dim 64, theta 10000, factor 40, original 4096, beta 32 / 1,
  // mscale_all_dim 1. find_correction_range -> (floor(10.47), ceil(22.51)) = (10, 23).
  DeepSeekConfig c;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.yarn = true;
  c.rope_factor = 40;
  c.original_seq_len = 4096;
  c.mscale = c.mscale_all_dim = 1.0;
  const std::vector<float> f = deepseek_rope_freqs(c);
  ASSERT_EQ(f.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    const double base = std::pow(10000.0, -2.0 * i / 64.0);
    const double ramp = std::clamp((i - 10.0) / 13.0, 0.0, 1.0);  // 0 below 10, 1 from 23 on
    EXPECT_NEAR(f[i], base / 40 * ramp + base * (1 - ramp), 1e-6 * base) << i;
  }
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), mscale * mscale / std::sqrt(192.0), 1e-6);
  c.yarn = false;
  EXPECT_NEAR(c.softmax_scale(), 1 / std::sqrt(192.0), 1e-7);
  EXPECT_NEAR(deepseek_rope_freqs(c)[31], std::pow(10000.0, -62.0 / 64.0), 1e-9);
}

TEST(deepseek, MlaCacheBytesPerTokenForRealShapes) {
  struct Shape {
    const char* name;
    int64_t layers, heads, kv_lora, nope, rope, v;
  };
  for (const Shape& s :
       {Shape{"V2-Lite", 27, 16, 512, 128, 64, 128}, Shape{"V2", 60, 128, 512, 128, 64, 128},
        Shape{"V3/R1", 61, 128, 512, 128, 64, 128}}) {
    DeepSeekConfig c;
    c.n_layers = s.layers;
    c.kv_lora_rank = s.kv_lora;
    c.qk_rope_head_dim = s.rope;
    const int64_t mla = c.n_layers * c.kv_cache_row() * 4;
    const int64_t mha = s.layers * s.heads * (s.nope + s.rope + s.v) * 4;
    std::printf("%-8s MLA cache %7lld B/token f32 vs per-head K/V %9lld B/token: %.1fx smaller\n",
                s.name, static_cast<long long>(mla), static_cast<long long>(mha),
                static_cast<double>(mha) / mla);
    EXPECT_EQ(c.kv_cache_row(), 576);
  }
  // The loaded model reports the same formula.
  const fs::path dir = temp_dir("bytes");
  write_safetensors_dir(make_checkpoint(Variant::V3, 4), dir, false);
  auto m = load(dir.string(), options());
  ASSERT_TRUE(m);
  const Dims d = dims_of(Variant::V3);
  EXPECT_EQ(m->info().kv_cache_bytes_per_token,
            static_cast<size_t>(d.layers * (d.kv_lora + d.rope) * 4));
  EXPECT_GT(m->info().active_weight_bytes_per_token, 0u);
  fs::remove_all(dir);
}

// --- Errors
// ----------------------------------------------------------------------------------------

TEST(deepseek, ErrorsNameTheFieldOrTensor) {
  const fs::path dir = temp_dir("errors");
  Checkpoint ck = make_checkpoint(Variant::V3, 5);
  ck.tensors.erase("model.layers.1.mlp.gate.e_score_correction_bias");
  write_safetensors_dir(ck, dir, false);
  {
    ModelSource source;
    source.weights = *WeightSource::open(dir.string());
    source.options = options();
    auto m = load_deepseek(source);
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.message().find("e_score_correction_bias"), std::string::npos) << m.message();
  }
  Checkpoint bad = make_checkpoint(Variant::V2, 5);
  bad.config["topk_method"] = "top_p";
  fs::remove_all(dir);
  write_safetensors_dir(bad, dir, false);
  {
    ModelSource source;
    source.weights = *WeightSource::open(dir.string());
    source.options = options();
    auto m = load_deepseek(source);
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.message().find("topk_method"), std::string::npos) << m.message();
  }
  // Bad batches are errors and leave the cache alone.
  fs::remove_all(dir);
  write_safetensors_dir(make_checkpoint(Variant::V2Lite, 5), dir, false);
  auto m = load(dir.string(), options());
  ASSERT_TRUE(m);
  BatchToken skip{1, 1, 0, true};
  std::vector<float> logits(m->info().vocab_size);
  EXPECT_FALSE(m->forward(std::span(&skip, 1), logits.data()).ok());
  BatchToken oov{1000, 0, 0, true};
  EXPECT_FALSE(m->forward(std::span(&oov, 1), logits.data()).ok());
  BatchToken bad_seq{1, 0, 5, true};
  EXPECT_FALSE(m->forward(std::span(&bad_seq, 1), logits.data()).ok());
  EXPECT_EQ(m->sequence_length(0), 0);
  std::vector<float> h;
  EXPECT_FALSE(m->predict_next_next(std::span(&skip, 1), h.data(), logits.data()).ok());  // no MTP
  fs::remove_all(dir);
}

// --- Golden fixtures (model.py; tools/ generates them) -------------------------------------------

const std::string kFixtures = std::string(SPUTNIK_TEST_DATA) + "/deepseek/";

class deepseek_fixture : public ::testing::TestWithParam<std::string> {};

std::vector<float> tensor_f32(const SafetensorsCheckpoint& ck, const std::string& name) {
  auto t = ck.tensor(name);
  EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.message());
  if (!t.ok()) return {};
  std::vector<float> out(static_cast<size_t>(t->numel()));
  if (t->dtype == DType::F32) {
    std::memcpy(out.data(), t->data, out.size() * 4);
  } else if (t->dtype == DType::I64) {
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<float>(static_cast<const int64_t*>(t->data)[i]);
  } else if (t->dtype == DType::I32) {
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<float>(static_cast<const int32_t*>(t->data)[i]);
  } else {
    ADD_FAILURE() << name << ": unexpected dtype " << dtype_name(t->dtype);
  }
  return out;
}

// Prefill P tokens then 16 cached decode steps, in each MLA mode, against the reference logits
// at every position; the named activations of a full forward; rope frequencies and softmax scale.
TEST_P(deepseek_fixture, MatchesReference) {
  const std::string dir = kFixtures + GetParam();
  ASSERT_TRUE(fs::exists(dir + "/reference.safetensors")) << dir << ": run tools/gen_deepseek_fixtures.py";
  auto ref = SafetensorsCheckpoint::open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.message();
  const std::vector<float> ids = tensor_f32(*ref, "input_ids");
  const std::vector<float> want = tensor_f32(*ref, "logits");
  std::vector<int32_t> tokens(ids.begin(), ids.end());
  const size_t n_decode = 16, n_prefill = tokens.size() - n_decode;
  std::vector<float> cached_auto;
  for (MlaPath p : {MlaPath::Auto, MlaPath::Naive, MlaPath::Absorbed}) {
    auto m = load(dir, options(1, static_cast<int64_t>(tokens.size())));
    ASSERT_TRUE(m);
    m->set_mla_path(p);
    const auto got = run_cached(*m, tokens, n_prefill);
    if (p == MlaPath::Auto) cached_auto = got;
    const float d = rel_diff(got, want);
    std::printf(
        "[fixture %s] prefill %zu + %zu decode (%s MLA) vs reference: max|d|/max|logit| = %.3g\n",
        GetParam().c_str(), n_prefill, n_decode,
        p == MlaPath::Auto    ? "auto"
        : p == MlaPath::Naive ? "naive"
                              : "absorbed",
        d);
    EXPECT_LT(d, kTol);
  }

  auto m = load(dir, options(1, static_cast<int64_t>(tokens.size())));
  ASSERT_TRUE(m);
  // precompute_freqs_cis and MLA.softmax_scale
  const std::vector<float> freqs = deepseek_rope_freqs(m->config());
  const std::vector<float> want_freqs = tensor_f32(*ref, "rope.inv_freq");
  ASSERT_EQ(freqs.size(), want_freqs.size());
  for (size_t i = 0; i < freqs.size(); ++i)
    EXPECT_NEAR(freqs[i], want_freqs[i], 1e-6f * want_freqs[i]) << i;
  EXPECT_NEAR(m->config().softmax_scale(), tensor_f32(*ref, "attn.softmax_scale")[0], 1e-6f);

  // Named activations of one full forward and of the MTP module (the reference's layer{l}.* and
  // mtp.*; see tests/data/deepseek/README.md).
  const DeepSeekConfig& c = m->config();
  std::map<std::string, std::vector<float>> taps;
  m->set_tap(
      [&](const std::string& name, int64_t layer, const float* data, int64_t rows, int64_t cols) {
        const std::string prefix = layer == c.n_layers ? "mtp." : fmt::format("layer{}.", layer);
        if (name == "result_norm") {
          taps["final_norm"].assign(data, data + rows * cols);
        } else if (name == "kv_cache") {  // kv_norm(latent) | k_pe
          auto& latent = taps[prefix + "kv_latent"];
          auto& k_pe = taps[prefix + "k_pe"];
          latent.clear();
          k_pe.clear();
          for (int64_t t = 0; t < rows; ++t) {
            latent.insert(latent.end(), data + t * cols, data + t * cols + c.kv_lora_rank);
            k_pe.insert(k_pe.end(), data + t * cols + c.kv_lora_rank, data + (t + 1) * cols);
          }
        } else if (name == "router_logits") {  // -> router_scores: softmax or sigmoid
          auto& scores = taps[prefix + "router_scores"];
          scores.assign(data, data + rows * cols);
          for (int64_t t = 0; t < rows; ++t) {
            float* row = scores.data() + t * cols;
            if (c.score_func == DeepSeekScoreFunc::Softmax) {
              const float mx = *std::max_element(row, row + cols);
              double z = 0;
              for (int64_t e = 0; e < cols; ++e) z += std::exp(static_cast<double>(row[e] - mx));
              for (int64_t e = 0; e < cols; ++e)
                row[e] = static_cast<float>(std::exp(static_cast<double>(row[e] - mx)) / z);
            } else {
              for (int64_t e = 0; e < cols; ++e) row[e] = 1.0f / (1.0f + std::exp(-row[e]));
            }
          }
        } else {
          taps[prefix + (name == "l_out" ? "out" : name)].assign(data, data + rows * cols);
        }
      });
  std::vector<float> hidden;
  const auto full = run_full(*m, tokens, 0, &hidden);
  const float d_full = rel_diff(full, want);
  const float d_cached_full = rel_diff(cached_auto, full);
  std::printf(
      "[fixture %s] one full forward vs reference: %.3g; prefill + decode vs full forward: %.3g\n",
      GetParam().c_str(), d_full, d_cached_full);
  EXPECT_LT(d_full, kTol);
  EXPECT_LT(d_cached_full, kTol);

  // MTP: h_i = final_norm(h) of position i and token i+1 -> logits of token i+2.
  const bool has_mtp = ref->has("mtp_logits");
  if (has_mtp) {
    ASSERT_TRUE(m->has_mtp());
    const int64_t V = m->info().vocab_size;
    const size_t n = tokens.size() - 1;
    std::vector<BatchToken> batch;
    for (size_t t = 0; t < n; ++t)
      batch.push_back({tokens[t + 1], static_cast<int32_t>(t), 0, true});
    std::vector<float> mtp(n * V);
    ASSERT_TRUE(m->predict_next_next(batch, hidden.data(), mtp.data()).ok());
    const float d = rel_diff(mtp, tensor_f32(*ref, "mtp_logits"));
    std::printf("[fixture %s] MTP logits vs reference: %.3g\n", GetParam().c_str(), d);
    EXPECT_LT(d, kTol);
  }
  m->set_tap(nullptr);

  // Experts chosen: exactly, as sets (the reference sorts them by id), and their weights.
  std::vector<std::string> prefixes = {"layer0.", "layer1."};
  if (has_mtp) prefixes.push_back("mtp.");
  for (const std::string& prefix : prefixes) {
    std::vector<std::string> names = {"kv_latent", "k_pe", "attn_out", "ffn_out", "out"};
    if (prefix != "layer0.") names.insert(names.end(), {"router_scores", "routed_out"});
    if (prefix == "mtp.") names.push_back("eh_out");
    float worst = 0;
    for (const std::string& name : names) {
      const std::string key = prefix + name;
      ASSERT_TRUE(taps.count(key)) << key;
      const float d = rel_diff(taps[key], tensor_f32(*ref, key));
      worst = std::max(worst, d);
      EXPECT_LT(d, kTol) << key;
    }
    if (prefix == "layer0.") {
      std::printf("[fixture %s] %s activations: worst max|d|/max|ref| %.3g\n", GetParam().c_str(),
                  prefix.c_str(), worst);
      continue;
    }
    const int64_t k = c.n_activated_experts;
    const std::vector<float> want_idx = tensor_f32(*ref, prefix + "topk_idx");
    const std::vector<float> want_w = tensor_f32(*ref, prefix + "topk_weight");
    const std::vector<float>& idx = taps[prefix + "topk_idx"];
    const std::vector<float>& w = taps[prefix + "topk_weight"];
    ASSERT_EQ(idx.size(), want_idx.size());
    int64_t mismatched_rows = 0;
    float dw = 0;
    for (size_t t = 0; t * k < idx.size(); ++t) {
      std::vector<std::pair<float, float>> ours;
      for (int64_t i = 0; i < k; ++i) ours.push_back({idx[t * k + i], w[t * k + i]});
      std::sort(ours.begin(), ours.end());
      bool same = true;
      for (int64_t i = 0; i < k; ++i) {
        same = same && ours[i].first == want_idx[t * k + i];
        dw = std::max(dw, std::fabs(ours[i].second - want_w[t * k + i]));
      }
      mismatched_rows += !same;
    }
    EXPECT_EQ(mismatched_rows, 0) << prefix << "topk_idx";
    EXPECT_LT(dw, kTol) << prefix << "topk_weight";
    std::printf(
        "[fixture %s] %s activations: worst max|d|/max|ref| %.3g; experts differ in %lld rows; "
        "weights max|d| %.3g\n",
        GetParam().c_str(), prefix.c_str(), worst, static_cast<long long>(mismatched_rows), dw);
  }
  const float d_norm = rel_diff(taps["final_norm"], tensor_f32(*ref, "final_norm"));
  EXPECT_LT(d_norm, kTol);

  // FP8: one weight through the loader's view (scale attached) and dequantize_weight_row.
  const std::string dequant = "dequant.model.layers.0.mlp.gate_proj.weight";
  if (ref->has(dequant)) {
    auto src = WeightSource::open(dir);
    ASSERT_TRUE(src.ok()) << src.message();
    auto w = (*src)->get("model.layers.0.mlp.gate_proj.weight", {c.inter_dim, c.dim});
    ASSERT_TRUE(w.ok()) << w.message();
    EXPECT_EQ(w->dtype, DType::F8_E4M3);
    std::vector<float> got(static_cast<size_t>(w->numel()));
    for (int64_t r = 0; r < w->rows(); ++r)
      dequantize_weight_row(*w, r, got.data() + r * w->cols());
    EXPECT_EQ(rel_diff(got, tensor_f32(*ref, dequant)), 0.0f);
  }
}

// The deepseek2 GGUF that llama.cpp's converter makes from the v2_lite fixture: same logits.
TEST(deepseek_fixture_gguf, V2LiteGgufMatchesSafetensors) {
  const std::string gguf = kFixtures + "v2_lite.gguf";
  ASSERT_TRUE(fs::exists(gguf)) << gguf << ": run tools/convert_tiny_to_gguf.sh";
  auto ref = SafetensorsCheckpoint::open(kFixtures + "v2_lite/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.message();
  const std::vector<float> ids = tensor_f32(*ref, "input_ids");
  std::vector<int32_t> tokens(ids.begin(), ids.end());
  auto g = load(gguf, options(1, static_cast<int64_t>(tokens.size())));
  ASSERT_TRUE(g);
  auto st = load(kFixtures + "v2_lite", options(1, static_cast<int64_t>(tokens.size())));
  ASSERT_TRUE(st);
  for (MlaPath p : {MlaPath::Naive, MlaPath::Absorbed}) {
    g->set_mla_path(p);
    st->set_mla_path(p);
    g->truncate_sequence(0, 0);
    st->truncate_sequence(0, 0);
    const float d = rel_diff(run_cached(*g, tokens, tokens.size() - 16),
                             run_cached(*st, tokens, tokens.size() - 16));
    g->truncate_sequence(0, 0);
    const float d_ref = rel_diff(run_full(*g, tokens), tensor_f32(*ref, "logits"));
    std::printf("[fixture v2_lite.gguf] (%s) vs safetensors: %.3g, vs reference: %.3g\n",
                p == MlaPath::Naive ? "naive" : "absorbed", d, d_ref);
    EXPECT_LT(d, kTol);
    EXPECT_LT(d_ref, kTol);
  }
}

INSTANTIATE_TEST_SUITE_P(reference, deepseek_fixture,
                         ::testing::Values("v2_lite", "v2", "v3", "v3_fp8"));

}  // namespace
}  // namespace sputnik
