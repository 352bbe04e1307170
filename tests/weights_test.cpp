// WeightSource::get_matrix: which weights it repacks at load, that the repacked copy holds exactly
// the stored values, and that SPUTNIK_REPACK=0 and non-AVX-512 kernel sets keep the file's layout.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "formats/gguf_writer.h"
#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "models/weights.h"

namespace sputnik {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> quantized(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint8_t> bytes(dtype_row_bytes(type, cols) * rows);
  std::normal_distribution<float> nd;
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : row) v = nd(rng);
    EXPECT_TRUE(ref::quantize_row(type, row.data(), bytes.data() + r * dtype_row_bytes(type, cols), cols));
  }
  return bytes;
}

// Q5_0 (no quantiser here): random codes and fifth bits, scales fp16 values in [0.01, 0.1).
std::vector<uint8_t> random_q5_0(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint8_t> bytes(dtype_row_bytes(DType::Q5_0, cols) * rows);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(0.01f, 0.1f);
  for (size_t at = 0; at < bytes.size(); at += sizeof(BlockQ5_0)) {
    const uint16_t d = f32_to_fp16(scale(rng));
    std::memcpy(bytes.data() + at, &d, 2);
  }
  return bytes;
}

class GetMatrix : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() / ("sputnik_weights_test_" + std::to_string(::getpid()) + ".gguf")).string();
    std::mt19937 rng(9);
    GgufWriter writer;
    writer.add_string("general.architecture", "test");
    writer.add_tensor("q4_0", DType::Q4_0, {48, 64}, quantized(DType::Q4_0, 48, 64, rng));
    writer.add_tensor("q8_0_experts", DType::Q8_0, {2, 32, 64}, quantized(DType::Q8_0, 64, 64, rng));
    writer.add_tensor("q4_k", DType::Q4_K, {16, 256}, quantized(DType::Q4_K, 16, 256, rng));
    writer.add_tensor("q4_0_20_rows", DType::Q4_0, {20, 64}, quantized(DType::Q4_0, 20, 64, rng));
    writer.add_tensor("q6_k", DType::Q6_K, {16, 256}, quantized(DType::Q6_K, 16, 256, rng));
    // As llama.cpp's Q4_K files store ffn_down_exps (rows of 1408 are no multiple of 256).
    writer.add_tensor("q5_0_experts", DType::Q5_0, {2, 32, 96}, random_q5_0(64, 96, rng));
    ASSERT_TRUE(writer.write(path_).ok());
    saved_isa_ = kernel_isa();
  }
  void TearDown() override {
    set_kernel_isa(saved_isa_);
    ::unsetenv("SPUTNIK_REPACK");
    fs::remove(path_);
  }
  std::string path_, saved_isa_;
};

// Every row of the repacked matrix dequantises bit-equal to the stored row.
void expect_same_values(const TensorView& got, const TensorView& stored) {
  ASSERT_EQ(got.rows(), stored.rows());
  std::vector<float> a(stored.cols()), b(stored.cols());
  for (int64_t r = 0; r < stored.rows(); ++r) {
    dequantize_weight_row(stored, r, a.data());
    dequantize_weight_row(got, r, b.data());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << stored.name << " row " << r;
  }
}

TEST_F(GetMatrix, RepacksWholeGroupsOnAvx512Only) {
  for (const char* isa : {"avx512", "avx2", "scalar"}) {
    if (!set_kernel_isa(isa)) continue;
    const bool avx512 = std::string(isa) == "avx512";
    auto source = WeightSource::open(path_);
    ASSERT_TRUE(source.ok()) << source.message();
    const WeightSource& w = **source;
    struct Case {
      const char* name;
      std::initializer_list<int64_t> shape;
      DType want;
    };
    const Case cases[] = {
        {"q4_0", {48, 64}, avx512 ? DType::Q4_0x16 : DType::Q4_0},
        {"q8_0_experts", {2, 32, 64}, avx512 ? DType::Q8_0x16 : DType::Q8_0},  // per expert: 32 rows
        {"q4_k", {16, 256}, avx512 ? DType::Q4_Kx16 : DType::Q4_K},
        {"q4_0_20_rows", {20, 64}, DType::Q4_0},  // not whole 16-row groups: kept as stored
        {"q6_k", {16, 256}, DType::Q6_K},         // no interleaved form
        {"q5_0_experts", {2, 32, 96}, avx512 ? DType::Q5_0x16 : DType::Q5_0},
    };
    for (const Case& c : cases) {
      auto stored = w.get(c.name, c.shape);
      auto matrix = w.get_matrix(c.name, c.shape);
      ASSERT_TRUE(stored.ok() && matrix.ok()) << c.name;
      EXPECT_EQ(matrix->dtype, c.want) << isa << " " << c.name;
      EXPECT_EQ(matrix->n_dims, stored->n_dims);
      expect_same_values(*matrix, *stored);
      // Asked twice: the same copy, not a second one.
      EXPECT_EQ(w.get_matrix(c.name, c.shape)->data, matrix->data) << c.name;
    }
    // A stacked weight's experts slice at their boundaries.
    const TensorView experts = *w.get_matrix("q8_0_experts", {2, 32, 64});
    const TensorView stored = *w.get("q8_0_experts", {2, 32, 64});
    expect_same_values(slice_rows(experts, 32, 64), slice_rows(stored, 32, 64));
    // Shape errors still name the tensor.
    auto wrong = w.get_matrix("q4_0", {64, 48});
    ASSERT_FALSE(wrong.ok());
    EXPECT_NE(wrong.message().find("q4_0"), std::string::npos);
  }
}

TEST_F(GetMatrix, RepackZeroKeepsTheFileLayout) {
  if (!set_kernel_isa("avx512")) GTEST_SKIP() << "CPU lacks avx512";
  ::setenv("SPUTNIK_REPACK", "0", 1);
  auto source = WeightSource::open(path_);
  ASSERT_TRUE(source.ok());
  auto m = (*source)->get_matrix("q4_0", {48, 64});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->dtype, DType::Q4_0);
  EXPECT_EQ(m->data, (*source)->get("q4_0", {48, 64})->data);
}

}  // namespace
}  // namespace sputnik
