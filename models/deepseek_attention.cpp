// Multi-head latent attention (DeepSeek-V2 paper §2.1; model.py MLA) and its YaRN rotary
// embedding (model.py precompute_freqs_cis / apply_rotary_emb).
//
// Both of model.py's attn_impl are here, over the same cache of kv_norm(latent) and k_pe rows:
//  - naive:    expand every cached latent through wkv_b into per-head k_nope and v, then plain
//              attention with k = [k_nope; k_pe]. Cheap per (query, key) pair; prefill.
//  - absorbed: fold q_nope through wkv_b's K part into the latent space (q_latent), attend over
//              the latents themselves, and map the latent output through wkv_b's V part.
//              Nothing per head is expanded; decode. The attention is kernels.h's
//              multi_query_attention: all heads share each cached row, so it is read once per
//              token (flash-decoding over positions, split across threads).
// The cache holds f32 or f16 rows (LoadOptions::kv_type); both paths read the same rounded rows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "models/deepseek.h"

namespace sputnik {

// --- YaRN (model.py precompute_freqs_cis) ------------------------------------------------------

std::vector<float> deepseek_rope_freqs(const DeepSeekConfig& c) {
  const int64_t dim = c.qk_rope_head_dim;
  const double base = c.rope_theta;
  // freqs = 1 / base^(arange(0, dim, 2) / dim), in f32 as torch computes it.
  std::vector<float> freqs(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    freqs[i] = 1.0f / std::pow(static_cast<float>(base), exponent);
  }
  if (!c.yarn) return freqs;
  // find_correction_dim: the dimension whose wavelength makes `rotations` turns over the
  // original context.
  auto correction_dim = [&](double rotations) {
    return dim * std::log(c.original_seq_len / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(base));
  };
  // find_correction_range
  const double low = std::max(std::floor(correction_dim(c.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(c.beta_slow)), static_cast<double>(dim - 1));
  // linear_ramp_factor(low, high, dim // 2), then freqs / factor * (1 - smooth) + freqs * smooth
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float ramp =
        std::clamp(static_cast<float>((static_cast<float>(i) - low) / (high - low)), 0.0f, 1.0f);
    const float smooth = 1.0f - ramp;
    freqs[i] = freqs[i] / static_cast<float>(c.rope_factor) * (1.0f - smooth) + freqs[i] * smooth;
  }
  return freqs;
}

float DeepSeekConfig::softmax_scale() const {
  // MLA.__init__: qk_head_dim^-0.5, times mscale^2 with mscale = 0.1 * mscale * ln(factor) + 1.
  // model.py's args.mscale is HF's rope_scaling.mscale_all_dim (configs/config_16B.json: 0.707 =
  // V2-Lite's mscale_all_dim; HF DeepseekV2Attention uses mscale_all_dim here too). Applied
  // whenever YaRN is configured, for the reason given at deepseek_rope_freqs.
  float scale = 1.0f / std::sqrt(static_cast<float>(qk_head_dim()));
  if (yarn && rope_factor > 1.0 && mscale_all_dim != 0.0) {
    const float m = static_cast<float>(0.1 * mscale_all_dim * std::log(rope_factor) + 1.0);
    scale *= m * m;
  }
  return scale;
}

float DeepSeekConfig::rope_mscale() const {
  auto get_mscale = [&](double m) {
    return rope_factor <= 1.0 ? 1.0 : 0.1 * m * std::log(rope_factor) + 1.0;
  };
  if (!yarn) return 1.0f;
  return static_cast<float>(get_mscale(mscale) / get_mscale(mscale_all_dim));
}

// apply_rotary_emb: x viewed as complex pairs (x[2i], x[2i+1]) times e^{i*pos*freqs[i]}.
// (HF rotates the same pairs after de-interleaving them; q.k is identical.)
void deepseek_apply_rotary_emb(float* x, const float* cos, const float* sin, int64_t rope_dim) {
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float re = x[2 * i], im = x[2 * i + 1];
    x[2 * i] = re * cos[i] - im * sin[i];
    x[2 * i + 1] = re * sin[i] + im * cos[i];
  }
}

namespace {

// Flops of each path for one sequence with T new tokens and end_pos keys (multiply-adds).
double naive_cost(const DeepSeekConfig& c, double T, double end_pos) {
  const double H = static_cast<double>(c.n_heads);
  const double expand = end_pos * H * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank;
  return expand + T * end_pos * H * (c.qk_head_dim() + c.v_head_dim);
}
double absorbed_cost(const DeepSeekConfig& c, double T, double end_pos) {
  const double H = static_cast<double>(c.n_heads);
  const double fold = T * H * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank;
  return fold + T * end_pos * H * (2.0 * c.kv_lora_rank + c.qk_rope_head_dim);
}

// Query rows (tokens x heads) per multi_query_attention call in the absorbed path: more share
// each cache block; the kernel's per-chunk partial outputs grow with them (rows x kv_lora_rank).
constexpr int64_t kMaxGroupRows = 256;

// Auto leaves the naive path when its expanded K and V would exceed this (V3: about 2k
// positions); the absorbed path needs no per-head buffer at any length.
constexpr double kNaiveMaxExpandedBytes = 256.0 * 1024 * 1024;

// With split wk_b / wv_b (llama.cpp GGUFs) Auto always takes the absorbed path: its products
// with wkv_b are per-head matmuls and its attention the fused kernel, while naive expands K by
// dequantised rows (wk_b[h] is the transposed product). Measured on the DeepSeek-V2-Lite shape
// (bench-v2-lite-L4-q4_0.gguf, pp512 at depth 0, 2 threads, alternating runs): absorbed 79 and
// 107 tok/s, naive 47 and 59, although naive needs 40% fewer flops there. With a fused wkv_b the
// naive expansion is one matmul and the absorbed fold goes by dequantised rows: flops decide.
bool auto_picks_naive(const DeepSeekConfig& c, const DeepSeekLayerWeights& w, double T,
                      double end_pos) {
  if (w.split_kv_b) return false;
  const double expanded_bytes =
      end_pos * static_cast<double>(c.n_heads * (c.qk_nope_head_dim + c.v_head_dim)) *
      sizeof(float);
  return expanded_bytes <= kNaiveMaxExpandedBytes &&
         naive_cost(c, T, end_pos) < absorbed_cost(c, T, end_pos);
}

int64_t cache_offset(const MlaContext& ctx, int32_t seq, int64_t pos) {
  return (static_cast<int64_t>(seq) * ctx.n_ctx + pos) * ctx.config->kv_cache_row();
}
// Writes one cache row (kv_cache_row f32 values) in the cache's type.
void store_cache_row(const MlaContext& ctx, int32_t seq, int64_t pos, const float* row) {
  const int64_t n = ctx.config->kv_cache_row(), at = cache_offset(ctx, seq, pos);
  if (ctx.cache->type == DType::F16) {
    for (int64_t i = 0; i < n; ++i) ctx.cache->rows_f16[at + i] = f32_to_fp16(row[i]);
  } else {
    std::memcpy(ctx.cache->rows.data() + at, row, sizeof(float) * n);
  }
}
// Reads one cache row as f32.
void load_cache_row(const MlaContext& ctx, int32_t seq, int64_t pos, float* row) {
  const int64_t n = ctx.config->kv_cache_row(), at = cache_offset(ctx, seq, pos);
  if (ctx.cache->type == DType::F16) {
    dequantize_row(DType::F16, ctx.cache->rows_f16.data() + at, row, n);
  } else {
    std::memcpy(row, ctx.cache->rows.data() + at, sizeof(float) * n);
  }
}
// Rows [0, n_ctx) of one sequence, for multi_query_attention.
CacheRows sequence_rows(const MlaContext& ctx, int32_t seq) {
  const int64_t at = cache_offset(ctx, seq, 0);
  CacheRows rows;
  rows.type = ctx.cache->type;
  rows.stride = ctx.config->kv_cache_row();
  rows.data = ctx.cache->type == DType::F16
                  ? static_cast<const void*>(ctx.cache->rows_f16.data() + at)
                  : static_cast<const void*>(ctx.cache->rows.data() + at);
  return rows;
}

// Rows [r0, r0 + n) of w as a view, when its layout can be cut there (interleaved and FP8
// block-scaled weights only at their row granularity).
bool can_slice(const TensorView& w, int64_t r0, int64_t n) {
  const int64_t g = weight_row_granularity(w);
  return r0 % g == 0 && ((r0 + n) % g == 0 || r0 + n == w.rows());
}

// The rows of wkv_b's K and V parts for head h, in either layout:
//   fused wkv_b [H*(nope+v), r]: K_h = rows h*(nope+v) + [0, nope), V_h = the next v rows,
//     both [*, r] (model.py: wkv_b.view(H, -1, r)[:, :nope] and [:, -v:]).
//   split: wk_b [H, r, nope] holds K_h transposed (row c = latent index); wv_b [H, v, r] is V_h.
int64_t v_row(const DeepSeekConfig& c, const DeepSeekLayerWeights& w, int64_t h, int64_t d) {
  return w.split_kv_b ? h * c.v_head_dim + d
                      : h * (c.qk_nope_head_dim + c.v_head_dim) + c.qk_nope_head_dim + d;
}
const TensorView& v_weight(const DeepSeekLayerWeights& w) {
  return w.split_kv_b ? w.wv_b : w.wkv_b;
}

// softmax(scores[0..n)) then out[0..dim) = sum_j p_j * values(j)
template <typename RowFn>
void weighted_sum(const float* p, int64_t n, RowFn values, int64_t dim, float* out) {
  std::fill(out, out + dim, 0.0f);
  for (int64_t j = 0; j < n; ++j) axpy(p[j], values(j), dim, out);
}

}  // namespace

void deepseek_mla(const MlaContext& ctx, const DeepSeekLayerWeights& w, const float* xb, float* out,
                  DeepSeekRunState& s, const std::vector<float>& rope_freqs) {
  const DeepSeekConfig& c = *ctx.config;
  ThreadPool& pool = *ctx.pool;
  const int64_t T = static_cast<int64_t>(ctx.tokens.size());
  const int64_t H = c.n_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const int64_t qk = c.qk_head_dim(), vd = c.v_head_dim, r = c.kv_lora_rank, row = c.kv_cache_row();
  auto tap = [&](const char* name, const float* data, int64_t rows, int64_t cols) {
    if (ctx.tap && *ctx.tap) (*ctx.tap)(name, ctx.layer, data, rows, cols);
  };

  // q = wq(x) if q_lora_rank == 0 else wq_b(q_norm(wq_a(x)))            [T, H, qk]
  if (c.q_lora_rank == 0) {
    matmul(w.wq, xb, T, s.q.data(), pool);
  } else {
    matmul(w.wq_a, xb, T, s.q_a.data(), pool);
    for (int64_t t = 0; t < T; ++t) {
      float* qa = s.q_a.data() + t * c.q_lora_rank;
      rms_norm(qa, w.q_norm.data(), c.norm_eps, c.q_lora_rank, qa);
    }
    matmul(w.wq_b, s.q_a.data(), T, s.q.data(), pool);
  }
  // kv, k_pe = split(wkv_a(x), [kv_lora_rank, qk_rope_head_dim])          [T, r + rope]
  matmul(w.wkv_a, xb, T, s.kv.data(), pool);

  // freqs_cis at each token's position; q_pe = apply_rotary_emb(q_pe), k_pe likewise (one
  // rope key per token, shared by all heads).
  const int64_t half = rope / 2;
  const float mscale = c.rope_mscale();
  for (int64_t t = 0; t < T; ++t) {
    const float pos = static_cast<float>(ctx.tokens[t].pos);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * rope_freqs[i];  // torch.outer(t, freqs) in f32
      s.rope_cos[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * mscale;
      s.rope_sin[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * mscale;
    }
    const float* cos = s.rope_cos.data() + t * half;
    const float* sin = s.rope_sin.data() + t * half;
    for (int64_t h = 0; h < H; ++h)
      deepseek_apply_rotary_emb(s.q.data() + (t * H + h) * qk + nope, cos, sin, rope);
    // The cache row: kv_norm(kv) | k_pe (model.py's kv_cache and pe_cache), built in place.
    float* kv_row = s.kv.data() + t * row;
    rms_norm(kv_row, w.kv_norm.data(), c.norm_eps, r, kv_row);
    deepseek_apply_rotary_emb(kv_row + r, cos, sin, rope);
    store_cache_row(ctx, ctx.tokens[t].seq, ctx.tokens[t].pos, kv_row);
  }
  tap("q", s.q.data(), T, H * qk);
  if (ctx.tap && *ctx.tap) {  // the cache rows just written: kv_norm(latent) | k_pe
    std::vector<float> rows(static_cast<size_t>(T * row));
    for (int64_t t = 0; t < T; ++t)
      load_cache_row(ctx, ctx.tokens[t].seq, ctx.tokens[t].pos, rows.data() + t * row);
    tap("kv_cache", rows.data(), T, row);
  }

  // Tokens by sequence; each sequence takes the path config or cost picks.
  std::vector<int32_t> seqs;
  for (const BatchToken& b : ctx.tokens) {
    if (std::find(seqs.begin(), seqs.end(), b.seq) == seqs.end()) seqs.push_back(b.seq);
  }
  std::vector<int64_t> absorbed;  // token indices on the absorbed path
  const int n_threads = pool.size();
  for (int32_t seq : seqs) {
    std::vector<int64_t> idx;
    int64_t end_pos = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (ctx.tokens[t].seq != seq) continue;
      idx.push_back(t);
      end_pos = std::max<int64_t>(end_pos, ctx.tokens[t].pos + 1);
    }
    const bool naive =
        ctx.path == MlaPath::Naive ||
        (ctx.path == MlaPath::Auto &&
         auto_picks_naive(c, w, static_cast<double>(idx.size()), static_cast<double>(end_pos)));
    if (!naive) {
      absorbed.insert(absorbed.end(), idx.begin(), idx.end());
      continue;
    }

    // --- naive: kv = wkv_b(kv_norm(kv)) for every cached position; k_nope, v = split(kv) ---
    const int64_t kvd = nope + vd;  // per head: k_nope | v
    // s.latent: the sequence's cached latents [end_pos, r], then its k_pe [end_pos, rope], in f32.
    if (s.latent.size() < static_cast<size_t>(end_pos * row)) s.latent.resize(end_pos * row);
    if (s.kv_full.size() < static_cast<size_t>(end_pos * H * kvd))
      s.kv_full.resize(end_pos * H * kvd);
    float* k_pe_rows = s.latent.data() + end_pos * r;
    std::vector<float> cached(static_cast<size_t>(row));
    for (int64_t j = 0; j < end_pos; ++j) {
      load_cache_row(ctx, seq, j, cached.data());
      std::memcpy(s.latent.data() + j * r, cached.data(), sizeof(float) * r);
      std::memcpy(k_pe_rows + j * rope, cached.data() + r, sizeof(float) * rope);
    }
    if (!w.split_kv_b) {
      matmul(w.wkv_b, s.latent.data(), end_pos, s.kv_full.data(), pool);  // [end, H, nope + v]
    } else {
      pool.parallel_for(H, [&](int64_t h, int thread) {
        float* wrow =
            s.weight_rows.data() + static_cast<int64_t>(thread) * s.weight_rows.size() / n_threads;
        // k_nope[j, h, :] = sum_c latent[j, c] * wk_b[h, c, :]
        for (int64_t j = 0; j < end_pos; ++j)
          std::fill_n(s.kv_full.data() + (j * H + h) * kvd, nope, 0.0f);
        for (int64_t ci = 0; ci < r; ++ci) {
          dequantize_weight_row(w.wk_b, h * r + ci, wrow);
          for (int64_t j = 0; j < end_pos; ++j)
            axpy(s.latent[j * r + ci], wrow, nope, s.kv_full.data() + (j * H + h) * kvd);
        }
        // v[j, h, :] = wv_b[h] @ latent[j]
        for (int64_t d = 0; d < vd; ++d) {
          dequantize_weight_row(w.wv_b, h * vd + d, wrow);
          for (int64_t j = 0; j < end_pos; ++j)
            s.kv_full[(j * H + h) * kvd + nope + d] = dot_f32(wrow, s.latent.data() + j * r, r);
        }
      });
    }
    // scores = einsum("bshd,bthd->bsht", q, k) * softmax_scale, causal; softmax; x = scores @ v
    pool.parallel_for(static_cast<int64_t>(idx.size()) * H, [&](int64_t task, int thread) {
      const int64_t t = idx[task / H], h = task % H;
      const int64_t n_keys = ctx.tokens[t].pos + 1;
      const float* q = s.q.data() + (t * H + h) * qk;
      float* p = s.scores.data() + static_cast<int64_t>(thread) * ctx.n_ctx;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float* k_nope = s.kv_full.data() + (j * H + h) * kvd;
        const float* k_pe = k_pe_rows + j * rope;
        p[j] = (dot_f32(q, k_nope, nope) + dot_f32(q + nope, k_pe, rope)) * ctx.softmax_scale;
      }
      softmax(p, n_keys);
      weighted_sum(
          p, n_keys, [&](int64_t j) { return s.kv_full.data() + (j * H + h) * kvd + nope; }, vd,
          s.attn.data() + (t * H + h) * vd);
    });
  }

  if (!absorbed.empty()) {
    const int64_t A = static_cast<int64_t>(absorbed.size());
    // Per-head operands, head-major so that each head's tokens are the contiguous rows of one
    // matmul: s.head_in [H, A, *], s.head_out [H, A, *].
    auto head_rows = [&](std::vector<float>& v, int64_t h, int64_t width) {
      return v.data() + h * A * width;
    };
    // q_latent = einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :nope]), written next to q_pe: the
    // query multi_query_attention takes, [A, H, r + rope] in s.q_latent.
    if (w.split_kv_b && can_slice(w.wk_b, 0, r)) {
      // wk_b[h] is [r, nope]: q_latent_h = wk_b[h] q_nope_h, one matmul per head.
      std::vector<TensorView> slices(static_cast<size_t>(H));
      std::vector<MatmulJob> jobs(static_cast<size_t>(H));
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t a = 0; a < A; ++a)
          std::memcpy(head_rows(s.head_in, h, nope) + a * nope,
                      s.q.data() + (absorbed[a] * H + h) * qk, sizeof(float) * nope);
        slices[h] = slice_rows(w.wk_b, h * r, (h + 1) * r);
        jobs[h] = {&slices[h], head_rows(s.head_in, h, nope), A, head_rows(s.head_out, h, r)};
      }
      matmul_batch(jobs, pool);
      for (int64_t a = 0; a < A; ++a)
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(s.q_latent.data() + (a * H + h) * row, head_rows(s.head_out, h, r) + a * r,
                      sizeof(float) * r);
    } else {
      // The fused wkv_b holds K_h as [nope, r], so q_latent_h = K_h^T q_nope_h contracts over its
      // rows, which matmul does not (and a split wk_b may not be sliceable): dequantised rows.
      pool.parallel_for(H, [&](int64_t h, int thread) {
        float* wrow =
            s.weight_rows.data() + static_cast<int64_t>(thread) * s.weight_rows.size() / n_threads;
        auto q_latent = [&](int64_t a) { return s.q_latent.data() + (a * H + h) * row; };
        auto q_nope = [&](int64_t a) { return s.q.data() + (absorbed[a] * H + h) * qk; };
        for (int64_t a = 0; a < A; ++a) std::fill_n(q_latent(a), r, 0.0f);
        if (w.split_kv_b) {
          for (int64_t ci = 0; ci < r; ++ci) {
            dequantize_weight_row(w.wk_b, h * r + ci, wrow);
            for (int64_t a = 0; a < A; ++a) q_latent(a)[ci] = dot_f32(wrow, q_nope(a), nope);
          }
        } else {
          for (int64_t d = 0; d < nope; ++d) {
            dequantize_weight_row(w.wkv_b, h * (nope + vd) + d, wrow);
            for (int64_t a = 0; a < A; ++a) axpy(q_nope(a)[d], wrow, r, q_latent(a));
          }
        }
      });
    }
    for (int64_t a = 0; a < A; ++a)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(s.q_latent.data() + (a * H + h) * row + r,
                    s.q.data() + (absorbed[a] * H + h) * qk + nope, sizeof(float) * rope);

    // scores = (einsum("bshc,btc->bsht", q_nope, kv_cache) + einsum("bshr,btr->bsht", q_pe,
    // pe_cache)) * softmax_scale; softmax; x = einsum("bsht,btc->bshc", scores, kv_cache):
    // multi-query attention with keys = whole cache rows, values = their latents. Consecutive
    // tokens of one sequence go as one group of rows, each row limited to its token's causal
    // keys, so a prefill reads each cache block once per group rather than once per token.
    std::vector<int64_t> key_limits;
    for (int64_t g0 = 0; g0 < A;) {
      const int32_t seq = ctx.tokens[absorbed[g0]].seq;
      int64_t g1 = g0 + 1;
      while (g1 < A && g1 - g0 < kMaxGroupRows / H && ctx.tokens[absorbed[g1]].seq == seq) ++g1;
      key_limits.clear();
      int64_t n_keys = 0;
      for (int64_t a = g0; a < g1; ++a) {
        const int64_t visible = ctx.tokens[absorbed[a]].pos + 1;
        key_limits.insert(key_limits.end(), H, visible);
        n_keys = std::max(n_keys, visible);
      }
      MultiQueryAttention mqa;
      mqa.q = s.q_latent.data() + g0 * H * row;
      mqa.n_heads = (g1 - g0) * H;
      mqa.dk = row;
      mqa.keys = sequence_rows(ctx, seq);
      mqa.dv = r;
      mqa.values = mqa.keys;
      mqa.scale = ctx.softmax_scale;
      mqa.key_limits = key_limits.data();
      multi_query_attention(mqa, n_keys, s.o_latent.data() + g0 * H * r, pool);
      g0 = g1;
    }

    // x = einsum("bshc,hdc->bshd", x, wkv_b[:, -v_head_dim:]): V_h [vd, r] times each token's
    // o_latent_h, one matmul per head.
    if (can_slice(v_weight(w), v_row(c, w, 0, 0), vd) && can_slice(v_weight(w), v_row(c, w, 1, 0), vd)) {
      std::vector<TensorView> slices(static_cast<size_t>(H));
      std::vector<MatmulJob> jobs(static_cast<size_t>(H));
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t a = 0; a < A; ++a)
          std::memcpy(head_rows(s.head_in, h, r) + a * r, s.o_latent.data() + (a * H + h) * r,
                      sizeof(float) * r);
        slices[h] = slice_rows(v_weight(w), v_row(c, w, h, 0), v_row(c, w, h, 0) + vd);
        jobs[h] = {&slices[h], head_rows(s.head_in, h, r), A, head_rows(s.head_out, h, vd)};
      }
      matmul_batch(jobs, pool);
      for (int64_t a = 0; a < A; ++a)
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(s.attn.data() + (absorbed[a] * H + h) * vd,
                      head_rows(s.head_out, h, vd) + a * vd, sizeof(float) * vd);
    } else {
      // FP8 block scales that do not align with a head's rows: dequantise row by row.
      pool.parallel_for(H, [&](int64_t h, int thread) {
        float* wrow =
            s.weight_rows.data() + static_cast<int64_t>(thread) * s.weight_rows.size() / n_threads;
        for (int64_t d = 0; d < vd; ++d) {
          dequantize_weight_row(v_weight(w), v_row(c, w, h, d), wrow);
          for (int64_t a = 0; a < A; ++a)
            s.attn[(absorbed[a] * H + h) * vd + d] =
                dot_f32(wrow, s.o_latent.data() + (a * H + h) * r, r);
        }
      });
    }
  }
  tap("attn", s.attn.data(), T, H * vd);

  // wo(x.flatten(2))
  matmul(w.wo, s.attn.data(), T, out, pool);
}

}  // namespace sputnik
