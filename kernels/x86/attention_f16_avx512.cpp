// AVX-512 f16-cache attention products in llama.cpp's summation order (kernels.h
// attention_scores_f16 / attention_values_f16; the scalar spec is kernels/ref/attention_f16_ref.cpp,
// with the order spelled out). The same instructions as ggml's: vcvtph2ps, vfmadd231ps into
// 16-lane accumulators, _mm512_reduce_add_ps.
#include <immintrin.h>

// GCC 12 flags the deliberately undefined upper lanes inside its own cast/reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik::avx512 {
namespace {

inline __m512 load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// ggml_vec_dot_f16's end: accumulators (0 + 2) + (1 + 3), reduced.
inline float reduce_vec_dot(const __m512* acc) {
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3])));
}

}  // namespace

void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores) {
  const bool vec_dot = ref::attention_f16_vec_dot_order(head_dim, single_token);
  const int64_t np = vec_dot ? head_dim / 64 * 64 : head_dim;
  for (int64_t g = 0; g < n_rows; ++g) {
    const float* qg = q + g * head_dim;
    for (int64_t j = 0; j < n_keys; ++j) {
      const uint16_t* kj = k + j * head_dim;
      if (!vec_dot) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t i = 0; i < head_dim; i += 16) acc = _mm512_fmadd_ps(load_f16(kj + i), _mm512_loadu_ps(qg + i), acc);
        scores[g * n_keys + j] = _mm512_reduce_add_ps(acc);
        continue;
      }
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t i = 0; i < np; i += 64)
        for (int a = 0; a < 4; ++a)
          acc[a] = _mm512_fmadd_ps(load_f16(kj + i + 16 * a), _mm512_loadu_ps(qg + i + 16 * a), acc[a]);
      double sum = reduce_vec_dot(acc);
      for (int64_t i = np; i < head_dim; ++i) sum += static_cast<double>(fp16_to_f32(kj[i]) * qg[i]);
      scores[g * n_keys + j] = static_cast<float>(sum);
    }
  }
}

// Two value rows (d, d + 1) at a time: each block's 8 f16 chunks are converted once and used by
// every query row.
void attention_values_f16(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p,
                          int64_t n_rows, bool single_token, float* out) {
  constexpr int64_t vb = kAttentionValueBlock;
  const int64_t n = n_blocks * vb;
  const bool vec_dot = ref::attention_f16_vec_dot_order(n, single_token);
  for (int64_t d = 0; d < head_dim; d += 2) {
    const int rows = head_dim - d >= 2 ? 2 : 1;
    for (int64_t g = 0; g < n_rows; ++g) {
      const float* pg = p + g * n;
      __m512 acc[2][4];
      for (auto& r : acc)
        for (__m512& a : r) a = _mm512_setzero_ps();
      for (int64_t b = 0; b < n_blocks; ++b) {
        const uint16_t* block = v + (b * head_dim + d) * vb;
        for (int c = 0; c < 4; ++c) {
          const __m512 pc = _mm512_loadu_ps(pg + b * vb + 16 * c);
          // tinyBLAS: one chain per output (accumulator 0); vec_dot: chunk c into accumulator c.
          const int a = vec_dot ? c : 0;
          for (int r = 0; r < rows; ++r) acc[r][a] = _mm512_fmadd_ps(load_f16(block + r * vb + 16 * c), pc, acc[r][a]);
        }
      }
      for (int r = 0; r < rows; ++r)
        out[g * head_dim + d + r] = vec_dot ? reduce_vec_dot(acc[r]) : _mm512_reduce_add_ps(acc[r][0]);
    }
  }
}

}  // namespace sputnik::avx512
