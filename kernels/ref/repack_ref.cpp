#include <cstring>

#include "kernels/quant_blocks.h"
#include "kernels/ref/repack.h"

namespace sputnik::ref {
namespace {

constexpr int kR = kInterleaveRows;

// qs[(k * 16 + r) * 4 + i] = row r's byte 4k + i (of n_bytes), each byte xor `flip`. Moves 4 bytes
// at a time: loading takes seconds per GB otherwise.
void interleave_codes(const uint8_t* const* row_qs, int n_bytes, uint8_t flip, uint8_t* qs) {
  const uint32_t flip4 = flip * 0x01010101u;
  for (int k = 0; k < n_bytes / 4; ++k)
    for (int r = 0; r < kR; ++r) {
      uint32_t v;
      std::memcpy(&v, row_qs[r] + 4 * k, 4);
      v ^= flip4;
      std::memcpy(qs + (k * kR + r) * 4, &v, 4);
    }
}

// Row r's byte j of the interleaved codes.
uint8_t code_byte(const uint8_t* qs, int r, int j) { return qs[((j / 4) * kR + r) * 4 + j % 4]; }

// Q5_0's fifth bits (bit j of qh = element j) regrouped by code byte (BlockQ5_0x16): byte i gets
// elements 4k + i at bit k and 16 + 4k + i at bit 4 + k, for k < 4.
void regroup_fifth_bits(uint32_t qh, uint8_t out[4]) {
  for (int i = 0; i < 4; ++i) {
    uint8_t byte = 0;
    for (int k = 0; k < 4; ++k) {
      byte |= static_cast<uint8_t>(((qh >> (4 * k + i)) & 1) << k);
      byte |= static_cast<uint8_t>(((qh >> (16 + 4 * k + i)) & 1) << (4 + k));
    }
    out[i] = byte;
  }
}

// Element j's fifth bit (0 or 1) of row r in a BlockQ5_0x16's qh: the inverse of regroup_fifth_bits.
int fifth_bit(const uint8_t* qh, int r, int j) {
  const int high = j / 16, k = (j % 16) / 4, i = j % 4;
  return (qh[r * 4 + i] >> (4 * high + k)) & 1;
}

}  // namespace

DType interleaved_type(DType plain) {
  switch (plain) {
    case DType::Q8_0: return DType::Q8_0x16;
    case DType::Q4_0: return DType::Q4_0x16;
    case DType::Q4_K: return DType::Q4_Kx16;
    case DType::Q5_0: return DType::Q5_0x16;
    case DType::Q4_1: return DType::Q4_1x16;
    default: return DType::Count;
  }
}

DType plain_type(DType interleaved) {
  switch (interleaved) {
    case DType::Q8_0x16: return DType::Q8_0;
    case DType::Q4_0x16: return DType::Q4_0;
    case DType::Q4_Kx16: return DType::Q4_K;
    case DType::Q5_0x16: return DType::Q5_0;
    case DType::Q4_1x16: return DType::Q4_1;
    default: return DType::Count;
  }
}

void repack_interleaved(DType plain, const void* src, int64_t rows, int64_t cols, void* dst) {
  const size_t row_bytes = dtype_row_bytes(plain, cols);
  const int64_t nb = cols / dtype_traits(plain).block_elements;
  const auto* in = static_cast<const uint8_t*>(src);
  for (int64_t g = 0; g < rows / kR; ++g) {
    const uint8_t* group = in + g * kR * row_bytes;
    for (int64_t b = 0; b < nb; ++b) {
      if (plain == DType::Q8_0) {
        auto* o = static_cast<BlockQ8_0x16*>(dst) + g * nb + b;
        const uint8_t* qs[kR];
        for (int r = 0; r < kR; ++r) {
          const auto* blk = reinterpret_cast<const BlockQ8_0*>(group + r * row_bytes) + b;
          o->d[r] = blk->d;
          qs[r] = reinterpret_cast<const uint8_t*>(blk->qs);
        }
        interleave_codes(qs, kQK, 0x80, o->qs);  // signed code -> code + 128
      } else if (plain == DType::Q4_0) {
        auto* o = static_cast<BlockQ4_0x16*>(dst) + g * nb + b;
        const uint8_t* qs[kR];
        for (int r = 0; r < kR; ++r) {
          const auto* blk = reinterpret_cast<const BlockQ4_0*>(group + r * row_bytes) + b;
          o->d[r] = blk->d;
          qs[r] = blk->qs;
        }
        interleave_codes(qs, kQK / 2, 0, o->qs);
      } else if (plain == DType::Q4_1) {
        auto* o = static_cast<BlockQ4_1x16*>(dst) + g * nb + b;
        const uint8_t* qs[kR];
        for (int r = 0; r < kR; ++r) {
          const auto* blk = reinterpret_cast<const BlockQ4_1*>(group + r * row_bytes) + b;
          o->d[r] = blk->d;
          o->m[r] = blk->m;
          qs[r] = blk->qs;
        }
        interleave_codes(qs, kQK / 2, 0, o->qs);
      } else if (plain == DType::Q5_0) {
        auto* o = static_cast<BlockQ5_0x16*>(dst) + g * nb + b;
        const uint8_t* qs[kR];
        for (int r = 0; r < kR; ++r) {
          const auto* blk = reinterpret_cast<const BlockQ5_0*>(group + r * row_bytes) + b;
          o->d[r] = blk->d;
          uint32_t qh;
          std::memcpy(&qh, blk->qh, 4);
          regroup_fifth_bits(qh, o->qh + 4 * r);
          qs[r] = blk->qs;
        }
        interleave_codes(qs, kQK / 2, 0, o->qs);
      } else {  // Q4_K
        auto* o = static_cast<BlockQ4_Kx16*>(dst) + g * nb + b;
        const uint8_t* qs[kR];
        for (int r = 0; r < kR; ++r) {
          const auto* blk = reinterpret_cast<const BlockQ4_K*>(group + r * row_bytes) + b;
          o->d[r] = blk->d;
          o->dmin[r] = blk->dmin;
          for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            unpack_scale_min_k4(j, blk->scales, &sc, &m);
            o->scales[j * kR + r] = sc;
            o->mins[(j / 2) * 2 * kR + r * 2 + j % 2] = m;
          }
          qs[r] = blk->qs;
        }
        interleave_codes(qs, kQKK / 2, 0, o->qs);
      }
    }
  }
}

void dequantize_interleaved_row(DType type, const void* data, int64_t r, int64_t cols, float* dst) {
  const int64_t nb = cols / dtype_traits(type).block_elements;
  const int lane = static_cast<int>(r % kR);
  const int64_t first = (r / kR) * nb;  // the row's group's first block
  if (type == DType::Q8_0x16) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ8_0x16& blk = static_cast<const BlockQ8_0x16*>(data)[first + b];
      const float d = fp16_to_f32(blk.d[lane]);
      for (int j = 0; j < kQK; ++j) dst[kQK * b + j] = d * static_cast<float>(code_byte(blk.qs, lane, j) - 128);
    }
  } else if (type == DType::Q4_0x16) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ4_0x16& blk = static_cast<const BlockQ4_0x16*>(data)[first + b];
      const float d = fp16_to_f32(blk.d[lane]);
      for (int j = 0; j < kQK / 2; ++j) {
        const uint8_t q = code_byte(blk.qs, lane, j);
        dst[kQK * b + j] = d * static_cast<float>((q & 15) - 8);
        dst[kQK * b + j + 16] = d * static_cast<float>((q >> 4) - 8);
      }
    }
  } else if (type == DType::Q4_1x16) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ4_1x16& blk = static_cast<const BlockQ4_1x16*>(data)[first + b];
      const float d = fp16_to_f32(blk.d[lane]), m = fp16_to_f32(blk.m[lane]);
      for (int j = 0; j < kQK / 2; ++j) {
        const uint8_t q = code_byte(blk.qs, lane, j);
        // Same arithmetic as dequant_q4_1: q * d + m.
        dst[kQK * b + j] = static_cast<float>(q & 15) * d + m;
        dst[kQK * b + j + 16] = static_cast<float>(q >> 4) * d + m;
      }
    }
  } else if (type == DType::Q5_0x16) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ5_0x16& blk = static_cast<const BlockQ5_0x16*>(data)[first + b];
      const float d = fp16_to_f32(blk.d[lane]);
      for (int j = 0; j < kQK / 2; ++j) {
        const uint8_t q = code_byte(blk.qs, lane, j);
        // Same arithmetic as dequant_q5_0: ((nibble | fifth bit << 4) - 16) * d.
        dst[kQK * b + j] = static_cast<float>(((q & 15) | fifth_bit(blk.qh, lane, j) << 4) - 16) * d;
        dst[kQK * b + j + 16] = static_cast<float>(((q >> 4) | fifth_bit(blk.qh, lane, j + 16) << 4) - 16) * d;
      }
    }
  } else if (type == DType::Q4_Kx16) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ4_Kx16& blk = static_cast<const BlockQ4_Kx16*>(data)[first + b];
      const float d = fp16_to_f32(blk.d[lane]), dmin = fp16_to_f32(blk.dmin[lane]);
      float* y = dst + kQKK * b;
      for (int c = 0; c < 4; ++c) {
        // Same arithmetic as dequant_q4_K (d * sc, dmin * m, then one multiply-subtract).
        const int j0 = 2 * c, j1 = 2 * c + 1;
        const float d0 = d * blk.scales[j0 * kR + lane], m0 = dmin * blk.mins[(j0 / 2) * 2 * kR + lane * 2];
        const float d1 = d * blk.scales[j1 * kR + lane], m1 = dmin * blk.mins[(j1 / 2) * 2 * kR + lane * 2 + 1];
        for (int l = 0; l < 32; ++l) {
          const uint8_t q = code_byte(blk.qs, lane, 32 * c + l);
          y[64 * c + l] = d0 * static_cast<float>(q & 15) - m0;
          y[64 * c + 32 + l] = d1 * static_cast<float>(q >> 4) - m1;
        }
      }
    }
  } else {
    for (int64_t c = 0; c < cols; ++c) dst[c] = 0.0f;  // unreachable: callers check the type
  }
}

}  // namespace sputnik::ref
