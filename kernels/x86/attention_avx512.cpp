// AVX-512 online-softmax attention chunk (ref::attention_chunk's contract) for
// multi_query_attention. Positions go in blocks of kBlock rows; per block:
//   1. scores S[h, j] = scale * q[h] . k_j as 4-head x 4-row register tiles (16 accumulators, one
//      load of each key vector serves 4 heads), reduced to 16 sums by a shuffle tree;
//   2. per head, the block's max updates the running max; S becomes exp(S - max) and the running
//      sum and the correction exp(old max - new max) follow (vector exp);
//   3. out[h] = out[h] * correction + sum_j S[h, j] v_j as 4-head x 64-dim tiles: each value
//      vector is loaded once for 4 heads.
// A block of f32 rows (MLA: 32 x 576 floats = 72 KiB) stays in L2 between steps 1 and 3, so each
// cached row comes from memory once per token, for all heads. F16 rows are widened into a
// per-thread f32 block first (one vcvtph2ps per 16 values, shared by every head).
#include <immintrin.h>

// GCC 12 flags the deliberately undefined upper lanes inside its own cast/reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/x86/vec_exp.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx512 {
namespace {

constexpr int64_t kBlock = 32;  // rows per block (two vectors of scores per head)

// Lanes [0, left) set; none when left <= 0.
inline __mmask16 tail_mask(int64_t left) {
  if (left <= 0) return 0;
  return left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// r[i] = sum of the 16 lanes of a[i], i < 16.
inline __m512 reduce16(const __m512* a) {
  __m512 b[8], c[4];
  for (int i = 0; i < 8; ++i)  // lane quads: (a0+a2, b0+b2, a1+a3, b1+b3) of a[2i], a[2i+1]
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: the lane's sums of a[4i .. 4i+3]
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 e0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 e1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(c[2], c[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(e0, e1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(e0, e1, _MM_SHUFFLE(3, 1, 3, 1)));
}

// r[4h + j] = q[h] . k[j] over n floats.
inline __m512 dot_4x4(const float* const* q, const float* const* k, int64_t n) {
  __m512 acc[16];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    __m512 kv[4];
    for (int j = 0; j < 4; ++j) kv[j] = _mm512_maskz_loadu_ps(m, k[j] + i);
    for (int h = 0; h < 4; ++h) {
      const __m512 qv = _mm512_maskz_loadu_ps(m, q[h] + i);
      for (int j = 0; j < 4; ++j) acc[4 * h + j] = _mm512_fmadd_ps(qv, kv[j], acc[4 * h + j]);
    }
  }
  return reduce16(acc);
}

// Rows [begin, begin + n) of `rows` as f32: in place for F32, widened into buf for F16.
const float* rows_f32(const CacheRows& rows, int64_t begin, int64_t n, int64_t width, float* buf,
                      int64_t* stride) {
  if (rows.type == DType::F32) {
    *stride = rows.stride;
    return static_cast<const float*>(rows.data) + begin * rows.stride;
  }
  *stride = width;
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* src = static_cast<const uint16_t*>(rows.data) + (begin + j) * rows.stride;
    for (int64_t i = 0; i < width; i += 16) {
      const __mmask16 m = tail_mask(width - i);
      _mm512_mask_storeu_ps(buf + j * width + i, m,
                            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
  }
  return buf;
}

// Keys row h may see (MultiQueryAttention::key_limits), and the most any of rows [h0, h0 + 4)
// may see: a tile of heads skips a block that starts past it.
inline int64_t key_limit(const MultiQueryAttention& a, int64_t h) {
  return a.key_limits != nullptr ? a.key_limits[h] : std::numeric_limits<int64_t>::max();
}
inline int64_t tile_key_limit(const MultiQueryAttention& a, int64_t h0) {
  int64_t limit = 0;
  for (int64_t h = h0; h < std::min(h0 + 4, a.n_heads); ++h) limit = std::max(limit, key_limit(a, h));
  return limit;
}

struct ChunkScratch {
  std::vector<float> scores;      // [H, kBlock]
  std::vector<float> correction;  // [H]
  std::vector<float> keys;        // [kBlock, dk]  F16 keys widened
  std::vector<float> values;      // [kBlock, dv]  F16 values widened (when not the keys' rows)
};

}  // namespace

void attention_chunk(const MultiQueryAttention& a, int64_t begin, int64_t end, float* max,
                     float* sum, float* out) {
  const int64_t H = a.n_heads, dk = a.dk, dv = a.dv;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::fill(max, max + H, kNegInf);
  std::fill(sum, sum + H, 0.0f);
  std::fill(out, out + H * dv, 0.0f);
  thread_local ChunkScratch s;
  s.scores.resize(H * kBlock);
  s.correction.resize(H);
  // MLA's values are the first dv elements of the key rows: widen once and read them there.
  const bool values_in_keys = a.values.data == a.keys.data && a.values.type == a.keys.type &&
                              a.values.stride == a.keys.stride && dv <= dk;
  if (a.keys.type != DType::F32) s.keys.resize(kBlock * dk);
  if (a.values.type != DType::F32 && !values_in_keys) s.values.resize(kBlock * dv);

  for (int64_t j0 = begin; j0 < end; j0 += kBlock) {
    const int64_t nb = std::min(kBlock, end - j0);
    int64_t k_stride = 0, v_stride = 0;
    const float* k = rows_f32(a.keys, j0, nb, dk, s.keys.data(), &k_stride);
    const float* v = values_in_keys ? k : rows_f32(a.values, j0, nb, dv, s.values.data(), &v_stride);
    if (values_in_keys) v_stride = k_stride;

    // 1. Scores, rows outer so that 4 key rows stay in L1 while every head tile passes over
    // them. Head and row tails repeat the last head / row; the repeats are not stored.
    for (int64_t h0 = 0; h0 < H; h0 += 4) {
      if (j0 >= tile_key_limit(a, h0)) {  // every row of the tile is past its keys
        for (int64_t h = h0; h < std::min(h0 + 4, H); ++h)
          std::fill_n(s.scores.data() + h * kBlock, nb, kNegInf);
      }
    }
    for (int64_t r0 = 0; r0 < nb; r0 += 4) {
      const float* kr[4];
      for (int i = 0; i < 4; ++i) kr[i] = k + std::min(r0 + i, nb - 1) * k_stride;
      for (int64_t h0 = 0; h0 < H; h0 += 4) {
        if (j0 >= tile_key_limit(a, h0)) continue;
        const float* qh[4];
        for (int i = 0; i < 4; ++i) qh[i] = a.q + std::min(h0 + i, H - 1) * dk;
        alignas(64) float dots[16];
        _mm512_store_ps(dots, _mm512_mul_ps(dot_4x4(qh, kr, dk), _mm512_set1_ps(a.scale)));
        for (int64_t i = 0; i < std::min<int64_t>(4, H - h0); ++i)
          for (int64_t r = 0; r < std::min<int64_t>(4, nb - r0); ++r)
            s.scores[(h0 + i) * kBlock + r0 + r] =
                j0 + r0 + r < key_limit(a, h0 + i) ? dots[4 * i + r] : kNegInf;
      }
    }
    // 2. Online softmax over the block.
    for (int64_t h = 0; h < H; ++h) {
      float* sh = s.scores.data() + h * kBlock;
      const __mmask16 m0 = tail_mask(nb), m1 = tail_mask(nb - 16);
      const __m512 lo = _mm512_maskz_loadu_ps(m0, sh), hi = _mm512_maskz_loadu_ps(m1, sh + 16);
      const float block_max = _mm512_reduce_max_ps(_mm512_max_ps(
          _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), m0, lo),
          _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), m1, hi)));
      const float new_max = std::max(max[h], block_max);
      if (new_max == kNegInf) {  // no visible key yet: nothing to add or rescale
        s.correction[h] = 1.0f;
        std::fill_n(sh, kBlock, 0.0f);
        continue;
      }
      s.correction[h] = std::exp(max[h] - new_max);
      max[h] = new_max;
      const __m512 vmax = _mm512_set1_ps(new_max);
      const __m512 plo = _mm512_maskz_mov_ps(m0, exp512(_mm512_sub_ps(lo, vmax)));
      const __m512 phi = _mm512_maskz_mov_ps(m1, exp512(_mm512_sub_ps(hi, vmax)));
      _mm512_storeu_ps(sh, plo);
      _mm512_storeu_ps(sh + 16, phi);
      sum[h] = sum[h] * s.correction[h] + _mm512_reduce_add_ps(_mm512_add_ps(plo, phi));
    }
    // 3. out = out * correction + P V, value columns outer so that a 64-wide column slab of the
    // block (8 KiB) stays in L1 while every head tile passes over it. Head tails repeat the last
    // head: the repeated tile computes and stores the same values.
    for (int64_t d0 = 0; d0 < dv; d0 += 64) {
      __mmask16 dm[4];
      for (int c = 0; c < 4; ++c) dm[c] = tail_mask(dv - d0 - 16 * c);
      for (int64_t h0 = 0; h0 < H; h0 += 4) {
        if (j0 >= tile_key_limit(a, h0)) continue;  // P = 0 and correction = 1 for the tile
        int64_t hh[4];
        for (int i = 0; i < 4; ++i) hh[i] = std::min(h0 + i, H - 1);
        __m512 acc[4][4];
        for (int i = 0; i < 4; ++i) {
          const __m512 corr = _mm512_set1_ps(s.correction[hh[i]]);
          for (int c = 0; c < 4; ++c)
            acc[i][c] = _mm512_mul_ps(corr, _mm512_maskz_loadu_ps(dm[c], out + hh[i] * dv + d0 + 16 * c));
        }
        for (int64_t r = 0; r < nb; ++r) {
          const float* vr = v + r * v_stride + d0;
          __m512 vv[4];
          for (int c = 0; c < 4; ++c) vv[c] = _mm512_maskz_loadu_ps(dm[c], vr + 16 * c);
          for (int i = 0; i < 4; ++i) {
            const __m512 p = _mm512_set1_ps(s.scores[hh[i] * kBlock + r]);
            for (int c = 0; c < 4; ++c) acc[i][c] = _mm512_fmadd_ps(p, vv[c], acc[i][c]);
          }
        }
        for (int i = 0; i < 4; ++i)
          for (int c = 0; c < 4; ++c)
            _mm512_mask_storeu_ps(out + hh[i] * dv + d0 + 16 * c, dm[c], acc[i][c]);
      }
    }
  }
}

}  // namespace sputnik::avx512
