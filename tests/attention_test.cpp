// multi_query_attention (kernels.h) on every ISA against the two-pass definition in double
// (ref::multi_query_attention_two_pass), and each ISA's online-softmax chunk against
// ref::attention_chunk, over lengths 1..5000, odd head counts and dimensions, F32 and F16 rows,
// MLA's layout (values = the first dv elements of the key rows) and separate K/V rows.
//
// Tolerance, from the math: the chunks accumulate q . k in f32 in up to 16 interleaved partial
// sums of dk / 16 terms, so a score is off by at most ~(dk / 16 + 4) ulps of scale * sum_i |q_i
// k_i| (bounded here by 4e-6 of it for dk <= 600). exp is good to ~2e-7 relative, the online
// rescaling adds a few f32 roundings per block. A score error e moves the softmax weights by a
// factor within e^(+-2e), so out (a convex combination of the v_j) moves by at most
// max|v| * (2e + 1e-5), with 1e-5 covering the exp and accumulation roundings of the sums.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

namespace sputnik {
namespace {

bool isa_available(const std::string& isa) {
  const std::string before = kernel_isa();
  const bool ok = set_kernel_isa(isa);
  set_kernel_isa(before);
  return ok;
}

// A cache of n rows of `stride` elements (F32 or F16) with random content, and q.
struct Case {
  int64_t n_heads, dk, dv, n_keys;
  DType type;
  bool values_in_keys;  // MLA: values are the first dv elements of the key rows
  float q_scale = 1.0f;  // larger: sharper softmax, exercises the running-max rescaling
};

struct Data {
  std::vector<float> q;
  std::vector<float> keys_f32, values_f32;
  std::vector<uint16_t> keys_f16, values_f16;
  MultiQueryAttention a;
};

Data make_data(const Case& c, std::mt19937& rng) {
  Data d;
  std::normal_distribution<float> nd;
  d.q.resize(c.n_heads * c.dk);
  for (float& v : d.q) v = nd(rng) * c.q_scale;
  const int64_t k_stride = c.dk + 3;  // rows padded, as a cache with other fields might be
  const int64_t v_stride = c.dv + 5;
  d.keys_f32.resize(c.n_keys * k_stride);
  // A slow drift over positions makes later keys score higher, so the running max keeps moving.
  for (int64_t j = 0; j < c.n_keys; ++j)
    for (int64_t i = 0; i < k_stride; ++i)
      d.keys_f32[j * k_stride + i] = nd(rng) + 0.002f * static_cast<float>(j) * (i % 2 ? 1 : -1);
  if (!c.values_in_keys) {
    d.values_f32.resize(c.n_keys * v_stride);
    for (float& v : d.values_f32) v = nd(rng);
  }
  d.a.q = d.q.data();
  d.a.n_heads = c.n_heads;
  d.a.dk = c.dk;
  d.a.dv = c.dv;
  d.a.scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
  d.a.keys.type = d.a.values.type = c.type;
  d.a.keys.stride = k_stride;
  d.a.values.stride = c.values_in_keys ? k_stride : v_stride;
  if (c.type == DType::F16) {
    auto to_f16 = [](const std::vector<float>& src, std::vector<uint16_t>& dst) {
      dst.resize(src.size());
      for (size_t i = 0; i < src.size(); ++i) dst[i] = f32_to_fp16(src[i]);
    };
    to_f16(d.keys_f32, d.keys_f16);
    to_f16(d.values_f32, d.values_f16);
    d.a.keys.data = d.keys_f16.data();
    d.a.values.data = c.values_in_keys ? d.keys_f16.data() : d.values_f16.data();
  } else {
    d.a.keys.data = d.keys_f32.data();
    d.a.values.data = c.values_in_keys ? d.keys_f32.data() : d.values_f32.data();
  }
  return d;
}

float value_at(const CacheRows& rows, int64_t j, int64_t i) {
  const int64_t at = j * rows.stride + i;
  return rows.type == DType::F16 ? fp16_to_f32(static_cast<const uint16_t*>(rows.data)[at])
                                 : static_cast<const float*>(rows.data)[at];
}

// Per head: max|v| * (2 e + 1e-5), e = 4e-6 * scale * max_j sum_i |q_i k_ji| (header comment).
std::vector<double> tolerances(const MultiQueryAttention& a, int64_t begin, int64_t end) {
  double max_v = 0.0;
  for (int64_t j = begin; j < end; ++j)
    for (int64_t i = 0; i < a.dv; ++i) max_v = std::max<double>(max_v, std::fabs(value_at(a.values, j, i)));
  std::vector<double> tol(a.n_heads);
  for (int64_t h = 0; h < a.n_heads; ++h) {
    double max_abs_dot = 0.0;
    for (int64_t j = begin; j < end; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < a.dk; ++i) s += std::fabs(a.q[h * a.dk + i] * value_at(a.keys, j, i));
      max_abs_dot = std::max(max_abs_dot, s);
    }
    tol[h] = max_v * (2.0 * 4e-6 * a.scale * max_abs_dot + 1e-5);
  }
  return tol;
}

class AttentionVsRef : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "CPU lacks " << GetParam();
    saved_ = kernel_isa();
    ASSERT_TRUE(set_kernel_isa(GetParam()));
  }
  void TearDown() override {
    if (!saved_.empty()) set_kernel_isa(saved_);
  }
  std::string saved_;
};

void expect_matches_definition(const Case& c, std::mt19937& rng, ThreadPool& pool,
                               const std::vector<int64_t>* key_limits = nullptr) {
  Data d = make_data(c, rng);
  if (key_limits != nullptr) d.a.key_limits = key_limits->data();
  std::vector<float> got(c.n_heads * c.dv), want(c.n_heads * c.dv);
  multi_query_attention(d.a, c.n_keys, got.data(), pool);
  ref::multi_query_attention_two_pass(d.a, c.n_keys, want.data());
  const std::vector<double> tol = tolerances(d.a, 0, c.n_keys);
  for (int64_t h = 0; h < c.n_heads; ++h)
    for (int64_t i = 0; i < c.dv; ++i)
      ASSERT_NEAR(got[h * c.dv + i], want[h * c.dv + i], tol[h])
          << "heads " << c.n_heads << " dk " << c.dk << " dv " << c.dv << " keys " << c.n_keys
          << " " << dtype_name(c.type) << (c.values_in_keys ? " (MLA layout)" : "") << " head " << h
          << " dim " << i;
}

TEST_P(AttentionVsRef, LengthsHeadsDimsTypes) {
  std::mt19937 rng(7);
  ThreadPool pool1(1), pool3(3);
  const bool scalar = GetParam() == "scalar";
  int checked = 0;
  for (const DType type : {DType::F32, DType::F16}) {
    // Small and odd shapes over many lengths: head tails (1, 3, 5), dims off the vector width.
    for (const int64_t n_keys : {1, 2, 3, 31, 32, 33, 64, 65, 100, 257, 1000}) {
      for (const int64_t heads : {1, 3, 5}) {
        expect_matches_definition({heads, 19, 13, n_keys, type, true}, rng, pool1);
        expect_matches_definition({heads, 40, 70, n_keys, type, false}, rng, pool3);
        checked += 2;
      }
    }
    // MLA's shape (kv_lora_rank 512 + rope 64, V2-Lite's 16 heads) up to 5000 positions.
    for (const int64_t n_keys : {1, 7, 129, 2049, 5000}) {
      if (scalar && n_keys > 2049) continue;  // the scalar set is the spec itself; keep it quick
      expect_matches_definition({16, 576, 512, n_keys, type, true}, rng, pool3);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * (11 * 3 * 2 + (scalar ? 4 : 5)));
}

// Sharp softmax (scores in the hundreds) with rising keys: the running max changes block after
// block, and an error in the rescaling would show at full scale.
TEST_P(AttentionVsRef, SharpSoftmaxRescales) {
  std::mt19937 rng(11);
  ThreadPool pool2(2);
  for (const int64_t n_keys : {40, 300, 3000}) {
    Case c{7, 64, 64, n_keys, DType::F32, false, 20.0f};
    expect_matches_definition(c, rng, pool2);
  }
}

// Causal prefill as one group: rows of 4 tokens x 3 heads, each token seeing keys up to its own
// position, some rows only the first keys (whole chunks and blocks past their limit).
TEST_P(AttentionVsRef, KeyLimitsPerRow) {
  std::mt19937 rng(17);
  ThreadPool pool2(2);
  for (const int64_t n_keys : {1, 5, 70, 700}) {
    std::vector<int64_t> limits;
    for (const int64_t pos : {n_keys - 3, n_keys - 2, n_keys - 1, n_keys})
      for (int h = 0; h < 3; ++h) limits.push_back(std::max<int64_t>(1, h == 2 ? 1 : pos));
    for (const DType type : {DType::F32, DType::F16}) {
      expect_matches_definition({12, 576, 512, n_keys, type, true}, rng, pool2, &limits);
      expect_matches_definition({12, 21, 9, n_keys, type, false}, rng, pool2, &limits);
    }
  }
}

// Prefill groups: many query rows (tokens x heads, more than one 16-lane group of the AVX-512
// chunk, with a partial last group) that see causal key ranges ending in different blocks.
TEST_P(AttentionVsRef, PrefillGroupsOfManyRows) {
  std::mt19937 rng(23);
  ThreadPool pool2(2);
  for (const int64_t n_keys : {20, 129, 600}) {
    for (const int64_t heads : {3, 16}) {
      const int64_t tokens = heads == 3 ? 13 : 5;  // 39 or 80 rows
      std::vector<int64_t> limits;
      for (int64_t t = 0; t < tokens; ++t)
        limits.insert(limits.end(), heads, std::max<int64_t>(1, n_keys - 3 * (tokens - 1 - t)));
      for (const DType type : {DType::F32, DType::F16}) {
        expect_matches_definition({tokens * heads, 576, 512, n_keys, type, true}, rng, pool2, &limits);
        expect_matches_definition({tokens * heads, 33, 18, n_keys, type, false}, rng, pool2, &limits);
      }
    }
  }
}

// The ISA's chunk over a range that starts off a block boundary returns the same partial state
// (running max, sum, unnormalised out) as ref::attention_chunk.
TEST_P(AttentionVsRef, ChunkStateMatchesRef) {
  const std::string isa = GetParam();
  const ref::AttentionChunkFn chunk = isa == "avx512" ? avx512::attention_chunk
                                      : isa == "avx2" ? avx2::attention_chunk
                                                      : ref::attention_chunk;
  std::mt19937 rng(3);
  for (const DType type : {DType::F32, DType::F16}) {
    const Case c{5, 576, 512, 200, type, true};
    Data d = make_data(c, rng);
    const int64_t begin = 37, end = 171;
    std::vector<float> max(c.n_heads), sum(c.n_heads), out(c.n_heads * c.dv);
    std::vector<float> rmax(c.n_heads), rsum(c.n_heads), rout(c.n_heads * c.dv);
    chunk(d.a, begin, end, max.data(), sum.data(), out.data());
    ref::attention_chunk(d.a, begin, end, rmax.data(), rsum.data(), rout.data());
    const std::vector<double> tol = tolerances(d.a, begin, end);
    for (int64_t h = 0; h < c.n_heads; ++h) {
      // Scores within e (tolerances' bound), so the max too; sum and out are scaled by
      // exp(-max), so compare them normalised.
      EXPECT_NEAR(max[h], rmax[h], 1e-4 * std::fabs(rmax[h]) + 1e-4) << "head " << h;
      EXPECT_NEAR(sum[h] / rsum[h], 1.0, 1e-4) << "head " << h;
      for (int64_t i = 0; i < c.dv; ++i)
        ASSERT_NEAR(out[h * c.dv + i] / sum[h], rout[h * c.dv + i] / rsum[h], tol[h])
            << dtype_name(type) << " head " << h << " dim " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, AttentionVsRef, ::testing::Values("scalar", "avx2", "avx512"),
                         [](const auto& info) { return info.param; });

// Splitting positions over threads changes only the order of f32 sums.
TEST(Attention, ThreadCountsAgree) {
  std::mt19937 rng(5);
  const Case c{16, 576, 512, 4096, DType::F16, true};
  Data d = make_data(c, rng);
  ThreadPool pool1(1), pool2(2), pool4(4);
  std::vector<float> o1(c.n_heads * c.dv), o2(o1.size()), o4(o1.size());
  multi_query_attention(d.a, c.n_keys, o1.data(), pool1);
  multi_query_attention(d.a, c.n_keys, o2.data(), pool2);
  multi_query_attention(d.a, c.n_keys, o4.data(), pool4);
  const std::vector<double> tol = tolerances(d.a, 0, c.n_keys);
  for (int64_t h = 0; h < c.n_heads; ++h)
    for (int64_t i = 0; i < c.dv; ++i) {
      ASSERT_NEAR(o2[h * c.dv + i], o1[h * c.dv + i], tol[h]);
      ASSERT_NEAR(o4[h * c.dv + i], o1[h * c.dv + i], tol[h]);
    }
}

}  // namespace
}  // namespace sputnik
