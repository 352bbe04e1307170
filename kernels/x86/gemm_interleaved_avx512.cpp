// AVX-512 VNNI matmul over the interleaved weight layouts (DType::Q8_0x16 / Q4_0x16 / Q5_0x16 /
// Q4_1x16 / Q4_Kx16, kernels/quant_blocks.h): y[t, r] = sum_c w[r, c] * x[t, c].
//
// Why a second layout: over ggml's row-major blocks (matmul_avx512.cpp) each vpdpbusd covers one
// row, so every 32-block costs per row and token a convert, a multiply and a horizontal layout of
// scales. Here one 64-byte vector holds 4 consecutive codes of 16 rows, the activation's 4 codes
// are broadcast to every lane (vpdpbusd's {1to16} memory operand), and the 16 rows' block scales
// are one vector: per block and token, 8 vpdpbusd then one convert, one multiply and one FMA
// cover 16 rows x 32 columns, and the int32 lanes are already the 16 outputs (no reductions).
// A tile is 16 rows x up to 8 tokens; each weight block is unpacked once per tile.
//
// Exactness: activations are rounded to 8 bits per block exactly as ggml's quantize_row_q8_0
// (blocks of 32) / q8_K (blocks of 256) do (ref::quantize_activation); the integer sums are exact:
// codes stored with an offset (Q4_0's q - 8, Q5_0's q - 16, Q8_0's q + 128) are corrected with the
// activation block sums, Q4_K's mins with the activation's 32-element sums.
#include <immintrin.h>

// GCC 12 flags the deliberately undefined upper lanes inside its own cast/reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/quant_blocks.h"
#include "kernels/x86/scratch.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx512 {
namespace {

constexpr int kR = kInterleaveRows;
constexpr int kMaxTokens = 8;  // tile width: 8 float accumulators + 8 code vectors + temporaries

// Software prefetch of the weights: a slab of 16-row groups is one contiguous stream, which the
// hardware prefetcher alone keeps too shallow (as for short rows in matmul_avx512.cpp).
// Prefill (T > 1) re-reads a slab held in L2 and fetches into L1 4 KiB ahead. Decode (T = 1) reads
// each byte once from DRAM with little work per line, so it needs more lines in flight than L1's
// fill buffers allow: into L2 8 KiB ahead, and from L2 into L1 1 KiB ahead. Measured on the
// 1536 x 8960 Q4_0x16 matvec, 1 thread, median CPU time: 4 KiB into L1 12.3 GB/s, 8 KiB into L2
// 14.0, both streams 14.3; none 10.2.
constexpr int64_t kPrefetchBytes = 4096;
constexpr int64_t kDecodeL2PrefetchBytes = 8192;
constexpr int64_t kDecodeL1PrefetchBytes = 1024;

template <int T>
inline void prefetch_block(const void* block, size_t bytes) {
  const char* p = static_cast<const char*>(block);
  for (size_t off = 0; off < bytes; off += 64) {
    if constexpr (T == 1) {
      _mm_prefetch(p + kDecodeL2PrefetchBytes + off, _MM_HINT_T1);
      _mm_prefetch(p + kDecodeL1PrefetchBytes + off, _MM_HINT_T0);
    } else {
      _mm_prefetch(p + kPrefetchBytes + off, _MM_HINT_T0);
    }
  }
}

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// f32 -> fp16 -> f32 (round to nearest even), as ggml stores block_q8_0's d.
inline float round_fp16(float f) { return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)); }

// --- Activation quantisation (bit-identical to ref::quantize_activation) ------------------------

// Blocks of 32: codes, d (fp16-rounded) and, when given, bias = -offset * (sum of the block's
// codes): the exact correction for weights stored as q + offset; s = block_q8_1's fp16(d * sum),
// the min term of Q4_1.
void quantize_act32(const float* x, int64_t cols, int offset, int8_t* qs, float* d, int32_t* bias, float* s) {
  for (int64_t b = 0; b < cols / kQK; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const __m512 id = _mm512_set1_ps(amax != 0 ? 127.f / amax : 0.0f);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b + 16), _mm512_cvtsepi32_epi8(q1));
    const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    d[b] = round_fp16(amax / 127.f);
    if (bias != nullptr) bias[b] = -offset * sum;
    if (s != nullptr) s[b] = round_fp16(amax / 127.f * static_cast<float>(sum));
  }
}

// Q8_K activations (quantize_act256) plus, per pair p of 32-element sub-blocks, the two sums
// (int16, |sum| <= 32 * 127) packed into one int32: sub-block 2p low, 2p + 1 high.
void quantize_act256_pairs(const float* x, int64_t cols, int8_t* qs, float* d, int32_t* pairs) {
  int16_t bsums[16];
  for (int64_t b = 0; b < cols / kQKK; ++b) {
    quantize_act256(x + b * kQKK, kQKK, qs + b * kQKK, d + b, bsums);
    int32_t sums[8];
    for (int s = 0; s < 8; ++s) sums[s] = bsums[2 * s] + bsums[2 * s + 1];
    for (int p = 0; p < 4; ++p)
      pairs[4 * b + p] = static_cast<int32_t>((static_cast<uint32_t>(sums[2 * p]) & 0xFFFF) |
                                              (static_cast<uint32_t>(sums[2 * p + 1]) << 16));
  }
}

// --- 32-element blocks ---------------------------------------------------------------------------
// codes(block, q): q[k] = the 16 rows' codes k*4 .. k*4 + 3 of the block, unsigned (= q + kOffset).
// kHasMin: Q4_1's w = d * q + m, multiplied by tile_q4_1 instead of tile32.

struct IQ8_0 {
  using Block = BlockQ8_0x16;
  static constexpr int kOffset = 128;
  static constexpr bool kHasMin = false;
  static void codes(const Block& b, __m512i q[8]) {
    for (int k = 0; k < 8; ++k) q[k] = _mm512_loadu_si512(b.qs + 64 * k);
  }
};

struct IQ4_0 {
  using Block = BlockQ4_0x16;
  static constexpr int kOffset = 8;
  static constexpr bool kHasMin = false;
  static void codes(const Block& b, __m512i q[8]) {
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; ++k) {
      const __m512i raw = _mm512_loadu_si512(b.qs + 64 * k);
      q[k] = _mm512_and_si512(raw, nibble);                             // elements 4k .. 4k+3
      q[k + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);  // elements 16+4k ..
    }
  }
};

// Q4_0's nibbles plus the fifth bit from qh, whose byte i of each lane holds the bits for byte i
// of every code vector (BlockQ5_0x16): a 16-bit shift brings vector k's bit to bit 4 of each byte
// (left by 4 - k for the low nibbles, right by k for the high ones; the bits a 16-bit shift carries
// across the byte boundary land below or above bit 4, which the mask drops).
struct IQ5_0 {
  using Block = BlockQ5_0x16;
  static constexpr int kOffset = 16;
  static constexpr bool kHasMin = false;
  static void codes(const Block& b, __m512i q[8]) {
    const __m512i nibble = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10);
    const __m512i qh = _mm512_loadu_si512(b.qh);
    // a | (b & c) per bit: the nibble with the masked fifth bit (vpternlogd truth table 0xF8).
    constexpr int kOrAnd = 0xF8;
    for (int k = 0; k < 4; ++k) {
      const __m512i raw = _mm512_loadu_si512(b.qs + 64 * k);
      const __m512i lo = _mm512_and_si512(raw, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
      q[k] = _mm512_ternarylogic_epi32(lo, _mm512_slli_epi16(qh, 4 - k), bit4, kOrAnd);
      q[k + 4] = _mm512_ternarylogic_epi32(hi, _mm512_srli_epi16(qh, k), bit4, kOrAnd);
    }
  }
};

// 16 rows x T tokens over nb blocks. xq: token t's codes at xq + t * cols; xd / xbias at + t * nb.
// y: token t's 16 outputs at y + t * y_stride.
template <class F, int T>
void tile32(const typename F::Block* w, int64_t nb, const int8_t* xq, int64_t cols, const float* xd,
            const int32_t* xbias, float* y, int64_t y_stride) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_block<T>(w + b, sizeof(typename F::Block));
    __m512i q[8];
    F::codes(w[b], q);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].d)));
#pragma GCC unroll 8  // keeps acc[] in registers
    for (int t = 0; t < T; ++t) {
      const int8_t* xb = xq + t * cols + kQK * b;
      __m512i s = _mm512_set1_epi32(xbias[t * nb + b]);
      for (int k = 0; k < 8; ++k) s = _mm512_dpbusd_epi32(s, q[k], broadcast4(xb + 4 * k));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(xd[t * nb + b])), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(y + t * y_stride, acc[t]);
}

// Q4_1 in llama.cpp's arithmetic, bit for bit (ggml_vec_dot_q4_1_q8_1; the spec is
// ref::matmul_q4_1_as_ggml, the row-major version matmul_avx512.cpp gemm_q4_1_as_ggml). ggml keeps
// per row 8 f32 lanes, lane j fed per block with the exact int32 sum of elements 4j..4j+3 (j < 4)
// or 16+4(j-4).. (j >= 4): acc_j = fma(d_w * d_x, float(sum_j), acc_j); then hsum_float_8's
// ((0+4) + (2+6)) + ((1+5) + (3+7)) plus summs = the fma chain of m_w * s_x. BlockQ4_1x16's code
// vector k holds exactly lane k's codes (low nibbles) and lane k + 4's (high nibbles) of 16 rows,
// so one vpdpbusd from zero gives lane k's sums of all 16 rows, and acc[t][j] carries lane j's
// chain for 16 rows: per block and token 8 vpdpbusd + 8 converts + 8 FMAs + 1 multiply + 1 FMA,
// and the final hsum is 7 vertical adds. T <= 2 (18 accumulators + codes fill the 32 registers).
constexpr int kMaxTokensQ4_1 = 2;

template <int T>
void tile_q4_1(const BlockQ4_1x16* w, int64_t nb, const int8_t* xq, int64_t cols, const float* xd,
               const float* xs, float* y, int64_t y_stride) {
  static_assert(T <= kMaxTokensQ4_1);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 acc[T][8], summs[T];
  for (int t = 0; t < T; ++t) {
    summs[t] = _mm512_setzero_ps();
    for (int j = 0; j < 8; ++j) acc[t][j] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_block<T>(w + b, sizeof(BlockQ4_1x16));
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].d)));
    const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].m)));
    __m512 scale[T];  // d_w * d_x
    for (int t = 0; t < T; ++t) {
      scale[t] = _mm512_mul_ps(dw, _mm512_set1_ps(xd[t * nb + b]));
      summs[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xs[t * nb + b]), summs[t]);
    }
#pragma GCC unroll 4  // keeps acc[][] in registers
    for (int k = 0; k < 4; ++k) {
      const __m512i raw = _mm512_loadu_si512(w[b].qs + 64 * k);
      const __m512i lo = _mm512_and_si512(raw, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
#pragma GCC unroll 2
      for (int t = 0; t < T; ++t) {
        const int8_t* xb = xq + t * cols + kQK * b;
        const __m512i sum_lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, broadcast4(xb + 4 * k));
        const __m512i sum_hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, broadcast4(xb + 16 + 4 * k));
        acc[t][k] = _mm512_fmadd_ps(scale[t], _mm512_cvtepi32_ps(sum_lo), acc[t][k]);
        acc[t][k + 4] = _mm512_fmadd_ps(scale[t], _mm512_cvtepi32_ps(sum_hi), acc[t][k + 4]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    const __m512* a = acc[t];
    const __m512 h = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[2], a[6])),
                                   _mm512_add_ps(_mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[3], a[7])));
    _mm512_storeu_ps(y + t * y_stride, _mm512_add_ps(h, summs[t]));
  }
}

struct IQ4_1 {
  using Block = BlockQ4_1x16;
  static constexpr int kOffset = 0;
  static constexpr bool kHasMin = true;
};

// --- Q4_K (super-blocks of 256, activations Q8_K) -------------------------------------------------

// Chunk c (elements 64c .. 64c+63: sub-blocks 2c and 2c+1) of the 16 rows: vector 8c + v holds
// codes 4v.. of sub-block 2c in its low nibbles and of sub-block 2c+1 in its high nibbles; each is
// loaded once and feeds two independent sums per token.
template <int T>
inline void chunk_k4(const BlockQ4_Kx16& w, int c, const int8_t* xq, int64_t cols, const __m512 dsc_lo,
                     const __m512 dsc_hi, const float* dx, int64_t dx_stride, __m512* acc) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512i lo_sum[T], hi_sum[T];
  for (int t = 0; t < T; ++t) lo_sum[t] = hi_sum[t] = _mm512_setzero_si512();
  for (int v = 0; v < 8; ++v) {
    const __m512i raw = _mm512_loadu_si512(w.qs + 64 * (8 * c + v));
    const __m512i lo = _mm512_and_si512(raw, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
#pragma GCC unroll 8  // keeps the sums in registers
    for (int t = 0; t < T; ++t) {
      const int8_t* xb = xq + t * cols + 64 * c + 4 * v;
      lo_sum[t] = _mm512_dpbusd_epi32(lo_sum[t], lo, broadcast4(xb));
      hi_sum[t] = _mm512_dpbusd_epi32(hi_sum[t], hi, broadcast4(xb + 32));
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    const __m512 d = _mm512_set1_ps(dx[t * dx_stride]);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo_sum[t]), _mm512_mul_ps(dsc_lo, d), acc[t]);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi_sum[t]), _mm512_mul_ps(dsc_hi, d), acc[t]);
  }
}

// 16 rows x T tokens over nsb super-blocks: y = sum_j d * sc_j * dx * (q . xq)_j
//                                              - dmin * dx * sum_j m_j * (sum of xq over j).
template <int T>
void tile_k4(const BlockQ4_Kx16* w, int64_t nsb, const int8_t* xq, int64_t cols, const float* xd,
             const int32_t* xpairs, float* y, int64_t y_stride) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const BlockQ4_Kx16& b = w[sb];
    prefetch_block<T>(&b, sizeof(BlockQ4_Kx16));
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.d)));
    const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.dmin)));
    __m512i mins[4];  // int16 pairs (m_2p, m_2p+1) per row
    for (int p = 0; p < 4; ++p)
      mins[p] = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.mins + 32 * p)));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      __m512i m = _mm512_setzero_si512();
      for (int p = 0; p < 4; ++p) m = _mm512_dpwssd_epi32(m, mins[p], _mm512_set1_epi32(xpairs[(t * nsb + sb) * 4 + p]));
      acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmin, _mm512_set1_ps(xd[t * nsb + sb])), acc[t]);
    }
    const int8_t* xsb = xq + kQKK * sb;
    for (int c = 0; c < 4; ++c) {
      const auto scales = [&](int j) {  // d * sc_j for the 16 rows
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales + kR * j));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc)), d);
      };
      chunk_k4<T>(b, c, xsb, cols, scales(2 * c), scales(2 * c + 1), xd + sb, nsb, acc);
    }
  }
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(y + t * y_stride, acc[t]);
}

// --- Driver ----------------------------------------------------------------------------------------

// Calls fn.template operator()<T>() for T in 1..kMax (kMax for any larger T).
template <int kMax, class Fn>
void with_tokens(int T, Fn&& fn) {
  if constexpr (kMax > 1)
    if (T < kMax) return with_tokens<kMax - 1>(T, fn);
  fn.template operator()<kMax>();
}

// Runs tile(group, t0, T) over all 16-row groups and token tiles of at most max_tokens: groups
// split into parallel slabs (for prefill, a slab's weights, <= 256 KiB, stay in L2 while every
// token tile streams over them); token tiles as even as possible (9 tokens: 5 + 4, not 8 + 1).
template <class Tile>
void for_group_tiles(int64_t groups, size_t group_bytes, int64_t n_tokens, int max_tokens, ThreadPool& pool,
                     Tile&& tile) {
  if (n_tokens <= 0) return;
  if (n_tokens <= max_tokens) {
    // One pass over the weights (decode, small batches): slabs shrink as the groups run out, each
    // 1 / (2 * threads) of what is left and at least one group (guided scheduling), so the threads
    // finish within one small slab of each other while the first slabs stay long prefetched runs.
    std::vector<int64_t> slab_ends;
    for (int64_t begin = 0; begin < groups;) {
      begin += std::max<int64_t>(1, (groups - begin) / (2 * pool.size()));
      slab_ends.push_back(begin);
    }
    pool.parallel_for(static_cast<int64_t>(slab_ends.size()), [&](int64_t task, int) {
      for (int64_t g = task == 0 ? 0 : slab_ends[task - 1]; g < slab_ends[task]; ++g)
        tile(g, 0, static_cast<int>(n_tokens));
    });
    return;
  }
  int64_t slab = std::max<int64_t>(1, (groups + 8 * pool.size() - 1) / (8 * pool.size()));
  slab = std::clamp<int64_t>(static_cast<int64_t>((256 * 1024) / group_bytes), 1, slab);
  const int64_t n_tiles = (n_tokens + max_tokens - 1) / max_tokens;
  pool.parallel_for((groups + slab - 1) / slab, [&](int64_t task, int) {
    const int64_t g_begin = task * slab, g_end = std::min(groups, g_begin + slab);
    for (int64_t i = 0, t0 = 0; i < n_tiles; ++i) {
      const int T = static_cast<int>((n_tokens - t0) / (n_tiles - i));
      for (int64_t g = g_begin; g < g_end; ++g) tile(g, t0, T);
      t0 += T;
    }
  });
}

template <class F>
void matmul32(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols(), nb = cols / kQK;
  const size_t qs_bytes = static_cast<size_t>(round_up(n_tokens * cols, 64));
  const size_t d_bytes = static_cast<size_t>(round_up(n_tokens * nb * 4, 64));
  uint8_t* mem = activation_scratch().get(qs_bytes + 2 * d_bytes);
  auto* xq = reinterpret_cast<int8_t*>(mem);
  auto* xd = reinterpret_cast<float*>(mem + qs_bytes);
  // Per block: the offset correction (tile32), or block_q8_1's s (Q4_1's min term).
  auto* xbias = reinterpret_cast<int32_t*>(mem + qs_bytes + d_bytes);
  auto* xs = reinterpret_cast<float*>(mem + qs_bytes + d_bytes);
  pool.parallel_for(n_tokens, [&](int64_t t, int) {
    quantize_act32(x + t * cols, cols, F::kOffset, xq + t * cols, xd + t * nb, F::kHasMin ? nullptr : xbias + t * nb,
                   F::kHasMin ? xs + t * nb : nullptr);
  });
  const auto* blocks = static_cast<const typename F::Block*>(w.data);
  constexpr int kTileTokens = F::kHasMin ? kMaxTokensQ4_1 : kMaxTokens;
  for_group_tiles(rows / kR, kR * w.row_bytes(), n_tokens, kTileTokens, pool, [&](int64_t g, int64_t t0, int T) {
    with_tokens<kTileTokens>(T, [&]<int kT>() {
      const int8_t* q = xq + t0 * cols;
      float* out = y + t0 * rows + g * kR;
      if constexpr (F::kHasMin) tile_q4_1<kT>(blocks + g * nb, nb, q, cols, xd + t0 * nb, xs + t0 * nb, out, rows);
      else tile32<F, kT>(blocks + g * nb, nb, q, cols, xd + t0 * nb, xbias + t0 * nb, out, rows);
    });
  });
}

void matmul_k4(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols(), nsb = cols / kQKK;
  const size_t qs_bytes = static_cast<size_t>(round_up(n_tokens * cols, 64));
  const size_t d_bytes = static_cast<size_t>(round_up(n_tokens * nsb * 4, 64));
  uint8_t* mem = activation_scratch().get(qs_bytes + 5 * d_bytes);
  auto* xq = reinterpret_cast<int8_t*>(mem);
  auto* xd = reinterpret_cast<float*>(mem + qs_bytes);
  auto* xpairs = reinterpret_cast<int32_t*>(mem + qs_bytes + d_bytes);
  pool.parallel_for(n_tokens, [&](int64_t t, int) {
    quantize_act256_pairs(x + t * cols, cols, xq + t * cols, xd + t * nsb, xpairs + t * nsb * 4);
  });
  const auto* blocks = static_cast<const BlockQ4_Kx16*>(w.data);
  for_group_tiles(rows / kR, kR * w.row_bytes(), n_tokens, kMaxTokens, pool, [&](int64_t g, int64_t t0, int T) {
    with_tokens<kMaxTokens>(T, [&]<int kT>() {
      tile_k4<kT>(blocks + g * nsb, nsb, xq + t0 * cols, cols, xd + t0 * nsb, xpairs + t0 * nsb * 4, y + t0 * rows + g * kR, rows);
    });
  });
}

}  // namespace

void matmul_interleaved(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  switch (w.dtype) {
    case DType::Q8_0x16: return matmul32<IQ8_0>(w, x, n_tokens, y, pool);
    case DType::Q4_0x16: return matmul32<IQ4_0>(w, x, n_tokens, y, pool);
    case DType::Q5_0x16: return matmul32<IQ5_0>(w, x, n_tokens, y, pool);
    case DType::Q4_Kx16: return matmul_k4(w, x, n_tokens, y, pool);
    case DType::Q4_1x16: return matmul32<IQ4_1>(w, x, n_tokens, y, pool);
    default: return;  // dispatch only routes the interleaved types here
  }
}

}  // namespace sputnik::avx512
