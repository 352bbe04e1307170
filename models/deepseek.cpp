// DeepSeek-V2/V3 (see models/deepseek.h): config (ModelArgs), the weight-name table, loading,
// Transformer.forward and the MTP module. MLA is in deepseek_attention.cpp, Gate and MoE in
// deepseek_moe.cpp.
#include "models/deepseek.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/mmap.h"
#include "formats/gguf.h"
#include "formats/json_fields.h"
#include "kernels/kernels.h"
#include "models/weights.h"

namespace sputnik {

namespace {

// Shared checks of a finished config, whichever file it came from.
Status validate(const DeepSeekConfig& c, const std::string& where) {
  auto positive = [&](const char* field, int64_t v) -> Status {
    if (v <= 0) return make_error("{}: {} = {} must be positive", where, field, v);
    return ok_status();
  };
  SPUTNIK_CHECK_OK(positive("hidden_size", c.dim));
  SPUTNIK_CHECK_OK(positive("num_hidden_layers", c.n_layers));
  SPUTNIK_CHECK_OK(positive("num_attention_heads", c.n_heads));
  SPUTNIK_CHECK_OK(positive("vocab_size", c.vocab_size));
  SPUTNIK_CHECK_OK(positive("kv_lora_rank", c.kv_lora_rank));
  SPUTNIK_CHECK_OK(positive("qk_nope_head_dim", c.qk_nope_head_dim));
  SPUTNIK_CHECK_OK(positive("v_head_dim", c.v_head_dim));
  SPUTNIK_CHECK_OK(positive("moe_layer_freq", c.moe_layer_freq));
  if (c.qk_rope_head_dim <= 0 || c.qk_rope_head_dim % 2 != 0) {
    return make_error("{}: qk_rope_head_dim = {} must be positive and even", where,
                      c.qk_rope_head_dim);
  }
  if (c.n_routed_experts > 0) {
    SPUTNIK_CHECK_OK(positive("moe_intermediate_size", c.moe_inter_dim));
    SPUTNIK_CHECK_OK(positive("n_group", c.n_expert_groups));
    if (c.n_routed_experts % c.n_expert_groups != 0) {
      return make_error("{}: n_routed_experts = {} is not a multiple of n_group = {}", where,
                        c.n_routed_experts, c.n_expert_groups);
    }
    if (c.n_limited_groups < 1 || c.n_limited_groups > c.n_expert_groups) {
      return make_error("{}: topk_group = {} must be in [1, n_group = {}]", where,
                        c.n_limited_groups, c.n_expert_groups);
    }
    const bool grouped = c.topk_method != DeepSeekTopkMethod::Greedy && c.n_expert_groups > 1;
    const int64_t selectable = grouped
                                   ? c.n_limited_groups * (c.n_routed_experts / c.n_expert_groups)
                                   : c.n_routed_experts;
    if (c.n_activated_experts < 1 || c.n_activated_experts > selectable) {
      return make_error(
          "{}: num_experts_per_tok = {} must be in [1, {}] (experts the routing can pick)", where,
          c.n_activated_experts, selectable);
    }
    if (grouped && c.topk_method == DeepSeekTopkMethod::NoauxTc &&
        c.n_routed_experts / c.n_expert_groups < 2) {
      return make_error("{}: noaux_tc ranks groups by their two best experts, but a group has {}",
                        where, c.n_routed_experts / c.n_expert_groups);
    }
  }
  if (c.yarn && !(c.rope_factor > 0))
    return make_error("{}: rope_scaling.factor = {} must be > 0", where, c.rope_factor);
  return ok_status();
}

}  // namespace

Result<DeepSeekConfig> deepseek_config_from_json(const nlohmann::json& j, const std::string& file) {
  DeepSeekConfig c;
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    arch = j["architectures"][0].get<std::string>();
  }
  if (arch != "DeepseekV2ForCausalLM" && arch != "DeepseekV3ForCausalLM") {
    return make_error(
        "{}: architectures[0] = '{}', expected DeepseekV2ForCausalLM or DeepseekV3ForCausalLM",
        file, arch);
  }
  const bool v3 = arch == "DeepseekV3ForCausalLM";
  c.architecture = v3 ? "deepseek3" : "deepseek2";
  if (j.contains("_name_or_path") && j["_name_or_path"].is_string()) c.name = j["_name_or_path"];
  SPUTNIK_ASSIGN_OR_RETURN(c.vocab_size, json_int(j, "vocab_size", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.dim, json_int(j, "hidden_size", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.inter_dim, json_int(j, "intermediate_size", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.moe_inter_dim, json_int_or(j, "moe_intermediate_size", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_layers, json_int(j, "num_hidden_layers", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_dense_layers, json_int_or(j, "first_k_dense_replace", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.moe_layer_freq, json_int_or(j, "moe_layer_freq", 1, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_heads, json_int(j, "num_attention_heads", file));
  SPUTNIK_ASSIGN_OR_RETURN(double eps, json_float_or(j, "rms_norm_eps", 1e-6, file));
  c.norm_eps = static_cast<float>(eps);
  SPUTNIK_ASSIGN_OR_RETURN(c.max_seq_len, json_int_or(j, "max_position_embeddings", 4096, file));
  // moe (n_routed_experts null: every layer dense)
  SPUTNIK_ASSIGN_OR_RETURN(c.n_routed_experts, json_int_or(j, "n_routed_experts", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_shared_experts, json_int_or(j, "n_shared_experts", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_activated_experts, json_int_or(j, "num_experts_per_tok", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_expert_groups, json_int_or(j, "n_group", 1, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_limited_groups, json_int_or(j, "topk_group", 1, file));
  SPUTNIK_ASSIGN_OR_RETURN(double route_scale,
                           json_float_or(j, "routed_scaling_factor", 1.0, file));
  c.route_scale = static_cast<float>(route_scale);
  // Defaults of HF's DeepseekV2Config / DeepseekV3Config when a field is absent.
  SPUTNIK_ASSIGN_OR_RETURN(std::string scoring_func,
                           json_string_or(j, "scoring_func", v3 ? "sigmoid" : "softmax", file));
  SPUTNIK_ASSIGN_OR_RETURN(std::string topk_method,
                           json_string_or(j, "topk_method", v3 ? "noaux_tc" : "greedy", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.norm_topk_prob, json_bool_or(j, "norm_topk_prob", v3, file));
  if (scoring_func == "softmax") {
    c.score_func = DeepSeekScoreFunc::Softmax;
  } else if (scoring_func == "sigmoid") {
    c.score_func = DeepSeekScoreFunc::Sigmoid;
  } else {
    return make_error("{}: scoring_func = '{}', expected softmax or sigmoid", file, scoring_func);
  }
  if (topk_method == "greedy" || topk_method == "gready") {  // "gready": DeepseekV2Config's default
    c.topk_method = DeepSeekTopkMethod::Greedy;
  } else if (topk_method == "group_limited_greedy") {
    c.topk_method = DeepSeekTopkMethod::GroupLimitedGreedy;
  } else if (topk_method == "noaux_tc") {
    c.topk_method = DeepSeekTopkMethod::NoauxTc;
  } else {
    return make_error("{}: topk_method = '{}', expected greedy, group_limited_greedy or noaux_tc",
                      file, topk_method);
  }
  // mla
  SPUTNIK_ASSIGN_OR_RETURN(c.q_lora_rank, json_int_or(j, "q_lora_rank", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(c.kv_lora_rank, json_int(j, "kv_lora_rank", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.qk_nope_head_dim, json_int(j, "qk_nope_head_dim", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.qk_rope_head_dim, json_int(j, "qk_rope_head_dim", file));
  SPUTNIK_ASSIGN_OR_RETURN(c.v_head_dim, json_int(j, "v_head_dim", file));
  // yarn
  SPUTNIK_ASSIGN_OR_RETURN(c.rope_theta, json_float_or(j, "rope_theta", 10000.0, file));
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const nlohmann::json& rs = j["rope_scaling"];
    SPUTNIK_ASSIGN_OR_RETURN(std::string type, json_string_or(rs, "type", "", file));
    SPUTNIK_ASSIGN_OR_RETURN(type, json_string_or(rs, "rope_type", type, file));
    if (type != "yarn")
      return make_error("{}: rope_scaling type '{}' is not supported (DeepSeek uses yarn)", file,
                        type);
    c.yarn = true;
    SPUTNIK_ASSIGN_OR_RETURN(c.rope_factor, json_float_or(rs, "factor", 1.0, file));
    SPUTNIK_ASSIGN_OR_RETURN(c.original_seq_len,
                             json_int_or(rs, "original_max_position_embeddings", 4096, file));
    SPUTNIK_ASSIGN_OR_RETURN(c.beta_fast, json_float_or(rs, "beta_fast", 32.0, file));
    SPUTNIK_ASSIGN_OR_RETURN(c.beta_slow, json_float_or(rs, "beta_slow", 1.0, file));
    SPUTNIK_ASSIGN_OR_RETURN(c.mscale, json_float_or(rs, "mscale", 1.0, file));
    SPUTNIK_ASSIGN_OR_RETURN(c.mscale_all_dim, json_float_or(rs, "mscale_all_dim", 0.0, file));
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.n_mtp_layers, json_int_or(j, "num_nextn_predict_layers", 0, file));
  SPUTNIK_ASSIGN_OR_RETURN(bool tie, json_bool_or(j, "tie_word_embeddings", false, file));
  if (tie)
    return make_error("{}: tie_word_embeddings = true is not a DeepSeek configuration", file);
  SPUTNIK_CHECK_OK(validate(c, file));
  return c;
}

Result<DeepSeekConfig> deepseek_config_from_gguf(const GgufFile& g, const std::string& where) {
  // Keys as llama.cpp's convert_hf_to_gguf.py (DeepseekV2Model) writes them.
  const std::string p = "deepseek2.";
  DeepSeekConfig c;
  if (g.has("general.name")) {
    SPUTNIK_ASSIGN_OR_RETURN(c.name, g.get_string("general.name"));
  }
  SPUTNIK_ASSIGN_OR_RETURN(c.dim, g.get_int(p + "embedding_length"));
  SPUTNIK_ASSIGN_OR_RETURN(int64_t block_count, g.get_int(p + "block_count"));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_mtp_layers, g.get_int_or(p + "nextn_predict_layers", 0));
  c.n_layers = block_count - c.n_mtp_layers;  // MTP blocks are counted in block_count
  SPUTNIK_ASSIGN_OR_RETURN(c.n_heads, g.get_int(p + "attention.head_count"));
  SPUTNIK_ASSIGN_OR_RETURN(c.inter_dim, g.get_int(p + "feed_forward_length"));
  SPUTNIK_ASSIGN_OR_RETURN(c.max_seq_len, g.get_int_or(p + "context_length", 4096));
  SPUTNIK_ASSIGN_OR_RETURN(double eps,
                           g.get_float_or(p + "attention.layer_norm_rms_epsilon", 1e-6));
  c.norm_eps = static_cast<float>(eps);
  SPUTNIK_ASSIGN_OR_RETURN(c.q_lora_rank, g.get_int_or(p + "attention.q_lora_rank", 0));
  SPUTNIK_ASSIGN_OR_RETURN(c.kv_lora_rank, g.get_int(p + "attention.kv_lora_rank"));
  SPUTNIK_ASSIGN_OR_RETURN(c.qk_rope_head_dim, g.get_int(p + "rope.dimension_count"));
  // MLA-era converters write the per-head widths under *_mla (key_length then holds the
  // compressed kv_lora_rank + rope width); older ones under the plain keys.
  const bool mla_keys = g.has(p + "attention.key_length_mla");
  SPUTNIK_ASSIGN_OR_RETURN(int64_t key_length, g.get_int(p + (mla_keys ? "attention.key_length_mla"
                                                                       : "attention.key_length")));
  SPUTNIK_ASSIGN_OR_RETURN(c.v_head_dim, g.get_int(p + (mla_keys ? "attention.value_length_mla"
                                                                 : "attention.value_length")));
  c.qk_nope_head_dim = key_length - c.qk_rope_head_dim;
  if (g.has(p + "vocab_size")) {
    SPUTNIK_ASSIGN_OR_RETURN(c.vocab_size, g.get_int(p + "vocab_size"));
  } else {
    const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
    if (!embd) return make_error("{}: tensor 'token_embd.weight' is missing", where);
    c.vocab_size = embd->view.shape[0];
  }
  // moe
  SPUTNIK_ASSIGN_OR_RETURN(c.n_dense_layers, g.get_int_or(p + "leading_dense_block_count", 0));
  SPUTNIK_ASSIGN_OR_RETURN(c.moe_inter_dim, g.get_int_or(p + "expert_feed_forward_length", 0));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_routed_experts, g.get_int_or(p + "expert_count", 0));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_activated_experts, g.get_int_or(p + "expert_used_count", 0));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_shared_experts, g.get_int_or(p + "expert_shared_count", 0));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_expert_groups, g.get_int_or(p + "expert_group_count", 1));
  SPUTNIK_ASSIGN_OR_RETURN(c.n_limited_groups, g.get_int_or(p + "expert_group_used_count", 1));
  if (c.n_expert_groups == 0) c.n_expert_groups = c.n_limited_groups = 1;
  SPUTNIK_ASSIGN_OR_RETURN(double route_scale, g.get_float_or(p + "expert_weights_scale", 1.0));
  c.route_scale = static_cast<float>(route_scale);
  if (g.has(p + "expert_weights_norm")) {
    SPUTNIK_ASSIGN_OR_RETURN(c.norm_topk_prob, g.get_bool(p + "expert_weights_norm"));
  }
  // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE: 1 softmax (the default of V2-era files), 2 sigmoid.
  SPUTNIK_ASSIGN_OR_RETURN(int64_t gating, g.get_int_or(p + "expert_gating_func", 1));
  if (gating != 1 && gating != 2) {
    return make_error("{}: {}expert_gating_func = {}, expected 1 (softmax) or 2 (sigmoid)", where,
                      p, gating);
  }
  c.score_func = gating == 2 ? DeepSeekScoreFunc::Sigmoid : DeepSeekScoreFunc::Softmax;
  // GGUF has no topk_method; it follows from the gating function, an explicit field: sigmoid
  // gating exists only with V3's noaux_tc, softmax is V2's greedy / group_limited_greedy.
  if (c.score_func == DeepSeekScoreFunc::Sigmoid) {
    c.topk_method = DeepSeekTopkMethod::NoauxTc;
  } else {
    c.topk_method =
        c.n_expert_groups > 1 ? DeepSeekTopkMethod::GroupLimitedGreedy : DeepSeekTopkMethod::Greedy;
  }
  c.architecture = c.score_func == DeepSeekScoreFunc::Sigmoid ? "deepseek3" : "deepseek2";
  // yarn
  SPUTNIK_ASSIGN_OR_RETURN(c.rope_theta, g.get_float_or(p + "rope.freq_base", 10000.0));
  std::string scaling = "none";
  if (g.has(p + "rope.scaling.type")) {
    SPUTNIK_ASSIGN_OR_RETURN(scaling, g.get_string(p + "rope.scaling.type"));
  }
  if (scaling == "yarn") {
    c.yarn = true;
    SPUTNIK_ASSIGN_OR_RETURN(c.rope_factor, g.get_float(p + "rope.scaling.factor"));
    SPUTNIK_ASSIGN_OR_RETURN(c.original_seq_len,
                             g.get_int(p + "rope.scaling.original_context_length"));
    SPUTNIK_ASSIGN_OR_RETURN(c.beta_fast, g.get_float_or(p + "rope.scaling.yarn_beta_fast", 32.0));
    SPUTNIK_ASSIGN_OR_RETURN(c.beta_slow, g.get_float_or(p + "rope.scaling.yarn_beta_slow", 1.0));
    // The converter writes 0.1 * mscale_all_dim here ([TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]); GGUF
    // keeps no separate mscale, which equals mscale_all_dim in every DeepSeek config.
    SPUTNIK_ASSIGN_OR_RETURN(double log_mul,
                             g.get_float_or(p + "rope.scaling.yarn_log_multiplier", 0.0));
    c.mscale_all_dim = log_mul / 0.1;
    c.mscale = c.mscale_all_dim;
  } else if (scaling != "none") {
    return make_error("{}: {}rope.scaling.type = '{}' is not supported (expected yarn or none)",
                      where, p, scaling);
  }
  SPUTNIK_CHECK_OK(validate(c, where));
  return c;
}

namespace {

// --- The weight-name table -----------------------------------------------------------------------
// One row per weight: our (model.py) name, the HF safetensors name, the llama.cpp GGUF name.
// {L} is the layer index (MTP modules: n_layers + k), {E} the expert. GGUF stacks the routed
// experts of a layer in one 3-D tensor ({E} absent); llama.cpp's converter also splits kv_b into
// attn_k_b (K part transposed per head) and attn_v_b, which HF never has.
using TensorName = DeepSeekTensorName;
constexpr TensorName kTensorNames[] = {
    {"embed", "model.embed_tokens.weight", "token_embd.weight"},
    {"norm", "model.norm.weight", "output_norm.weight"},
    {"head", "lm_head.weight", "output.weight"},
    {"attn_norm", "model.layers.{L}.input_layernorm.weight", "blk.{L}.attn_norm.weight"},
    {"attn.wq", "model.layers.{L}.self_attn.q_proj.weight", "blk.{L}.attn_q.weight"},
    {"attn.wq_a", "model.layers.{L}.self_attn.q_a_proj.weight", "blk.{L}.attn_q_a.weight"},
    {"attn.q_norm", "model.layers.{L}.self_attn.q_a_layernorm.weight",
     "blk.{L}.attn_q_a_norm.weight"},
    {"attn.wq_b", "model.layers.{L}.self_attn.q_b_proj.weight", "blk.{L}.attn_q_b.weight"},
    {"attn.wkv_a", "model.layers.{L}.self_attn.kv_a_proj_with_mqa.weight",
     "blk.{L}.attn_kv_a_mqa.weight"},
    {"attn.kv_norm", "model.layers.{L}.self_attn.kv_a_layernorm.weight",
     "blk.{L}.attn_kv_a_norm.weight"},
    {"attn.wkv_b", "model.layers.{L}.self_attn.kv_b_proj.weight", "blk.{L}.attn_kv_b.weight"},
    {"attn.wk_b", nullptr, "blk.{L}.attn_k_b.weight"},
    {"attn.wv_b", nullptr, "blk.{L}.attn_v_b.weight"},
    {"attn.wo", "model.layers.{L}.self_attn.o_proj.weight", "blk.{L}.attn_output.weight"},
    {"ffn_norm", "model.layers.{L}.post_attention_layernorm.weight", "blk.{L}.ffn_norm.weight"},
    {"ffn.w1", "model.layers.{L}.mlp.gate_proj.weight", "blk.{L}.ffn_gate.weight"},
    {"ffn.w2", "model.layers.{L}.mlp.down_proj.weight", "blk.{L}.ffn_down.weight"},
    {"ffn.w3", "model.layers.{L}.mlp.up_proj.weight", "blk.{L}.ffn_up.weight"},
    {"ffn.gate", "model.layers.{L}.mlp.gate.weight", "blk.{L}.ffn_gate_inp.weight"},
    {"ffn.gate.bias", "model.layers.{L}.mlp.gate.e_score_correction_bias",
     "blk.{L}.exp_probs_b.bias"},
    {"ffn.experts.w1", "model.layers.{L}.mlp.experts.{E}.gate_proj.weight",
     "blk.{L}.ffn_gate_exps.weight"},
    {"ffn.experts.w2", "model.layers.{L}.mlp.experts.{E}.down_proj.weight",
     "blk.{L}.ffn_down_exps.weight"},
    {"ffn.experts.w3", "model.layers.{L}.mlp.experts.{E}.up_proj.weight",
     "blk.{L}.ffn_up_exps.weight"},
    {"ffn.shared_experts.w1", "model.layers.{L}.mlp.shared_experts.gate_proj.weight",
     "blk.{L}.ffn_gate_shexp.weight"},
    {"ffn.shared_experts.w2", "model.layers.{L}.mlp.shared_experts.down_proj.weight",
     "blk.{L}.ffn_down_shexp.weight"},
    {"ffn.shared_experts.w3", "model.layers.{L}.mlp.shared_experts.up_proj.weight",
     "blk.{L}.ffn_up_shexp.weight"},
    {"mtp.embed", "model.layers.{L}.embed_tokens.weight", "blk.{L}.nextn.embed_tokens.weight"},
    {"mtp.enorm", "model.layers.{L}.enorm.weight", "blk.{L}.nextn.enorm.weight"},
    {"mtp.hnorm", "model.layers.{L}.hnorm.weight", "blk.{L}.nextn.hnorm.weight"},
    {"mtp.eh_proj", "model.layers.{L}.eh_proj.weight", "blk.{L}.nextn.eh_proj.weight"},
    {"mtp.shared_head.norm", "model.layers.{L}.shared_head.norm.weight",
     "blk.{L}.nextn.shared_head_norm.weight"},
    {"mtp.shared_head.head", "model.layers.{L}.shared_head.head.weight",
     "blk.{L}.nextn.shared_head_head.weight"},
};

}  // namespace

std::span<const DeepSeekTensorName> deepseek_tensor_names() { return kTensorNames; }

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

class WeightLoader {
 public:
  explicit WeightLoader(const WeightSource& source) : src_(source) {}

  bool gguf() const { return src_.gguf() != nullptr; }
  // The checkpoint's name of `ours`, or "" when the format has no such tensor.
  std::string name(const std::string& ours, int64_t layer = -1, int64_t expert = -1) const {
    for (const TensorName& n : kTensorNames) {
      if (ours != n.ours) continue;
      const char* pattern = gguf() ? n.gguf : n.hf;
      if (!pattern) return "";
      return replace_all(replace_all(pattern, "{L}", std::to_string(layer)), "{E}",
                         std::to_string(expert));
    }
    return "";
  }
  bool has(const std::string& ours, int64_t layer = -1, int64_t expert = 0) const {
    const std::string n = name(ours, layer, expert);
    return !n.empty() && src_.has(n);
  }
  // A matmul weight: shape checked, and a dtype the kernels multiply (FP8 needs its scale).
  // Repacked for the active kernels where that pays (WeightSource::get_matrix).
  Result<TensorView> matrix(const std::string& ours, int64_t layer,
                            std::initializer_list<int64_t> shape, int64_t expert = -1) const {
    return weight(ours, layer, shape, expert, /*repack=*/true);
  }
  // A table read one row per token (the embeddings): kept as stored, so that only the rows of
  // tokens actually seen are paged in from the mmap; repacking would read and keep all of it.
  Result<TensorView> row_table(const std::string& ours, int64_t layer,
                               std::initializer_list<int64_t> shape) const {
    return weight(ours, layer, shape, -1, /*repack=*/false);
  }
  Result<std::vector<float>> vector(const std::string& ours, int64_t layer, int64_t n) const {
    const std::string nm = name(ours, layer);
    return src_.get_f32(nm, {n});
  }

 private:
  Result<TensorView> weight(const std::string& ours, int64_t layer,
                            std::initializer_list<int64_t> shape, int64_t expert,
                            bool repack) const {
    const std::string n = name(ours, layer, expert);
    if (n.empty()) return make_error("{}: '{}' has no tensor in this format", src_.path(), ours);
    SPUTNIK_ASSIGN_OR_RETURN(TensorView v, repack ? src_.get_matrix(n, shape) : src_.get(n, shape));
    if (v.dtype == DType::I32 || v.dtype == DType::I64 || v.dtype == DType::I8 ||
        v.dtype == DType::Q8_K) {
      return make_error("{}: tensor '{}' has dtype {}, which is not a weight type", src_.path(), n,
                        dtype_name(v.dtype));
    }
    if (v.dtype == DType::F8_E4M3 && v.scale == nullptr) {
      return make_error("{}: FP8 tensor '{}' has no '{}_scale_inv' block scales", src_.path(), n,
                        n);
    }
    return v;
  }

  const WeightSource& src_;
};

// The 2-D slice [e] of a stacked [E, rows, cols] expert tensor.
TensorView expert_slice(const TensorView& stacked, int64_t e) {
  TensorView v = stacked;
  v.n_dims = 2;
  v.shape = {stacked.shape[1], stacked.shape[2], 0, 0};
  v.data = stacked.row(e * stacked.shape[1]);
  v.name = fmt::format("{}[{}]", stacked.name, e);
  return v;
}

Result<DeepSeekMlpWeights> load_mlp(const WeightLoader& wl, const std::string& prefix,
                                    int64_t layer, int64_t dim, int64_t inter,
                                    int64_t expert = -1) {
  DeepSeekMlpWeights m;
  SPUTNIK_ASSIGN_OR_RETURN(m.w1, wl.matrix(prefix + ".w1", layer, {inter, dim}, expert));
  SPUTNIK_ASSIGN_OR_RETURN(m.w2, wl.matrix(prefix + ".w2", layer, {dim, inter}, expert));
  SPUTNIK_ASSIGN_OR_RETURN(m.w3, wl.matrix(prefix + ".w3", layer, {inter, dim}, expert));
  return m;
}

// Block l: MLA, then the layer's MLP or MoE.
Result<DeepSeekLayerWeights> load_block(const WeightLoader& wl, const DeepSeekConfig& c,
                                        int64_t l) {
  DeepSeekLayerWeights w;
  const int64_t H = c.n_heads, dim = c.dim, r = c.kv_lora_rank;
  SPUTNIK_ASSIGN_OR_RETURN(w.attn_norm, wl.vector("attn_norm", l, dim));
  if (c.q_lora_rank == 0) {
    SPUTNIK_ASSIGN_OR_RETURN(w.wq, wl.matrix("attn.wq", l, {H * c.qk_head_dim(), dim}));
  } else {
    SPUTNIK_ASSIGN_OR_RETURN(w.wq_a, wl.matrix("attn.wq_a", l, {c.q_lora_rank, dim}));
    SPUTNIK_ASSIGN_OR_RETURN(w.q_norm, wl.vector("attn.q_norm", l, c.q_lora_rank));
    SPUTNIK_ASSIGN_OR_RETURN(w.wq_b,
                             wl.matrix("attn.wq_b", l, {H * c.qk_head_dim(), c.q_lora_rank}));
  }
  SPUTNIK_ASSIGN_OR_RETURN(w.wkv_a, wl.matrix("attn.wkv_a", l, {r + c.qk_rope_head_dim, dim}));
  SPUTNIK_ASSIGN_OR_RETURN(w.kv_norm, wl.vector("attn.kv_norm", l, r));
  w.split_kv_b = wl.has("attn.wk_b", l) && wl.has("attn.wv_b", l);
  if (w.split_kv_b) {
    SPUTNIK_ASSIGN_OR_RETURN(w.wk_b, wl.matrix("attn.wk_b", l, {H, r, c.qk_nope_head_dim}));
    SPUTNIK_ASSIGN_OR_RETURN(w.wv_b, wl.matrix("attn.wv_b", l, {H, c.v_head_dim, r}));
  } else {
    SPUTNIK_ASSIGN_OR_RETURN(
        w.wkv_b, wl.matrix("attn.wkv_b", l, {H * (c.qk_nope_head_dim + c.v_head_dim), r}));
  }
  SPUTNIK_ASSIGN_OR_RETURN(w.wo, wl.matrix("attn.wo", l, {dim, H * c.v_head_dim}));
  SPUTNIK_ASSIGN_OR_RETURN(w.ffn_norm, wl.vector("ffn_norm", l, dim));
  w.is_moe = c.is_moe_layer(l);
  if (!w.is_moe) {
    SPUTNIK_ASSIGN_OR_RETURN(w.mlp, load_mlp(wl, "ffn", l, dim, c.inter_dim));
    return w;
  }
  const int64_t E = c.n_routed_experts, inter = c.moe_inter_dim;
  SPUTNIK_ASSIGN_OR_RETURN(w.moe.gate, wl.matrix("ffn.gate", l, {E, dim}));
  if (c.topk_method == DeepSeekTopkMethod::NoauxTc) {
    if (!wl.has("ffn.gate.bias", l)) {
      return make_error(
          "layer {}: topk_method noaux_tc needs the router bias '{}', which is missing", l,
          wl.name("ffn.gate.bias", l));
    }
    SPUTNIK_ASSIGN_OR_RETURN(w.moe.gate_bias, wl.vector("ffn.gate.bias", l, E));
  }
  w.moe.experts.resize(static_cast<size_t>(E));
  if (wl.gguf()) {
    SPUTNIK_ASSIGN_OR_RETURN(TensorView w1, wl.matrix("ffn.experts.w1", l, {E, inter, dim}));
    SPUTNIK_ASSIGN_OR_RETURN(TensorView w2, wl.matrix("ffn.experts.w2", l, {E, dim, inter}));
    SPUTNIK_ASSIGN_OR_RETURN(TensorView w3, wl.matrix("ffn.experts.w3", l, {E, inter, dim}));
    for (int64_t e = 0; e < E; ++e)
      w.moe.experts[e] = {expert_slice(w1, e), expert_slice(w2, e), expert_slice(w3, e)};
  } else {
    for (int64_t e = 0; e < E; ++e) {
      SPUTNIK_ASSIGN_OR_RETURN(w.moe.experts[e], load_mlp(wl, "ffn.experts", l, dim, inter, e));
    }
  }
  if (c.n_shared_experts > 0) {
    SPUTNIK_ASSIGN_OR_RETURN(w.moe.shared_experts, load_mlp(wl, "ffn.shared_experts", l, dim,
                                                            c.n_shared_experts * inter));
  }
  return w;
}

size_t bytes(const TensorView& v) { return v.data ? v.bytes() : 0; }  // 0 for an absent weight
size_t mlp_bytes(const DeepSeekMlpWeights& m) { return bytes(m.w1) + bytes(m.w2) + bytes(m.w3); }

// Weight bytes one token reads: attention, the dense MLP or the gate + k experts + shared experts.
size_t active_bytes(const DeepSeekConfig& c, const DeepSeekWeights& w) {
  size_t total = w.embed.row_bytes() + bytes(w.head);
  for (const DeepSeekLayerWeights& l : w.layers) {
    total += bytes(l.wq) + bytes(l.wq_a) + bytes(l.wq_b) + bytes(l.wkv_a) + bytes(l.wkv_b) +
             bytes(l.wk_b) + bytes(l.wv_b) + bytes(l.wo);
    if (!l.is_moe) {
      total += mlp_bytes(l.mlp);
    } else {
      total += bytes(l.moe.gate) + mlp_bytes(l.moe.shared_experts) +
               static_cast<size_t>(c.n_activated_experts) * mlp_bytes(l.moe.experts[0]);
    }
  }
  return total;
}

}  // namespace

Result<std::unique_ptr<Model>> load_deepseek(const ModelSource& source) {
  const WeightSource& src = *source.weights;
  DeepSeekConfig c;
  if (src.gguf()) {
    SPUTNIK_ASSIGN_OR_RETURN(c, deepseek_config_from_gguf(*src.gguf(), src.path()));
  } else {
    SPUTNIK_ASSIGN_OR_RETURN(
        c, deepseek_config_from_json(src.safetensors()->config(),
                                     src.safetensors()->directory() + "/config.json"));
  }
  WeightLoader wl(src);
  DeepSeekWeights w;
  SPUTNIK_ASSIGN_OR_RETURN(w.embed, wl.row_table("embed", -1, {c.vocab_size, c.dim}));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    SPUTNIK_ASSIGN_OR_RETURN(DeepSeekLayerWeights layer, load_block(wl, c, l));
    w.layers.push_back(std::move(layer));
    if (source.progress) source.progress(l + 1, c.n_layers);
  }
  SPUTNIK_ASSIGN_OR_RETURN(w.norm, wl.vector("norm", -1, c.dim));
  SPUTNIK_ASSIGN_OR_RETURN(w.head, wl.matrix("head", -1, {c.vocab_size, c.dim}));
  // MTP modules are optional at run time: llama.cpp's converter drops them, and so do many
  // re-uploads. Load them when the checkpoint has them.
  for (int64_t k = 0; k < c.n_mtp_layers; ++k) {
    const int64_t l = c.n_layers + k;
    if (!wl.has("mtp.eh_proj", l)) break;
    DeepSeekMtpWeights m;
    if (wl.has("mtp.embed", l)) {
      SPUTNIK_ASSIGN_OR_RETURN(m.embed, wl.row_table("mtp.embed", l, {c.vocab_size, c.dim}));
    } else {
      m.embed = w.embed;
    }
    SPUTNIK_ASSIGN_OR_RETURN(m.enorm, wl.vector("mtp.enorm", l, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(m.hnorm, wl.vector("mtp.hnorm", l, c.dim));
    SPUTNIK_ASSIGN_OR_RETURN(m.eh_proj, wl.matrix("mtp.eh_proj", l, {c.dim, 2 * c.dim}));
    SPUTNIK_ASSIGN_OR_RETURN(m.block, load_block(wl, c, l));
    SPUTNIK_ASSIGN_OR_RETURN(m.shared_head_norm, wl.vector("mtp.shared_head.norm", l, c.dim));
    if (wl.has("mtp.shared_head.head", l)) {
      SPUTNIK_ASSIGN_OR_RETURN(m.shared_head_head,
                               wl.matrix("mtp.shared_head.head", l, {c.vocab_size, c.dim}));
    } else {
      m.shared_head_head = w.head;
    }
    w.mtp.push_back(std::move(m));
  }

  ModelInfo info = source.info;
  info.architecture = c.architecture;
  if (info.name.empty()) info.name = c.name;
  info.vocab_size = c.vocab_size;
  info.n_ctx_train = c.max_seq_len;
  info.n_layers = c.n_layers;
  info.hidden_size = c.dim;
  const DType cache_type = source.options.kv_type;
  if (cache_type != DType::F32 && cache_type != DType::F16) {
    return make_error("{}: MLA cache type {} is not supported (F32 or F16)", c.name,
                      dtype_name(cache_type));
  }
  const size_t cache_elem_bytes = cache_type == DType::F16 ? 2 : 4;
  info.kv_cache_bytes_per_token =
      static_cast<size_t>(c.n_layers * c.kv_cache_row()) * cache_elem_bytes;
  info.active_weight_bytes_per_token = active_bytes(c, w);
  // What MLA saves: a multi-head cache would hold k (qk_head_dim) and v (v_head_dim) per head.
  const size_t mha =
      static_cast<size_t>(c.n_layers * c.n_heads * (c.qk_head_dim() + c.v_head_dim)) *
      cache_elem_bytes;
  std::fprintf(stderr,
               "deepseek: MLA cache %zu bytes/token (%lld layers x (%lld latent + %lld rope) %s); "
               "a per-head K/V cache would take %zu (%.1fx)\n",
               info.kv_cache_bytes_per_token, static_cast<long long>(c.n_layers),
               static_cast<long long>(c.kv_lora_rank), static_cast<long long>(c.qk_rope_head_dim),
               cache_type == DType::F16 ? "f16" : "f32", mha, static_cast<double>(mha) / static_cast<double>(info.kv_cache_bytes_per_token));

  auto model = std::make_unique<DeepSeekModel>(std::move(c), std::move(w), source.weights,
                                               source.options, info);
  if (const char* env = std::getenv("SPUTNIK_MLA")) {
    const std::string v = env;
    if (v == "naive")
      model->set_mla_path(MlaPath::Naive);
    else if (v == "absorbed")
      model->set_mla_path(MlaPath::Absorbed);
    else if (v == "auto")
      model->set_mla_path(MlaPath::Auto);
    else
      return make_error("SPUTNIK_MLA = '{}', expected naive, absorbed or auto", v);
  }
  return std::unique_ptr<Model>(std::move(model));
}

// --- DeepSeekModel (model.py Transformer) --------------------------------------------------------

DeepSeekModel::DeepSeekModel(DeepSeekConfig config, DeepSeekWeights weights,
                             std::shared_ptr<WeightSource> source, const LoadOptions& options,
                             ModelInfo info)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      source_(std::move(source)),
      info_(std::move(info)) {
  const DeepSeekConfig& c = config_;
  {
    // The workers inherit the mode for good; the calling thread only while forward runs.
    FlushDenormals flush;
    pool_ = std::make_unique<ThreadPool>(options.n_threads > 0 ? options.n_threads
                                                               : hardware_threads());
  }
  rope_freqs_ = deepseek_rope_freqs(c);
  softmax_scale_ = c.softmax_scale();
  n_ctx_ = std::max<int64_t>(options.n_ctx, 1);
  n_seq_max_ = std::max(options.n_seq_max, 1);
  const size_t cache_values = static_cast<size_t>(n_seq_max_ * n_ctx_ * c.kv_cache_row());
  cache_.resize(static_cast<size_t>(c.n_layers));
  mtp_cache_.resize(weights_.mtp.size());
  for (auto* caches : {&cache_, &mtp_cache_}) {
    for (DeepSeekKvCache& kv : *caches) {
      kv.type = options.kv_type;
      if (kv.type == DType::F16) {
        kv.rows_f16.assign(cache_values, 0);
      } else {
        kv.rows.assign(cache_values, 0.0f);
      }
    }
  }
  seq_len_.assign(static_cast<size_t>(n_seq_max_), 0);
  mtp_seq_len_.assign(static_cast<size_t>(n_seq_max_), 0);

  const int64_t T = kDeepSeekMaxChunk, H = c.n_heads, n_threads = pool_->size();
  s_.x.resize(T * c.dim);
  s_.xb.resize(T * c.dim);
  s_.out.resize(T * c.dim);
  s_.q_a.resize(T * c.q_lora_rank);
  s_.q.resize(T * H * c.qk_head_dim());
  s_.kv.resize(T * c.kv_cache_row());
  s_.attn.resize(T * H * c.v_head_dim);
  s_.q_latent.resize(T * H * c.kv_cache_row());
  const int64_t head_width = std::max({c.kv_lora_rank, c.qk_nope_head_dim, c.v_head_dim});
  s_.head_in.resize(T * H * head_width);
  s_.head_out.resize(T * H * head_width);
  s_.o_latent.resize(T * H * c.kv_lora_rank);
  s_.scores.resize(n_threads * n_ctx_);
  s_.weight_rows.resize(n_threads * std::max(c.kv_lora_rank, c.qk_nope_head_dim));
  s_.rope_cos.resize(T * c.qk_rope_head_dim / 2);
  s_.rope_sin.resize(T * c.qk_rope_head_dim / 2);
  s_.router.resize(T * c.n_routed_experts);
  s_.expert_ids.resize(T * c.n_activated_experts);
  s_.expert_weights.resize(T * c.n_activated_experts);
  // gate, up: a dense layer's [T, inter_dim], or a MoE layer's routed rows [T * k, moe_inter_dim]
  // then the shared experts' [T, n_shared_experts * moe_inter_dim] (deepseek_moe). Sized here for
  // the largest chunk, so that no chunk regrows them: a regrow holds the old and new copies at once.
  const bool has_moe = std::any_of(weights_.layers.begin(), weights_.layers.end(),
                                   [](const DeepSeekLayerWeights& l) { return l.is_moe; });
  const int64_t moe_hidden =
      has_moe ? (c.n_activated_experts + c.n_shared_experts) * c.moe_inter_dim : 0;
  s_.gate.resize(T * std::max(c.inter_dim, moe_hidden));
  s_.up.resize(T * std::max(c.inter_dim, moe_hidden));
  if (has_moe) s_.expert_rows.resize(T * c.n_activated_experts * c.dim);
  s_.moe_y.resize(T * c.dim);
}

int32_t DeepSeekModel::sequence_length(int32_t seq) const {
  return seq >= 0 && seq < n_seq_max_ ? seq_len_[seq] : 0;
}
int32_t DeepSeekModel::mtp_sequence_length(int32_t seq) const {
  return seq >= 0 && seq < n_seq_max_ ? mtp_seq_len_[seq] : 0;
}

void DeepSeekModel::truncate_sequence(int32_t seq, int32_t from) {
  if (seq < 0 || seq >= n_seq_max_) return;
  from = std::max(from, 0);
  seq_len_[seq] = std::min(seq_len_[seq], from);
  mtp_seq_len_[seq] = std::min(mtp_seq_len_[seq], from);
}

Status DeepSeekModel::check_batch(std::span<const BatchToken> batch,
                                  const std::vector<int32_t>& seq_len) const {
  std::vector<int32_t> next(seq_len);
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchToken& b = batch[i];
    if (b.token < 0 || b.token >= config_.vocab_size) {
      return make_error("batch[{}]: token id {} is outside the vocabulary [0, {})", i, b.token,
                        config_.vocab_size);
    }
    if (b.seq < 0 || b.seq >= n_seq_max_) {
      return make_error("batch[{}]: sequence {} is outside [0, {}) (LoadOptions::n_seq_max)", i,
                        b.seq, n_seq_max_);
    }
    if (b.pos != next[b.seq]) {
      return make_error("batch[{}]: sequence {} expects position {}, got {}", i, b.seq, next[b.seq],
                        b.pos);
    }
    if (b.pos >= n_ctx_) {
      return make_error(
          "batch[{}]: position {} is past the cache of {} tokens (LoadOptions::n_ctx)", i, b.pos,
          n_ctx_);
    }
    ++next[b.seq];
  }
  return ok_status();
}

void DeepSeekModel::embed_rows(const TensorView& embed, std::span<const BatchToken> chunk,
                               float* x) {
  for (size_t t = 0; t < chunk.size(); ++t)
    dequantize_weight_row(embed, chunk[t].token, x + t * config_.dim);
  // The table is kept as stored in the file map (row_table): once its rows are copied, its pages
  // leave the resident set (fault-around would otherwise keep 64 KiB around every row read).
  release_file_pages(embed.data, embed.bytes());
}

// Block.forward: x = x + attn(attn_norm(x)); x = x + ffn(ffn_norm(x))
void DeepSeekModel::block(const DeepSeekLayerWeights& w, int64_t l, DeepSeekKvCache& cache,
                          std::span<const BatchToken> chunk) {
  const DeepSeekConfig& c = config_;
  const int64_t T = static_cast<int64_t>(chunk.size()), dim = c.dim;
  float* x = s_.x.data();
  for (int64_t t = 0; t < T; ++t)
    rms_norm(x + t * dim, w.attn_norm.data(), c.norm_eps, dim, s_.xb.data() + t * dim);
  tap("attn_norm", l, s_.xb.data(), T, dim);
  MlaContext ctx{&c, chunk, &cache, n_ctx_, softmax_scale_, mla_path_, pool_.get(), &tap_, l};
  deepseek_mla(ctx, w, s_.xb.data(), s_.out.data(), s_, rope_freqs_);
  tap("attn_out", l, s_.out.data(), T, dim);
  for (int64_t i = 0; i < T * dim; ++i) x[i] += s_.out[i];

  for (int64_t t = 0; t < T; ++t)
    rms_norm(x + t * dim, w.ffn_norm.data(), c.norm_eps, dim, s_.xb.data() + t * dim);
  tap("ffn_norm", l, s_.xb.data(), T, dim);
  if (w.is_moe) {
    deepseek_moe(c, w.moe, s_.xb.data(), T, s_.out.data(), s_, *pool_);
    if (tap_) {
      const int64_t k = c.n_activated_experts;
      std::vector<float> ids(s_.expert_ids.begin(), s_.expert_ids.begin() + T * k);
      tap("router_logits", l, s_.router.data(), T, c.n_routed_experts);
      tap("topk_idx", l, ids.data(), T, k);
      tap("topk_weight", l, s_.expert_weights.data(), T, k);
      tap("routed_out", l, s_.moe_y.data(), T, dim);
    }
  } else {
    deepseek_mlp(w.mlp, c.inter_dim, s_.xb.data(), T, s_.out.data(), s_, *pool_);
  }
  tap("ffn_out", l, s_.out.data(), T, dim);
  for (int64_t i = 0; i < T * dim; ++i) x[i] += s_.out[i];
  tap("l_out", l, x, T, dim);
}

Status DeepSeekModel::forward(std::span<const BatchToken> batch, float* logits) {
  return forward_hidden(batch, logits, nullptr);
}

// Transformer.forward: h = embed(tokens); h = layer(h) for each Block; logits = head(norm(h)).
// The batch runs in chunks of kDeepSeekMaxChunk tokens through all layers; every token of a
// chunk writes its cache row before attending, so a chunk may hold whole prefills, decode steps
// of other sequences, or both.
Status DeepSeekModel::forward_hidden(std::span<const BatchToken> batch, float* logits,
                                     float* hidden) {
  SPUTNIK_CHECK_OK(check_batch(batch, seq_len_));
  const FlushDenormals flush;
  const DeepSeekConfig& c = config_;
  int64_t n_out = 0;
  for (size_t start = 0; start < batch.size(); start += kDeepSeekMaxChunk) {
    const auto chunk =
        batch.subspan(start, std::min<size_t>(kDeepSeekMaxChunk, batch.size() - start));
    embed_rows(weights_.embed, chunk, s_.x.data());
    for (int64_t l = 0; l < c.n_layers; ++l) block(weights_.layers[l], l, cache_[l], chunk);
    for (const BatchToken& b : chunk) seq_len_[b.seq] = std::max(seq_len_[b.seq], b.pos + 1);
    // norm(h) for the rows that want logits, then head
    int64_t n = 0;
    for (size_t t = 0; t < chunk.size(); ++t) {
      if (!chunk[t].want_logits) continue;
      rms_norm(s_.x.data() + t * c.dim, weights_.norm.data(), c.norm_eps, c.dim,
               s_.xb.data() + n * c.dim);
      if (hidden)
        std::memcpy(hidden + (n_out + n) * c.dim, s_.xb.data() + n * c.dim, sizeof(float) * c.dim);
      ++n;
    }
    tap("result_norm", -1, s_.xb.data(), n, c.dim);
    if (logits && n > 0)
      matmul(weights_.head, s_.xb.data(), n, logits + n_out * c.vocab_size, *pool_);
    n_out += n;
  }
  return ok_status();
}

// The MTP module (DeepSeek-V3 paper §2.2, eq. 21-23; names from README_WEIGHTS.md):
//   h' = eh_proj([enorm(embed(t_{i+1})); hnorm(h_i)])    (embedding first, as the checkpoint's
//                                                          eh_proj columns and vLLM's
//                                                          deepseek_mtp.py order them)
//   h' = Block(h')                                        at position i, with its own MLA cache
//   logits(t_{i+2}) = shared_head.head(shared_head.norm(h'))
// batch[i].token is t_{i+1}, batch[i].pos is i (the position of h_i), hidden[i] is h_i from
// forward_hidden: the main model's output after its final norm, which is what vLLM and SGLang
// feed their DeepSeek MTP layers (hnorm then normalises it once more).
Status DeepSeekModel::predict_next_next(std::span<const BatchToken> batch, const float* hidden,
                                        float* logits) {
  if (weights_.mtp.empty()) return make_error("{}: the checkpoint has no MTP module", info_.name);
  SPUTNIK_CHECK_OK(check_batch(batch, mtp_seq_len_));
  const FlushDenormals flush;
  const DeepSeekConfig& c = config_;
  const DeepSeekMtpWeights& m = weights_.mtp[0];
  const int64_t dim = c.dim;
  int64_t n_out = 0;
  std::vector<float> eh(static_cast<size_t>(kDeepSeekMaxChunk * 2 * dim));
  for (size_t start = 0; start < batch.size(); start += kDeepSeekMaxChunk) {
    const auto chunk =
        batch.subspan(start, std::min<size_t>(kDeepSeekMaxChunk, batch.size() - start));
    const int64_t T = static_cast<int64_t>(chunk.size());
    embed_rows(m.embed, chunk, s_.xb.data());
    for (int64_t t = 0; t < T; ++t) {
      rms_norm(s_.xb.data() + t * dim, m.enorm.data(), c.norm_eps, dim, eh.data() + t * 2 * dim);
      rms_norm(hidden + (start + t) * dim, m.hnorm.data(), c.norm_eps, dim,
               eh.data() + t * 2 * dim + dim);
    }
    matmul(m.eh_proj, eh.data(), T, s_.x.data(), *pool_);
    tap("eh_out", c.n_layers, s_.x.data(), T, dim);
    block(m.block, c.n_layers, mtp_cache_[0], chunk);
    for (const BatchToken& b : chunk)
      mtp_seq_len_[b.seq] = std::max(mtp_seq_len_[b.seq], b.pos + 1);
    int64_t n = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (!chunk[t].want_logits) continue;
      rms_norm(s_.x.data() + t * dim, m.shared_head_norm.data(), c.norm_eps, dim,
               s_.xb.data() + n * dim);
      ++n;
    }
    if (logits && n > 0)
      matmul(m.shared_head_head, s_.xb.data(), n, logits + n_out * c.vocab_size, *pool_);
    n_out += n;
  }
  return ok_status();
}

}  // namespace sputnik
