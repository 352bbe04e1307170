// The kernels that reproduce llama.cpp's (ggml-cpu's) arithmetic bit for bit, each against its
// scalar spec in kernels/ref/: the Q4_1 matmul (AVX-512, on the row-major and the interleaved
// Q4_1x16 layout) and the f16 attention products (every ISA). tests/llamacpp_golden_test.cpp
// checks the whole forward pass against llama.cpp itself.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/threads.h"
#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/repack.h"

namespace sputnik {
namespace {

// Runs fn() with each kernel set this CPU has, restoring the active one after.
template <class Fn>
int for_each_isa(Fn&& fn) {
  const std::string before = kernel_isa();
  int ran = 0;
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    if (!set_kernel_isa(isa)) continue;
    fn(std::string(isa));
    ++ran;
  }
  set_kernel_isa(before);
  return ran;
}

std::vector<float> random_floats(size_t n, float scale, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// f32 values that are exactly f16 (ggml converts q and the softmax weights to f16).
std::vector<float> random_f16_values(size_t n, float scale, std::mt19937& rng) {
  std::vector<float> v = random_floats(n, scale, rng);
  for (float& x : v) x = fp16_to_f32(f32_to_fp16(x));
  return v;
}

std::vector<uint16_t> random_f16(size_t n, float scale, std::mt19937& rng) {
  std::vector<uint16_t> v(n);
  const std::vector<float> f = random_floats(n, scale, rng);
  for (size_t i = 0; i < n; ++i) v[i] = f32_to_fp16(f[i]);
  return v;
}

// Random Q4_1 rows: every code, positive d, signed m (as real files hold).
std::vector<BlockQ4_1> random_q4_1(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<BlockQ4_1> blocks(static_cast<size_t>(rows * cols / kQK));
  std::uniform_int_distribution<int> byte(0, 255);
  for (BlockQ4_1& b : blocks) {
    b.d = f32_to_fp16(std::abs(random_floats(1, 0.02f, rng)[0]));
    b.m = f32_to_fp16(random_floats(1, 0.1f, rng)[0]);
    for (uint8_t& q : b.qs) q = static_cast<uint8_t>(byte(rng));
  }
  return blocks;
}

// A [rows, cols] Q4_1 matrix over `blocks` (which outlive the view).
TensorView q4_1_matrix(const std::vector<BlockQ4_1>& blocks, int64_t rows, int64_t cols) {
  TensorView w;
  w.dtype = DType::Q4_1;
  w.n_dims = 2;
  w.shape = {rows, cols, 0, 0};
  w.data = blocks.data();
  return w;
}

TEST(GgmlOrder, Q4_1MatmulIsBitIdenticalToTheGgmlSpec) {
  std::mt19937 rng(7);
  ThreadPool pool(2);
  // The scalar set keeps f32 activations: only the SIMD sets reproduce ggml's Q4_1 x Q8_1.
  const int ran = for_each_isa([&](const std::string& isa) {
    if (isa == "scalar") return;
    for (int64_t rows : {1, 3, 4, 5, 13, 64}) {
      for (int64_t cols : {32, 64, 96, 576}) {
        const std::vector<BlockQ4_1> blocks = random_q4_1(rows, cols, rng);
        const TensorView w = q4_1_matrix(blocks, rows, cols);
        for (int64_t n_tokens : {1, 2, 5, 9}) {
          const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 1.0f, rng);
          std::vector<float> y(static_cast<size_t>(n_tokens * rows)), spec(y.size()), exact(y.size());
          matmul(w, x.data(), n_tokens, y.data(), pool);
          ref::matmul_q4_1_as_ggml(w, x.data(), n_tokens, spec.data());
          ref::matmul_quantized_activations(w, x.data(), n_tokens, exact.data());
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(spec[i]))
                << isa << " " << rows << "x" << cols << " tokens " << n_tokens << " element " << i << ": " << y[i]
                << " vs " << spec[i];
            // The spec is the same sum, only rounded in f32 along the way.
            EXPECT_NEAR(spec[i], exact[i], 1e-6 * static_cast<double>(cols));
          }
        }
      }
    }
  });
  EXPECT_GE(ran, 1);
}

// The interleaved layout the loader repacks Q4_1 into on AVX-512 gives the spec's bits too, for
// whole matrices and 16-row slices, decode and prefill token counts (tiles of 1 and 2 tokens,
// odd counts), on 1 and 3 threads (guided decode slabs, prefill slabs).
TEST(GgmlOrder, Q4_1x16MatmulIsBitIdenticalToTheGgmlSpec) {
  const std::string before = kernel_isa();
  if (!set_kernel_isa("avx512")) GTEST_SKIP() << "CPU lacks avx512";
  std::mt19937 rng(17);
  ThreadPool pool1(1), pool3(3);
  int checked = 0;
  for (const int64_t rows : {16, 48, 160}) {
    for (const int64_t cols : {32, 96, 576, 1536}) {
      const std::vector<BlockQ4_1> blocks = random_q4_1(rows, cols, rng);
      const TensorView plain = q4_1_matrix(blocks, rows, cols);
      ASSERT_EQ(ref::interleaved_type(DType::Q4_1), DType::Q4_1x16);
      std::vector<uint8_t> packed_bytes(plain.bytes());
      ref::repack_interleaved(DType::Q4_1, plain.data, rows, cols, packed_bytes.data());
      TensorView packed = plain;
      packed.dtype = DType::Q4_1x16;
      packed.data = packed_bytes.data();
      for (const int64_t r0 : {int64_t{0}, int64_t{16}}) {
        if (r0 >= rows) continue;
        const TensorView p = r0 == 0 ? packed : slice_rows(packed, r0, rows);
        const TensorView w = r0 == 0 ? plain : slice_rows(plain, r0, rows);
        const int64_t n = rows - r0;
        for (int64_t n_tokens = 1; n_tokens <= 20; ++n_tokens) {
          if (rows * cols > 20000 && n_tokens % 4 != 1 && n_tokens != 2) continue;
          const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * cols), 1.0f, rng);
          std::vector<float> spec(static_cast<size_t>(n_tokens * n));
          ref::matmul_q4_1_as_ggml(w, x.data(), n_tokens, spec.data());
          for (ThreadPool* pool : {&pool1, &pool3}) {
            std::vector<float> y(spec.size(), NAN);
            matmul(p, x.data(), n_tokens, y.data(), *pool);
            for (size_t i = 0; i < y.size(); ++i)
              ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(spec[i]))
                  << rows << "x" << cols << " from row " << r0 << ", tokens " << n_tokens << ", threads "
                  << pool->size() << ", element " << i << ": " << y[i] << " vs " << spec[i];
            ++checked;
          }
        }
      }
    }
  }
  set_kernel_isa(before);
  EXPECT_GT(checked, 100);
}

// ggml's vector expf on AVX2 equals the AVX-512 one, so softmax and SiLU give the same bits on both.
TEST(GgmlOrder, SoftmaxAndSiluAreTheSameOnAvx2AndAvx512) {
  const std::string before = kernel_isa();
  if (!set_kernel_isa("avx512")) GTEST_SKIP() << "CPU lacks avx512";
  std::mt19937 rng(5);
  for (int64_t n : {1, 7, 16, 33, 300, 1536}) {
    std::vector<float> x = random_floats(static_cast<size_t>(n), 8.0f, rng);
    x[0] = -200.0f;  // an exp below the normal range
    const std::vector<float> up = random_floats(static_cast<size_t>(n), 1.0f, rng);
    std::vector<float> soft[2], silu[2];
    for (int k = 0; k < 2; ++k) {
      ASSERT_TRUE(set_kernel_isa(k == 0 ? "avx512" : "avx2"));
      soft[k] = x;
      softmax(soft[k].data(), n);
      silu[k].resize(static_cast<size_t>(n));
      silu_mul(x.data(), up.data(), n, silu[k].data());
    }
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>(soft[0][i]), std::bit_cast<uint32_t>(soft[1][i])) << n << " " << i;
      EXPECT_EQ(std::bit_cast<uint32_t>(silu[0][i]), std::bit_cast<uint32_t>(silu[1][i])) << n << " " << i;
    }
  }
  set_kernel_isa(before);
}

// Every ISA gives the spec's bits; the spec is the dot product to f32 rounding.
TEST(GgmlOrder, AttentionF16ProductsAreBitIdenticalToTheSpecOnEveryIsa) {
  std::mt19937 rng(11);
  const int ran = for_each_isa([&](const std::string& isa) {
    for (int64_t head_dim : {64, 128, 80, 40}) {
      for (int64_t n_keys : {1, 17, 64, 65, 200}) {
        for (int64_t n_rows : {1, 3, 6}) {
          for (bool single_token : {true, false}) {
            const std::vector<uint16_t> k = random_f16(static_cast<size_t>(n_keys * head_dim), 1.0f, rng);
            const std::vector<float> q = random_f16_values(static_cast<size_t>(n_rows * head_dim), 1.0f, rng);
            std::vector<float> scores(static_cast<size_t>(n_rows * n_keys)), spec(scores.size());
            attention_scores_f16(k.data(), n_keys, head_dim, q.data(), n_rows, single_token, scores.data());
            ref::attention_scores_f16(k.data(), n_keys, head_dim, q.data(), n_rows, single_token, spec.data());
            for (size_t i = 0; i < scores.size(); ++i) {
              ASSERT_EQ(std::bit_cast<uint32_t>(scores[i]), std::bit_cast<uint32_t>(spec[i]))
                  << isa << " scores hd " << head_dim << " keys " << n_keys << " element " << i;
              const int64_t g = static_cast<int64_t>(i) / n_keys, j = static_cast<int64_t>(i) % n_keys;
              double exact = 0, magnitude = 0;
              for (int64_t c = 0; c < head_dim; ++c) {
                const double p = double(fp16_to_f32(k[j * head_dim + c])) * q[g * head_dim + c];
                exact += p;
                magnitude += std::abs(p);
              }
              EXPECT_NEAR(spec[i], exact, 1e-6 * magnitude);
            }
            const int64_t n_blocks = (n_keys + kAttentionValueBlock - 1) / kAttentionValueBlock;
            const int64_t n = n_blocks * kAttentionValueBlock;
            const std::vector<uint16_t> v = random_f16(static_cast<size_t>(n * head_dim), 1.0f, rng);
            const std::vector<float> p = random_f16_values(static_cast<size_t>(n_rows * n), 0.1f, rng);
            std::vector<float> out(static_cast<size_t>(n_rows * head_dim)), out_spec(out.size());
            attention_values_f16(v.data(), n_blocks, head_dim, p.data(), n_rows, single_token, out.data());
            ref::attention_values_f16(v.data(), n_blocks, head_dim, p.data(), n_rows, single_token, out_spec.data());
            for (size_t i = 0; i < out.size(); ++i) {
              ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(out_spec[i]))
                  << isa << " values hd " << head_dim << " keys " << n_keys << " element " << i;
              const int64_t g = static_cast<int64_t>(i) / head_dim, d = static_cast<int64_t>(i) % head_dim;
              double exact = 0, magnitude = 0;
              for (int64_t j = 0; j < n; ++j) {
                const int64_t at = (j / kAttentionValueBlock * head_dim + d) * kAttentionValueBlock + j % kAttentionValueBlock;
                const double prod = double(fp16_to_f32(v[static_cast<size_t>(at)])) * p[g * n + j];
                exact += prod;
                magnitude += std::abs(prod);
              }
              EXPECT_NEAR(out_spec[i], exact, 1e-6 * magnitude);
            }
          }
        }
      }
    }
  });
  EXPECT_GE(ran, 1);
}

// The fused decode attention gives the bits of its definition (the single-token products, softmax
// and f16 rounding in sequence) on every ISA, for any thread count (threads dividing the kv heads
// take one head per task, others the three phases), over caches laid out with room to spare (kv
// heads n_ctx rows apart), key counts on and off the 16/64/256 boundaries and 4096, head sizes with
// and without a fast path, groups of 1 to 10 query heads (several tiles and row passes), and
// queries wide enough that most softmax weights underflow below 2^-126 (the kernel flushes them).
TEST(GgmlOrder, AttentionDecodeF16IsBitIdenticalToItsDefinitionOnEveryIsa) {
  std::mt19937 rng(13);
  struct Shape {
    int64_t n_heads, n_kv_heads, head_dim;
  };
  const int ran = for_each_isa([&](const std::string& isa) {
    for (const Shape shape :
         {Shape{12, 2, 128}, Shape{9, 3, 64}, Shape{14, 2, 128}, Shape{4, 4, 80}, Shape{8, 1, 256}, Shape{20, 2, 64}}) {
      for (int64_t n_keys : {1, 15, 16, 17, 64, 65, 200, 257, 700, 4096}) {
        if (n_keys == 4096 && shape.n_heads != 12) continue;  // the R1-Distill-Qwen shape at depth 4096
        for (const auto& [threads, q_scale] : {std::pair{1, 1.0f}, std::pair{2, 1.0f}, std::pair{3, 1.0f}, std::pair{2, 100.0f}}) {
          ThreadPool pool(threads);
          const int64_t hd = shape.head_dim, n_ctx = n_keys + 5;
          const int64_t n_padded = (n_keys + kAttentionValueBlock - 1) / kAttentionValueBlock * kAttentionValueBlock;
          const int64_t ctx_padded = (n_ctx + kAttentionValueBlock - 1) / kAttentionValueBlock * kAttentionValueBlock;
          const std::vector<uint16_t> k = random_f16(static_cast<size_t>(shape.n_kv_heads * n_ctx * hd), 1.0f, rng);
          const std::vector<uint16_t> v = random_f16(static_cast<size_t>(shape.n_kv_heads * ctx_padded * hd), 1.0f, rng);
          const std::vector<float> q = random_f16_values(static_cast<size_t>(shape.n_heads * hd), q_scale, rng);
          GroupedQueryAttentionF16 a;
          a.q = q.data();
          a.n_heads = shape.n_heads;
          a.n_kv_heads = shape.n_kv_heads;
          a.head_dim = hd;
          a.keys = k.data();
          a.key_head_stride = n_ctx * hd;
          a.values = v.data();
          a.value_head_stride = ctx_padded * hd;
          a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
          std::vector<float> scores(static_cast<size_t>(shape.n_heads * n_padded), -1.0f), spec_scores(scores.size());
          std::vector<float> out(static_cast<size_t>(shape.n_heads * hd), -1.0f), spec(out.size());
          a.scores = spec_scores.data();
          ref::attention_decode_f16(a, n_keys, spec.data(), pool, softmax);
          a.scores = scores.data();
          attention_decode_f16(a, n_keys, out.data(), pool);
          const std::string where = isa + " heads " + std::to_string(shape.n_heads) + "/" +
                                    std::to_string(shape.n_kv_heads) + " hd " + std::to_string(hd) + " keys " +
                                    std::to_string(n_keys) + " threads " + std::to_string(threads) + " q scale " +
                                    std::to_string(q_scale);
          for (size_t i = 0; i < scores.size(); ++i) {
            ASSERT_EQ(std::bit_cast<uint32_t>(scores[i]), std::bit_cast<uint32_t>(spec_scores[i]))
                << where << " weight " << i;
          }
          for (size_t i = 0; i < out.size(); ++i) {
            ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(spec[i])) << where << " output " << i;
          }
          // The definition is attention: softmax(scale q k) v in double, to the f16 rounding of p.
          const int64_t group = shape.n_heads / shape.n_kv_heads;
          for (int64_t h = 0; h < shape.n_heads; ++h) {
            const int64_t kvh = h / group;
            std::vector<double> w(static_cast<size_t>(n_keys));
            double max = -1e300, sum = 0;
            for (int64_t j = 0; j < n_keys; ++j) {
              double dot = 0;
              for (int64_t c = 0; c < hd; ++c)
                dot += double(fp16_to_f32(k[static_cast<size_t>((kvh * n_ctx + j) * hd + c)])) * q[h * hd + c];
              w[j] = dot * a.scale;
              max = std::max(max, w[j]);
            }
            for (double& x : w) sum += x = std::exp(x - max);
            for (int64_t d = 0; d < hd; ++d) {
              double exact = 0, magnitude = 0;
              for (int64_t j = 0; j < n_keys; ++j) {
                const int64_t at = kvh * ctx_padded * hd + (j / kAttentionValueBlock * hd + d) * kAttentionValueBlock +
                                   j % kAttentionValueBlock;
                const double term = w[j] / sum * fp16_to_f32(v[static_cast<size_t>(at)]);
                exact += term;
                magnitude += std::abs(term);
              }
              ASSERT_NEAR(out[h * hd + d], exact, 2e-3 * magnitude + 1e-6) << where << " head " << h << " d " << d;
            }
          }
        }
      }
    }
  });
  EXPECT_GE(ran, 1);
}

// The two orders differ (else the single_token switch would be pointless): on random data some
// scores round differently.
TEST(GgmlOrder, VecDotAndTinyBlasOrdersDiffer) {
  std::mt19937 rng(3);
  const int64_t head_dim = 64, n_keys = 256;
  const std::vector<uint16_t> k = random_f16(static_cast<size_t>(n_keys * head_dim), 1.0f, rng);
  const std::vector<float> q = random_f16_values(static_cast<size_t>(head_dim), 1.0f, rng);
  std::vector<float> a(static_cast<size_t>(n_keys)), b(a.size());
  ref::attention_scores_f16(k.data(), n_keys, head_dim, q.data(), 1, true, a.data());
  ref::attention_scores_f16(k.data(), n_keys, head_dim, q.data(), 1, false, b.data());
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace sputnik
