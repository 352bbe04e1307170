// Dequantisation and quantisation against goldens from gguf-py and PyTorch
// (tools/gen_quant_goldens.py): dequantisation must match to the bit, and the Q8_0 / Q4_0
// quantisers must reproduce gguf-py's (= ggml's reference) bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik {
namespace {

struct Golden {
  std::vector<float> input;  // empty when the golden has no f32 input
  std::vector<uint8_t> bytes;
  std::vector<float> expected;
};

Golden load_golden(const std::string& name) {
  const std::string path = std::string(SPUTNIK_TEST_DATA) + "/quants/" + name + ".bin";
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing " << path << " (run tools/gen_quant_goldens.py)";
  uint32_t hdr[3] = {};
  f.read(reinterpret_cast<char*>(hdr), sizeof(hdr));
  Golden g;
  if (hdr[2]) {
    g.input.resize(hdr[0]);
    f.read(reinterpret_cast<char*>(g.input.data()), 4 * hdr[0]);
  }
  g.bytes.resize(hdr[1]);
  f.read(reinterpret_cast<char*>(g.bytes.data()), hdr[1]);
  g.expected.resize(hdr[0]);
  f.read(reinterpret_cast<char*>(g.expected.data()), 4 * hdr[0]);
  EXPECT_TRUE(f.good()) << "truncated " << path;
  return g;
}

// Bitwise comparison (so -0.0 vs 0.0 or a 1-ulp difference fails).
void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int shown = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (a != b && shown++ < 5) ADD_FAILURE() << what << " element " << i << ": got " << got[i] << " want " << want[i];
  }
}

struct Case {
  const char* file;
  DType type;
};

class DequantGolden : public ::testing::TestWithParam<Case> {};

TEST_P(DequantGolden, BitExact) {
  const Case c = GetParam();
  const Golden g = load_golden(c.file);
  const int64_t n = static_cast<int64_t>(g.expected.size());
  ASSERT_EQ(g.bytes.size(), dtype_row_bytes(c.type, n));
  std::vector<float> out(n);
  ref::dequantize_row(c.type, g.bytes.data(), out.data(), n);
  expect_bits_equal(out, g.expected, std::string(dtype_name(c.type)));
  // The public entry point goes through the same code.
  std::vector<float> out2(n);
  dequantize_row(c.type, g.bytes.data(), out2.data(), n);
  expect_bits_equal(out2, g.expected, std::string(dtype_name(c.type)) + " (kernels.h)");
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DequantGolden,
                         ::testing::Values(Case{"q8_0", DType::Q8_0}, Case{"q4_0", DType::Q4_0},
                                           Case{"q4_1", DType::Q4_1}, Case{"q5_0", DType::Q5_0},
                                           Case{"q5_1", DType::Q5_1}, Case{"q4_k", DType::Q4_K},
                                           Case{"q5_k", DType::Q5_K}, Case{"q6_k", DType::Q6_K},
                                           Case{"f16", DType::F16}, Case{"bf16", DType::BF16},
                                           Case{"f8_e4m3", DType::F8_E4M3}),
                         [](const auto& info) { return std::string(info.param.file); });

class QuantizeGolden : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizeGolden, MatchesGgufPyBytes) {
  const Case c = GetParam();
  const Golden g = load_golden(c.file);
  ASSERT_FALSE(g.input.empty());
  std::vector<uint8_t> out(g.bytes.size());
  ASSERT_TRUE(ref::quantize_row(c.type, g.input.data(), out.data(), static_cast<int64_t>(g.input.size())));
  int shown = 0;
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] != g.bytes[i] && shown++ < 5) ADD_FAILURE() << "byte " << i << ": got " << int(out[i]) << " want " << int(g.bytes[i]);
}

INSTANTIATE_TEST_SUITE_P(Exact, QuantizeGolden,
                         ::testing::Values(Case{"q8_0", DType::Q8_0}, Case{"q4_0", DType::Q4_0},
                                           Case{"f16", DType::F16}, Case{"bf16", DType::BF16}),
                         [](const auto& info) { return std::string(info.param.file); });

TEST(Fp8BlockScales, MatchesTorchWeightDequant) {
  const Golden g = load_golden("f8_e4m3_blocks_130x132");
  constexpr int64_t kRows = 130, kCols = 132;
  ASSERT_EQ(g.bytes.size(), kRows * kCols + 4 * 4);
  std::vector<float> scale(4);
  std::memcpy(scale.data(), g.bytes.data() + kRows * kCols, 16);
  TensorView w;
  w.dtype = DType::F8_E4M3;
  w.n_dims = 2;
  w.shape = {kRows, kCols};
  w.data = g.bytes.data();
  w.scale = scale.data();
  std::vector<float> out(kRows * kCols);
  for (int64_t r = 0; r < kRows; ++r) dequantize_weight_row(w, r, out.data() + r * kCols);
  expect_bits_equal(out, g.expected, "F8_E4M3 x scale");
}

TEST(Fp16, RoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;  // NaN payloads
    ASSERT_EQ(f32_to_fp16(fp16_to_f32(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

// The K-quant quantisers are ours (not byte-identical to ggml): check they round-trip with the
// error the format allows. Per sub-block the step is (max - min) / nmax (symmetric: 2 amax / 64
// for Q6_K), so the RMS error of uniform rounding is step / sqrt(12); scale quantisation to 6 / 8
// bits adds a little. We bound the RMS error over the row by 0.5 step of the widest sub-block.
TEST(QuantizeK, RoundTripError) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int64_t n = 4096;
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  struct K {
    DType type;
    float levels;  // nmax + 1
  };
  for (const K k : {K{DType::Q4_K, 16}, K{DType::Q5_K, 32}, K{DType::Q6_K, 64}, K{DType::Q8_0, 255}, K{DType::Q4_0, 16}}) {
    std::vector<uint8_t> q(dtype_row_bytes(k.type, n));
    ASSERT_TRUE(ref::quantize_row(k.type, x.data(), q.data(), n));
    std::vector<float> y(n);
    ref::dequantize_row(k.type, q.data(), y.data(), n);
    double err = 0, range = 0;
    for (int64_t i = 0; i < n; ++i) err += (y[i] - x[i]) * (y[i] - x[i]);
    for (int64_t b = 0; b < n; b += 32) {
      float lo = x[b], hi = x[b];
      for (int j = 0; j < 32; ++j) lo = std::min(lo, x[b + j]), hi = std::max(hi, x[b + j]);
      range = std::max<double>(range, hi - lo);
    }
    const double rms = std::sqrt(err / n), step = range / (k.levels - 1);
    EXPECT_LT(rms, 0.5 * step) << dtype_name(k.type) << ": rms " << rms << " step " << step;
    EXPECT_GT(rms, 0.0) << dtype_name(k.type);
  }
}

}  // namespace
}  // namespace sputnik
