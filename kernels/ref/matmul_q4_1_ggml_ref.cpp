// Q4_1 x f32 in llama.cpp's arithmetic (ref.h matmul_q4_1_as_ggml): the spec of the AVX-512
// kernel (kernels/x86/matmul_avx512.cpp gemm_q4_1_as_ggml), which must equal it bit for bit.
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik::ref {

void matmul_q4_1_as_ggml(const TensorView& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t rows = w.rows(), cols = w.cols(), nb = cols / kQK;
  std::vector<int8_t> qs(static_cast<size_t>(cols));
  std::vector<float> d(static_cast<size_t>(nb)), s(static_cast<size_t>(nb));
  for (int64_t t = 0; t < n_tokens; ++t) {
    quantize_activation(x + t * cols, cols, kQK, qs.data(), d.data(), s.data());  // block_q8_1
    for (int64_t r = 0; r < rows; ++r) {
      const auto* blocks = reinterpret_cast<const BlockQ4_1*>(w.row(r));
      float acc[8] = {}, summs = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_1& blk = blocks[b];
        const int8_t* q = qs.data() + b * kQK;
        // Lane j: the int32 sum of elements 4j..4j+3 (low nibbles are elements 0-15, high 16-31).
        int32_t sums[8] = {};
        for (int i = 0; i < kQK / 2; ++i) {
          sums[i / 4] += (blk.qs[i] & 0x0F) * q[i];
          sums[(i + 16) / 4] += (blk.qs[i] >> 4) * q[i + 16];
        }
        const float scale = fp16_to_f32(blk.d) * d[static_cast<size_t>(b)];
        for (int j = 0; j < 8; ++j) acc[j] = std::fma(scale, static_cast<float>(sums[j]), acc[j]);
        summs = std::fma(fp16_to_f32(blk.m), s[static_cast<size_t>(b)], summs);
      }
      // hsum_float_8: upper 128 bits + lower, then lanes (0 + 2) + (1 + 3).
      float h[4];
      for (int j = 0; j < 4; ++j) h[j] = acc[j + 4] + acc[j];
      y[t * rows + r] = ((h[0] + h[2]) + (h[1] + h[3])) + summs;
    }
  }
}

}  // namespace sputnik::ref
