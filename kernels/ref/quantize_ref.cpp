// Scalar quantisation from f32. Q8_0 and Q4_0 follow ggml's quantize_row_q8_0_ref /
// quantize_row_q4_0_ref operation for operation (gguf-py documents the same in numpy), so the
// bytes match. The K-quant quantisers use the same idea as ggml (per sub-block scale/min search
// minimising squared error, then 6- or 8-bit quantised scales) but are our own and not
// byte-identical; their round-trip error is checked in tests/dequant_test.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik::ref {
namespace {

int nearest_int(float v) { return static_cast<int>(std::lround(v)); }

// Fits x[i] ~ scale * q[i] - min over q in [0, nmax] with min >= 0 (the offset of Q4_K/Q5_K).
// Tries a few inverse scales around nmax / (max - min) and keeps the best squared error after
// a least-squares refit of scale and min for the chosen q.
void fit_scale_min(const float* x, int n, int nmax, float* scale, float* the_min) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  if (lo > 0) lo = 0;
  if (hi <= lo) {
    *scale = 0;
    *the_min = -lo;
    return;
  }
  float best_err = INFINITY, best_scale = (hi - lo) / nmax, best_min = -lo;
  for (int step = -10; step <= 10; ++step) {
    const float iscale = (nmax + 0.1f * step) / (hi - lo);
    // q for this trial scale, then least squares for (scale, min): x = scale * q + offset.
    double sq = 0, sx = 0, sqq = 0, sqx = 0;
    int q[kQK];
    for (int i = 0; i < n; ++i) {
      q[i] = std::clamp(nearest_int(iscale * (x[i] - lo)), 0, nmax);
      sq += q[i], sx += x[i], sqq += q[i] * q[i], sqx += q[i] * x[i];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double s = (n * sqx - sq * sx) / det;
    double off = (sx - s * sq) / n;
    if (off > 0) {  // the format needs min >= 0, i.e. offset <= 0: refit scale with offset 0
      off = 0;
      s = sqq > 0 ? sqx / sqq : 0;
    }
    if (s <= 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = s * q[i] + off - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = static_cast<float>(err);
      best_scale = static_cast<float>(s);
      best_min = static_cast<float>(-off);
    }
  }
  *scale = best_scale;
  *the_min = best_min;
}

// Packs 8 six-bit scales and mins into the 12-byte layout unpack_scale_min_k4 reads.
void pack_scale_min_k4(const uint8_t* sc, const uint8_t* m, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): fills d, dmin, scales and q[256] in 0..nmax.
void quantize_k_superblock(const float* x, int nmax, uint16_t* d_out, uint16_t* dmin_out,
                           uint8_t* scales, uint8_t* q) {
  float sc_f[8], mn_f[8];
  float max_sc = 0, max_mn = 0;
  for (int s = 0; s < 8; ++s) {
    fit_scale_min(x + 32 * s, 32, nmax, &sc_f[s], &mn_f[s]);
    max_sc = std::max(max_sc, sc_f[s]);
    max_mn = std::max(max_mn, mn_f[s]);
  }
  const float inv_sc = max_sc > 0 ? 63.f / max_sc : 0.f;
  const float inv_mn = max_mn > 0 ? 63.f / max_mn : 0.f;
  uint8_t sc6[8], mn6[8];
  for (int s = 0; s < 8; ++s) {
    sc6[s] = static_cast<uint8_t>(std::min(63, nearest_int(inv_sc * sc_f[s])));
    mn6[s] = static_cast<uint8_t>(std::min(63, nearest_int(inv_mn * mn_f[s])));
  }
  *d_out = f32_to_fp16(max_sc / 63.f);
  *dmin_out = f32_to_fp16(max_mn / 63.f);
  pack_scale_min_k4(sc6, mn6, scales);
  // Requantise against the scales the decoder will actually see.
  const float d = fp16_to_f32(*d_out), dmin = fp16_to_f32(*dmin_out);
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, m;
    unpack_scale_min_k4(s, scales, &sc, &m);
    const float ds = d * sc, dm = dmin * m;
    for (int i = 0; i < 32; ++i)
      q[32 * s + i] = ds == 0 ? 0 : static_cast<uint8_t>(std::clamp(nearest_int((x[32 * s + i] + dm) / ds), 0, nmax));
  }
}

}  // namespace

void quantize_row_q8_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
  }
}

void quantize_row_q4_0(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    // The signed value of largest magnitude (first one on ties) maps to -8.
    float amax = 0, max = 0;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
    }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q4_K(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    uint8_t q[kQKK];
    quantize_k_superblock(x, 15, &y[i].d, &y[i].dmin, y[i].scales, q);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void quantize_row_q5_K(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ5_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    uint8_t q[kQKK];
    quantize_k_superblock(x, 31, &y[i].d, &y[i].dmin, y[i].scales, q);
    std::memset(y[i].qh, 0, sizeof(y[i].qh));
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int a = q[64 * c + l], b = q[64 * c + 32 + l];
        y[i].qs[32 * c + l] = static_cast<uint8_t>((a & 0xF) | ((b & 0xF) << 4));
        y[i].qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)));
      }
  }
}

void quantize_row_q6_K(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    // Per sub-block of 16: symmetric scale with the largest-magnitude value at -32 (as ggml's
    // make_qx_quants starts), trying a few nearby scales for the least squared error.
    float scale[16];
    float max_abs_scale = 0, max_scale = 0;
    for (int s = 0; s < 16; ++s) {
      const float* xs = x + 16 * s;
      float amax = 0, max = 0;
      for (int j = 0; j < 16; ++j)
        if (amax < std::fabs(xs[j])) amax = std::fabs(xs[j]), max = xs[j];
      float best = 0, best_err = INFINITY;
      if (amax > 0) {
        for (int step = -9; step <= 9; ++step) {
          const float iscale = -(32.f + 0.1f * step) / max;
          double sqx = 0, sqq = 0;
          for (int j = 0; j < 16; ++j) {
            const int q = std::clamp(nearest_int(iscale * xs[j]), -32, 31);
            sqx += q * xs[j], sqq += q * q;
          }
          if (sqq == 0) continue;
          const double sc = sqx / sqq;
          double err = 0;
          for (int j = 0; j < 16; ++j) {
            const int q = std::clamp(nearest_int(iscale * xs[j]), -32, 31);
            err += (sc * q - xs[j]) * (sc * q - xs[j]);
          }
          if (err < best_err) best_err = static_cast<float>(err), best = static_cast<float>(sc);
        }
      }
      scale[s] = best;
      if (max_abs_scale < std::fabs(best)) max_abs_scale = std::fabs(best), max_scale = best;
    }
    uint8_t q[kQKK];
    if (max_abs_scale == 0) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      std::memset(q, 32, sizeof(q));
    } else {
      const float iscale = -128.f / max_scale;
      for (int s = 0; s < 16; ++s)
        y[i].scales[s] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scale[s])));
      y[i].d = f32_to_fp16(1 / iscale);
      const float d = fp16_to_f32(y[i].d);
      for (int s = 0; s < 16; ++s) {
        const float ds = d * y[i].scales[s];
        for (int j = 0; j < 16; ++j)
          q[16 * s + j] = static_cast<uint8_t>(
              ds == 0 ? 32 : std::clamp(nearest_int(x[16 * s + j] / ds), -32, 31) + 32);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* qq = q + 128 * h;
      uint8_t* ql = y[i].ql + 64 * h;
      uint8_t* qh = y[i].qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
                                     ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
      }
    }
  }
}

void quantize_row_q8_K(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    float d;
    quantize_activation(x, kQKK, kQKK, y[i].qs, &d);
    y[i].d = d;
    for (int s = 0; s < 16; ++s) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * s + j];
      y[i].bsums[s] = static_cast<int16_t>(sum);
    }
  }
}

bool quantize_row(DType type, const float* x, void* dst, int64_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  switch (type) {
    case DType::F32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return true;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_fp16(x[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return true;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return true;
    case DType::Q8_0: quantize_row_q8_0(x, dst, n); return true;
    case DType::Q4_0: quantize_row_q4_0(x, dst, n); return true;
    case DType::Q4_K: quantize_row_q4_K(x, dst, n); return true;
    case DType::Q5_K: quantize_row_q5_K(x, dst, n); return true;
    case DType::Q6_K: quantize_row_q6_K(x, dst, n); return true;
    case DType::Q8_K: quantize_row_q8_K(x, dst, n); return true;
    default: return false;
  }
}

void quantize_activation(const float* x, int64_t n, int block, int8_t* qs, float* d, float* s) {
  for (int64_t b = 0; b < n / block; ++b, x += block, qs += block) {
    float amax = 0;
    for (int j = 0; j < block; ++j) amax = std::max(amax, std::fabs(x[j]));
    // ggml x86 quantize_row_q8_0 / q8_1: id = 127 / max (not 1 / d); q_K_ref: iscale = -127 / max
    // (sign-flipped codes and d, the same products), d = 1 / iscale.
    const float id = amax != 0 ? 127.f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < block; ++j) {
      qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
      sum += qs[j];
    }
    if (block == kQK) {
      const float db = amax / 127.f;  // block_q8_0 / block_q8_1 store d and s = d * sum(q) as fp16
      d[b] = fp16_to_f32(f32_to_fp16(db));
      if (s != nullptr) s[b] = fp16_to_f32(f32_to_fp16(db * static_cast<float>(sum)));
    } else {
      d[b] = amax != 0 ? 1.0f / id : 0.0f;  // block_q8_K: f32 d
    }
  }
}

}  // namespace sputnik::ref
