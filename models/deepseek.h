// DeepSeek-V2, V2-Lite, V3 and R1 (R1 is V3's architecture). The math is DeepSeek's own
// inference/model.py (github.com/deepseek-ai/DeepSeek-V3): ModelArgs -> DeepSeekConfig,
// MLA (multi-head latent attention), Gate, MoE, MLP, Block, Transformer, precompute_freqs_cis
// (YaRN) and apply_rotary_emb (interleaved pairs), with its names. Plus what model.py leaves
// out: V2's routing variants (HF modeling_deepseek.py), the V3 multi-token-prediction module
// (README_WEIGHTS.md, paper §2.2) and llama.cpp's deepseek2 GGUF layout.
//
// Files, split by concept: deepseek.cpp (config, weight table, Transformer, MTP),
// deepseek_attention.cpp (YaRN rope, MLA naive and absorbed), deepseek_moe.cpp (MLP, Gate, MoE).
//
// Deliberate departures from model.py, each explained where it is made:
//  - YaRN frequencies and the mscale^2 softmax factor are applied whenever rope_scaling is
//    configured, not only when max_seq_len > original_seq_len (deepseek_rope_freqs).
//  - Activations are f32 throughout (model.py runs bf16); routing is f32 in both.
//  - The variant comes from config fields (topk_method, scoring_func, architectures), never
//    from dim == 7168 as model.py decides whether Gate has a bias.
// Known debts:
//  - The MLA cache is f16 (LoadOptions::kv_type, as llama.cpp's default) or f32; no fp8 cache.
//  - The naive path materialises K and V of every cached position of a sequence per layer:
//    [end_pos, n_heads, qk_nope + v] floats (V3 at 4k context: 512 MiB). Auto picks it only
//    when it costs fewer flops and that buffer stays under 256 MiB; blocking it over keys
//    (online softmax) would lift the limit.
//  - With a fused wkv_b (HF checkpoints, older GGUFs) the absorbed path folds q_nope through
//    its K part by dequantised rows (a transposed product); split wk_b / wv_b and the V part go
//    through matmul per head.
//  - GGUF files without expert_group_count (older converters) route without group limits,
//    as llama.cpp does; HF checkpoints always carry n_group / topk_group.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "models/model.h"

namespace sputnik {

class GgufFile;

// --- Config (model.py ModelArgs) -------------------------------------------------------------

// Gate.score_func: HF "scoring_func"; GGUF "expert_gating_func" (1 softmax, 2 sigmoid).
enum class DeepSeekScoreFunc { Softmax, Sigmoid };
// HF "topk_method". Greedy: top-k over all experts (V2-Lite). GroupLimitedGreedy: V2, groups
// ranked by their best expert. NoauxTc: V3, selection on sigmoid + e_score_correction_bias,
// groups ranked by the sum of their two best biased scores.
enum class DeepSeekTopkMethod { Greedy, GroupLimitedGreedy, NoauxTc };
// model.py's attn_impl. Auto picks absorbed for split wk_b / wv_b weights (measured faster for
// prefill too) and otherwise, per sequence and batch, whichever costs fewer flops within a memory
// bound; see auto_picks_naive() in deepseek_attention.cpp.
enum class MlaPath { Auto, Naive, Absorbed };

struct DeepSeekConfig {
  std::string architecture;  // ModelInfo: "deepseek2" (V2, V2-Lite) or "deepseek3" (V3, R1)
  std::string name;
  int64_t vocab_size = 0;
  int64_t dim = 0;             // hidden_size
  int64_t inter_dim = 0;       // intermediate_size (dense MLP)
  int64_t moe_inter_dim = 0;   // moe_intermediate_size (one expert)
  int64_t n_layers = 0;        // num_hidden_layers (MTP layers come after these)
  int64_t n_dense_layers = 0;  // first_k_dense_replace
  int64_t moe_layer_freq = 1;  // HF: layer l is MoE iff l >= n_dense_layers && l % freq == 0
  int64_t n_heads = 0;
  float norm_eps = 1e-6f;   // rms_norm_eps
  int64_t max_seq_len = 0;  // max_position_embeddings (ModelInfo::n_ctx_train)
  // moe
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t n_activated_experts = 0;  // num_experts_per_tok
  int64_t n_expert_groups = 1;      // n_group
  int64_t n_limited_groups = 1;     // topk_group
  DeepSeekScoreFunc score_func = DeepSeekScoreFunc::Softmax;
  DeepSeekTopkMethod topk_method = DeepSeekTopkMethod::Greedy;
  bool norm_topk_prob = false;  // renormalise the chosen weights (model.py: iff sigmoid)
  float route_scale = 1.0f;     // routed_scaling_factor
  // mla
  int64_t q_lora_rank = 0;  // 0: no query compression (V2-Lite: q_lora_rank null)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // yarn (rope_scaling {type: yarn, ...}); yarn == false leaves plain RoPE
  double rope_theta = 10000.0;
  bool yarn = false;
  double rope_factor = 1.0;         // factor
  int64_t original_seq_len = 4096;  // original_max_position_embeddings
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;          // rope_scaling.mscale (HF's cos/sin attenuation; see .cpp)
  double mscale_all_dim = 1.0;  // rope_scaling.mscale_all_dim: model.py's args.mscale
  // mtp
  int64_t n_mtp_layers = 0;  // num_nextn_predict_layers

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t kv_cache_row() const { return kv_lora_rank + qk_rope_head_dim; }  // floats/token/layer
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= n_dense_layers && layer % moe_layer_freq == 0;
  }
  // MLA.softmax_scale: qk_head_dim^-0.5, times mscale^2 under YaRN.
  float softmax_scale() const;
  // HF DeepseekV2YarnRotaryEmbedding scales cos and sin by get_mscale(factor, mscale) /
  // get_mscale(factor, mscale_all_dim); model.py has one mscale and no such factor. They agree
  // (1.0) whenever mscale == mscale_all_dim, as in every released config; otherwise we follow HF,
  // whose config fields these are.
  float rope_mscale() const;
};

// From an HF config.json (DeepseekV2ForCausalLM / DeepseekV3ForCausalLM); `where` names the file
// in errors. The variant comes from architectures / scoring_func / topk_method only.
Result<DeepSeekConfig> deepseek_config_from_json(const nlohmann::json& config,
                                                 const std::string& where);
// From the deepseek2.* metadata of a llama.cpp GGUF.
Result<DeepSeekConfig> deepseek_config_from_gguf(const GgufFile& gguf, const std::string& where);

// precompute_freqs_cis without the outer product: the qk_rope_head_dim/2 rotary frequencies,
// YaRN-corrected when config.yarn (always, not only when max_seq_len > original_seq_len as in
// model.py: a checkpoint trained with YaRN is only right with the corrected frequencies, and HF's
// DeepseekV2YarnRotaryEmbedding applies them unconditionally too).
std::vector<float> deepseek_rope_freqs(const DeepSeekConfig& config);

// --- Weights (model.py module names; HF / GGUF names in deepseek.cpp's table) ---------------

// One row of deepseek.cpp's weight-name table: our (model.py) name, the HF safetensors name, the
// llama.cpp GGUF name; {L} is the layer, {E} the expert; null where a format has no such tensor.
// Exposed for `sputnik quantize` (models/convert.cpp), which writes GGUF from HF names.
struct DeepSeekTensorName {
  const char* ours;
  const char* hf;
  const char* gguf;
};
std::span<const DeepSeekTensorName> deepseek_tensor_names();

// A SwiGLU MLP: w2(silu(w1(x)) * w3(x)). Dense layers, shared experts and each routed expert.
struct DeepSeekMlpWeights {
  TensorView w1;  // [inter, dim]  gate_proj / ffn_gate
  TensorView w2;  // [dim, inter]  down_proj / ffn_down
  TensorView w3;  // [inter, dim]  up_proj / ffn_up
};

struct DeepSeekMoeWeights {
  TensorView gate;               // [n_routed_experts, dim]  Gate.weight
  std::vector<float> gate_bias;  // [n_routed_experts]  e_score_correction_bias (NoauxTc)
  // Routed experts stacked per layer: [n_routed_experts] views of [moe_inter_dim, dim] (w1, w3)
  // and [dim, moe_inter_dim] (w2). GGUF: 2-D slices of ffn_*_exps; safetensors: one per tensor.
  std::vector<DeepSeekMlpWeights> experts;
  DeepSeekMlpWeights shared_experts;  // inter = n_shared_experts * moe_inter_dim
};

struct DeepSeekLayerWeights {
  std::vector<float> attn_norm;  // [dim]
  // MLA
  TensorView wq;               // [n_heads*qk_head_dim, dim]           q_lora_rank == 0
  TensorView wq_a;             // [q_lora_rank, dim]                   q_lora_rank > 0
  std::vector<float> q_norm;   // [q_lora_rank]
  TensorView wq_b;             // [n_heads*qk_head_dim, q_lora_rank]
  TensorView wkv_a;            // [kv_lora_rank + qk_rope_head_dim, dim]
  std::vector<float> kv_norm;  // [kv_lora_rank]
  // wkv_b is [n_heads*(qk_nope_head_dim + v_head_dim), kv_lora_rank] (HF, older GGUFs). Newer
  // llama.cpp GGUFs split it: wk_b [n_heads, kv_lora_rank, qk_nope_head_dim] (K part, transposed
  // per head) and wv_b [n_heads, v_head_dim, kv_lora_rank]. split_kv_b says which one is set.
  bool split_kv_b = false;
  TensorView wkv_b;
  TensorView wk_b;
  TensorView wv_b;
  TensorView wo;  // [dim, n_heads*v_head_dim]
  // FFN
  std::vector<float> ffn_norm;  // [dim]
  bool is_moe = false;
  DeepSeekMlpWeights mlp;  // dense layers
  DeepSeekMoeWeights moe;  // MoE layers
};

// The MTP module of V3 (layer index n_layers + k): h' = eh_proj([enorm(embed(t+1)); hnorm(h_t)]),
// then a full Block, then shared_head (norm, head) gives the logits of token t+2.
struct DeepSeekMtpWeights {
  TensorView embed;          // [vocab, dim]  its own copy in HF checkpoints, else Transformer's
  std::vector<float> enorm;  // [dim]
  std::vector<float> hnorm;  // [dim]
  TensorView eh_proj;        // [dim, 2*dim]
  DeepSeekLayerWeights block;
  std::vector<float> shared_head_norm;  // [dim]
  TensorView shared_head_head;          // [vocab, dim]
};

struct DeepSeekWeights {
  TensorView embed;  // [vocab, dim]
  std::vector<DeepSeekLayerWeights> layers;
  std::vector<float> norm;              // [dim]
  TensorView head;                      // [vocab, dim]
  std::vector<DeepSeekMtpWeights> mtp;  // [n_mtp_layers], empty when the checkpoint has none
};

// --- Run state ---------------------------------------------------------------------------------

// The MLA cache of one layer: per (sequence, position) a row of kv_lora_rank values of
// kv_norm(latent) followed by qk_rope_head_dim values of the rotated k_pe (model.py's kv_cache and
// pe_cache side by side). Nothing per head is cached.
struct DeepSeekKvCache {
  DType type = DType::F32;         // F32 (rows) or F16 (rows_f16), from LoadOptions::kv_type
  std::vector<float> rows;         // [n_seq_max, n_ctx, kv_lora_rank + qk_rope_head_dim]
  std::vector<uint16_t> rows_f16;  // the same, f16
};

// Activations of one chunk of T <= kDeepSeekMaxChunk tokens.
struct DeepSeekRunState {
  std::vector<float> x;            // [T, dim]  residual stream h
  std::vector<float> xb;           // [T, dim]  normed input of attention / ffn
  std::vector<float> out;          // [T, dim]  attention or ffn output, added to x
  std::vector<float> q_a;          // [T, q_lora_rank]
  std::vector<float> q;            // [T, n_heads, qk_head_dim]  q_nope | q_pe per head
  std::vector<float> kv;           // [T, kv_lora_rank + qk_rope_head_dim]  wkv_a output
  std::vector<float> attn;         // [T, n_heads, v_head_dim]  before wo
  std::vector<float> q_latent;     // [T, n_heads, kv_lora_rank + qk_rope_head_dim]  absorbed q_nope | q_pe
  std::vector<float> o_latent;     // [T, n_heads, kv_lora_rank]  absorbed attention output
  std::vector<float> latent;       // [end_pos, kv_lora_rank + qk_rope_head_dim]  one sequence's
                                   // cached latents, then its k_pe rows, as f32 (naive)
  std::vector<float> kv_full;      // [end_pos, n_heads, qk_nope_head_dim + v_head_dim] naive K, V
  std::vector<float> scores;       // [n_threads, n_ctx]
  std::vector<float> weight_rows;  // [n_threads, max(kv_lora_rank, ...)] dequantised weight rows
  std::vector<float> head_in, head_out;  // [n_heads, T, max(kv_lora_rank, qk_nope, v)] absorbed
                                         // per-head matmul operands, head-major
  std::vector<float> rope_cos, rope_sin;  // [T, qk_rope_head_dim/2]
  // ffn
  std::vector<float> router;          // [T, n_routed_experts]
  std::vector<int32_t> expert_ids;    // [T, n_activated_experts]
  std::vector<float> expert_weights;  // [T, n_activated_experts]
  std::vector<float> expert_rows;     // [T * n_activated_experts, dim]  each (token, chosen
                                      // expert)'s x, grouped by expert; then its expert(x)
  std::vector<float> gate, up;        // [T, max inter]
  std::vector<float> moe_y;           // [T, dim]
};

// 512 (llama.cpp's n_ubatch: pp512 in one chunk, each routed expert's weights streamed once)
// measured no faster on bench-v2-lite-L4-q4_k.gguf (pp512, 2 threads, alternating runs:
// 161 152 166 tok/s at 256, 164 163 146 at 512; the weight streams overlap the compute) and its
// buffers take ~100 MiB more (peak RSS 1.09x -> 1.17x of the mapped weights).
constexpr int64_t kDeepSeekMaxChunk = 256;

// Called with every named intermediate, its layer (-1: none; n_layers: the MTP module) and its
// rows x cols f32 values, for comparing with the reference's saved activations. Names, per
// Block: "attn_norm", "q" (after rope), "kv_cache" (the rows cached: kv_norm(latent) | k_pe),
// "attn" (before wo), "attn_out", "ffn_norm", MoE only: "router_logits", "topk_idx" (as
// floats), "topk_weight", "routed_out"; then "ffn_out", "l_out". Also "result_norm" and, in
// the MTP module, "eh_out".
using DeepSeekTap = std::function<void(const std::string& name, int64_t layer, const float* data,
                                       int64_t rows, int64_t cols)>;

class DeepSeekModel : public Model {
 public:
  DeepSeekModel(DeepSeekConfig config, DeepSeekWeights weights,
                std::shared_ptr<WeightSource> source, const LoadOptions& options, ModelInfo info);

  const ModelInfo& info() const override { return info_; }
  Status forward(std::span<const BatchToken> batch, float* logits) override;
  void truncate_sequence(int32_t seq, int32_t from) override;
  int32_t sequence_length(int32_t seq) const override;
  ThreadPool& thread_pool() override { return *pool_; }

  // forward() that also writes, for each token with want_logits, the last hidden state
  // norm(h) (the input of head; what the MTP module takes) to hidden [n_want, dim].
  // Either output may be null.
  Status forward_hidden(std::span<const BatchToken> batch, float* logits, float* hidden);

  // MTP module 0 (DeepSeek-V3 paper §2.2): hidden [batch.size(), dim] holds the main model's
  // hidden state h_t (from forward_hidden) of each entry, batch[i].pos is t and batch[i].token is
  // token t+1. Writes the logits of token t+2 for entries with want_logits. The module keeps its
  // own MLA cache per sequence (mtp_sequence_length), so positions continue as in forward().
  Status predict_next_next(std::span<const BatchToken> batch, const float* hidden, float* logits);
  int32_t mtp_sequence_length(int32_t seq) const;
  bool has_mtp() const { return !weights_.mtp.empty(); }

  void set_mla_path(MlaPath path) { mla_path_ = path; }
  MlaPath mla_path() const { return mla_path_; }
  void set_tap(DeepSeekTap tap) { tap_ = std::move(tap); }
  const DeepSeekConfig& config() const { return config_; }

 private:
  Status check_batch(std::span<const BatchToken> batch, const std::vector<int32_t>& seq_len) const;
  void embed_rows(const TensorView& embed, std::span<const BatchToken> chunk, float* x);
  // Block.forward over one chunk: x += attn(attn_norm(x)); x += ffn(ffn_norm(x)).
  void block(const DeepSeekLayerWeights& layer, int64_t layer_index, DeepSeekKvCache& cache,
             std::span<const BatchToken> chunk);
  void tap(const char* name, int64_t layer, const float* data, int64_t rows, int64_t cols) const {
    if (tap_) tap_(name, layer, data, rows, cols);
  }

  DeepSeekConfig config_;
  DeepSeekWeights weights_;
  std::shared_ptr<WeightSource> source_;  // keeps the mmap alive
  ModelInfo info_;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<float> rope_freqs_;  // [qk_rope_head_dim/2]
  float softmax_scale_ = 0.0f;
  int64_t n_ctx_ = 0;
  int n_seq_max_ = 0;
  std::vector<DeepSeekKvCache> cache_;      // [n_layers]
  std::vector<DeepSeekKvCache> mtp_cache_;  // [n_mtp_layers]
  std::vector<int32_t> seq_len_;            // [n_seq_max]
  std::vector<int32_t> mtp_seq_len_;        // [n_seq_max]
  DeepSeekRunState s_;
  MlaPath mla_path_ = MlaPath::Auto;
  DeepSeekTap tap_;
};

// Builds a DeepSeek model from a GGUF (general.architecture "deepseek2") or an HF checkpoint
// (DeepseekV2ForCausalLM / DeepseekV3ForCausalLM, bf16/f32 or FP8 with weight_scale_inv).
// Checks every tensor's presence, dtype and shape. Prints the MLA cache size per token.
// Environment: SPUTNIK_MLA=naive|absorbed|auto sets the initial MlaPath.
Result<std::unique_ptr<Model>> load_deepseek(const ModelSource& source);

// --- The reference modules, over a chunk of T tokens (used by DeepSeekModel; exposed so tests
// can check each one in isolation). Defined in deepseek_attention.cpp / deepseek_moe.cpp. ---

// Where one chunk's tokens sit: for token t, its sequence and position.
struct MlaContext {
  const DeepSeekConfig* config;
  std::span<const BatchToken> tokens;
  DeepSeekKvCache* cache;
  int64_t n_ctx;
  float softmax_scale;
  MlaPath path;
  ThreadPool* pool;
  const DeepSeekTap* tap = nullptr;  // optional: "q" (after rope), "attn" (before wo)
  int64_t layer = -1;
};

// apply_rotary_emb on one vector of qk_rope_head_dim floats, pairs (x[2i], x[2i+1]).
void deepseek_apply_rotary_emb(float* x, const float* cos, const float* sin, int64_t rope_dim);
// MLA.forward: writes wo(attention) for the T tokens of xb [T, dim] to out [T, dim], and their
// cache rows. Every cached position < pos of the same sequence must already be in the cache.
void deepseek_mla(const MlaContext& ctx, const DeepSeekLayerWeights& w, const float* xb, float* out,
                  DeepSeekRunState& s, const std::vector<float>& rope_freqs);
// MLP.forward over T rows.
void deepseek_mlp(const DeepSeekMlpWeights& w, int64_t inter_dim, const float* xb, int64_t T,
                  float* out, DeepSeekRunState& s, ThreadPool& pool);
// Gate.forward for one token: from router logits [n_routed_experts], the chosen experts and
// their weights (n_activated_experts each). Router math in f32, as model.py.
void deepseek_gate(const DeepSeekConfig& config, const float* logits, const float* bias,
                   int32_t* indices, float* weights);
// MoE.forward over T rows: routed experts grouped by expert (one matmul per expert over its
// tokens) plus the shared experts, ungated.
void deepseek_moe(const DeepSeekConfig& config, const DeepSeekMoeWeights& w, const float* xb,
                  int64_t T, float* out, DeepSeekRunState& s, ThreadPool& pool);

}  // namespace sputnik
