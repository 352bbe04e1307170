// AVX-512 (F/BW/VL/DQ + VNNI) matmul: y[t, r] = sum_c w[r, c] * x[t, c].
//
// Quantised weights: the activations are quantised once per call to 8 bits (blocks of 32 for the
// Q4_0 ... Q8_0 family, blocks of 256 for the K-quants, as llama.cpp's Q8_0 / Q8_K), then the
// inner loop is integer: vpdpbusd (u8 weights x s8 activations, 4 products per int32 lane) for the
// 32-blocks, vpmaddubsw + vpmaddwd (which also applies the per-sub-block scales) for the K-quants.
// Formats whose codes are offset (Q4_0: q - 8, Q8_0 stored signed, ...) are fed as unsigned codes
// and corrected exactly in int32 with the activation block sums.
//
// Tiling: a micro-kernel computes R rows x T tokens (up to 4 x 4) so each weight block is unpacked
// once and reused for T tokens, each activation vector reused for R rows. Parallel tasks are row
// slabs sized to stay in L2 while the token tiles stream over them (scratch.h).
#include <immintrin.h>

// GCC 12 flags the deliberately undefined upper lanes inside its own cast/reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstring>

#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/scratch.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx512 {

// Blocks of 256 (Q8_K): qs, d per block, bsums = 16 sums of 16 codes per block.
void quantize_act256(const float* x, int64_t cols, int8_t* qs, float* d, int16_t* bsums) {
  for (int64_t b = 0; b < cols / kQKK; ++b, x += kQKK, qs += kQKK) {
    __m512 m = _mm512_setzero_ps();
    for (int j = 0; j < kQKK; j += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    const float amax = _mm512_reduce_max_ps(m);
    const float idb = amax != 0 ? 127.f / amax : 0.0f;
    d[b] = amax != 0 ? 1.0f / idb : 0.0f;
    const __m512 id = _mm512_set1_ps(idb);
    for (int j = 0; j < kQKK; j += 16) {
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + j), id));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + j), _mm512_cvtsepi32_epi8(q));
      bsums[16 * b + j / 16] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
  }
}

namespace {

// fp16 -> f32 with F16C (one vcvtph2ps; exact, as fp16_to_f32).
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Software prefetch distance for the weight rows, in bytes ahead of the block being read. A tile
// reads 4 rows; when rows are long these are 4 separate streams and a short distance suffices;
// when rows are short (< 2 KiB) the tile is one contiguous stream, which the hardware prefetcher
// alone keeps too shallow (Q4_0 8960 x 1536 decode from DRAM: 5.9 GB/s/core without, 10.2 with
// 8 KiB; 1536 x 8960: 9.9 -> 10.8 with 512 B).
inline int64_t prefetch_distance(size_t row_bytes) { return row_bytes >= 2048 ? 512 : 8192; }

// --- Activation quantisation (bit-identical to ref::quantize_activation) ------------------------

// f32 -> fp16 -> f32 (round to nearest even), as ggml stores block_q8_0 / block_q8_1 scales.
inline float round_fp16(float f) { return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

// Blocks of 32. qs is padded to a whole number of 64-byte pairs; dvec holds, per pair of blocks,
// 16 floats: lanes 0-7 the first block's d, lanes 8-15 the second's (zero past the end); svec the
// same with s / 8 (block_q8_1's s = d * sum q, so the 8 lanes of a block sum to s exactly).
void quantize_act32(const float* x, int64_t cols, int8_t* qs, float* dvec, float* svec) {
  const int64_t nb = cols / kQK;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.f;
    const __m512 id = _mm512_set1_ps(amax != 0 ? 127.f / amax : 0.0f);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b + 16), _mm512_cvtsepi32_epi8(q1));
    const float sum = static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
    _mm256_storeu_ps(dvec + 8 * b, _mm256_set1_ps(round_fp16(d)));
    _mm256_storeu_ps(svec + 8 * b, _mm256_set1_ps(0.125f * round_fp16(d * sum)));
  }
  if (nb & 1) {
    std::memset(qs + 32 * nb, 0, 32);
    _mm256_storeu_ps(dvec + 8 * nb, _mm256_setzero_ps());
    _mm256_storeu_ps(svec + 8 * nb, _mm256_setzero_ps());
  }
}

inline __m512 pair_scales(uint16_t a, uint16_t b) {
  const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(a | (uint32_t{b} << 16))));
  return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                               _mm512_castps128_ps512(f));
}

// Two Q4_0-style nibble blocks -> 64 codes in element order: [a lo, a hi, b lo, b hi].
inline __m512i unpack_nibble_pair(const uint8_t* qa, const uint8_t* qb, bool has_b) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qa));
  const __m128i b = has_b ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(qb)) : _mm_setzero_si128();
  __m512i v = _mm512_castsi256_si512(_mm256_set_m128i(b, a));
  v = _mm512_permutexvar_epi64(_mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0), v);
  v = _mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

inline uint64_t high_bits_pair(const uint8_t* ha, const uint8_t* hb, bool has_b) {
  uint32_t a, b = 0;
  std::memcpy(&a, ha, 4);
  if (has_b) std::memcpy(&b, hb, 4);
  return a | (uint64_t{b} << 32);
}

// --- 32-element block formats ------------------------------------------------------------------
// load_pair(block 2p, has_b, q, d, m): q = 64 unsigned codes; weight = d * (q - kOffset) (+ m).

struct FQ4_0 {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;
  static constexpr bool kHasMin = false;
  static void load_pair(const Block* b, bool has_b, __m512i& q, __m512& d, __m512&) {
    q = unpack_nibble_pair(b[0].qs, b[1].qs, has_b);
    d = pair_scales(b[0].d, has_b ? b[1].d : 0);
  }
};
struct FQ5_0 {
  using Block = BlockQ5_0;
  static constexpr int kOffset = 16;
  static constexpr bool kHasMin = false;
  static void load_pair(const Block* b, bool has_b, __m512i& q, __m512& d, __m512&) {
    q = unpack_nibble_pair(b[0].qs, b[1].qs, has_b);
    q = _mm512_or_si512(q, _mm512_maskz_mov_epi8(high_bits_pair(b[0].qh, b[1].qh, has_b), _mm512_set1_epi8(16)));
    d = pair_scales(b[0].d, has_b ? b[1].d : 0);
  }
};
struct FQ5_1 {
  using Block = BlockQ5_1;
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = true;
  static void load_pair(const Block* b, bool has_b, __m512i& q, __m512& d, __m512& m) {
    q = unpack_nibble_pair(b[0].qs, b[1].qs, has_b);
    q = _mm512_or_si512(q, _mm512_maskz_mov_epi8(high_bits_pair(b[0].qh, b[1].qh, has_b), _mm512_set1_epi8(16)));
    d = pair_scales(b[0].d, has_b ? b[1].d : 0);
    m = pair_scales(b[0].m, has_b ? b[1].m : 0);
  }
};
struct FQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 128;  // signed codes xor 0x80 = code + 128 as unsigned
  static constexpr bool kHasMin = false;
  static void load_pair(const Block* b, bool has_b, __m512i& q, __m512& d, __m512&) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
    const __m256i c = has_b ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)) : _mm256_setzero_si256();
    q = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(a), c, 1), _mm512_set1_epi8(char(0x80)));
    d = pair_scales(b[0].d, has_b ? b[1].d : 0);
  }
};

// R rows x T tokens over nb blocks. w: first row; xq/xd/xsv: first token's codes, pair scales
// and pair sums (s / 8).
template <class F, int R, int T>
void gemm32(const uint8_t* w, size_t row_bytes, int64_t nb, int64_t p_begin, int64_t p_end, const int8_t* xq,
            int64_t xq_stride, const float* xd, const float* xsv, int64_t xd_stride, float* y, int64_t y_stride,
            bool accumulate) {
  using Block = typename F::Block;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t prefetch = prefetch_distance(row_bytes);
  for (int64_t p = p_begin; p < p_end; ++p) {
    const bool has_b = 2 * p + 1 < nb;
    for (int r = 0; r < R; ++r)
      _mm_prefetch(reinterpret_cast<const char*>(w + r * row_bytes + 2 * p * sizeof(Block) + prefetch), _MM_HINT_T0);
    __m512i q[R];
    __m512 d[R], m[R];
    for (int r = 0; r < R; ++r)
      F::load_pair(reinterpret_cast<const Block*>(w + r * row_bytes) + 2 * p, has_b, q[r], d[r], m[r]);
    for (int t = 0; t < T; ++t) {
      const __m512i xv = _mm512_load_si512(xq + t * xq_stride + 64 * p);
      const __m512 xdv = _mm512_load_ps(xd + t * xd_stride + 16 * p);
      __m512i init = _mm512_setzero_si512();
      if constexpr (F::kOffset != 0)  // - offset * (sum of the 4 codes in each lane)
        init = _mm512_sub_epi32(init, _mm512_dpbusd_epi32(init, _mm512_set1_epi8(char(F::kOffset)), xv));
      __m512 xs;
      if constexpr (F::kHasMin) xs = _mm512_load_ps(xsv + t * xd_stride + 16 * p);
      for (int r = 0; r < R; ++r) {
        const __m512i s = _mm512_dpbusd_epi32(init, q[r], xv);
        acc[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), xdv), d[r], acc[r][t]);
        if constexpr (F::kHasMin) acc[r][t] = _mm512_fmadd_ps(xs, m[r], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      y[t * y_stride + r] = (accumulate ? y[t * y_stride + r] : 0.0f) + _mm512_reduce_add_ps(acc[r][t]);
}

// Q4_1 exactly as llama.cpp computes it (ggml_vec_dot_q4_1_q8_1, ggml-cpu arch/x86/quants.c, the
// AVX2 + VNNI path GGML_NATIVE builds on this CPU), so that sputnik's activations and logits are
// llama.cpp's bit for bit: per block, vpdpbusd gives 8 int32 sums of 4 code products (lane j:
// elements 4j..4j+3), converted to f32; acc = fma(d_w * d_x, sums, acc) in 8 f32 lanes, block
// after block; then hsum_float_8's order, ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)), plus
// the min term summs = sum over blocks of m_w * s_x in f32, each product fused into the running
// sum (GCC contracts ggml's scalar loop into an fma). A zmm carries two rows' 8-lane chains (lanes
// 0-7 row r, 8-15 row r + 1), so each block costs the same instructions as the generic gemm32.
// R rows (4: two pairs, or 1) x T tokens over all nb blocks; xq/xd/xsv as for gemm32.
template <int R, int T>
void gemm_q4_1_as_ggml(const uint8_t* w, size_t row_bytes, int64_t nb, const int8_t* xq, int64_t xq_stride,
                       const float* xd, const float* xsv, int64_t xd_stride, float* y, int64_t y_stride) {
  constexpr int P = (R + 1) / 2;  // row pairs
  __m512 acc[P][T], summs[P][T];
  for (int p = 0; p < P; ++p)
    for (int t = 0; t < T; ++t) acc[p][t] = summs[p][t] = _mm512_setzero_ps();
  const int64_t prefetch = prefetch_distance(row_bytes);
  for (int64_t b = 0; b < nb; ++b) {
    __m512i q[P];
    __m512 d[P], m[P];
    for (int p = 0; p < P; ++p) {
      const bool pair = 2 * p + 1 < R;
      const auto* b0 = reinterpret_cast<const BlockQ4_1*>(w + 2 * p * row_bytes) + b;
      const auto* b1 = pair ? reinterpret_cast<const BlockQ4_1*>(w + (2 * p + 1) * row_bytes) + b : b0;
      _mm_prefetch(reinterpret_cast<const char*>(b0) + prefetch, _MM_HINT_T0);
      if (pair) _mm_prefetch(reinterpret_cast<const char*>(b1) + prefetch, _MM_HINT_T0);
      q[p] = unpack_nibble_pair(b0->qs, b1->qs, pair);
      d[p] = pair_scales(b0->d, pair ? b1->d : 0);
      // 8 m: fma(8 m, s / 8) is fma(m, s) exactly (powers of two), and s / 8 is what the
      // activations store, so the min term needs no multiply per token.
      m[p] = _mm512_mul_ps(pair_scales(b0->m, pair ? b1->m : 0), _mm512_set1_ps(8.0f));
    }
    for (int t = 0; t < T; ++t) {
      const __m512i xv = _mm512_broadcast_i64x4(
          _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + t * xq_stride + 32 * b)));
      const __m512 dx = _mm512_set1_ps(xd[t * xd_stride + 8 * b]);
      const __m512 sx = _mm512_set1_ps(xsv[t * xd_stride + 8 * b]);  // s / 8
      for (int p = 0; p < P; ++p) {
        const __m512 sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q[p], xv));
        acc[p][t] = _mm512_fmadd_ps(_mm512_mul_ps(d[p], dx), sums, acc[p][t]);
        summs[p][t] = _mm512_fmadd_ps(m[p], sx, summs[p][t]);
      }
    }
  }
  const auto hsum_float_8 = [](__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
  };
  for (int p = 0; p < P; ++p)
    for (int t = 0; t < T; ++t) {
      const __m512 a = acc[p][t], s = summs[p][t];
      y[t * y_stride + 2 * p] = hsum_float_8(_mm512_castps512_ps256(a)) + _mm512_cvtss_f32(s);
      if (2 * p + 1 < R)
        y[t * y_stride + 2 * p + 1] = hsum_float_8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))) +
                                      _mm512_cvtss_f32(_mm512_shuffle_f32x4(s, s, 2));
    }
}

// --- K-quant formats (super-blocks of 256, activations Q8_K) -----------------------------------
// prepare(block): per-super-block state; chunk(c, q, s): 64 unsigned codes of chunk c and the int16
// scale of each code pair. Q4_K/Q5_K also give mins16 (16 int16: min of each 16-code group) and
// dmin; Q6_K gives its scales as int16 for the exact -32 offset correction.

inline void unpack_k4_scales(const uint8_t* q, uint64_t* sc, uint64_t* mn) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, q, 4);
  std::memcpy(&u1, q + 4, 4);
  std::memcpy(&u2, q + 8, 4);
  const uint32_t sc_lo = u0 & 0x3F3F3F3F, mn_lo = u1 & 0x3F3F3F3F;
  const uint32_t sc_hi = (u2 & 0x0F0F0F0F) | (((u0 >> 6) & 0x03030303) << 4);
  const uint32_t mn_hi = ((u2 >> 4) & 0x0F0F0F0F) | (((u1 >> 6) & 0x03030303) << 4);
  *sc = sc_lo | (uint64_t{sc_hi} << 32);
  *mn = mn_lo | (uint64_t{mn_hi} << 32);
}

// Scale vector of chunk c for a 32-sub-block format: int16 lanes 0-15 = sc[2c], 16-31 = sc[2c+1].
inline __m512i k4_chunk_scales(__m512i sc16, int c) {
  const __m512i idx = _mm512_inserti64x4(_mm512_set1_epi16(static_cast<short>(2 * c)),
                                         _mm256_set1_epi16(static_cast<short>(2 * c + 1)), 1);
  return _mm512_permutexvar_epi16(idx, sc16);
}

struct FQ4_K {
  using Block = BlockQ4_K;
  static constexpr bool kIntCorrection = false;
  struct State {
    const Block* b;
    __m512i sc16;
    __m256i mins16;
    float d, dmin;
  };
  static void prepare(const Block* b, State& s) {
    uint64_t sc, mn;
    unpack_k4_scales(b->scales, &sc, &mn);
    s.b = b;
    s.sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(sc))));
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(mn)));
    s.mins16 = _mm256_permutexvar_epi16(_mm256_set_epi16(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0),
                                        _mm256_castsi128_si256(m8));
    s.d = h2f(b->d);
    s.dmin = h2f(b->dmin);
  }
  static void chunk(const State& s, int c, __m512i& q, __m512i& scale) {
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->qs + 32 * c)));
    q = _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), _mm512_set1_epi8(0x0F));
    scale = k4_chunk_scales(s.sc16, c);
  }
};

struct FQ5_K {
  using Block = BlockQ5_K;
  static constexpr bool kIntCorrection = false;
  struct State {
    const Block* b;
    __m512i sc16, qh;
    __m256i mins16;
    float d, dmin;
  };
  static void prepare(const Block* b, State& s) {
    uint64_t sc, mn;
    unpack_k4_scales(b->scales, &sc, &mn);
    s.b = b;
    s.sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(sc))));
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(mn)));
    s.mins16 = _mm256_permutexvar_epi16(_mm256_set_epi16(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0),
                                        _mm256_castsi128_si256(m8));
    s.qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh)));
    s.d = h2f(b->d);
    s.dmin = h2f(b->dmin);
  }
  static void chunk(const State& s, int c, __m512i& q, __m512i& scale) {
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->qs + 32 * c)));
    q = _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)), _mm512_set1_epi8(0x0F));
    // Bit 2c of qh[l] is bit 4 of element 64c + l, bit 2c + 1 that of element 64c + 32 + l.
    const __m512i sel = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << (2 * c))),
                                           _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 1))), 1);
    q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(s.qh, sel), q, _mm512_set1_epi8(16));
    scale = k4_chunk_scales(s.sc16, c);
  }
};

struct FQ6_K {
  using Block = BlockQ6_K;
  static constexpr bool kIntCorrection = true;  // codes are q + 32: subtract 32 * sum(sc * bsum)
  struct State {
    const Block* b;
    __m512i sc16;
    __m256i mins16;  // here: the 16 int16 scales, paired with the activation's 16 bsums
    float d, dmin;
  };
  static void prepare(const Block* b, State& s) {
    s.b = b;
    s.mins16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales)));
    s.sc16 = _mm512_castsi256_si512(s.mins16);
    s.d = h2f(b->d);
    s.dmin = 0;
  }
  static void chunk(const State& s, int c, __m512i& q, __m512i& scale) {
    const int h = c / 2;
    const __m512i ql = _mm512_loadu_si512(s.b->ql + 64 * h);
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->qh + 32 * h)));
    __m512i lo, hi;
    if ((c & 1) == 0) {
      lo = _mm512_and_si512(ql, _mm512_set1_epi8(0x0F));
      hi = _mm512_sllv_epi64(qh, _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4));
    } else {
      lo = _mm512_and_si512(_mm512_srli_epi16(ql, 4), _mm512_set1_epi8(0x0F));
      hi = _mm512_srlv_epi64(qh, _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0));
    }
    q = _mm512_or_si512(lo, _mm512_and_si512(hi, _mm512_set1_epi8(0x30)));
    // Chunk c covers the 16-code sub-blocks 4c .. 4c + 3, 8 int16 lanes each.
    const __m512i idx = _mm512_set_epi16(4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3,
                                         4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2,
                                         4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1,
                                         4 * c, 4 * c, 4 * c, 4 * c, 4 * c, 4 * c, 4 * c, 4 * c);
    scale = _mm512_permutexvar_epi16(idx, s.sc16);
  }
};

template <class F, int R, int T>
void gemmK(const uint8_t* w, size_t row_bytes, int64_t sb_begin, int64_t sb_end, const int8_t* xq,
           int64_t xq_stride, const float* xd, const int16_t* xbs, int64_t xs_stride, float* y, int64_t y_stride,
           bool accumulate) {
  using Block = typename F::Block;
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t prefetch = prefetch_distance(row_bytes);
  for (int64_t sb = sb_begin; sb < sb_end; ++sb) {
    for (int r = 0; r < R; ++r)
      for (size_t off = 0; off < sizeof(Block); off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(w + r * row_bytes + sb * sizeof(Block) + off + prefetch),
                     _MM_HINT_T0);
    typename F::State st[R];
    for (int r = 0; r < R; ++r) F::prepare(reinterpret_cast<const Block*>(w + r * row_bytes) + sb, st[r]);
    __m512i isum[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) isum[r][t] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      __m512i q[R], s[R];
      for (int r = 0; r < R; ++r) F::chunk(st[r], c, q[r], s[r]);
      for (int t = 0; t < T; ++t) {
        const __m512i xv = _mm512_loadu_si512(xq + t * xq_stride + kQKK * sb + 64 * c);
        for (int r = 0; r < R; ++r)
          isum[r][t] = _mm512_dpwssd_epi32(isum[r][t], _mm512_maddubs_epi16(q[r], xv), s[r]);
      }
    }
    for (int t = 0; t < T; ++t) {
      const float dx = xd[t * xs_stride + sb];
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xbs + (t * xs_stride + sb) * 16));
      for (int r = 0; r < R; ++r) {
        const __m256i corr = _mm256_madd_epi16(st[r].mins16, bs);
        if constexpr (F::kIntCorrection) {
          const __m512i tot = _mm512_sub_epi32(isum[r][t], _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_set1_ps(st[r].d * dx), acc[r][t]);
        } else {
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][t]), _mm512_set1_ps(st[r].d * dx), acc[r][t]);
          acc[r][t] = _mm512_fnmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(corr)),
                                       _mm512_set1_ps(st[r].dmin * dx), acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      y[t * y_stride + r] = (accumulate ? y[t * y_stride + r] : 0.0f) + _mm512_reduce_add_ps(acc[r][t]);
}

// --- Float weights (F32, F16, BF16, F8_E4M3): f32 activations, f32 accumulation -----------------

template <DType TY>
inline __m512 load_weights16(const uint8_t* row, int64_t c, __mmask16 mask) {
  if constexpr (TY == DType::F32) {
    return _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (TY == DType::F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row + 2 * c));
  } else if constexpr (TY == DType::BF16) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row + 2 * c)), 16));
  } else {
    // e4m3 -> fp16 bits: sign-extend the byte and shift left 7, which puts exponent and mantissa
    // into fp16's fields and a copy of the sign in bits 14 and 15; clear bit 14. The bias
    // difference (15 - 7) is a factor 2^-8 the caller folds into the block scale. Exact for every
    // finite value, subnormals included. (NaN codes are not expected in weights.)
    const __m256i b = _mm256_cvtepi8_epi16(_mm_maskz_loadu_epi8(mask, row + c));
    const __m256i h = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
    return _mm512_cvtph_ps(h);
  }
}

template <DType TY, int R, int T>
void gemm_float(const TensorView& w, int64_t r0, const float* x, int64_t cols, float* y, int64_t y_stride) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w.row(r0 + r);
  const int64_t prefetch = prefetch_distance(w.row_bytes());
  // FP8 weights carry one scale per 128 x 128 block: walk the columns block by block so each
  // row's scale is looked up once per block.
  const bool fp8 = TY == DType::F8_E4M3;
  const int64_t bs = fp8 ? w.scale_block : cols;
  const float* scale_row[R];
  for (int r = 0; r < R; ++r)
    scale_row[r] = fp8 && w.scale ? w.scale + ((r0 + r) / bs) * ((cols + bs - 1) / bs) : nullptr;
  for (int64_t c0 = 0; c0 < cols; c0 += bs) {
    __m512 s[R];
    if constexpr (TY == DType::F8_E4M3)
      for (int r = 0; r < R; ++r) s[r] = _mm512_set1_ps((scale_row[r] ? scale_row[r][c0 / bs] : 1.0f) * 256.0f);
    const int64_t c1 = std::min(cols, c0 + bs);
    for (int64_t c = c0; c < c1; c += 16) {
      const __mmask16 mask = c1 - c >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (c1 - c)) - 1);
      __m512 wv[R];
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(rows[r] + dtype_row_bytes(TY, c) + prefetch), _MM_HINT_T0);
        wv[r] = load_weights16<TY>(rows[r], c, mask);
        if constexpr (TY == DType::F8_E4M3) wv[r] = _mm512_mul_ps(wv[r], s[r]);
      }
      for (int t = 0; t < T; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(mask, x + t * cols + c);
        for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// --- Drivers -----------------------------------------------------------------------------------

// Calls fn.template operator()<R, T>() for R in {4, 1}, T in 1..4.
template <class Fn>
void with_tile(int R, int T, Fn&& fn) {
  if (R == 4) {
    switch (T) {
      case 1: fn.template operator()<4, 1>(); break;
      case 2: fn.template operator()<4, 2>(); break;
      case 3: fn.template operator()<4, 3>(); break;
      default: fn.template operator()<4, 4>(); break;
    }
  } else {
    switch (T) {
      case 1: fn.template operator()<1, 1>(); break;
      case 2: fn.template operator()<1, 2>(); break;
      case 3: fn.template operator()<1, 3>(); break;
      default: fn.template operator()<1, 4>(); break;
    }
  }
}

// Runs tile(r0, R, t0, T, kb) over all rows, tokens and column blocks kb < n_kblocks: row slabs in
// parallel; within a slab, column blocks outermost, then token tiles, then row tiles, so that a
// token tile's activations for one column block stay in L1 while the slab's weights for that
// block stream from L2 (prefill). Decode uses a single column block.
template <class Tile>
void for_tiles(int64_t rows, size_t row_bytes, int64_t n_tokens, int64_t n_kblocks, ThreadPool& pool, Tile&& tile) {
  const int64_t slab = rows_per_task(rows, row_bytes, pool.size(), n_tokens);
  pool.parallel_for((rows + slab - 1) / slab, [&](int64_t task, int) {
    const int64_t r_begin = task * slab, r_end = std::min(rows, r_begin + slab);
    for (int64_t kb = 0; kb < n_kblocks; ++kb)
      for (int64_t t0 = 0; t0 < n_tokens; t0 += 4) {
        const int T = static_cast<int>(std::min<int64_t>(4, n_tokens - t0));
        int64_t r0 = r_begin;
        for (; r0 + 4 <= r_end; r0 += 4) tile(r0, 4, t0, T, kb);
        for (; r0 < r_end; ++r0) tile(r0, 1, t0, T, kb);
      }
  });
}

// Column blocking (kb) is wired through but unused: splitting K into 1024-4096-column blocks so a
// token tile's activations stay in L1 measured 3-10% slower for prefill (the tiles are
// compute-bound, not cache-bound), so every call uses one column block.

template <class F>
void matmul32(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols(), nb = cols / kQK, np = (nb + 1) / 2;
  const int64_t xq_stride = 64 * np, xd_stride = 16 * np;
  uint8_t* mem = activation_scratch().get(static_cast<size_t>(n_tokens * (xq_stride + 8 * xd_stride)));
  auto* xq = reinterpret_cast<int8_t*>(mem);
  auto* xd = reinterpret_cast<float*>(mem + n_tokens * xq_stride);
  float* xs = xd + n_tokens * xd_stride;
  pool.parallel_for(n_tokens, [&](int64_t t, int) {
    quantize_act32(x + t * cols, cols, xq + t * xq_stride, xd + t * xd_stride, xs + t * xd_stride);
  });
  const size_t rb = w.row_bytes();
  const auto* wd = static_cast<const uint8_t*>(w.data);
  const int64_t kb_pairs = np;
  for_tiles(rows, rb, n_tokens, (np + kb_pairs - 1) / kb_pairs, pool, [&](int64_t r0, int R, int64_t t0, int T, int64_t kb) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemm32<F, kR, kT>(wd + r0 * rb, rb, nb, kb * kb_pairs, std::min(np, (kb + 1) * kb_pairs), xq + t0 * xq_stride,
                        xq_stride, xd + t0 * xd_stride, xs + t0 * xd_stride, xd_stride, y + t0 * rows + r0, rows, kb > 0);
    });
  });
}

void matmul_q4_1_as_ggml(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols(), nb = cols / kQK, np = (nb + 1) / 2;
  const int64_t xq_stride = 64 * np, xd_stride = 16 * np;
  uint8_t* mem = activation_scratch().get(static_cast<size_t>(n_tokens * (xq_stride + 8 * xd_stride)));
  auto* xq = reinterpret_cast<int8_t*>(mem);
  auto* xd = reinterpret_cast<float*>(mem + n_tokens * xq_stride);
  float* xs = xd + n_tokens * xd_stride;
  pool.parallel_for(n_tokens, [&](int64_t t, int) {
    quantize_act32(x + t * cols, cols, xq + t * xq_stride, xd + t * xd_stride, xs + t * xd_stride);
  });
  const size_t rb = w.row_bytes();
  const auto* wd = static_cast<const uint8_t*>(w.data);
  for_tiles(rows, rb, n_tokens, 1, pool, [&](int64_t r0, int R, int64_t t0, int T, int64_t) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemm_q4_1_as_ggml<kR, kT>(wd + r0 * rb, rb, nb, xq + t0 * xq_stride, xq_stride, xd + t0 * xd_stride,
                                xs + t0 * xd_stride, xd_stride, y + t0 * rows + r0, rows);
    });
  });
}

template <class F>
void matmulK(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols(), nsb = cols / kQKK;
  const size_t qs_bytes = static_cast<size_t>(round_up(n_tokens * cols, 64));
  const size_t d_bytes = static_cast<size_t>(round_up(n_tokens * nsb * 4, 64));
  uint8_t* mem = activation_scratch().get(qs_bytes + d_bytes + static_cast<size_t>(n_tokens * nsb * 32));
  auto* xq = reinterpret_cast<int8_t*>(mem);
  auto* xd = reinterpret_cast<float*>(mem + qs_bytes);
  auto* xbs = reinterpret_cast<int16_t*>(mem + qs_bytes + d_bytes);
  pool.parallel_for(n_tokens, [&](int64_t t, int) {
    quantize_act256(x + t * cols, cols, xq + t * cols, xd + t * nsb, xbs + t * nsb * 16);
  });
  const size_t rb = w.row_bytes();
  const auto* wd = static_cast<const uint8_t*>(w.data);
  const int64_t kb_sbs = nsb;
  for_tiles(rows, rb, n_tokens, (nsb + kb_sbs - 1) / kb_sbs, pool, [&](int64_t r0, int R, int64_t t0, int T, int64_t kb) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemmK<F, kR, kT>(wd + r0 * rb, rb, kb * kb_sbs, std::min(nsb, (kb + 1) * kb_sbs), xq + t0 * cols, cols,
                       xd + t0 * nsb, xbs + t0 * nsb * 16, nsb, y + t0 * rows + r0, rows, kb > 0);
    });
  });
}

template <DType TY>
void matmul_float(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols();
  for_tiles(rows, w.row_bytes(), n_tokens, 1, pool, [&](int64_t r0, int R, int64_t t0, int T, int64_t) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemm_float<TY, kR, kT>(w, r0, x + t0 * cols, cols, y + t0 * rows + r0, rows);
    });
  });
}

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  switch (w.dtype) {
    case DType::Q4_0: return matmul32<FQ4_0>(w, x, n_tokens, y, pool);
    case DType::Q4_1: return matmul_q4_1_as_ggml(w, x, n_tokens, y, pool);
    case DType::Q5_0: return matmul32<FQ5_0>(w, x, n_tokens, y, pool);
    case DType::Q5_1: return matmul32<FQ5_1>(w, x, n_tokens, y, pool);
    case DType::Q8_0: return matmul32<FQ8_0>(w, x, n_tokens, y, pool);
    case DType::Q4_K: return matmulK<FQ4_K>(w, x, n_tokens, y, pool);
    case DType::Q5_K: return matmulK<FQ5_K>(w, x, n_tokens, y, pool);
    case DType::Q6_K: return matmulK<FQ6_K>(w, x, n_tokens, y, pool);
    case DType::F32: return matmul_float<DType::F32>(w, x, n_tokens, y, pool);
    case DType::F16: return matmul_float<DType::F16>(w, x, n_tokens, y, pool);
    case DType::BF16: return matmul_float<DType::BF16>(w, x, n_tokens, y, pool);
    case DType::F8_E4M3: return matmul_float<DType::F8_E4M3>(w, x, n_tokens, y, pool);
    default: return ref::matmul(w, x, n_tokens, y, pool);
  }
}

}  // namespace

// Defined in ops_avx512.cpp.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);
void softmax(float* x, int64_t n);
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void axpy(float a, const float* x, int64_t n, float* y);
float dot_f32(const float* a, const float* b, int64_t n);

const KernelSet& kernel_set() {
  static const KernelSet set{"avx512", matmul, rms_norm, softmax, silu_mul, axpy, dot_f32};
  return set;
}

}  // namespace sputnik::avx512
