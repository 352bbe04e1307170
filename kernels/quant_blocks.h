// Byte layouts of the ggml block-quantised formats, and the scalar fp16 / bf16 / fp8 conversions.
// This header owns the layouts: every kernel (ref/, x86/) reads blocks through these structs.
// Layouts follow ggml (ggml-common.h) as documented by gguf-py's gguf/quants.py; element order
// inside a block is spelled out beside each struct because the SIMD kernels depend on it.
#pragma once

#include <cstdint>
#include <cstring>

namespace sputnik {

constexpr int kQK = 32;    // elements per block of the "legacy" formats Q4_0 ... Q8_0
constexpr int kQKK = 256;  // elements per super-block of the K-quants
constexpr int kKScaleSize = 12;

// x[i] = d * qs[i]
struct BlockQ8_0 {
  uint16_t d;  // fp16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

// x[j] = d * ((qs[j] & 15) - 8), x[j + 16] = d * ((qs[j] >> 4) - 8), j < 16
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// x[j] = d * (qs[j] & 15) + m, x[j + 16] = d * (qs[j] >> 4) + m
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// As Q4_0 with a fifth bit: bit j of the little-endian uint32 qh is bit 4 of element j; offset 16.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

// As Q4_1 with the fifth bit of Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// Super-block of 8 sub-blocks of 32. Sub-block s has a 6-bit scale sc[s] and 6-bit min m[s]
// packed in `scales` (see unpack_scale_min_k4); x = d * sc[s] * q - dmin * m[s], q in 0..15.
// qs: for chunk c < 4 (64 elements), 32 bytes; low nibbles are elements 64c + 0..31 (sub-block
// 2c), high nibbles are elements 64c + 32..63 (sub-block 2c + 1).
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// Q4_K plus a fifth bit: bit s of qh[l] is bit 4 of element 32 s + l.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// 16 sub-blocks of 16 with int8 scales; x = d * scales[s] * (q - 32), q in 0..63.
// For half h < 2 (128 elements; ql += 64 h, qh += 32 h) and l < 32:
//   element   0 + l: ql[l] & 15      | ((qh[l] >> 0) & 3) << 4, scale 8h + l/16 + 0
//   element  32 + l: ql[l + 32] & 15 | ((qh[l] >> 2) & 3) << 4, scale 8h + l/16 + 2
//   element  64 + l: ql[l] >> 4      | ((qh[l] >> 4) & 3) << 4, scale 8h + l/16 + 4
//   element  96 + l: ql[l + 32] >> 4 | ((qh[l] >> 6) & 3) << 4, scale 8h + l/16 + 6
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// Activation format of the K-quant dot products: x = d * qs, bsums[i] = sum of qs[16 i .. 16 i + 15].
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};
static_assert(sizeof(BlockQ8_K) == 292);

// --- Interleaved layouts (repacked at load for the AVX-512 matmul; DType::*x16) ---------------
// One "group block" holds the same block of 16 consecutive rows. Codes are interleaved 4 bytes at a
// time: qs[(k * 16 + r) * 4 + i] = byte 4k + i of row r's block, so one 64-byte vector holds 4
// consecutive code bytes of each of the 16 rows, which is what vpdpbusd multiplies by 4
// activation codes broadcast to every lane. The 16 rows' scales are contiguous: one vcvtph2ps
// converts them all. A row's blocks are not contiguous any more; a group's are (group block b of
// rows 16g..16g+15 sits at g * n_blocks + b), so a 16-row slice is one contiguous range.
constexpr int kInterleaveRows = 16;

// Q8_0 x 16 rows: d[r]; qs holds code + 128 (as unsigned: what vpdpbusd's u8 operand wants; the
// kernel subtracts 128 * sum of the activation codes), interleaved as above (k < 8).
struct BlockQ8_0x16 {
  uint16_t d[kInterleaveRows];
  uint8_t qs[kInterleaveRows * kQK];
};
static_assert(sizeof(BlockQ8_0x16) == kInterleaveRows * sizeof(BlockQ8_0));

// Q4_0 x 16 rows: d[r]; qs = Q4_0's qs bytes interleaved (k < 4): vector k's low nibbles are
// elements 4k..4k+3 of each row, its high nibbles elements 16+4k..16+4k+3.
struct BlockQ4_0x16 {
  uint16_t d[kInterleaveRows];
  uint8_t qs[kInterleaveRows * kQK / 2];
};
static_assert(sizeof(BlockQ4_0x16) == kInterleaveRows * sizeof(BlockQ4_0));

// Q5_0 x 16 rows: d[r]; qs = the low nibbles as in BlockQ4_0x16; qh[r * 4 + i] = the fifth bits of
// row r that the bytes i of the 4 code vectors need: bit k = element 4k + i (low nibble of vector
// k), bit 4 + k = element 16 + 4k + i (its high nibble). So the 64 qh bytes are one vector whose
// lanes line up with the code vectors' lanes, and one shift brings each element's bit to bit 4
// of its byte (left by 4 - k for vector k's low nibbles, right by k for its high ones).
// Same 22 bytes per row as Q5_0.
struct BlockQ5_0x16 {
  uint16_t d[kInterleaveRows];
  uint8_t qh[kInterleaveRows * 4];
  uint8_t qs[kInterleaveRows * kQK / 2];
};
static_assert(sizeof(BlockQ5_0x16) == kInterleaveRows * sizeof(BlockQ5_0));

// Q4_1 x 16 rows: d[r], m[r]; qs as in BlockQ4_0x16. That is also the grouping of ggml's Q4_1 dot
// product (ggml_vec_dot_q4_1_q8_1: 8 int32 lanes, lane j < 4 = elements 4j..4j+3, lane j + 4 =
// elements 16+4j..16+4j+3): code vector k's low nibbles give lane k of all 16 rows in one
// vpdpbusd, its high nibbles lane k + 4, so the kernel keeps ggml's per-lane float chains exactly.
struct BlockQ4_1x16 {
  uint16_t d[kInterleaveRows];
  uint16_t m[kInterleaveRows];
  uint8_t qs[kInterleaveRows * kQK / 2];
};
static_assert(sizeof(BlockQ4_1x16) == kInterleaveRows * sizeof(BlockQ4_1));

// Q4_K x 16 rows: d[r], dmin[r]; scales[j * 16 + r] = 6-bit scale of sub-block j of row r;
// mins[p * 32 + r * 2 + h] = 6-bit min of sub-block 2p + h of row r (pairs, so a widening to
// int16 gives vpdpwssd's operand); qs = Q4_K's qs bytes interleaved (k < 32): vector 8c + v's low
// nibbles are elements 32(2c) + 4v..+3 (sub-block 2c), its high nibbles those of sub-block 2c + 1.
// 148 bytes per row instead of 144: the unpacked scales and mins.
struct BlockQ4_Kx16 {
  uint16_t d[kInterleaveRows];
  uint16_t dmin[kInterleaveRows];
  uint8_t scales[8 * kInterleaveRows];
  uint8_t mins[8 * kInterleaveRows];
  uint8_t qs[kInterleaveRows * kQKK / 2];
};
static_assert(sizeof(BlockQ4_Kx16) == kInterleaveRows * 148);

// Sub-block j's 6-bit scale and min of Q4_K / Q5_K (ggml's get_scale_min_k4).
// Bytes 0-3: scales 0-3 (low 6 bits) + top 2 bits of scales 4-7; bytes 4-7: mins 0-3 likewise;
// bytes 8-11: low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high nibble).
inline void unpack_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// --- Scalar conversions -------------------------------------------------------------------------

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// IEEE binary16 -> binary32, exact (subnormals, inf and NaN included).
inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0x1F) return bits_to_f32(sign | 0x7F800000 | (mant << 13));
  if (exp == 0) {
    // Subnormal (or zero): mant * 2^-24, exact in f32.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

// binary32 -> binary16, round to nearest even (what F16C's vcvtps2ph and numpy do).
inline uint16_t f32_to_fp16(float f) {
  const uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t ax = x & 0x7FFFFFFF;
  if (ax > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00 | ((ax >> 13) & 0x3FF));  // NaN
  if (ax >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // rounds to >= 65520: inf
  if (ax < 0x38800000) {
    // Result is subnormal in fp16 (|f| < 2^-14): round |f| / 2^-24 to an integer, ties to even.
    if (ax < 0x33000000) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7FFFFF) | 0x800000;
    const uint32_t shift = 126 - e;  // value = m * 2^(e-150); in units of 2^-24: m >> (126 - e)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t r = ax - ((127 - 15) << 23);
  r += 0xFFF + ((r >> 13) & 1);
  return static_cast<uint16_t>(sign | (r >> 13));
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays a quiet NaN (ggml_compute_fp32_to_bf16).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((u >> 16) | 64);
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

// float8_e4m3fn (OCP FP8, as in DeepSeek-V3 checkpoints): 1 sign, 4 exponent bits (bias 7),
// 3 mantissa bits; no infinities; S.1111.111 is NaN; largest finite 448.
inline float fp8_e4m3_to_f32(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80) << 24;
  const uint32_t exp = (v >> 3) & 0xF;
  const uint32_t mant = v & 7;
  if (exp == 0xF && mant == 7) return bits_to_f32(sign | 0x7FC00000);
  if (exp == 0) {
    const float r = static_cast<float>(mant) * 0.001953125f;  // mant * 2^-9
    return sign ? -r : r;
  }
  return bits_to_f32(sign | ((exp + 120) << 23) | (mant << 20));
}

}  // namespace sputnik
