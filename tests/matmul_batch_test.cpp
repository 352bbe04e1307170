// matmul_batch (kernels/matmul_batch.cpp) against separate matmul calls: several jobs of mixed
// shapes, types and token counts, for each ISA and pool size. Every slice is the same kernel on a
// whole-tile row range, so the results must agree bit for bit.
#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/repack.h"

namespace sputnik {
namespace {

struct OwnedWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;  // FP8 block scales
  TensorView view;
};

// Random weights of `type`: quantised from normal values where ref/ has a quantiser, otherwise
// (FP8) random non-NaN codes with 128 x 128 block scales, as DeepSeek's checkpoints store them.
OwnedWeight random_weight(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  OwnedWeight w;
  const size_t row_bytes = dtype_row_bytes(type, cols);
  w.bytes.resize(row_bytes * rows);
  std::normal_distribution<float> normal;
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng) * 0.1f;
    uint8_t* dst = w.bytes.data() + r * row_bytes;
    if (ref::quantize_row(type, row.data(), dst, cols)) continue;
    EXPECT_EQ(type, DType::F8_E4M3) << "no way to make random " << dtype_name(type) << " weights";
    for (size_t i = 0; i < row_bytes; ++i) {
      dst[i] = static_cast<uint8_t>(rng());
      if ((dst[i] & 0x7F) == 0x7F) dst[i] = 0x3F;  // e4m3's NaN codes
    }
  }
  w.view.dtype = type;
  w.view.n_dims = 2;
  w.view.shape = {rows, cols};
  w.view.data = w.bytes.data();
  if (type == DType::F8_E4M3) {
    w.scales.resize(((rows + 127) / 128) * ((cols + 127) / 128));
    for (float& s : w.scales) s = std::uniform_real_distribution<float>(0.001f, 0.01f)(rng);
    w.view.scale = w.scales.data();
  }
  return w;
}

struct BatchCase {
  std::string isa;
  DType type;
};

class MatmulBatch : public ::testing::TestWithParam<BatchCase> {
 protected:
  void SetUp() override {
    saved_isa_ = kernel_isa();
    if (!set_kernel_isa(GetParam().isa)) GTEST_SKIP() << "CPU lacks " << GetParam().isa;
  }
  void TearDown() override { set_kernel_isa(saved_isa_); }
  std::string saved_isa_;
};

struct Shape {
  int64_t rows, col_blocks, n_tokens;
};

// Random weights of `type` (repacked into its 16-row interleaved layout when `repack`) and
// activations for each shape; every job through matmul_batch must equal matmul on its own.
void expect_batch_equals_separate(DType type, const std::vector<Shape>& shapes, bool repack) {
  const int64_t block = dtype_traits(type).block_elements;
  std::mt19937 rng(7);
  std::vector<OwnedWeight> weights;
  std::vector<std::vector<uint8_t>> repacked(shapes.size());
  std::vector<std::vector<float>> xs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    const int64_t cols = s.col_blocks * std::max<int64_t>(block, type == DType::F8_E4M3 ? 64 : 1);
    weights.push_back(random_weight(type, s.rows, cols, rng));
    if (repack) {
      ThreadPool pool(1);
      const DType to = ref::interleaved_type(type);
      repacked[i].resize(s.rows * dtype_row_bytes(to, cols));
      weights.back().view = repack_weight(weights.back().view, to, repacked[i].data(), pool);
    }
    std::vector<float> x(s.n_tokens * cols);
    std::normal_distribution<float> normal;
    for (float& v : x) v = normal(rng);
    xs.push_back(std::move(x));
  }
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    std::vector<std::vector<float>> expected(shapes.size()), actual(shapes.size());
    std::vector<MatmulJob> jobs;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const size_t n = shapes[i].rows * shapes[i].n_tokens;
      expected[i].assign(n, 0.0f);
      actual[i].assign(n, -1.0f);  // every element must be written
      matmul(weights[i].view, xs[i].data(), shapes[i].n_tokens, expected[i].data(), pool);
      jobs.push_back({&weights[i].view, xs[i].data(), shapes[i].n_tokens, actual[i].data()});
    }
    matmul_batch(jobs, pool);
    for (size_t i = 0; i < shapes.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(expected[i].data(), actual[i].data(), expected[i].size() * sizeof(float)))
          << dtype_name(weights[i].view.dtype) << " job " << i << " (" << shapes[i].rows
          << " rows, " << shapes[i].n_tokens << " tokens), " << threads << " threads";
    }
  }
}

TEST_P(MatmulBatch, EqualsSeparateMatmuls) {
  // A MoE-like mix of tall and tiny matrices: rows off the 4-row tile and the FP8 128-row scale
  // block, one token (decode) and uneven token counts (prefill groups), an expert no token chose.
  expect_batch_equals_separate(GetParam().type,
                               {{300, 8, 1}, {1, 8, 1}, {67, 3, 5}, {130, 2, 17}, {5, 1, 4},
                                {256, 4, 0}, {13, 8, 2}},
                               false);
}

TEST_P(MatmulBatch, DecodeJobsEqualSeparateMatmuls) {
  // Every job at most kMatmulOnePassTokens tokens: guided slices in job order, shrinking to one
  // row step at the end (a job cut into many slices, and tiny jobs).
  expect_batch_equals_separate(GetParam().type,
                               {{1000, 8, 1}, {1, 8, 1}, {67, 3, 1}, {130, 2, kMatmulOnePassTokens}, {5, 1, 4},
                                {256, 4, 0}, {13, 8, 2}},
                               false);
}

using MatmulBatchInterleaved = MatmulBatch;

TEST_P(MatmulBatchInterleaved, DecodeJobsEqualSeparateMatmuls) {
  expect_batch_equals_separate(GetParam().type,
                               {{1024, 8, 1}, {16, 8, 1}, {48, 3, 2}, {144, 2, kMatmulOnePassTokens}, {32, 4, 0}},
                               true);
}

TEST_P(MatmulBatchInterleaved, EqualsSeparateMatmuls) {
  // Interleaved layouts slice at 16-row groups: rows a multiple of 16, tokens across the tiles.
  expect_batch_equals_separate(GetParam().type,
                               {{320, 8, 1}, {16, 8, 1}, {48, 3, 9}, {144, 2, 17}, {32, 4, 0}},
                               true);
}

std::vector<BatchCase> cases(std::initializer_list<DType> types) {
  std::vector<BatchCase> out;
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    for (DType type : types) out.push_back({isa, type});
  }
  return out;
}

std::string case_name(const ::testing::TestParamInfo<BatchCase>& info) {
  return info.param.isa + "_" + std::string(dtype_name(info.param.type));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, MatmulBatch,
                         ::testing::ValuesIn(cases({DType::Q4_0, DType::Q8_0, DType::Q4_K,
                                                    DType::Q6_K, DType::F16, DType::F32,
                                                    DType::F8_E4M3})),
                         case_name);
// Every kernel set multiplies the interleaved layouts (only AVX-512 picks them at load).
INSTANTIATE_TEST_SUITE_P(AllIsas, MatmulBatchInterleaved,
                         ::testing::ValuesIn(cases({DType::Q4_0, DType::Q8_0, DType::Q4_K})),
                         case_name);

}  // namespace
}  // namespace sputnik
