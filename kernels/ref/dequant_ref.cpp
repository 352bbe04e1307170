// Scalar dequantisation, bit-exact with ggml's dequantize_row_* and gguf-py's dequantize_blocks:
// each element is computed with the same float operations in the same order (d * sc first, then
// times q, minus dmin * m), so the results match to the bit (tests/dequant_test.cpp checks it).
#include <cstring>

#include "kernels/quant_blocks.h"
#include "kernels/ref/repack.h"
#include "kernels/ref/ref.h"

namespace sputnik::ref {
namespace {

void dequant_q8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(b[i].d);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = static_cast<float>(b[i].qs[j]) * d;
  }
}

void dequant_q4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(b[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[i * kQK + j] = static_cast<float>((b[i].qs[j] & 0xF) - 8) * d;
      y[i * kQK + j + 16] = static_cast<float>((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[i * kQK + j] = static_cast<float>(b[i].qs[j] & 0xF) * d + m;
      y[i * kQK + j + 16] = static_cast<float>(b[i].qs[j] >> 4) * d + m;
    }
  }
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void dequant_q5_0(const BlockQ5_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
      y[i * kQK + j] = static_cast<float>(((b[i].qs[j] & 0xF) | h0) - 16) * d;
      y[i * kQK + j + 16] = static_cast<float>(((b[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void dequant_q5_1(const BlockQ5_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
      y[i * kQK + j] = static_cast<float>((b[i].qs[j] & 0xF) | h0) * d + m;
      y[i * kQK + j + 16] = static_cast<float>((b[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

void dequant_q4_K(const BlockQ4_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      uint8_t sc, m;
      unpack_scale_min_k4(2 * c, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      unpack_scale_min_k4(2 * c + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      const uint8_t* q = b[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) y[64 * c + l] = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) y[64 * c + 32 + l] = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void dequant_q5_K(const BlockQ5_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    const float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c) {
      uint8_t sc, m;
      unpack_scale_min_k4(2 * c, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      unpack_scale_min_k4(2 * c + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      const uint8_t* q = b[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        const int h1 = ((b[i].qh[l] >> (2 * c)) & 1) << 4;
        const int h2 = ((b[i].qh[l] >> (2 * c + 1)) & 1) << 4;
        y[64 * c + l] = d1 * static_cast<float>((q[l] & 0xF) | h1) - m1;
        y[64 * c + 32 + l] = d2 * static_cast<float>((q[l] >> 4) | h2) - m2;
      }
    }
  }
}

void dequant_q6_K(const BlockQ6_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_f32(b[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

void dequant_q8_K(const BlockQ8_K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i)
    for (int j = 0; j < kQKK; ++j) y[i * kQKK + j] = b[i].d * static_cast<float>(b[i].qs[j]);
}

}  // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = fp16_to_f32(h);
      }
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::F8_E4M3:  // no block scale here: see dequantize_weight_row
      for (int64_t i = 0; i < n; ++i) dst[i] = fp8_e4m3_to_f32(p[i]);
      return;
    case DType::Q8_0: dequant_q8_0(static_cast<const BlockQ8_0*>(src), dst, n / kQK); return;
    case DType::Q4_0: dequant_q4_0(static_cast<const BlockQ4_0*>(src), dst, n / kQK); return;
    case DType::Q4_1: dequant_q4_1(static_cast<const BlockQ4_1*>(src), dst, n / kQK); return;
    case DType::Q5_0: dequant_q5_0(static_cast<const BlockQ5_0*>(src), dst, n / kQK); return;
    case DType::Q5_1: dequant_q5_1(static_cast<const BlockQ5_1*>(src), dst, n / kQK); return;
    case DType::Q4_K: dequant_q4_K(static_cast<const BlockQ4_K*>(src), dst, n / kQKK); return;
    case DType::Q5_K: dequant_q5_K(static_cast<const BlockQ5_K*>(src), dst, n / kQKK); return;
    case DType::Q6_K: dequant_q6_K(static_cast<const BlockQ6_K*>(src), dst, n / kQKK); return;
    case DType::Q8_K: dequant_q8_K(static_cast<const BlockQ8_K*>(src), dst, n / kQKK); return;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::I64:
      for (int64_t i = 0; i < n; ++i) {
        int64_t v;
        std::memcpy(&v, p + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(p[i]));
      return;
    case DType::Q8_0x16:
    case DType::Q4_0x16:
    case DType::Q5_0x16:
    case DType::Q4_1x16:
    case DType::Q4_Kx16:  // a row of these needs its index in the group: dequantize_weight_row
    case DType::Count: break;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = 0.0f;  // unreachable for valid types
}

void dequantize_weight_row(const TensorView& w, int64_t r, float* dst) {
  const int64_t n = w.cols();
  if (dtype_row_group(w.dtype) > 1) return dequantize_interleaved_row(w.dtype, w.data, r, n, dst);
  ref::dequantize_row(w.dtype, w.row(r), dst, n);
  if (w.dtype == DType::F8_E4M3 && w.scale != nullptr) {
    // DeepSeek-V3 weight_dequant: weight[r, c] = fp8[r, c] * scale_inv[r / 128, c / 128].
    const int64_t bs = w.scale_block;
    const int64_t n_col_blocks = (n + bs - 1) / bs;
    const float* s = w.scale + (r / bs) * n_col_blocks;
    for (int64_t c = 0; c < n; ++c) dst[c] *= s[c / bs];
  }
}

}  // namespace sputnik::ref
