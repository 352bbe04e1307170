// AVX-512 f16-cache attention products in llama.cpp's summation order (kernels.h
// attention_scores_f16 / attention_values_f16 / attention_decode_f16; the scalar spec is
// kernels/ref/attention_f16_ref.cpp, with the order spelled out). The same instructions as ggml's:
// vcvtph2ps, vfmadd231ps into 16-lane accumulators, _mm512_reduce_add_ps's additions.
#include <immintrin.h>

// GCC 12 flags the deliberately undefined upper lanes inside its own cast/reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstdint>

#include "core/threads.h"
#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx512 {
namespace {

inline __m512 load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// ggml_vec_dot_f16's accumulators folded into one: (0 + 2) + (1 + 3).
inline __m512 fold_vec_dot(const __m512* acc) {
  return _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
}

// ggml_vec_dot_f16's end: the folded accumulators, reduced.
inline float reduce_vec_dot(const __m512* acc) { return _mm512_reduce_add_ps(fold_vec_dot(acc)); }

// k . q over head_dim elements in ggml_vec_dot_f16's order (the n % 64 leftovers added in f64).
float dot_vec_dot(const uint16_t* k, const float* q, int64_t head_dim) {
  const int64_t np = head_dim / 64 * 64;
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t i = 0; i < np; i += 64)
    for (int a = 0; a < 4; ++a) acc[a] = _mm512_fmadd_ps(load_f16(k + i + 16 * a), _mm512_loadu_ps(q + i + 16 * a), acc[a]);
  double sum = reduce_vec_dot(acc);
  for (int64_t i = np; i < head_dim; ++i) sum += static_cast<double>(fp16_to_f32(k[i]) * q[i]);
  return static_cast<float>(sum);
}

// Sixteen horizontal sums at once: lane i of the result is _mm512_reduce_add_ps(vector i) (vector
// i at v + 16 i) to the bit, because every sum adds the same pairs as GCC's reduction (upper 256
// bits + lower, upper 128 + lower, then lanes (0 + 2) + (1 + 3)); 30 shuffles and 15 adds instead
// of 16 dependent chains. The tree leaves input slot 4k + i's sum in lane 4i + k, so slot s is fed
// vector 4 (s % 4) + s / 4.
inline __m512 reduce_add_16x16(const float* v) {
  const auto slot = [v](int s) { return _mm512_load_ps(v + 16 * (4 * (s % 4) + s / 4)); };
  __m512 halves[8];  // slots 2m, 2m + 1: upper 256 + lower, in lanes 0-7 and 8-15
  for (int m = 0; m < 8; ++m) {
    const __m512 a = slot(2 * m), b = slot(2 * m + 1);
    halves[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  __m512 quarters[4];  // slots 4m..4m + 3: upper 128 + lower, one per 128-bit lane
  for (int m = 0; m < 4; ++m) {
    const __m512 a = halves[2 * m], b = halves[2 * m + 1];
    quarters[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  __m512 pairs[2];  // per 128-bit lane: (0 + 2), (1 + 3) of two slots
  for (int m = 0; m < 2; ++m) {
    const __m512 a = quarters[2 * m], b = quarters[2 * m + 1];
    pairs[m] = _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(pairs[0], pairs[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Lanes [0, n) of 16 (none for n <= 0).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

constexpr int64_t kKeyTile = 16;            // keys whose scores are reduced together
constexpr int64_t kKeysPerTask = 256;       // phased decode scores: keys per parallel task
constexpr int64_t kValueRowsPerTask = 8;    // decode values: output rows d per pass (a phased task)
constexpr int64_t kValueChunkBlocks = 4;    // decode values: value blocks per pass (p in L1)
constexpr int64_t kMaxValueGroup = 8;       // decode values: query rows whose accumulators a pass keeps
constexpr int64_t kMaxScoreRows = 8;        // query rows one key tile serves per pass
constexpr int64_t kKeyPrefetchRows = 16;    // decode scores: K rows prefetched ahead into L1

// Prefetches [p, p + bytes) into the cache level `hint` names (whole lines).
template <int hint>
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, static_cast<_mm_hint>(hint));
}

// scores[g * stride + j] = scale * (k_j . q_g) for j < n_keys, g < n_rows, in ggml_vec_dot_f16's
// order, head_dim = 64 kChunks. Each key row is converted once into registers for all query rows;
// the folded 16-lane sums of 16 keys wait in `folded` to be reduced together.
// In the model K comes from DRAM (each layer's cache is evicted by the other layers' weights) at
// one core's lines in flight: each key prefetches the row kKeyPrefetchRows ahead into L1, spread
// over the compute (bench-r1-qwen shape, 4096 keys from DRAM, 1 thread: scores 160 -> 130 us per
// kv head with rows 32 ahead into L2, 16 ahead into L1 another ~8 us less (4 or 8 ahead: less
// gain); prefetching a whole tile at once, or V along with K, was slower: V along with K made the
// values 20 us faster and the scores 30 us slower).
template <int kChunks>
void scores_vec_dot(const uint16_t* k, int64_t n_keys, const float* q, int64_t n_rows, float scale,
                    float* scores, int64_t stride) {
  constexpr int64_t hd = 64 * kChunks;
  alignas(64) float folded[kMaxScoreRows][kKeyTile][16];
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t j0 = 0; j0 < n_keys; j0 += kKeyTile) {
    const int64_t n = std::min(kKeyTile, n_keys - j0);
    for (int64_t g0 = 0; g0 < n_rows; g0 += kMaxScoreRows) {
      const int64_t rows = std::min(kMaxScoreRows, n_rows - g0);
      for (int64_t j = 0; j < kKeyTile; ++j) {
        if (j >= n) {  // past the last key: lanes that are never stored
          for (int64_t r = 0; r < rows; ++r) _mm512_store_ps(folded[r][j], _mm512_setzero_ps());
          continue;
        }
        const uint16_t* kj = k + (j0 + j) * hd;
        if (g0 == 0 && j0 + j + kKeyPrefetchRows < n_keys) prefetch_bytes<_MM_HINT_T0>(kj + kKeyPrefetchRows * hd, 2 * hd);
        __m512 kv[4 * kChunks];
        for (int c = 0; c < 4 * kChunks; ++c) kv[c] = load_f16(kj + 16 * c);
        for (int64_t r = 0; r < rows; ++r) {
          const float* qg = q + (g0 + r) * hd;
          __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
          for (int c = 0; c < 4 * kChunks; ++c) acc[c % 4] = _mm512_fmadd_ps(kv[c], _mm512_loadu_ps(qg + 16 * c), acc[c % 4]);
          _mm512_store_ps(folded[r][j], fold_vec_dot(acc));
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const __m512 sums = _mm512_mul_ps(reduce_add_16x16(&folded[r][0][0]), vscale);
        _mm512_mask_storeu_ps(scores + (g0 + r) * stride + j0, first_lanes(n), sums);
      }
    }
  }
}

void scaled_scores(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q, int64_t n_rows,
                   float scale, float* scores, int64_t stride) {
  switch (head_dim) {
    case 64: return scores_vec_dot<1>(k, n_keys, q, n_rows, scale, scores, stride);
    case 128: return scores_vec_dot<2>(k, n_keys, q, n_rows, scale, scores, stride);
    case 192: return scores_vec_dot<3>(k, n_keys, q, n_rows, scale, scores, stride);
    case 256: return scores_vec_dot<4>(k, n_keys, q, n_rows, scale, scores, stride);
    default:  // other head sizes: one score at a time
      for (int64_t g = 0; g < n_rows; ++g)
        for (int64_t j = 0; j < n_keys; ++j)
          scores[g * stride + j] = dot_vec_dot(k + j * head_dim, q + g * head_dim, head_dim) * scale;
  }
}

// ggml's soft_max of one row of scores (the kernels.h softmax over n_keys), rounded to f16 as ggml
// converts kq for kq @ v (nearest even), zero from n_keys to n_padded.
// Denormals are flushed: far-off keys give exp(s - max) below 2^-126, and each such value made
// the exp and the scaling take a microcode assist (bench-r1-qwen-q4_0 at depth 4096: 200 us per
// kv head's rows instead of 15). No bit changes: a weight below 2^-126 rounds to f16 zero either
// way, and beside exp(0) = 1 it cannot move the sum; scores and products of f16 values are 0 or
// at least 2^-48.
void softmax_f16_row(float* row, int64_t n_keys, int64_t n_padded) {
  const FlushDenormals flush;
  kernel_set().softmax(row, n_keys);
  for (int64_t i = 0; i < n_padded; i += 16) {
    const __m512 x = _mm512_maskz_loadu_ps(first_lanes(n_keys - i), row + i);
    _mm512_storeu_ps(row + i, _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
  }
}

// The accumulators of a values pass: [row d - d0][query row][ggml_vec_dot_f16's 4], in L1 between
// the chunks of positions (a store and a load keep an f32 exactly).
using ValueAccumulators = __m512[kValueRowsPerTask][kMaxValueGroup][4];

// acc[i0 + i][r][c] += ggml_vec_dot_f16's steps of accumulator c over n_blocks value blocks of
// v[d + i, :] . p[r, :] for r < kRows, i < kDs, c < 4: v points at row d of the first block, p's
// rows are p_stride apart. One 16-position chunk c of every block at a time, so that a tile of
// kRows x kDs accumulators stays in registers: each V chunk is converted once for all kRows query
// rows and each p chunk loaded once for all kDs rows d (per multiply-add 1 / kRows conversions and
// 1 / kDs loads of p; 3 x 2 tiles, which converted V twice for a group of 6, took ~1.4x as long).
// The same rows of the next `next_blocks` blocks (from `next`) are prefetched into L1, a quarter
// of their lines during each chunk c: the blocks are 16 KiB apart, beyond the hardware
// prefetchers' reach, and spread over the tile the requests never fill the line-fill buffers
// (bench-r1-qwen shape, 4096 keys from DRAM, 1 thread CPU time per kv head: values 116 -> 105 us
// spread, 98 us with chunks of 4 blocks instead of 8, i.e. prefetched 4 blocks ahead; 2 or 16: 112).
template <int kRows, int kDs>
void values_tile(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p, int64_t p_stride,
                 ValueAccumulators& acc_mem, int64_t i0, const uint16_t* next, int64_t next_blocks) {
  constexpr int64_t vb = kAttentionValueBlock;
  const int64_t block_stride = head_dim * vb;
  for (int c = 0; c < 4; ++c) {
    __m512 acc[kRows][kDs];
    for (int r = 0; r < kRows; ++r)
      for (int i = 0; i < kDs; ++i) acc[r][i] = acc_mem[i0 + i][r][c];
    for (int64_t b = 0; b < n_blocks; ++b) {
      if (b < next_blocks) {  // a quarter of each next block's lines per chunk c
        constexpr int kLines = 2 * vb * kDs / 64;
        const int first = c * kLines / 4, last = (c + 1) * kLines / 4;
        prefetch_bytes<_MM_HINT_T0>(next + b * block_stride + 32 * first, 64 * (last - first));
      }
      const uint16_t* chunk = v + b * block_stride + 16 * c;
      __m512 vc[kDs];
      for (int i = 0; i < kDs; ++i) vc[i] = load_f16(chunk + i * vb);
      for (int r = 0; r < kRows; ++r) {
        const __m512 pc = _mm512_loadu_ps(p + r * p_stride + b * vb + 16 * c);
        for (int i = 0; i < kDs; ++i) acc[r][i] = _mm512_fmadd_ps(vc[i], pc, acc[r][i]);
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int i = 0; i < kDs; ++i) acc_mem[i0 + i][r][c] = acc[r][i];
  }
}

// values_tile over rows d0 <= d < d1 of one chunk of blocks, in tiles of kDs rows d as wide as the
// registers allow (kRows x kDs accumulators + kDs V chunks + one p chunk <= 32 zmm), then single rows.
template <int kRows>
void values_chunk(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p, int64_t p_stride,
                  ValueAccumulators& acc, int64_t d0, int64_t d1, const uint16_t* next, int64_t next_blocks) {
  constexpr int kDs = kRows <= 2 ? 8 : kRows <= 6 ? 4 : 2;
  constexpr int64_t vb = kAttentionValueBlock;
  int64_t d = d0;
  for (; d + kDs <= d1; d += kDs)
    values_tile<kRows, kDs>(v + d * vb, n_blocks, head_dim, p, p_stride, acc, d - d0, next + d * vb, next_blocks);
  for (; d < d1; ++d) values_tile<kRows, 1>(v + d * vb, n_blocks, head_dim, p, p_stride, acc, d - d0, next + d * vb, next_blocks);
}

// out[g, d] = v[d, :] . p[g, :] for d0 <= d < d1 (<= d0 + kValueRowsPerTask), g < n_rows, in
// ggml_vec_dot_f16's order. Positions go in chunks of kValueChunkBlocks blocks, so that p's
// chunk (re-read for every tile of rows d) stays in L1 instead of streaming from L2 per tile;
// the accumulators wait in L1 between chunks. v: the first value block; out: row 0, column 0.
void values_rows(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p, int64_t p_stride,
                 int64_t n_rows, int64_t d0, int64_t d1, float* out) {
  constexpr int64_t vb = kAttentionValueBlock;
  ValueAccumulators acc;
  for (int64_t g0 = 0; g0 < n_rows; g0 += kMaxValueGroup) {
    const int64_t rows = std::min(kMaxValueGroup, n_rows - g0);
    for (int64_t i = 0; i < d1 - d0; ++i)
      for (int64_t r = 0; r < rows; ++r)
        for (__m512& a : acc[i][r]) a = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < n_blocks; b0 += kValueChunkBlocks) {
      const int64_t nb = std::min(kValueChunkBlocks, n_blocks - b0);
      const uint16_t* chunk = v + b0 * head_dim * vb;
      const int64_t next_nb = std::min(kValueChunkBlocks, n_blocks - b0 - nb);
      const uint16_t* next = next_nb > 0 ? chunk + nb * head_dim * vb : chunk;
      const float* pg = p + g0 * p_stride + b0 * vb;
      switch (rows) {
        case 1: values_chunk<1>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        case 2: values_chunk<2>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        case 3: values_chunk<3>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        case 4: values_chunk<4>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        case 5: values_chunk<5>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        case 6: values_chunk<6>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        case 7: values_chunk<7>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
        default: values_chunk<8>(chunk, nb, head_dim, pg, p_stride, acc, d0, d1, next, next_nb); break;
      }
    }
    for (int64_t d = d0; d < d1; ++d)
      for (int64_t r = 0; r < rows; ++r) out[(g0 + r) * head_dim + d] = reduce_vec_dot(acc[d - d0][r]);
  }
}

}  // namespace

void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores) {
  const bool vec_dot = ref::attention_f16_vec_dot_order(head_dim, single_token);
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
      scores[g * n_keys + j] = dot_vec_dot(kj, qg, head_dim);
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

// Every output is an independent dot product or softmax row, so any split of the work gives the
// spec's bits. When the threads divide the kv heads (R1-Distill-Qwen: 2 kv heads, 2 threads), each
// task is one kv head from end to end (scores over all keys, softmax of its query rows, values):
// no barrier, and each core streams its own head's K and V. Otherwise three parallel phases: the
// scores of (kv head, 256 keys), the softmax of each query row, the values of (kv head, 8 rows d).
void attention_decode_f16(const GroupedQueryAttentionF16& a, int64_t n_keys, float* out, ThreadPool& pool) {
  const int64_t hd = a.head_dim, group = a.n_heads / a.n_kv_heads;
  const int64_t n_blocks = (n_keys + kAttentionValueBlock - 1) / kAttentionValueBlock;
  const int64_t n_padded = n_blocks * kAttentionValueBlock;
  const auto keys = [&](int64_t kvh) { return a.keys + kvh * a.key_head_stride; };
  const auto values = [&](int64_t kvh) { return a.values + kvh * a.value_head_stride; };
  const auto queries = [&](int64_t kvh) { return a.q + kvh * group * hd; };
  const auto scores = [&](int64_t kvh) { return a.scores + kvh * group * n_padded; };  // [group, n_padded]
  const auto values_of_rows = [&](int64_t kvh, int64_t d0) {
    values_rows(values(kvh), n_blocks, hd, scores(kvh), n_padded, group, d0, std::min(hd, d0 + kValueRowsPerTask),
                out + kvh * group * hd);
  };
  if (a.n_kv_heads % pool.size() == 0) {
    pool.parallel_for(a.n_kv_heads, [&](int64_t kvh, int) {
      scaled_scores(keys(kvh), n_keys, hd, queries(kvh), group, a.scale, scores(kvh), n_padded);
      for (int64_t g = 0; g < group; ++g) softmax_f16_row(scores(kvh) + g * n_padded, n_keys, n_padded);
      for (int64_t d0 = 0; d0 < hd; d0 += kValueRowsPerTask) values_of_rows(kvh, d0);
    });
    return;
  }
  const int64_t key_chunks = (n_keys + kKeysPerTask - 1) / kKeysPerTask;
  pool.parallel_for(a.n_kv_heads * key_chunks, [&](int64_t task, int) {
    const int64_t kvh = task / key_chunks, j0 = task % key_chunks * kKeysPerTask;
    scaled_scores(keys(kvh) + j0 * hd, std::min(kKeysPerTask, n_keys - j0), hd, queries(kvh), group, a.scale,
                  scores(kvh) + j0, n_padded);
  });
  pool.parallel_for(a.n_heads, [&](int64_t h, int) { softmax_f16_row(a.scores + h * n_padded, n_keys, n_padded); });
  const int64_t row_chunks = (hd + kValueRowsPerTask - 1) / kValueRowsPerTask;
  pool.parallel_for(a.n_kv_heads * row_chunks, [&](int64_t task, int) {
    values_of_rows(task / row_chunks, task % row_chunks * kValueRowsPerTask);
  });
}

}  // namespace sputnik::avx512
