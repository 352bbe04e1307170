// AVX2 + FMA + F16C online-softmax attention chunk (ref::attention_chunk's contract): the
// structure of attention_avx512.cpp with 8-wide vectors and 16 registers, so the score tiles are
// 4 heads x 2 rows and the output tiles 4 heads x 16 dims.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/x86/vec_exp.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx2 {
namespace {

constexpr int64_t kBlock = 32;  // rows per block

// Lanes [0, left) set (as vmaskmovps wants: the sign bit).
inline __m256i tail_mask(int64_t left) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(left, 8))), lanes);
}

// r[i] = sum of the 8 lanes of a[i], i < 8.
inline __m256 reduce8(const __m256* a) {
  const __m256 s03 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 s47 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  // Each 128-bit lane of s03 holds that lane's sums of a[0..3]; add the two lanes.
  return _mm256_add_ps(_mm256_permute2f128_ps(s03, s47, 0x20), _mm256_permute2f128_ps(s03, s47, 0x31));
}

// r[2h + j] = q[h] . k[j] over n floats.
inline __m256 dot_4x2(const float* const* q, const float* const* k, int64_t n) {
  __m256 acc[8];
  for (__m256& v : acc) v = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail_mask(n - i);
    const __m256 k0 = _mm256_maskload_ps(k[0] + i, m), k1 = _mm256_maskload_ps(k[1] + i, m);
    for (int h = 0; h < 4; ++h) {
      const __m256 qv = _mm256_maskload_ps(q[h] + i, m);
      acc[2 * h] = _mm256_fmadd_ps(qv, k0, acc[2 * h]);
      acc[2 * h + 1] = _mm256_fmadd_ps(qv, k1, acc[2 * h + 1]);
    }
  }
  return reduce8(acc);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
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
    float* dst = buf + j * width;
    int64_t i = 0;
    for (; i + 8 <= width; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < width; ++i) dst[i] = fp16_to_f32(src[i]);
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

    // 1. Scores, key rows outer (they stay in L1 across head tiles); head and row tails repeat
    // the last head / row and are not stored.
    for (int64_t h0 = 0; h0 < H; h0 += 4) {
      if (j0 >= tile_key_limit(a, h0)) {  // every row of the tile is past its keys
        for (int64_t h = h0; h < std::min(h0 + 4, H); ++h)
          std::fill_n(s.scores.data() + h * kBlock, nb, kNegInf);
      }
    }
    for (int64_t r0 = 0; r0 < nb; r0 += 2) {
      const float* kr[2] = {k + r0 * k_stride, k + std::min(r0 + 1, nb - 1) * k_stride};
      for (int64_t h0 = 0; h0 < H; h0 += 4) {
        if (j0 >= tile_key_limit(a, h0)) continue;
        const float* qh[4];
        for (int i = 0; i < 4; ++i) qh[i] = a.q + std::min(h0 + i, H - 1) * dk;
        alignas(32) float dots[8];
        _mm256_store_ps(dots, _mm256_mul_ps(dot_4x2(qh, kr, dk), _mm256_set1_ps(a.scale)));
        for (int64_t i = 0; i < std::min<int64_t>(4, H - h0); ++i)
          for (int64_t r = 0; r < std::min<int64_t>(2, nb - r0); ++r)
            s.scores[(h0 + i) * kBlock + r0 + r] =
                j0 + r0 + r < key_limit(a, h0 + i) ? dots[2 * i + r] : kNegInf;
      }
    }
    // 2. Online softmax over the block.
    for (int64_t h = 0; h < H; ++h) {
      float* sh = s.scores.data() + h * kBlock;
      float block_max = kNegInf;
      for (int64_t r = 0; r < nb; ++r) block_max = std::max(block_max, sh[r]);
      const float new_max = std::max(max[h], block_max);
      if (new_max == kNegInf) {  // no visible key yet: nothing to add or rescale
        s.correction[h] = 1.0f;
        std::fill_n(sh, kBlock, 0.0f);
        continue;
      }
      s.correction[h] = std::exp(max[h] - new_max);
      max[h] = new_max;
      const __m256 vmax = _mm256_set1_ps(new_max);
      __m256 total = _mm256_setzero_ps();
      for (int64_t r = 0; r < kBlock; r += 8) {
        const __m256 valid = _mm256_castsi256_ps(tail_mask(nb - r));
        const __m256 p = _mm256_and_ps(valid, exp256(_mm256_sub_ps(_mm256_loadu_ps(sh + r), vmax)));
        _mm256_storeu_ps(sh + r, p);
        total = _mm256_add_ps(total, p);
      }
      sum[h] = sum[h] * s.correction[h] + hsum(total);
    }
    // 3. out = out * correction + P V, value column slabs outer (they stay in L1 across head
    // tiles); head tails repeat the last head (same values stored).
    for (int64_t d0 = 0; d0 < dv; d0 += 16) {
      const __m256i dm[2] = {tail_mask(dv - d0), tail_mask(dv - d0 - 8)};
      for (int64_t h0 = 0; h0 < H; h0 += 4) {
        if (j0 >= tile_key_limit(a, h0)) continue;  // P = 0 and correction = 1 for the tile
        int64_t hh[4];
        for (int i = 0; i < 4; ++i) hh[i] = std::min(h0 + i, H - 1);
        __m256 acc[4][2];
        for (int i = 0; i < 4; ++i) {
          const __m256 corr = _mm256_set1_ps(s.correction[hh[i]]);
          for (int c = 0; c < 2; ++c)
            acc[i][c] = _mm256_mul_ps(corr, _mm256_maskload_ps(out + hh[i] * dv + d0 + 8 * c, dm[c]));
        }
        for (int64_t r = 0; r < nb; ++r) {
          const float* vr = v + r * v_stride + d0;
          const __m256 v0 = _mm256_maskload_ps(vr, dm[0]), v1 = _mm256_maskload_ps(vr + 8, dm[1]);
          for (int i = 0; i < 4; ++i) {
            const __m256 p = _mm256_broadcast_ss(&s.scores[hh[i] * kBlock + r]);
            acc[i][0] = _mm256_fmadd_ps(p, v0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(p, v1, acc[i][1]);
          }
        }
        for (int i = 0; i < 4; ++i)
          for (int c = 0; c < 2; ++c) _mm256_maskstore_ps(out + hh[i] * dv + d0 + 8 * c, dm[c], acc[i][c]);
      }
    }
  }
}

}  // namespace sputnik::avx2
