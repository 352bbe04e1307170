// DeepSeekMoE (DeepSeek-V2 paper §2.2, V3 paper §2.1.2; model.py MLP, Gate, Expert, MoE).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/kernels.h"
#include "models/deepseek.h"

namespace sputnik {

// MLP.forward / Expert.forward: w2(silu(w1(x)) * w3(x)) over T rows of xb [T, dim].
void deepseek_mlp(const DeepSeekMlpWeights& w, int64_t inter_dim, const float* xb, int64_t T,
                  float* out, DeepSeekRunState& s, ThreadPool& pool) {
  matmul(w.w1, xb, T, s.gate.data(), pool);
  matmul(w.w3, xb, T, s.up.data(), pool);
  silu_mul(s.gate.data(), s.up.data(), T * inter_dim, s.gate.data());
  matmul(w.w2, s.gate.data(), T, out, pool);
}

namespace {

// Indices of the k largest of v[0..n) (torch.topk; ties to the lower index).
void topk(const float* v, int64_t n, int64_t k, int32_t* out) {
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(order.begin(), order.begin() + k, out);
}

}  // namespace

// Gate.forward for one token.
void deepseek_gate(const DeepSeekConfig& c, const float* logits, const float* bias,
                   int32_t* indices, float* weights) {
  const int64_t E = c.n_routed_experts;
  // scores = softmax(logits) or sigmoid(logits), in f32
  std::vector<float> original(logits, logits + E);
  if (c.score_func == DeepSeekScoreFunc::Softmax) {
    softmax(original.data(), E);
  } else {
    for (float& x : original) x = 1.0f / (1.0f + std::exp(-x));
  }
  // scores = original_scores + bias: V3's aux-loss-free balancing bias steers selection only.
  std::vector<float> scores = original;
  if (c.topk_method == DeepSeekTopkMethod::NoauxTc) {
    for (int64_t e = 0; e < E; ++e) scores[e] += bias[e];
  }
  // Group-limited routing: keep the n_limited_groups best groups, the rest to -inf. A group's
  // score is its best expert (V2) or the sum of its two best biased scores (V3).
  if (c.topk_method != DeepSeekTopkMethod::Greedy && c.n_expert_groups > 1) {
    const int64_t G = c.n_expert_groups, per_group = E / G;
    std::vector<float> group_scores(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; ++g) {
      const float* sg = scores.data() + g * per_group;
      if (c.topk_method == DeepSeekTopkMethod::NoauxTc) {
        int32_t best2[2];
        topk(sg, per_group, 2, best2);
        group_scores[g] = sg[best2[0]] + sg[best2[1]];
      } else {
        group_scores[g] = *std::max_element(sg, sg + per_group);
      }
    }
    std::vector<int32_t> kept(static_cast<size_t>(c.n_limited_groups));
    topk(group_scores.data(), G, c.n_limited_groups, kept.data());
    for (int64_t g = 0; g < G; ++g) {
      if (std::find(kept.begin(), kept.end(), g) != kept.end()) continue;
      std::fill_n(scores.data() + g * per_group, per_group,
                  -std::numeric_limits<float>::infinity());
    }
  }
  // indices = topk(scores); weights = original_scores[indices]
  const int64_t k = c.n_activated_experts;
  topk(scores.data(), E, k, indices);
  float sum = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    weights[i] = original[indices[i]];
    sum += weights[i];
  }
  // model.py renormalises iff sigmoid; HF says so with norm_topk_prob (true exactly for V3).
  for (int64_t i = 0; i < k; ++i) {
    if (c.norm_topk_prob) weights[i] /= sum;
    weights[i] *= c.route_scale;
  }
}

// MoE.forward: y = sum over chosen experts of weight * expert(x), plus shared_experts(x).
void deepseek_moe(const DeepSeekConfig& c, const DeepSeekMoeWeights& w, const float* xb, int64_t T,
                  float* out, DeepSeekRunState& s, ThreadPool& pool) {
  const int64_t E = c.n_routed_experts, k = c.n_activated_experts, dim = c.dim;
  // Router logits in f32 (model.py: linear(x, gate.weight)).
  matmul(w.gate, xb, T, s.router.data(), pool);
  for (int64_t t = 0; t < T; ++t) {
    deepseek_gate(c, s.router.data() + t * E, w.gate_bias.empty() ? nullptr : w.gate_bias.data(),
                  s.expert_ids.data() + t * k, s.expert_weights.data() + t * k);
  }
  // Tokens grouped by expert: one batched matmul per chosen expert over its tokens; experts no
  // token chose are never touched (their weights stay on disk under mmap).
  std::fill_n(s.moe_y.data(), T * dim, 0.0f);
  std::vector<int64_t> rows;
  std::vector<float> row_weights;
  for (int64_t e = 0; e < E; ++e) {
    rows.clear();
    row_weights.clear();
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < k; ++i) {
        if (s.expert_ids[t * k + i] != e) continue;
        rows.push_back(t);
        row_weights.push_back(s.expert_weights[t * k + i]);
      }
    }
    if (rows.empty()) continue;
    const int64_t n = static_cast<int64_t>(rows.size());
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(s.expert_x.data() + i * dim, xb + rows[i] * dim, sizeof(float) * dim);
    deepseek_mlp(w.experts[e], c.moe_inter_dim, s.expert_x.data(), n, s.expert_y.data(), s, pool);
    // y[idx] += expert(x[idx]) * weights[idx, top]
    for (int64_t i = 0; i < n; ++i)
      axpy(row_weights[i], s.expert_y.data() + i * dim, dim, s.moe_y.data() + rows[i] * dim);
  }
  // z = shared_experts(x); return y + z
  if (c.n_shared_experts == 0) {
    std::copy_n(s.moe_y.data(), T * dim, out);
    return;
  }
  deepseek_mlp(w.shared_experts, c.n_shared_experts * c.moe_inter_dim, xb, T, out, s, pool);
  for (int64_t i = 0; i < T * dim; ++i) out[i] += s.moe_y[i];
}

}  // namespace sputnik
