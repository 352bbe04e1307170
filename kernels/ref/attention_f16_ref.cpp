// The f16-cache attention products in llama.cpp's summation order (kernels.h
// attention_scores_f16 / attention_values_f16, and attention_decode_f16 made of them), scalar: every SIMD lane of ggml's accumulators is
// one float here, each lane's update one fused multiply-add (std::fma: exact in any build), and
// the lanes are added in the order of GCC's _mm512_reduce_add_ps. Bit-identical to the AVX-512
// version; the spec it is tested against.
#include <cmath>
#include <cstdint>

#include "core/threads.h"

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik::ref {
namespace {

constexpr int kLanes = 16;  // an AVX-512 f32 register

// _mm512_reduce_add_ps as GCC's avx512fintrin.h computes it: upper 256 bits + lower, upper 128 +
// lower, then lanes (0 + 2) + (1 + 3).
float reduce_add_16(const float* l) {
  float t8[8], t4[4];
  for (int i = 0; i < 8; ++i) t8[i] = l[i + 8] + l[i];
  for (int i = 0; i < 4; ++i) t4[i] = t8[i + 4] + t8[i];
  return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

// One dot product of n elements where element i is a(i) * b(i), in ggml's order:
//  - vec_dot (ggml_vec_dot_f16): 4 accumulators of 16 lanes, 64 elements a step (element i in
//    accumulator (i / 16) % 4, lane i % 16); accumulators (0 + 2) + (1 + 3), reduced; the
//    n % 64 leftovers added one by one in f64.
//  - tinyBLAS (llamafile_sgemm, n % 16 == 0): one accumulator of 16 lanes, reduced.
template <class A, class B>
float ggml_f16_dot(int64_t n, bool vec_dot, A a, B b) {
  if (vec_dot) {
    float acc[4][kLanes] = {};
    const int64_t np = n / 64 * 64;
    for (int64_t i = 0; i < np; ++i) {
      float& lane = acc[(i / kLanes) % 4][i % kLanes];
      lane = std::fma(a(i), b(i), lane);
    }
    for (int l = 0; l < kLanes; ++l) {
      acc[0][l] = acc[0][l] + acc[2][l];
      acc[1][l] = acc[1][l] + acc[3][l];
      acc[0][l] = acc[0][l] + acc[1][l];
    }
    double sum = reduce_add_16(acc[0]);
    for (int64_t i = np; i < n; ++i) sum += static_cast<double>(a(i) * b(i));
    return static_cast<float>(sum);
  }
  float acc[kLanes] = {};
  for (int64_t i = 0; i < n; ++i) acc[i % kLanes] = std::fma(a(i), b(i), acc[i % kLanes]);
  return reduce_add_16(acc);
}

}  // namespace

bool attention_f16_vec_dot_order(int64_t n, bool single_token) { return single_token || n % kLanes != 0; }

void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores) {
  const bool vec_dot = attention_f16_vec_dot_order(head_dim, single_token);
  for (int64_t g = 0; g < n_rows; ++g) {
    const float* qg = q + g * head_dim;
    for (int64_t j = 0; j < n_keys; ++j) {
      const uint16_t* kj = k + j * head_dim;
      scores[g * n_keys + j] = ggml_f16_dot(
          head_dim, vec_dot, [&](int64_t i) { return fp16_to_f32(kj[i]); }, [&](int64_t i) { return qg[i]; });
    }
  }
}

void attention_values_f16(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p,
                          int64_t n_rows, bool single_token, float* out) {
  const int64_t n = n_blocks * kAttentionValueBlock;
  const bool vec_dot = attention_f16_vec_dot_order(n, single_token);
  for (int64_t g = 0; g < n_rows; ++g) {
    const float* pg = p + g * n;
    for (int64_t d = 0; d < head_dim; ++d) {
      // Position j of row d: block j / 64, element d * 64 + j % 64 of the block.
      const auto value = [&](int64_t j) {
        return fp16_to_f32(v[(j / kAttentionValueBlock * head_dim + d) * kAttentionValueBlock + j % kAttentionValueBlock]);
      };
      out[g * head_dim + d] = ggml_f16_dot(n, vec_dot, value, [&](int64_t j) { return pg[j]; });
    }
  }
}

void attention_decode_f16(const GroupedQueryAttentionF16& a, int64_t n_keys, float* out, ThreadPool& pool,
                          void (*softmax)(float* x, int64_t n)) {
  const int64_t hd = a.head_dim, group = a.n_heads / a.n_kv_heads;
  const int64_t n_blocks = (n_keys + kAttentionValueBlock - 1) / kAttentionValueBlock;
  const int64_t n_padded = n_blocks * kAttentionValueBlock;
  pool.parallel_for(a.n_kv_heads, [&](int64_t kvh, int) {
    const int64_t h0 = kvh * group;
    for (int64_t h = h0; h < h0 + group; ++h) {
      float* row = a.scores + h * n_padded;
      attention_scores_f16(a.keys + kvh * a.key_head_stride, n_keys, hd, a.q + h * hd, 1, true, row);
      for (int64_t j = 0; j < n_keys; ++j) row[j] *= a.scale;
      softmax(row, n_keys);
      for (int64_t j = 0; j < n_padded; ++j) row[j] = j < n_keys ? fp16_to_f32(f32_to_fp16(row[j])) : 0.0f;
    }
    attention_values_f16(a.values + kvh * a.value_head_stride, n_blocks, hd, a.scores + h0 * n_padded, group,
                         true, out + h0 * hd);
  });
}

}  // namespace sputnik::ref
