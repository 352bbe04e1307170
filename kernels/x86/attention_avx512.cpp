// AVX-512 online-softmax attention chunk (ref::attention_chunk's contract) for
// multi_query_attention, shaped like a small GEMM so that FMAs, not shuffles, horizontal sums or
// per-row address arithmetic, make up the inner loops. Query heads go in groups of 16, one head
// per vector lane; positions in blocks of kBlock = 16 rows. Per block and head group:
//   1. scores S[j] (16 lanes = 16 heads) = sum_i q_t[i] * k_j[i], with q_t the queries
//      transposed once per call ([dk][16] per group, zero past the last head): 16 row
//      accumulators, one q_t load and 16 FMAs with a broadcast key element per dimension, no
//      horizontal reduction. The first group widens (F16) or copies (F32) each 16-dimension chunk
//      of the block's rows into kb[c][j][16] one chunk ahead of using it: for a fixed chunk every
//      row sits at a constant offset from one pointer, and kb[c] is also the value chunk step 3
//      reads (MLA: 16 x 576 floats = 36 KiB, kept for all groups);
//   2. online softmax, still one head per lane: running max, sum and correction are vectors;
//      masked rows (past the block end or a row's key_limit) are -inf and give p = 0;
//   3. out_t[c][i] = out_t[c][i] * correction + sum_j p[j] v_j[16c + i], the output kept
//      transposed (one head per lane) so that this is the mirror of step 1: one p load and 16
//      FMAs with a broadcast value element per row. out is out_t transposed back at the end.
// Step 1 also prefetches the next block's cached rows into L2, spread over its dimension loop,
// so that reading the cache from memory overlaps the arithmetic.
// Single-thread CPU time at MLA's shape (16 heads, 576 / 512, f16 rows; /tmp microbenchmark,
// loaded machine): 4096 positions 2.05 ms with the previous 4-head x 4-row dot-product tiles
// (horizontal sums, a 32-row f32 block spilling out of L1), 1.14 ms here (the FMA bound is
// ~0.75 ms); a prefill group of 256 rows over 512 positions 3.3 -> 2.05 ms. kernels_bench
// MlaAttentionDecode/4096/1 now: 1.07 ms hot, 1.24 ms from DRAM; the same key count in L2
// (1024 keys x 4) costs the same, so the kernel is bound by the core (~77% of the 5.5 G FMA/s
// one core issues here: the f16 -> f32 gather, softmax and output rescaling take the rest).
//
// Why the kernel does not also warm the weights read after it (o_proj, shared experts: ~12 MB a
// layer at Q4_0, while the kernel reads its cache at ~8 of ~25 GB/s): prefetched into L2 they
// spill to L3, and on this machine class (2 cores of a 260 MiB non-inclusive L3) one core streams
// 12 MB from L3 no faster than from DRAM (/tmp probe, November 2026, minimum of 4 runs: 775 us
// warm vs 776 us cold; two cores 6 MB each: 362-468 us warm vs 424-464 us cold), so the overlap
// would save at most the noise. Only L2 is faster, and which core reads which weight rows is
// decided at run time by the matmul's guided slabs.
// Why not AVX512-BF16 (vdpbf16ps, 32 multiply-adds per instruction): on this CPU class it
// issues about once per 2 cycles against two 16-lane f32 FMAs per cycle, so it does half the
// multiply-adds per cycle (timed in isolation, November 2026), and it would round q, p and the
// cache to 8 mantissa bits.
// Why not AVX512-FP16 (vfmadd231ph: 32 f16 multiply-adds per instruction, issued at the f32
// FMA's rate here, so twice the multiply-adds): its operands are f16, and rounding them costs
// more accuracy than the tests allow. deepseek_test's F16CacheNaiveEqualsAbsorbed requires the
// absorbed path within 1e-4 of the largest logit of naive MLA over the same f16 cache; rounding
// only q to f16 before this kernel moved the tiny models' logits by 2.7-4.8e-4, rounding only
// the softmax weights p to f16 by 1.2-2.0e-4 (November 2026), before any f16 accumulation.
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

constexpr int64_t kBlock = 16;  // key rows per block
constexpr int64_t kLanes = 16;  // heads per group = floats per vector

// Lanes [0, left) set; none when left <= 0.
inline __mmask16 tail_mask(int64_t left) {
  if (left <= 0) return 0;
  return left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// Dimension chunk c (elements [16c, 16c + 16) clipped to width) of rows [j0, j0 + nb) of `rows`
// as f32 into dst[c][j][16], j < kBlock; elements past width and rows past nb are zero.
inline void gather_chunk(const CacheRows& rows, int64_t j0, int64_t nb, int64_t width, int64_t c,
                         float* dst) {
  const __mmask16 m = tail_mask(width - c * kLanes);
  float* d = dst + c * kBlock * kLanes;
  if (rows.type == DType::F16) {
    const uint16_t* src = static_cast<const uint16_t*>(rows.data) + j0 * rows.stride + c * kLanes;
    if (m == 0xFFFF) {
      // Unmasked, the load folds into vcvtph2ps (one conversion uop; the register form takes a
      // second, shuffle uop on the port the FMAs also need).
      for (int64_t j = 0; j < nb; ++j) {
        const auto* row = reinterpret_cast<const __m256i*>(src + j * rows.stride);
        _mm512_store_ps(d + j * kLanes, _mm512_cvtph_ps(_mm256_loadu_si256(row)));
      }
    } else {
      for (int64_t j = 0; j < nb; ++j)
        _mm512_store_ps(d + j * kLanes, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + j * rows.stride)));
    }
  } else {
    const float* src = static_cast<const float*>(rows.data) + j0 * rows.stride + c * kLanes;
    for (int64_t j = 0; j < nb; ++j)
      _mm512_store_ps(d + j * kLanes, _mm512_maskz_loadu_ps(m, src + j * rows.stride));
  }
  for (int64_t j = nb; j < kBlock; ++j) _mm512_store_ps(d + j * kLanes, _mm512_setzero_ps());
}

// dst[i * 16 + l] = src[l * stride + i] for l, i < 16; rows l >= n_rows and columns i >= n_cols
// read as zero. Three rounds of in-lane and cross-lane shuffles (64 in all, against 256 scalar
// loads and stores or 16 gathers): q_t is built once per chunk for every 16 x 16 block of q, a
// fixed cost that matters with the 256 query rows of a prefill group.
inline void transpose_16x16(const float* src, int64_t stride, int64_t n_rows, int64_t n_cols,
                            float* dst) {
  const __mmask16 cols = tail_mask(n_cols);
  __m512 r[16], t[16], u[16];
  for (int64_t l = 0; l < 16; ++l)
    r[l] = l < n_rows ? _mm512_maskz_loadu_ps(cols, src + l * stride) : _mm512_setzero_ps();
  // Per 128-bit lane L (columns 4L..4L+3): t[2k] = (r2k[4L], r2k+1[4L], r2k[4L+1], r2k+1[4L+1]),
  // t[2k+1] the same for columns 4L+2 and 4L+3.
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  // u[4m + x], lane L = column 4L + x of rows 4m..4m+3.
  for (int m = 0; m < 4; ++m) {
    const __m512d a = _mm512_castps_pd(t[4 * m]), b = _mm512_castps_pd(t[4 * m + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * m + 1]), d = _mm512_castps_pd(t[4 * m + 3]);
    u[4 * m] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[4 * m + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[4 * m + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    u[4 * m + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  // Column 4L + x = lane L of u[x], u[4 + x], u[8 + x], u[12 + x].
  for (int x = 0; x < 4; ++x) {
    const __m512 ab02 = _mm512_shuffle_f32x4(u[x], u[4 + x], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 ab13 = _mm512_shuffle_f32x4(u[x], u[4 + x], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 cd02 = _mm512_shuffle_f32x4(u[8 + x], u[12 + x], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 cd13 = _mm512_shuffle_f32x4(u[8 + x], u[12 + x], _MM_SHUFFLE(3, 1, 3, 1));
    _mm512_store_ps(dst + (0 + x) * 16, _mm512_shuffle_f32x4(ab02, cd02, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_store_ps(dst + (4 + x) * 16, _mm512_shuffle_f32x4(ab13, cd13, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_store_ps(dst + (8 + x) * 16, _mm512_shuffle_f32x4(ab02, cd02, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_store_ps(dst + (12 + x) * 16, _mm512_shuffle_f32x4(ab13, cd13, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}

// A block's cached rows to fetch into L2 ahead of use: while a block is computed, step 1 calls
// the next block's prefetch_line(c) for each of its dimension chunks c, which fetches the c-th
// cache line of every row (a row of 576 f16 values is 18 lines, fewer than MLA's 36 chunks).
// Into L2, not L1: L1 (48 KiB) holds the block, q_t and the output tile and would evict them
// before use.
struct BlockPrefetch {
  const char* first_row = nullptr;  // null: no block
  int64_t n_rows = 0;
  int64_t row_bytes = 0, stride_bytes = 0;
  void prefetch_line(int64_t c) const {
    if (first_row == nullptr || c * 64 >= row_bytes) return;
    for (int64_t j = 0; j < n_rows; ++j) _mm_prefetch(first_row + j * stride_bytes + c * 64, _MM_HINT_T1);
  }
};

// Key rows [j0, min(j0 + kBlock, end)); none when j0 >= end.
BlockPrefetch key_block_at(const MultiQueryAttention& a, int64_t j0, int64_t end) {
  if (j0 >= end) return {};
  const int64_t elem = a.keys.type == DType::F16 ? 2 : 4;
  return {static_cast<const char*>(a.keys.data) + j0 * a.keys.stride * elem,
          std::min(kBlock, end - j0), a.dk * elem, a.keys.stride * elem};
}

// The block's key rows [j0, j0 + nb), for score_rows to gather chunk by chunk as it goes.
struct KeyBlock {
  const CacheRows* rows = nullptr;  // null: kb already holds the block
  int64_t j0 = 0, nb = 0, width = 0;
};

// exp(x) for x <= 0 on the lanes of `keep`, 0 elsewhere and wherever exp(x) < 2^-64: a softmax
// weight that small next to the running max's 1 changes no f32 sum, while a denormal weight
// makes every FMA it enters (a whole 16-head vector here) take a microcode assist unless the
// caller flushes denormals (unflushed, bench-v2-lite-L4-q4_k pp512 took 1.8x the CPU time).
inline __m512 flushed_exp(__m512 x, __mmask16 keep) {
  const __m512 lowest = _mm512_set1_ps(-44.3614196f);  // ln(2^-64)
  keep &= _mm512_cmp_ps_mask(x, lowest, _CMP_GE_OQ);
  return _mm512_maskz_mov_ps(keep, exp512(_mm512_max_ps(x, lowest)));
}

// S[j] = sum over dimension chunks of q_t[i] * kb[.][j][i]: scores of 16 rows for one head group.
// q_t: [chunks * 16][16] (dimension-major, 16 heads per vector); kb as gather_chunk writes it.
inline void score_rows(const float* q_t, float* kb, int64_t chunks, __m512* s,
                       const KeyBlock& fill, const BlockPrefetch& next) {
  __m512 acc[kBlock];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  // Chunk c + 1 is gathered while chunk c is multiplied: the FMAs' broadcast loads then read
  // stores issued a chunk earlier rather than wait on fresh ones (1 thread, 4096 positions:
  // ~3% less CPU time than gathering each chunk just before its FMAs).
  if (fill.rows != nullptr) gather_chunk(*fill.rows, fill.j0, fill.nb, fill.width, 0, kb);
  for (int64_t c = 0; c < chunks; ++c) {
    next.prefetch_line(c);
    if (fill.rows != nullptr && c + 1 < chunks)
      gather_chunk(*fill.rows, fill.j0, fill.nb, fill.width, c + 1, kb);
    const float* k = kb + c * kBlock * kLanes;
    const float* q = q_t + c * kLanes * kLanes;
#pragma GCC unroll 16
    for (int64_t i = 0; i < kLanes; ++i) {
      const __m512 qv = _mm512_load_ps(q + i * kLanes);
#pragma GCC unroll 16
      for (int64_t j = 0; j < kBlock; ++j)
        acc[j] = _mm512_fmadd_ps(qv, _mm512_set1_ps(k[j * kLanes + i]), acc[j]);
    }
  }
  for (int64_t j = 0; j < kBlock; ++j) s[j] = acc[j];
}

// o[i] = o[i] * corr + sum_j p[j] * v[j][i] for the 16 dimensions i of one value chunk, vectors
// over the 16 heads of a group: p [kBlock][16] (heads), v [kBlock][16] (dimensions, as
// gather_chunk lays out a chunk), o [16][16]. The mirror of score_rows: one p load and 16 FMAs
// with a broadcast value element per row. first: o holds nothing yet (not read).
inline void accumulate_values(const float* p, const float* v, __m512 corr, bool first, float* o) {
  __m512 acc[kLanes];
  for (int64_t i = 0; i < kLanes; ++i)
    acc[i] = first ? _mm512_setzero_ps() : _mm512_mul_ps(_mm512_load_ps(o + i * kLanes), corr);
#pragma GCC unroll 16
  for (int64_t j = 0; j < kBlock; ++j) {
    const __m512 pj = _mm512_load_ps(p + j * kLanes);
#pragma GCC unroll 16
    for (int64_t i = 0; i < kLanes; ++i)
      acc[i] = _mm512_fmadd_ps(pj, _mm512_set1_ps(v[j * kLanes + i]), acc[i]);
  }
  for (int64_t i = 0; i < kLanes; ++i) _mm512_store_ps(o + i * kLanes, acc[i]);
}

// n floats at a 64-byte boundary, so that no vector load splits a cache line.
class AlignedFloats {
 public:
  float* resize(int64_t n) {
    storage_.resize(static_cast<size_t>(n + kLanes));
    const auto misalign = reinterpret_cast<uintptr_t>(storage_.data()) % 64;
    data_ = storage_.data() + (misalign == 0 ? 0 : (64 - misalign) / sizeof(float));
    return data_;
  }
  float* data() const { return data_; }

 private:
  std::vector<float> storage_;
  float* data_ = nullptr;
};

struct ChunkScratch {
  AlignedFloats q_t;     // [groups][dk chunks * 16][16]
  AlignedFloats keys;    // [dk chunks][kBlock][16]
  AlignedFloats values;  // [dv chunks][kBlock][16] (values in rows of their own)
  AlignedFloats p;       // [kBlock][16]: exp(s - max) of the current group
  AlignedFloats out_t;   // [groups][dv chunks][16][16]: out transposed, one head per lane
  AlignedFloats state;   // [2][groups][16]: running max, running sum
};

}  // namespace

void attention_chunk(const MultiQueryAttention& a, int64_t begin, int64_t end, float* max,
                     float* sum, float* out) {
  const int64_t H = a.n_heads, dk = a.dk, dv = a.dv;
  const int64_t groups = (H + kLanes - 1) / kLanes;
  const int64_t k_chunks = (dk + kLanes - 1) / kLanes, v_chunks = (dv + kLanes - 1) / kLanes;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // The first block's rows start coming from memory while q is transposed (later blocks are
  // fetched during the block before them).
  const BlockPrefetch first = key_block_at(a, begin, end);
  for (int64_t c = 0; c * 64 < first.row_bytes; ++c) first.prefetch_line(c);
  thread_local ChunkScratch s;
  // MLA's values are the first dv elements of the key rows: gather once and read them there.
  const bool values_in_keys = a.values.data == a.keys.data && a.values.type == a.keys.type &&
                              a.values.stride == a.keys.stride && dv <= dk;
  float* q_t = s.q_t.resize(groups * k_chunks * kLanes * kLanes);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t c = 0; c < k_chunks; ++c)
      transpose_16x16(a.q + (g * kLanes * dk + c * kLanes), dk, H - g * kLanes, dk - c * kLanes,
                      q_t + (g * k_chunks + c) * kLanes * kLanes);
  float* kb = s.keys.resize(k_chunks * kBlock * kLanes);
  float* vb = values_in_keys ? kb : s.values.resize(v_chunks * kBlock * kLanes);
  float* p = s.p.resize(kBlock * kLanes);
  float* out_t = s.out_t.resize(groups * v_chunks * kLanes * kLanes);
  float* run_max = s.state.resize(2 * groups * kLanes);
  float* run_sum = run_max + groups * kLanes;
  std::fill(run_max, run_max + groups * kLanes, kNegInf);
  std::fill(run_sum, run_sum + groups * kLanes, 0.0f);

  // Per head group, each lane's key limit as int32 (0 past the last head: every row masked).
  auto group_limits = [&](int64_t g) {
    alignas(64) int32_t lim[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      const int64_t h = g * kLanes + l;
      const int64_t limit = h >= H                    ? 0
                            : a.key_limits != nullptr ? a.key_limits[h]
                                                      : end;
      lim[l] = static_cast<int32_t>(std::min(limit, end));
    }
    return _mm512_load_si512(lim);
  };

  for (int64_t j0 = begin; j0 < end; j0 += kBlock) {
    const int64_t nb = std::min(kBlock, end - j0);
    if (!values_in_keys)
      for (int64_t c = 0; c < v_chunks; ++c) gather_chunk(a.values, j0, nb, dv, c, vb);
    const BlockPrefetch next = key_block_at(a, j0 + kBlock, end);

    // 1 + 2: scores and online softmax, one head group at a time.
    for (int64_t g = 0; g < groups; ++g) {
      __m512 sc[kBlock];
      score_rows(q_t + g * k_chunks * kLanes * kLanes, kb, k_chunks, sc,
                 g == 0 ? KeyBlock{&a.keys, j0, nb, dk} : KeyBlock{}, g == 0 ? next : BlockPrefetch{});
      const __m512i limits = group_limits(g);
      const __m512 scale = _mm512_set1_ps(a.scale);
      __m512 block_max = _mm512_set1_ps(kNegInf);
      __mmask16 visible[kBlock];
      for (int64_t j = 0; j < kBlock; ++j) {
        visible[j] = j < nb ? _mm512_cmpgt_epi32_mask(limits, _mm512_set1_epi32(static_cast<int32_t>(j0 + j)))
                            : __mmask16(0);
        sc[j] = _mm512_mask_mul_ps(_mm512_set1_ps(kNegInf), visible[j], sc[j], scale);
        block_max = _mm512_max_ps(block_max, sc[j]);
      }
      const __m512 old_max = _mm512_load_ps(run_max + g * kLanes);
      const __m512 new_max = _mm512_max_ps(old_max, block_max);
      // Lanes that have seen no visible key yet subtract 0 instead of -inf (-inf - -inf = NaN):
      // their p and correction come out 0 and their sum and out stay 0.
      const __mmask16 seen = _mm512_cmp_ps_mask(new_max, _mm512_set1_ps(kNegInf), _CMP_NEQ_OQ);
      const __m512 ref_max = _mm512_maskz_mov_ps(seen, new_max);
      const __m512 corr = flushed_exp(_mm512_sub_ps(old_max, ref_max), seen);
      __m512 block_sum = _mm512_setzero_ps();
      for (int64_t j = 0; j < kBlock; ++j) {
        const __m512 pj = flushed_exp(_mm512_sub_ps(sc[j], ref_max), visible[j]);
        block_sum = _mm512_add_ps(block_sum, pj);
        _mm512_store_ps(p + j * kLanes, pj);
      }
      _mm512_store_ps(run_sum + g * kLanes,
                      _mm512_fmadd_ps(_mm512_load_ps(run_sum + g * kLanes), corr, block_sum));
      _mm512_store_ps(run_max + g * kLanes, new_max);

      // 3. out_t = out_t * correction + sum_j p[j] v_j, one 16-dimension chunk at a time. Rows
      // past the block end have p = 0 (and zero values); lanes that have seen no key keep 0.
      // Last chunk first: step 1 has just gathered the block's chunks in order, and its key and
      // q_t chunks (72 KiB at MLA's shape) overflow L1 (48 KiB), so the last value chunks are
      // the ones still there (kernels_bench, 1 thread, 4096 positions, medians of 5-7 on a loaded
      // machine: 0.5-1.5% less CPU time than first to last, hot and cold).
      float* o = out_t + g * v_chunks * kLanes * kLanes;
      for (int64_t c = v_chunks - 1; c >= 0; --c)
        accumulate_values(p, vb + c * kBlock * kLanes, corr, j0 == begin, o + c * kLanes * kLanes);
    }
  }
  // out[h] = out_t transposed; dimensions past dv and heads past H are not stored.
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t c = 0; c < v_chunks; ++c) {
      alignas(64) float rows[kLanes * kLanes];
      transpose_16x16(out_t + (g * v_chunks + c) * kLanes * kLanes, kLanes, kLanes, kLanes, rows);
      const __mmask16 dims = tail_mask(dv - c * kLanes);
      for (int64_t l = 0; l < std::min(kLanes, H - g * kLanes); ++l)
        _mm512_mask_storeu_ps(out + (g * kLanes + l) * dv + c * kLanes, dims, _mm512_load_ps(rows + l * kLanes));
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    max[h] = run_max[h];  // groups are laid out consecutively: lane l of group g is head 16g + l
    sum[h] = run_sum[h];
  }
}

}  // namespace sputnik::avx512
