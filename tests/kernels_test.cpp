// Every ISA kernel against kernels/ref/ over sizes, token counts, tails and misaligned pointers.
//
// Tolerances, from the math:
//  * Integer paths (quantised weights): the activations are rounded to 8 bits per block of 32 or
//    256 (d = max|x| / 127, q = round(x * 127 / max|x|)), so each activation moves by at most d / 2
//    (plus an f32 rounding of x * id, well below 0.1% of d). Blocks of 32 then use d rounded to
//    fp16 as ggml's block_q8_0 / q8_1 do: |q| <= 127 codes times 2^-11 d adds 0.063 d. Against the
//    f32 reference the error of y[t, r] is therefore at most sum_c |w[r, c]| * 0.501 * d_block(c)
//    (0.564 for blocks of 32) -- about 1/254 of the block's largest |x| per unit of |w|, i.e.
//    relative ~0.4% per block in the worst case. Q4_1/Q5_1 take their min term as m * s with
//    s = fp16(d * sum q) (block_q8_1): two more fp16 roundings, |m| * 2^-10 * 32 * 127 * d <=
//    4 |m| d per block.
//  * Against ref::matmul_quantized_activations (same 8-bit activations, exact dequantised values,
//    double accumulation) only f32 rounding remains: the block sums are exact integers, the
//    scaling and accumulation add a few ulps per term, bounded here by 1e-5 * sum_c |w| |xq|
//    (~170 ulps of the absolute sum).
//  * Float weights (F32/F16/BF16/FP8) keep f32 activations: 1e-5 * sum_c |w| |x| against ref.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/repack.h"

namespace sputnik {
namespace {

bool isa_available(const std::string& isa) {
  const std::string before = kernel_isa();
  const bool ok = set_kernel_isa(isa);
  set_kernel_isa(before);
  return ok;
}

// A weight matrix with random content, valid for its type, stored at a deliberately odd address.
struct RandomWeight {
  std::vector<uint8_t> storage;
  std::vector<float> scales;
  TensorView view;
};

RandomWeight make_weight(DType type, int64_t rows, int64_t cols, std::mt19937& rng, size_t misalign) {
  RandomWeight w;
  const size_t bytes = dtype_row_bytes(type, cols) * rows;
  w.storage.assign(bytes + misalign + 64, 0);
  uint8_t* data = w.storage.data() + misalign;
  std::normal_distribution<float> nd;
  std::vector<float> row(cols);
  const size_t rb = dtype_row_bytes(type, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng) * 0.5f;
    if (ref::quantize_row(type, row.data(), data + r * rb, cols)) continue;
    // Types without a quantiser: random codes with valid fp16 scales.
    std::uniform_int_distribution<int> byte(0, 255);
    for (size_t i = 0; i < rb; ++i) data[r * rb + i] = static_cast<uint8_t>(byte(rng));
    const int bb = dtype_traits(type).block_bytes;
    for (size_t b = 0; b < rb / bb; ++b) {
      uint8_t* blk = data + r * rb + b * bb;
      if (type == DType::F8_E4M3) {
        if ((blk[0] & 0x7F) == 0x7F) blk[0] = 0x3F;  // no NaN codes
        continue;
      }
      const uint16_t d = f32_to_fp16(std::uniform_real_distribution<float>(0.001f, 0.05f)(rng));
      std::memcpy(blk, &d, 2);
      if (type == DType::Q4_1 || type == DType::Q5_1) {
        const uint16_t m = f32_to_fp16(std::uniform_real_distribution<float>(-0.3f, 0.1f)(rng));
        std::memcpy(blk + 2, &m, 2);
      }
    }
  }
  w.view.dtype = type;
  w.view.n_dims = 2;
  w.view.shape = {rows, cols};
  w.view.data = data;
  if (type == DType::F8_E4M3) {
    // DeepSeek uses 128 x 128 scale blocks; smaller ones (also not a multiple of the 4-row tile
    // or the vector width) check that every row and column block gets its own scale.
    const int64_t bs = rows % 3 == 0 ? 128 : rows % 3 == 1 ? 16 : 6;
    w.view.scale_block = static_cast<int>(bs);
    const int64_t sr = (rows + bs - 1) / bs, sc = (cols + bs - 1) / bs;
    w.scales.resize(sr * sc);
    for (auto& s : w.scales) s = std::uniform_real_distribution<float>(0.001f, 0.01f)(rng);
    w.view.scale = w.scales.data();
  }
  return w;
}

struct MatmulCase {
  std::string isa;
  DType type;
};

class MatmulVsRef : public ::testing::TestWithParam<MatmulCase> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam().isa)) GTEST_SKIP() << "CPU lacks " << GetParam().isa;
    saved_ = kernel_isa();
  }
  void TearDown() override {
    if (!saved_.empty()) set_kernel_isa(saved_);
  }
  std::string saved_;
};

TEST_P(MatmulVsRef, SizesTokensTailsMisalignment) {
  const auto [isa, type] = GetParam();
  const int block = std::max(dtype_traits(type).block_elements, 1);
  const bool k_quant = block == 256;
  std::vector<int64_t> col_sizes = k_quant ? std::vector<int64_t>{256, 512, 1280}
                                           : std::vector<int64_t>{32, 64, 96, 160, 1408};
  if (block == 1) col_sizes = {1, 15, 16, 17, 100, 256, 300};
  const std::vector<int64_t> row_sizes = {1, 3, 4, 5, 13, 67};
  std::mt19937 rng(42);
  // Three threads on the largest shapes exercise the parallel split; one elsewhere keeps the
  // test fast on a loaded machine (each parallel_for wakes the workers).
  ThreadPool pool1(1), pool3(3);
  ASSERT_TRUE(set_kernel_isa(isa));
  const int act_block = matmul_quantizes_activations(type) ? ref::activation_block(type) : 0;
  int checked = 0;
  for (const int64_t cols : col_sizes) {
    for (const int64_t rows : row_sizes) {
      // Bytes off a 64-byte boundary (even: the block structs hold uint16 scales, and GGUF rows of
      // block types always start at even offsets); the f32 activations are offset by 1 float.
      const size_t misalign = 2 * ((rows + cols) % 7);
      RandomWeight w = make_weight(type, rows, cols, rng, misalign);
      // Token counts 1..17 on the small shapes, a few on the large ones (the ref is slow).
      std::vector<int64_t> token_counts;
      for (int64_t t = 1; t <= 17; ++t)
        if (rows * cols <= 20000 || t == 1 || t == 5 || t == 17) token_counts.push_back(t);
      for (const int64_t T : token_counts) {
        std::vector<float> xbuf(T * cols + 1);
        float* x = xbuf.data() + 1;
        std::normal_distribution<float> nd;
        for (int64_t i = 0; i < T * cols; ++i) x[i] = nd(rng) * (i % 97 == 0 ? 8.0f : 1.0f);
        std::vector<float> y(T * rows, NAN), want_q(T * rows), want_f(T * rows);
        ASSERT_TRUE(set_kernel_isa(isa));
        matmul(w.view, x, T, y.data(), rows >= 64 ? pool3 : pool1);
        const bool quantized = matmul_quantizes_activations(type);
        ref::matmul(w.view, x, T, want_f.data(), pool1);
        if (quantized) ref::matmul_quantized_activations(w.view, x, T, want_q.data());
        else want_q = want_f;
        // Per-output bounds (see the header comment).
        std::vector<float> wrow(cols), xq_scale(cols);
        const bool has_min = act_block != 0 && (type == DType::Q4_1 || type == DType::Q5_1);
        for (int64_t r = 0; r < rows; ++r) {
          ref::dequantize_weight_row(w.view, r, wrow.data());
          // Q4_1 / Q5_1 blocks start with fp16 d, then fp16 m.
          const auto block_min = [&](int64_t b) {
            uint16_t m;
            std::memcpy(&m, w.view.row(r) + b * (w.view.row_bytes() / (cols / act_block)) + 2, 2);
            return std::fabs(fp16_to_f32(m));
          };
          for (int64_t t = 0; t < T; ++t) {
            const float* xt = x + t * cols;
            double abs_sum = 0, act_bound = 0;
            for (int64_t c0 = 0; c0 < cols; c0 += act_block ? act_block : cols) {
              const int64_t c1 = act_block ? c0 + act_block : cols;
              float amax = 0;
              for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(xt[c]));
              const double step = amax / 127.0;
              const double half_step = act_block == 0 ? 0.0 : (act_block == kQK ? 0.564 : 0.501) * step;
              for (int64_t c = c0; c < c1; ++c) {
                abs_sum += std::fabs(wrow[c]) * (std::fabs(xt[c]) + half_step);
                act_bound += std::fabs(wrow[c]) * half_step;
              }
              if (has_min) act_bound += 4.01 * block_min(c0 / act_block) * step;
            }
            const float got = y[t * rows + r];
            const double tight = 1e-5 * abs_sum + 1e-30;
            ASSERT_NEAR(got, want_q[t * rows + r], tight)
                << isa << " " << dtype_name(type) << " rows=" << rows << " cols=" << cols << " T=" << T
                << " r=" << r << " t=" << t << " (vs quantised-activation reference)";
            ASSERT_NEAR(got, want_f[t * rows + r], act_bound + tight)
                << isa << " " << dtype_name(type) << " rows=" << rows << " cols=" << cols << " T=" << T
                << " r=" << r << " t=" << t << " (vs f32 reference)";
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (const char* isa : {"scalar", "avx2", "avx512"})
    for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q5_K,
                    DType::Q6_K, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3})
      cases.push_back({isa, t});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllIsas, MatmulVsRef, ::testing::ValuesIn(matmul_cases()), [](const auto& info) {
  return info.param.isa + "_" + std::string(dtype_name(info.param.type));
});

// --- Row ops ---------------------------------------------------------------------------------------

class OpsVsRef : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "CPU lacks " << GetParam();
    saved_ = kernel_isa();
    set_kernel_isa(GetParam());
  }
  void TearDown() override {
    if (!saved_.empty()) set_kernel_isa(saved_);
  }
  std::string saved_;
};

// Relative 2e-6 for element-wise ops built on the exp polynomial (its error is < 2e-7 relative,
// times a few roundings); sums use 1e-5 of the absolute sum.
TEST_P(OpsVsRef, AllOps) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (const int64_t n : {1, 7, 8, 15, 16, 17, 31, 64, 100, 1000, 4099}) {
    for (const int off : {0, 1, 3}) {
      std::vector<float> a(n + off), b(n + off), w(n + off);
      for (auto& v : a) v = nd(rng) * 3;
      for (auto& v : b) v = nd(rng);
      for (auto& v : w) v = 1 + 0.1f * nd(rng);
      const float* pa = a.data() + off;
      const float* pb = b.data() + off;
      const float* pw = w.data() + off;
      double abs_dot = 0;
      for (int64_t i = 0; i < n; ++i) abs_dot += std::fabs(pa[i] * pb[i]);
      EXPECT_NEAR(dot_f32(pa, pb, n), ref::dot_f32(pa, pb, n), 1e-5 * abs_dot + 1e-30) << "dot n=" << n;

      std::vector<float> got(n), want(n);
      rms_norm(pa, pw, 1e-6f, n, got.data());
      ref::rms_norm(pa, pw, 1e-6f, n, want.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 1e-5 * std::fabs(want[i]) + 1e-7) << "rms_norm n=" << n;

      silu_mul(pa, pb, n, got.data());
      ref::silu_mul(pa, pb, n, want.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 2e-6 * std::fabs(want[i]) + 1e-12) << "silu n=" << n;

      // In place, as the header allows (out aliases gate).
      std::vector<float> inplace(pa, pa + n);
      silu_mul(inplace.data(), pb, n, inplace.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(inplace[i], want[i], 2e-6 * std::fabs(want[i]) + 1e-12);

      std::vector<float> s1(pa, pa + n), s2(pa, pa + n);
      s1[0] = -100;  // a very small probability
      s2[0] = -100;
      softmax(s1.data(), n);
      ref::softmax(s2.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(s1[i], s2[i], 2e-6 * s2[i] + 1e-30) << "softmax n=" << n << " i=" << i;

      std::vector<float> y1(pb, pb + n), y2(pb, pb + n);
      axpy(0.37f, pa, n, y1.data());
      ref::axpy(0.37f, pa, n, y2.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y1[i], y2[i], 1e-6 * (std::fabs(pb[i]) + std::fabs(0.37f * pa[i])));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, OpsVsRef, ::testing::Values("scalar", "avx2", "avx512"));

// FlushDenormals: a denormal result is 0 inside the scope, in threads started inside it too, and
// the mode is restored after it.
TEST(FlushDenormals, FlushesInScopeAndInheritedThreadsOnly) {
#if defined(__x86_64__) || defined(__i386__)
  volatile float tiny = 1e-30f, factor = 1e-10f;  // product 1e-40: a denormal
  auto product = [&] { return tiny * factor; };
  ASSERT_GT(product(), 0.0f);
  {
    const FlushDenormals flush;
    EXPECT_EQ(product(), 0.0f);
    float in_thread = -1.0f;
    std::thread([&] { in_thread = product(); }).join();
    EXPECT_EQ(in_thread, 0.0f);
  }
  EXPECT_GT(product(), 0.0f);
#else
  GTEST_SKIP() << "no MXCSR";
#endif
}

// --- Interleaved (repacked) weights -----------------------------------------------------------------

const DType kInterleavable[] = {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_1, DType::Q4_K};

// w repacked into the interleaved layout with the reference repacker, at a byte offset `misalign`.
struct Repacked {
  std::vector<uint8_t> storage;
  TensorView view;
};
Repacked repack_ref(const TensorView& w, size_t misalign) {
  Repacked p;
  const DType to = ref::interleaved_type(w.dtype);
  p.storage.assign(w.rows() * dtype_row_bytes(to, w.cols()) + misalign, 0);
  ref::repack_interleaved(w.dtype, w.data, w.rows(), w.cols(), p.storage.data() + misalign);
  p.view = w;
  p.view.dtype = to;
  p.view.data = p.storage.data() + misalign;
  return p;
}

// The layout keeps every value: each repacked row dequantises bit-equal to the original row, and
// the pool-parallel repack_weight writes the same bytes as the reference.
TEST(Interleaved, RepackKeepsEveryRowBitExact) {
  std::mt19937 rng(7);
  ThreadPool pool(3);
  for (const DType type : kInterleavable) {
    const bool k_quant = dtype_traits(type).block_elements == kQKK;
    for (const int64_t rows : {16, 48, 160}) {
      const int64_t cols = k_quant ? 768 : 96;
      RandomWeight w = make_weight(type, rows, cols, rng, 2);
      Repacked p = repack_ref(w.view, 6);
      ASSERT_EQ(dtype_row_group(p.view.dtype), 16);
      std::vector<float> want(cols), got(cols);
      for (int64_t r = 0; r < rows; ++r) {
        ref::dequantize_weight_row(w.view, r, want.data());
        ref::dequantize_weight_row(p.view, r, got.data());
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), cols * sizeof(float)))
            << dtype_name(type) << " rows=" << rows << " r=" << r;
      }
      std::vector<uint8_t> parallel(p.storage.size() + 64);
      const TensorView v = repack_weight(w.view, p.view.dtype, parallel.data() + 1, pool);
      EXPECT_EQ(v.dtype, p.view.dtype);
      EXPECT_EQ(0, std::memcmp(parallel.data() + 1, p.view.data, p.view.bytes())) << dtype_name(type);
    }
  }
}

// AVX-512 picks the interleaved types; AVX2 and scalar keep the original layout (they have no
// kernel for it); types without an interleaved form stay as they are.
TEST(Interleaved, PreferredTypeFollowsTheIsa) {
  const std::string saved = kernel_isa();
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    if (!set_kernel_isa(isa)) continue;
    const bool avx512 = std::string(isa) == "avx512";
    EXPECT_EQ(preferred_weight_type(DType::Q4_0), avx512 ? DType::Q4_0x16 : DType::Q4_0) << isa;
    EXPECT_EQ(preferred_weight_type(DType::Q8_0), avx512 ? DType::Q8_0x16 : DType::Q8_0) << isa;
    EXPECT_EQ(preferred_weight_type(DType::Q4_K), avx512 ? DType::Q4_Kx16 : DType::Q4_K) << isa;
    EXPECT_EQ(preferred_weight_type(DType::Q5_0), avx512 ? DType::Q5_0x16 : DType::Q5_0) << isa;
    EXPECT_EQ(preferred_weight_type(DType::Q4_1), avx512 ? DType::Q4_1x16 : DType::Q4_1) << isa;
    EXPECT_EQ(preferred_weight_type(DType::Q6_K), DType::Q6_K) << isa;
    EXPECT_EQ(preferred_weight_type(DType::F16), DType::F16) << isa;
  }
  set_kernel_isa(saved);
}

// slice_rows of a repacked weight multiplies like the same rows of the original, and the
// granularity it reports is what the layout needs.
TEST(Interleaved, RowSlicesOfRepackedWeights) {
  std::mt19937 rng(11);
  ThreadPool pool(2);
  RandomWeight w = make_weight(DType::Q4_0, 64, 128, rng, 0);
  Repacked p = repack_ref(w.view, 0);
  EXPECT_EQ(weight_row_granularity(w.view), 1);
  EXPECT_EQ(weight_row_granularity(p.view), 16);
  std::vector<float> x(3 * 128);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  std::vector<float> full(3 * 64), part(3 * 32);
  matmul(p.view, x.data(), 3, full.data(), pool);
  const TensorView s = slice_rows(p.view, 16, 48);
  ASSERT_EQ(s.rows(), 32);
  matmul(s, x.data(), 3, part.data(), pool);
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t r = 0; r < 32; ++r) EXPECT_EQ(part[t * 32 + r], full[t * 64 + 16 + r]) << "t=" << t << " r=" << r;
  // A stacked [experts, rows, cols] weight sliced at an expert boundary.
  TensorView stacked = p.view;
  stacked.n_dims = 3;
  stacked.shape = {2, 32, 128, 0};
  const TensorView e1 = slice_rows(stacked, 32, 64);
  EXPECT_EQ(e1.data, s.row(16));
  EXPECT_EQ(e1.n_dims, 2);
  EXPECT_EQ(e1.shape[0], 32);
}

// Every output row is computed by exactly one tile whatever the split: decode and small batches hand
// out guided slabs (sizes shrinking from 1/(2*threads) of the groups down to one group), prefill
// fixed slabs, so 1, 2 and 3 threads give bit-identical results over 1200 rows (75 groups) for
// 1, 5 and 9 tokens.
TEST(Interleaved, ThreadCountsGiveIdenticalResults) {
  if (!isa_available("avx512")) GTEST_SKIP() << "CPU lacks avx512";
  const std::string saved = kernel_isa();
  ASSERT_TRUE(set_kernel_isa("avx512"));
  std::mt19937 rng(13);
  ThreadPool pool1(1), pool2(2), pool3(3);
  for (const DType type : kInterleavable) {
    const int64_t rows = 1200, cols = 512;
    RandomWeight w = make_weight(type, rows, cols, rng, 0);
    Repacked p = repack_ref(w.view, 0);
    for (const int64_t T : {1, 5, 9}) {
      std::vector<float> x(T * cols);
      std::normal_distribution<float> nd;
      for (auto& v : x) v = nd(rng);
      std::vector<float> want(T * rows, NAN);
      matmul(p.view, x.data(), T, want.data(), pool1);
      for (ThreadPool* pool : {&pool2, &pool3}) {
        std::vector<float> got(T * rows, NAN);
        matmul(p.view, x.data(), T, got.data(), *pool);
        for (int64_t i = 0; i < T * rows; ++i)
          ASSERT_EQ(got[i], want[i]) << dtype_name(type) << " T=" << T << " threads=" << pool->size() << " i=" << i;
      }
    }
  }
  set_kernel_isa(saved);
}

// The AVX-512 interleaved kernel against the reference (same 8-bit activations, exact weights) to
// f32 rounding, against the f32 reference within the activation-rounding bound, and against the
// AVX-512 kernel on the original layout; every other ISA multiplies the interleaved layout through
// the reference. Rows: whole 16-row groups (the loader repacks only those), as whole matrices and
// as slices that start inside the storage; misaligned weights and activations; tokens 1..17 (tiles
// of up to 8, uneven splits).
class InterleavedVsRef : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "CPU lacks " << GetParam();
    saved_ = kernel_isa();
  }
  void TearDown() override {
    if (!saved_.empty()) set_kernel_isa(saved_);
  }
  std::string saved_;
};

TEST_P(InterleavedVsRef, SizesTokensSlicesMisalignment) {
  const std::string isa = GetParam();
  std::mt19937 rng(5);
  ThreadPool pool1(1), pool3(3);
  int checked = 0;
  for (const DType type : kInterleavable) {
    const int block = dtype_traits(type).block_elements;
    const std::vector<int64_t> col_sizes = block == kQKK ? std::vector<int64_t>{256, 1280}
                                                         : std::vector<int64_t>{32, 96, 1408};
    for (const int64_t cols : col_sizes) {
      for (const int64_t rows : {16, 48, 96}) {
        RandomWeight w = make_weight(type, rows, cols, rng, 2 * ((rows + cols) % 5));
        Repacked p = repack_ref(w.view, 2 * (cols % 7) + 1);
        // The whole matrix, and rows [16, rows) as a slice.
        for (const int64_t r0 : {int64_t{0}, int64_t{16}}) {
          const TensorView plain = r0 == 0 ? w.view : slice_rows(w.view, r0, rows);
          const TensorView packed = r0 == 0 ? p.view : slice_rows(p.view, r0, rows);
          const int64_t n = rows - r0;
          for (int64_t T = 1; T <= 17; ++T) {
            if (rows * cols > 20000 && T != 1 && T != 4 && T != 9 && T != 17) continue;
            std::vector<float> xbuf(T * cols + 1);
            float* x = xbuf.data() + 1;
            std::normal_distribution<float> nd;
            for (int64_t i = 0; i < T * cols; ++i) x[i] = nd(rng) * (i % 97 == 0 ? 8.0f : 1.0f);
            std::vector<float> got(T * n, NAN), unpacked(T * n, NAN), want_q(T * n), want_f(T * n);
            ASSERT_TRUE(set_kernel_isa(isa));
            matmul(packed, x, T, got.data(), n >= 64 ? pool3 : pool1);
            matmul(plain, x, T, unpacked.data(), pool1);
            // AVX-512 rounds activations to 8 bits on both layouts; elsewhere the interleaved layout
            // goes through ref::matmul (f32 activations) while the original one may round them.
            const bool quantized = matmul_quantizes_activations(packed.dtype);
            EXPECT_EQ(quantized, isa == "avx512");
            const bool same_rounding = quantized == matmul_quantizes_activations(plain.dtype);
            ref::matmul(plain, x, T, want_f.data(), pool1);
            if (quantized) ref::matmul_quantized_activations(plain, x, T, want_q.data());
            else want_q = want_f;
            std::vector<float> wrow(cols);
            for (int64_t r = 0; r < n; ++r) {
              ref::dequantize_weight_row(plain, r, wrow.data());
              for (int64_t t = 0; t < T; ++t) {
                const float* xt = x + t * cols;
                double abs_sum = 0, act_bound = 0;
                for (int64_t c0 = 0; c0 < cols; c0 += block) {
                  float amax = 0;
                  for (int64_t c = c0; c < c0 + block; ++c) amax = std::max(amax, std::fabs(xt[c]));
                  const double half_step = (block == kQK ? 0.564 : 0.501) * amax / 127.0;
                  for (int64_t c = c0; c < c0 + block; ++c) {
                    abs_sum += std::fabs(wrow[c]) * (std::fabs(xt[c]) + half_step);
                    act_bound += std::fabs(wrow[c]) * half_step;
                  }
                  // Q4_1's min term m * s (block_q8_1's fp16 s; see the header comment).
                  if (type == DType::Q4_1 && quantized) {
                    uint16_t m;
                    std::memcpy(&m, plain.row(r) + (c0 / block) * sizeof(BlockQ4_1) + 2, 2);
                    act_bound += 4.01 * std::fabs(fp16_to_f32(m)) * amax / 127.0;
                  }
                }
                const double tight = 1e-5 * abs_sum + 1e-30;
                const size_t i = t * n + r;
                const auto where = [&] {
                  return isa + " " + std::string(dtype_name(type)) + " rows=" + std::to_string(rows) +
                         " r0=" + std::to_string(r0) + " cols=" + std::to_string(cols) + " T=" + std::to_string(T) +
                         " r=" + std::to_string(r) + " t=" + std::to_string(t);
                };
                ASSERT_NEAR(got[i], want_q[i], tight) << where() << " (vs quantised-activation reference)";
                ASSERT_NEAR(got[i], want_f[i], (quantized ? act_bound : 0.0) + tight) << where() << " (vs f32 reference)";
                ASSERT_NEAR(got[i], unpacked[i], (same_rounding ? 0.0 : act_bound) + 2 * tight)
                    << where() << " (vs the original layout)";
                ++checked;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, InterleavedVsRef, ::testing::Values("scalar", "avx2", "avx512"));

TEST(Dispatch, NamesAndOverride) {
  const std::string isa = kernel_isa();
  EXPECT_TRUE(isa == "scalar" || isa == "avx2" || isa == "avx512") << isa;
  EXPECT_TRUE(set_kernel_isa("scalar"));
  EXPECT_EQ(kernel_isa(), "scalar");
  EXPECT_FALSE(set_kernel_isa("neon"));
  EXPECT_EQ(kernel_isa(), "scalar");
  set_kernel_isa(isa);
}

}  // namespace
}  // namespace sputnik
