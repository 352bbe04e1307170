// AVX2 + FMA + F16C matmul, for x86-64 CPUs without AVX-512 VNNI. Same scheme as
// matmul_avx512.cpp (8-bit activations, integer block dot products, R x T register tiles), with
// 256-bit vectors: one 32-element block (or half of a K-quant chunk) per register, vpmaddubsw +
// vpmaddwd in place of vpdpbusd, and 4 x 2 tiles to fit the 16 ymm registers.
//
// vpmaddubsw saturates at int16: with codes <= 63 and |x| <= 127 the pair sums stay below 16002.
// Q8_0's signed codes go through the usual sign trick (|w| x sign(x, w)) instead of an offset.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/scratch.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx2 {
namespace {

// fp16 -> f32 with F16C (one vcvtph2ps; exact, as fp16_to_f32).
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

// 8 floats -> 8 int8 (values already within [-127, 127]) stored at dst.
inline void store_q8(int8_t* dst, __m256 v) {
  const __m256i i = _mm256_cvtps_epi32(v);
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packs_epi16(w, w));
}

// Software prefetch distance for the weight rows (see matmul_avx512.cpp: short rows make a 4-row
// tile one contiguous stream that the hardware prefetcher alone keeps too shallow).
inline int64_t prefetch_distance(size_t row_bytes) { return row_bytes >= 2048 ? 512 : 8192; }

// --- Activation quantisation (bit-identical to ref::quantize_activation) ------------------------

// f32 -> fp16 -> f32 (round to nearest even), as ggml stores block_q8_0 / block_q8_1 scales.
inline float round_fp16(float f) { return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

// Blocks of 32 (ggml quantize_row_q8_1 on x86): writes codes; returns d = fp16(max / 127) and
// sets s = fp16(d_f32 * sum q), both as f32 values.
inline float quantize_block32(const float* x, int8_t* qs, float* s) {
  __m256 m = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int j = 0; j < kQK; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  const float amax = hmax(m);
  const __m256 id = _mm256_set1_ps(amax != 0 ? 127.f / amax : 0.0f);
  for (int j = 0; j < kQK; j += 8) store_q8(qs + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), id));
  const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16)));
  const int sum = hsum_i32(_mm256_madd_epi16(_mm256_add_epi16(v, w), _mm256_set1_epi16(1)));
  const float d = amax / 127.f;
  *s = round_fp16(d * static_cast<float>(sum));
  return round_fp16(d);
}

// Blocks of 256 (ggml quantize_row_q8_K_ref): writes codes and the sum of codes per 16; returns
// the f32 d = 1 / (127 / max).
inline float quantize_block256(const float* x, int8_t* qs, int16_t* sums16) {
  __m256 m = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int j = 0; j < kQKK; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  const float amax = hmax(m);
  const float idb = amax != 0 ? 127.f / amax : 0.0f;
  const __m256 id = _mm256_set1_ps(idb);
  for (int j = 0; j < kQKK; j += 8) store_q8(qs + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), id));
  for (int j = 0; j < kQKK; j += 16) {
    const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + j)));
    sums16[j / 16] = static_cast<int16_t>(hsum_i32(_mm256_madd_epi16(v, _mm256_set1_epi16(1))));
  }
  return amax != 0 ? 1.0f / idb : 0.0f;
}

// --- 32-element block formats ------------------------------------------------------------------
// load(block, q, d, m): 32 codes in element order; weight = d * (q - kOffset) (+ m). Q8_0 codes
// are signed (kSigned).

inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
  return _mm256_set_m128i(hi, lo);
}

// 0x10 in byte j where bit j of the 32-bit qh is set.
inline __m256i high_bits(const uint8_t* qh) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  __m256i v = _mm256_set1_epi32(static_cast<int>(h));
  v = _mm256_shuffle_epi8(v, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit), _mm256_set1_epi8(0x10));
}

struct FQ4_0 {
  using Block = BlockQ4_0;
  static constexpr int kOffset = 8;
  static constexpr bool kHasMin = false, kSigned = false;
  static void load(const Block* b, __m256i& q, float& d, float&) {
    q = unpack_nibbles(b->qs);
    d = h2f(b->d);
  }
};
struct FQ4_1 {
  using Block = BlockQ4_1;
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = true, kSigned = false;
  static void load(const Block* b, __m256i& q, float& d, float& m) {
    q = unpack_nibbles(b->qs);
    d = h2f(b->d);
    m = h2f(b->m);
  }
};
struct FQ5_0 {
  using Block = BlockQ5_0;
  static constexpr int kOffset = 16;
  static constexpr bool kHasMin = false, kSigned = false;
  static void load(const Block* b, __m256i& q, float& d, float&) {
    q = _mm256_or_si256(unpack_nibbles(b->qs), high_bits(b->qh));
    d = h2f(b->d);
  }
};
struct FQ5_1 {
  using Block = BlockQ5_1;
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = true, kSigned = false;
  static void load(const Block* b, __m256i& q, float& d, float& m) {
    q = _mm256_or_si256(unpack_nibbles(b->qs), high_bits(b->qh));
    d = h2f(b->d);
    m = h2f(b->m);
  }
};
struct FQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = false, kSigned = true;
  static void load(const Block* b, __m256i& q, float& d, float&) {
    q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs));
    d = h2f(b->d);
  }
};

template <class F, int R, int T>
void gemm32(const uint8_t* w, size_t row_bytes, int64_t nb, const int8_t* xq, int64_t xq_stride,
            const float* xd, const float* xsb, int64_t xd_stride, float* y, int64_t y_stride) {
  using Block = typename F::Block;
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256 acc[R][T];
  // Q4_1/Q5_1: sum over blocks of m * s, kept apart from acc and fused per block, as
  // ggml_vec_dot_q4_1_q8_1 / q5_1 do; with acc's lanes and hsum's order the result is llama.cpp's
  // bit for bit (ref::matmul_q4_1_as_ggml).
  float summs[R][T] = {};
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  const int64_t prefetch = prefetch_distance(row_bytes);
  for (int64_t b = 0; b < nb; ++b) {
    for (int r = 0; r < R; ++r)
      _mm_prefetch(reinterpret_cast<const char*>(w + r * row_bytes + b * sizeof(Block) + prefetch), _MM_HINT_T0);
    __m256i q[R];
    float d[R], m[R];
    for (int r = 0; r < R; ++r) F::load(reinterpret_cast<const Block*>(w + r * row_bytes) + b, q[r], d[r], m[r]);
    for (int t = 0; t < T; ++t) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * xq_stride + 32 * b));
      const float dx = xd[t * xd_stride + b];
      __m256i corr = _mm256_setzero_si256();
      if constexpr (F::kOffset != 0)  // offset * (sum of the 4 codes of each lane)
        corr = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xv), _mm256_set1_epi16(F::kOffset));
      const float xs = F::kHasMin ? xsb[t * xd_stride + b] : 0.0f;  // block_q8_1's s
      for (int r = 0; r < R; ++r) {
        __m256i s;
        if constexpr (F::kSigned)
          s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q[r], q[r]), _mm256_sign_epi8(xv, q[r])), ones16);
        else
          s = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q[r], xv), ones16), corr);
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d[r] * dx), acc[r][t]);
        if constexpr (F::kHasMin) summs[r][t] = std::fma(m[r], xs, summs[r][t]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]) + summs[r][t];
}

// --- K-quants ----------------------------------------------------------------------------------
// half(s, g, q, scale): codes of elements 32g .. 32g + 31 of the super-block (g < 8) and the
// int16 scale of each code pair; mins16 pairs with the activation's 16 bsums (Q4_K/Q5_K: the min
// of each 16-group; Q6_K: its scales, for the exact -32 offset correction).

// All 8 scales and mins of a Q4_K/Q5_K block at once (unpack_scale_min_k4 on 32-bit words).
inline void unpack_k4_scales(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  uint32_t u0, u1, u2;
  std::memcpy(&u0, q, 4);
  std::memcpy(&u1, q + 4, 4);
  std::memcpy(&u2, q + 8, 4);
  const uint32_t sc_lo = u0 & 0x3F3F3F3F, mn_lo = u1 & 0x3F3F3F3F;
  const uint32_t sc_hi = (u2 & 0x0F0F0F0F) | (((u0 >> 6) & 0x03030303) << 4);
  const uint32_t mn_hi = ((u2 >> 4) & 0x0F0F0F0F) | (((u1 >> 6) & 0x03030303) << 4);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(mn, &mn_lo, 4);
  std::memcpy(mn + 4, &mn_hi, 4);
}

// [m0, m0, m1, m1, ..., m7, m7] as int16: each sub-block min paired with its two 16-code bsums.
inline __m256i pair_mins16(const uint8_t* mn) {
  const __m128i v = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn)));
  return _mm256_set_m128i(_mm_unpackhi_epi16(v, v), _mm_unpacklo_epi16(v, v));
}

struct FQ4_K {
  using Block = BlockQ4_K;
  static constexpr bool kIntCorrection = false;
  struct State {
    const Block* b;
    uint8_t sc[8], mn[8];
    __m256i mins16;
    float d, dmin;
  };
  static void prepare(const Block* b, State& s) {
    s.b = b;
    unpack_k4_scales(b->scales, s.sc, s.mn);
    s.mins16 = pair_mins16(s.mn);
    s.d = h2f(b->d);
    s.dmin = h2f(b->dmin);
  }
  static void half(const State& s, int g, __m256i& q, __m256i& scale) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->qs + 32 * (g / 2)));
    q = _mm256_and_si256(g & 1 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
    scale = _mm256_set1_epi16(s.sc[g]);
  }
};

struct FQ5_K {
  using Block = BlockQ5_K;
  static constexpr bool kIntCorrection = false;
  struct State {
    const Block* b;
    uint8_t sc[8], mn[8];
    __m256i mins16, qh;
    float d, dmin;
  };
  static void prepare(const Block* b, State& s) {
    s.b = b;
    unpack_k4_scales(b->scales, s.sc, s.mn);
    s.mins16 = pair_mins16(s.mn);
    s.qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh));
    s.d = h2f(b->d);
    s.dmin = h2f(b->dmin);
  }
  static void half(const State& s, int g, __m256i& q, __m256i& scale) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->qs + 32 * (g / 2)));
    q = _mm256_and_si256(g & 1 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
    // Bit g of qh[l] is bit 4 of element 32 g + l.
    const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << g));
    q = _mm256_or_si256(q, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(s.qh, bit), bit), _mm256_set1_epi8(0x10)));
    scale = _mm256_set1_epi16(s.sc[g]);
  }
};

struct FQ6_K {
  using Block = BlockQ6_K;
  static constexpr bool kIntCorrection = true;
  struct State {
    const Block* b;
    __m256i mins16;  // the 16 scales as int16
    float d, dmin;
  };
  static void prepare(const Block* b, State& s) {
    s.b = b;
    s.mins16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales)));
    s.d = h2f(b->d);
    s.dmin = 0;
  }
  static void half(const State& s, int g, __m256i& q, __m256i& scale) {
    // Half h = g / 4 of the super-block, group k = g % 4 within it (see BlockQ6_K).
    const int h = g / 4, k = g % 4;
    const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->ql + 64 * h + 32 * (k & 1)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.b->qh + 32 * h));
    const __m256i lo = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0F));
    const __m128i shift = _mm_cvtsi32_si128(2 * k);
    const __m256i hi = _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(qh, shift), 4), _mm256_set1_epi8(0x30));
    q = _mm256_or_si256(lo, hi);
    const int8_t* sc = s.b->scales + 2 * g;
    scale = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
  }
};

template <class F, int R, int T>
void gemmK(const uint8_t* w, size_t row_bytes, int64_t nsb, const int8_t* xq, int64_t xq_stride,
           const float* xd, const int16_t* xbs, int64_t xs_stride, float* y, int64_t y_stride) {
  using Block = typename F::Block;
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  const int64_t prefetch = prefetch_distance(row_bytes);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    for (int r = 0; r < R; ++r)
      for (size_t off = 0; off < sizeof(Block); off += 64)
        _mm_prefetch(reinterpret_cast<const char*>(w + r * row_bytes + sb * sizeof(Block) + off + prefetch), _MM_HINT_T0);
    typename F::State st[R];
    for (int r = 0; r < R; ++r) F::prepare(reinterpret_cast<const Block*>(w + r * row_bytes) + sb, st[r]);
    __m256i isum[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) isum[r][t] = _mm256_setzero_si256();
    for (int g = 0; g < 8; ++g) {
      __m256i q[R], s[R];
      for (int r = 0; r < R; ++r) F::half(st[r], g, q[r], s[r]);
      for (int t = 0; t < T; ++t) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + t * xq_stride + kQKK * sb + 32 * g));
        for (int r = 0; r < R; ++r)
          isum[r][t] = _mm256_add_epi32(isum[r][t], _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], xv), s[r]));
      }
    }
    for (int t = 0; t < T; ++t) {
      const float dx = xd[t * xs_stride + sb];
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xbs + (t * xs_stride + sb) * 16));
      for (int r = 0; r < R; ++r) {
        const __m256i corr = _mm256_madd_epi16(st[r].mins16, bs);
        if constexpr (F::kIntCorrection) {
          const __m256i tot = _mm256_sub_epi32(isum[r][t], _mm256_slli_epi32(corr, 5));
          acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), _mm256_set1_ps(st[r].d * dx), acc[r][t]);
        } else {
          acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][t]), _mm256_set1_ps(st[r].d * dx), acc[r][t]);
          acc[r][t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(corr), _mm256_set1_ps(st[r].dmin * dx), acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
}

// --- Float weights -----------------------------------------------------------------------------

template <DType TY>
inline __m256 load_weights8(const uint8_t* row, int64_t c) {
  if constexpr (TY == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (TY == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c)));
  } else if constexpr (TY == DType::BF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    // e4m3 -> fp16 bits (see matmul_avx512.cpp); the caller folds in the factor 2^8.
    const __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
    const __m128i h = _mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16(static_cast<short>(0xBFFF)));
    return _mm256_cvtph_ps(h);
  }
}

template <DType TY, int R, int T>
void gemm_float(const TensorView& w, int64_t r0, const float* x, int64_t cols, float* y, int64_t y_stride) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  const uint8_t* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = w.row(r0 + r);
  const int64_t prefetch = prefetch_distance(w.row_bytes());
  // FP8: one scale per 128 x 128 block, looked up once per column block (see matmul_avx512.cpp).
  const bool fp8 = TY == DType::F8_E4M3;
  const int64_t bs = fp8 ? w.scale_block : cols;
  const float* scale_row[R];
  for (int r = 0; r < R; ++r)
    scale_row[r] = fp8 && w.scale ? w.scale + ((r0 + r) / bs) * ((cols + bs - 1) / bs) : nullptr;
  float tail[R][T] = {};
  for (int64_t c0 = 0; c0 < cols; c0 += bs) {
    float sc[R];
    __m256 s[R];
    for (int r = 0; r < R; ++r) {
      sc[r] = scale_row[r] ? scale_row[r][c0 / bs] : 1.0f;
      s[r] = _mm256_set1_ps(sc[r] * 256.0f);
    }
    const int64_t c1 = std::min(cols, c0 + bs), main_end = c0 + (c1 - c0) / 8 * 8;
    for (int64_t c = c0; c < main_end; c += 8) {
      __m256 wv[R];
      for (int r = 0; r < R; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(rows[r] + dtype_row_bytes(TY, c) + prefetch), _MM_HINT_T0);
        wv[r] = load_weights8<TY>(rows[r], c);
        if constexpr (TY == DType::F8_E4M3) wv[r] = _mm256_mul_ps(wv[r], s[r]);
      }
      for (int t = 0; t < T; ++t) {
        const __m256 xv = _mm256_loadu_ps(x + t * cols + c);
        for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    // Columns past the last multiple of 8 in this block: scalar, via the reference conversion.
    for (int64_t c = main_end; c < c1; ++c)
      for (int r = 0; r < R; ++r) {
        float v;
        ref::dequantize_row(TY, rows[r] + dtype_row_bytes(TY, c), &v, 1);
        if constexpr (TY == DType::F8_E4M3) v *= sc[r];
        for (int t = 0; t < T; ++t) tail[r][t] += v * x[t * cols + c];
      }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * y_stride + r] = hsum(acc[r][t]) + tail[r][t];
}

// --- Drivers -----------------------------------------------------------------------------------

constexpr int kTileTokens = 2;

template <class Fn>
void with_tile(int R, int T, Fn&& fn) {
  if (R == 4) {
    if (T == 1) fn.template operator()<4, 1>();
    else fn.template operator()<4, 2>();
  } else {
    if (T == 1) fn.template operator()<1, 1>();
    else fn.template operator()<1, 2>();
  }
}

template <class Tile>
void for_tiles(int64_t rows, size_t row_bytes, int64_t n_tokens, ThreadPool& pool, Tile&& tile) {
  const int64_t slab = rows_per_task(rows, row_bytes, pool.size(), n_tokens);
  pool.parallel_for((rows + slab - 1) / slab, [&](int64_t task, int) {
    const int64_t r_begin = task * slab, r_end = std::min(rows, r_begin + slab);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
      const int T = static_cast<int>(std::min<int64_t>(kTileTokens, n_tokens - t0));
      int64_t r0 = r_begin;
      for (; r0 + 4 <= r_end; r0 += 4) tile(r0, 4, t0, T);
      for (; r0 < r_end; ++r0) tile(r0, 1, t0, T);
    }
  });
}

template <class F>
void matmul32(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols(), nb = cols / kQK;
  const size_t qs_bytes = static_cast<size_t>(round_up(n_tokens * cols, 64));
  uint8_t* mem = activation_scratch().get(qs_bytes + static_cast<size_t>(n_tokens * nb * 8));
  auto* xq = reinterpret_cast<int8_t*>(mem);
  auto* xd = reinterpret_cast<float*>(mem + qs_bytes);
  float* xs = xd + n_tokens * nb;
  pool.parallel_for(n_tokens, [&](int64_t t, int) {
    for (int64_t b = 0; b < nb; ++b)
      xd[t * nb + b] = quantize_block32(x + t * cols + kQK * b, xq + t * cols + kQK * b, xs + t * nb + b);
  });
  const size_t rb = w.row_bytes();
  const auto* wd = static_cast<const uint8_t*>(w.data);
  for_tiles(rows, rb, n_tokens, pool, [&](int64_t r0, int R, int64_t t0, int T) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemm32<F, kR, kT>(wd + r0 * rb, rb, nb, xq + t0 * cols, cols, xd + t0 * nb, xs + t0 * nb, nb, y + t0 * rows + r0,
                        rows);
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
    for (int64_t b = 0; b < nsb; ++b)
      xd[t * nsb + b] = quantize_block256(x + t * cols + kQKK * b, xq + t * cols + kQKK * b, xbs + (t * nsb + b) * 16);
  });
  const size_t rb = w.row_bytes();
  const auto* wd = static_cast<const uint8_t*>(w.data);
  for_tiles(rows, rb, n_tokens, pool, [&](int64_t r0, int R, int64_t t0, int T) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemmK<F, kR, kT>(wd + r0 * rb, rb, nsb, xq + t0 * cols, cols, xd + t0 * nsb, xbs + t0 * nsb * 16, nsb,
                       y + t0 * rows + r0, rows);
    });
  });
}

template <DType TY>
void matmul_float(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols();
  for_tiles(rows, w.row_bytes(), n_tokens, pool, [&](int64_t r0, int R, int64_t t0, int T) {
    with_tile(R, T, [&]<int kR, int kT>() {
      gemm_float<TY, kR, kT>(w, r0, x + t0 * cols, cols, y + t0 * rows + r0, rows);
    });
  });
}

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  switch (w.dtype) {
    case DType::Q4_0: return matmul32<FQ4_0>(w, x, n_tokens, y, pool);
    case DType::Q4_1: return matmul32<FQ4_1>(w, x, n_tokens, y, pool);
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

// Defined in ops_avx2.cpp.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);
void softmax(float* x, int64_t n);
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void axpy(float a, const float* x, int64_t n, float* y);
float dot_f32(const float* a, const float* b, int64_t n);

const KernelSet& kernel_set() {
  static const KernelSet set{"avx2", matmul, rms_norm, softmax, silu_mul, axpy, dot_f32};
  return set;
}

}  // namespace sputnik::avx2
