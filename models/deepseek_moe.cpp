// DeepSeekMoE (DeepSeek-V2 paper §2.2, V3 paper §2.1.2; model.py MLP, Gate, Expert, MoE).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/kernels.h"
#include "models/deepseek.h"

namespace sputnik {

// MLP.forward / Expert.forward: w2(silu(w1(x)) * w3(x)) over T rows of xb [T, dim]; w1 and w3
// in one dispatch.
void deepseek_mlp(const DeepSeekMlpWeights& w, int64_t inter_dim, const float* xb, int64_t T,
                  float* out, DeepSeekRunState& s, ThreadPool& pool) {
  const MatmulJob gate_up[] = {{&w.w1, xb, T, s.gate.data()}, {&w.w3, xb, T, s.up.data()}};
  matmul_batch(gate_up, pool);
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

// Grows v to at least n elements (the MoE buffers depend on how tokens spread over experts, so
// deepseek_moe sizes them on first use rather than the model at load).
template <class T>
T* at_least(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// MoE.forward: y = sum over chosen experts of weight * expert(x), plus shared_experts(x).
//
// The T * k (token, expert) pairs are grouped by expert, so each chosen expert runs once over all
// its tokens and experts no token chose are never touched (their weights stay on disk under
// mmap). Two dispatches do every matmul: gate and up of all chosen experts and the shared
// experts, then all down projections (matmul_batch), so that decode's ~14 small matrices per
// layer stream back to back instead of waiting on a barrier each.
void deepseek_moe(const DeepSeekConfig& c, const DeepSeekMoeWeights& w, const float* xb, int64_t T,
                  float* out, DeepSeekRunState& s, ThreadPool& pool) {
  const int64_t E = c.n_routed_experts, k = c.n_activated_experts, dim = c.dim;
  const int64_t inter = c.moe_inter_dim, shared_inter = c.n_shared_experts * c.moe_inter_dim;
  // Router logits in f32 (model.py: linear(x, gate.weight)).
  matmul(w.gate, xb, T, s.router.data(), pool);
  for (int64_t t = 0; t < T; ++t) {
    deepseek_gate(c, s.router.data() + t * E, w.gate_bias.empty() ? nullptr : w.gate_bias.data(),
                  s.expert_ids.data() + t * k, s.expert_weights.data() + t * k);
  }
  // Pair rows, grouped by expert: expert e owns rows [first[e], first[e + 1]); row j is token
  // row_token[j] with gate weight row_weight[j], its input x row j of expert_x.
  const int64_t n_rows = T * k;
  std::vector<int64_t> first(static_cast<size_t>(E + 1), 0);
  for (int64_t j = 0; j < n_rows; ++j) ++first[s.expert_ids[j] + 1];
  for (int64_t e = 0; e < E; ++e) first[e + 1] += first[e];
  std::vector<int64_t> row_token(static_cast<size_t>(n_rows)), next(first.begin(), first.end() - 1);
  std::vector<float> row_weight(static_cast<size_t>(n_rows));
  float* expert_x = at_least(s.expert_rows, static_cast<size_t>(n_rows * dim));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = next[s.expert_ids[t * k + i]]++;
      row_token[j] = t;
      row_weight[j] = s.expert_weights[t * k + i];
      std::memcpy(expert_x + j * dim, xb + t * dim, sizeof(float) * dim);
    }
  }
  // gate, up: [n_rows, inter] for the routed experts, then [T, shared_inter] for the shared ones.
  const size_t hidden = static_cast<size_t>(n_rows * inter + T * shared_inter);
  float* gate = at_least(s.gate, hidden);
  float* up = at_least(s.up, hidden);
  // The down projections write over expert_x, dead once gate and up are computed (one buffer of
  // T * k rows instead of two: 12 MiB per 256-token chunk on the V2-Lite shape).
  float* expert_y = expert_x;  // [n_rows, dim]
  std::vector<MatmulJob> jobs;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = first[e + 1] - first[e];
    if (n == 0) continue;
    const int64_t j = first[e];
    jobs.push_back({&w.experts[e].w1, expert_x + j * dim, n, gate + j * inter});
    jobs.push_back({&w.experts[e].w3, expert_x + j * dim, n, up + j * inter});
  }
  if (shared_inter > 0) {
    jobs.push_back({&w.shared_experts.w1, xb, T, gate + n_rows * inter});
    jobs.push_back({&w.shared_experts.w3, xb, T, up + n_rows * inter});
  }
  matmul_batch(jobs, pool);
  silu_mul(gate, up, static_cast<int64_t>(hidden), gate);
  jobs.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = first[e + 1] - first[e];
    if (n == 0) continue;
    const int64_t j = first[e];
    jobs.push_back({&w.experts[e].w2, gate + j * inter, n, expert_y + j * dim});
  }
  // z = shared_experts(x), straight into out
  if (shared_inter > 0) jobs.push_back({&w.shared_experts.w2, gate + n_rows * inter, T, out});
  matmul_batch(jobs, pool);
  // y[idx] += expert(x[idx]) * weights[idx, top], per token in expert order as model.py's loop
  std::fill_n(s.moe_y.data(), T * dim, 0.0f);
  for (int64_t j = 0; j < n_rows; ++j)
    axpy(row_weight[j], expert_y + j * dim, dim, s.moe_y.data() + row_token[j] * dim);
  // return y + z
  if (shared_inter == 0) {
    std::copy_n(s.moe_y.data(), T * dim, out);
    return;
  }
  for (int64_t i = 0; i < T * dim; ++i) out[i] += s.moe_y[i];
}

}  // namespace sputnik
