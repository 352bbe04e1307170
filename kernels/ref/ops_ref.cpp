// Scalar reference matmul and row ops. matmul dequantises one weight row at a time and takes f32
// dot products with every token; it is the spec and the fallback on CPUs without AVX2.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik::ref {

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  const int64_t rows = w.rows(), cols = w.cols();
  constexpr int64_t kRowsPerTask = 16;
  const int64_t n_tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  pool.parallel_for(n_tasks, [&](int64_t task, int) {
    std::vector<float> wrow(static_cast<size_t>(cols));
    const int64_t r_end = std::min(rows, (task + 1) * kRowsPerTask);
    for (int64_t r = task * kRowsPerTask; r < r_end; ++r) {
      ref::dequantize_weight_row(w, r, wrow.data());
      for (int64_t t = 0; t < n_tokens; ++t) y[t * rows + r] = dot_f32(wrow.data(), x + t * cols, cols);
    }
  });
}

int activation_block(DType weight_type) {
  switch (weight_type) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
    case DType::Q4_0x16:
    case DType::Q5_0x16:
    case DType::Q4_1x16:
    case DType::Q8_0x16: return 32;
    case DType::Q4_Kx16:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return 256;
    default: return 0;
  }
}

void matmul_quantized_activations(const TensorView& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t rows = w.rows(), cols = w.cols();
  const int block = activation_block(w.dtype);
  // Q4_1 / Q5_1: ggml splits w = d_w * q_w + m and takes sum_c m * xq[c] as m * s (block_q8_1.s).
  const bool has_min = w.dtype == DType::Q4_1 || w.dtype == DType::Q5_1;
  const int64_t nb = block ? cols / block : 0;
  std::vector<float> xq(static_cast<size_t>(n_tokens * cols)), xs(static_cast<size_t>(n_tokens * nb));
  if (block == 0) {
    std::copy(x, x + n_tokens * cols, xq.begin());
  } else {
    std::vector<int8_t> qs(static_cast<size_t>(cols));
    std::vector<float> d(static_cast<size_t>(nb));
    for (int64_t t = 0; t < n_tokens; ++t) {
      quantize_activation(x + t * cols, cols, block, qs.data(), d.data(), xs.data() + t * nb);
      for (int64_t c = 0; c < cols; ++c) xq[t * cols + c] = d[c / block] * qs[c];
    }
  }
  const size_t block_bytes = has_min ? w.row_bytes() / static_cast<size_t>(nb) : 0;
  std::vector<uint8_t> row(w.row_bytes());
  std::vector<float> wrow(static_cast<size_t>(cols)), mins(static_cast<size_t>(nb));
  for (int64_t r = 0; r < rows; ++r) {
    if (has_min) {
      // Both block types start with fp16 d then fp16 m: read m, then zero it to dequantise d * q.
      std::copy(w.row(r), w.row(r) + w.row_bytes(), row.begin());
      for (int64_t b = 0; b < nb; ++b) {
        uint16_t m;
        std::memcpy(&m, row.data() + b * block_bytes + 2, 2);
        mins[b] = fp16_to_f32(m);
        std::memset(row.data() + b * block_bytes + 2, 0, 2);
      }
      ref::dequantize_row(w.dtype, row.data(), wrow.data(), cols);
    } else {
      ref::dequantize_weight_row(w, r, wrow.data());
    }
    for (int64_t t = 0; t < n_tokens; ++t) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(wrow[c]) * xq[t * cols + c];
      if (has_min)
        for (int64_t b = 0; b < nb; ++b) acc += static_cast<double>(mins[b]) * xs[t * nb + b];
      y[t * rows + r] = static_cast<float>(acc);
    }
  }
}

// As ggml's rms_norm (ggml-cpu ops.cpp), bit for bit: each square rounded to f32 and added in
// f64, in order; the mean and 1 / sqrt(mean + eps) in f32; y = (x * scale) * weight.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(ss / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0;  // in f64 as ggml's soft_max
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void axpy(float a, const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

float dot_f32(const float* a, const float* b, int64_t n) {
  // Eight partial sums: keeps the scalar fallback from being latency bound and its rounding
  // closer to the SIMD versions'.
  float s[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

}  // namespace sputnik::ref
