// GGUF reader and writer. Expectations come from tools/gen_format_fixtures.py, which writes
// tests/data/formats/*.gguf with the Python `gguf` package and records in expected.json what it
// was told to write; the demo model's values were read with the same package.
#include "formats/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "formats/gguf_writer.h"
#include "formats/safetensors.h"  // read_json_file

namespace sputnik {
namespace {

namespace fs = std::filesystem;

const std::string kData = std::string(SPUTNIK_TEST_DATA) + "/formats";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const uint8_t* data, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
}
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_bytes(path, bytes.data(), bytes.size());
}

// A fresh directory per test (and process, as several builds may run the suite at once).
std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir =
      fs::path(::testing::TempDir()) / (std::string("sputnik_gguf_") + info->test_suite_name() +
                                        "_" + info->name() + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // Removed when the test binary exits.
  static struct Cleanup {
    std::vector<fs::path> dirs;
    ~Cleanup() {
      std::error_code ec;
      for (const fs::path& d : dirs) fs::remove_all(d, ec);
    }
  } cleanup;
  cleanup.dirs.push_back(dir);
  return dir.string();
}

std::string hex(const void* data, size_t n) {
  std::string s;
  const auto* b = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) s += fmt::format("{:02x}", b[i]);
  return s;
}

nlohmann::json expected_json() {
  Result<nlohmann::json> j = read_json_file(kData + "/expected.json");
  EXPECT_TRUE(j.ok()) << (j.ok() ? "" : j.message());
  return j.ok() ? *j : nlohmann::json::object();
}

GgufValueType type_from_name(const std::string& name) {
  static const std::map<std::string, GgufValueType> kTypes = {
      {"uint8", GgufValueType::UInt8},     {"int8", GgufValueType::Int8},
      {"uint16", GgufValueType::UInt16},   {"int16", GgufValueType::Int16},
      {"uint32", GgufValueType::UInt32},   {"int32", GgufValueType::Int32},
      {"float32", GgufValueType::Float32}, {"bool", GgufValueType::Bool},
      {"string", GgufValueType::String},   {"array", GgufValueType::Array},
      {"uint64", GgufValueType::UInt64},   {"int64", GgufValueType::Int64},
      {"float64", GgufValueType::Float64}};
  return kTypes.at(name);
}

// Compares a value read from the file with the JSON the generator recorded for it.
void expect_value(const std::string& key, const GgufValue& v, GgufValueType type,
                  const nlohmann::json& want) {
  SCOPED_TRACE(key);
  ASSERT_EQ(v.type, type);
  switch (type) {
    case GgufValueType::UInt8:
    case GgufValueType::UInt16:
    case GgufValueType::UInt32:
    case GgufValueType::UInt64: EXPECT_EQ(std::get<uint64_t>(v.value), want.get<uint64_t>()); break;
    case GgufValueType::Int8:
    case GgufValueType::Int16:
    case GgufValueType::Int32:
    case GgufValueType::Int64: EXPECT_EQ(std::get<int64_t>(v.value), want.get<int64_t>()); break;
    case GgufValueType::Float32:
      EXPECT_EQ(std::get<double>(v.value), static_cast<double>(want.get<float>()));
      break;
    case GgufValueType::Float64: EXPECT_EQ(std::get<double>(v.value), want.get<double>()); break;
    case GgufValueType::Bool: EXPECT_EQ(std::get<bool>(v.value), want.get<bool>()); break;
    case GgufValueType::String:
      EXPECT_EQ(std::get<std::string>(v.value), want.get<std::string>());
      break;
    case GgufValueType::Array: {
      const GgufArray& a = *std::get<std::shared_ptr<GgufArray>>(v.value);
      ASSERT_EQ(a.size(), want.size());
      for (size_t i = 0; i < a.size(); ++i) {
        GgufValueType element = v.element_type;
        if (element == GgufValueType::Array) {
          // The generator nests int lists; the Python writer infers int32 for them.
          expect_value(key, a[i], GgufValueType::Array, want[i]);
        } else {
          expect_value(key, a[i], element, want[i]);
        }
      }
      break;
    }
  }
}

void expect_tensors(const GgufFile& file, const nlohmann::json& want) {
  ASSERT_EQ(file.tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const nlohmann::json& t = want[i];
    const GgufTensorInfo& info = file.tensors()[i];
    SCOPED_TRACE(info.name);
    EXPECT_EQ(info.name, t["name"].get<std::string>());
    EXPECT_EQ(info.ggml_type, t["ggml_type"].get<uint32_t>());
    Result<DType> dtype = dtype_from_ggml(info.ggml_type);
    ASSERT_TRUE(dtype.ok());
    EXPECT_EQ(info.view.dtype, *dtype);
    const std::vector<int64_t> shape = t["shape"].get<std::vector<int64_t>>();
    ASSERT_EQ(info.view.n_dims, static_cast<int>(shape.size()));
    for (size_t d = 0; d < shape.size(); ++d) EXPECT_EQ(info.view.shape[d], shape[d]);
    EXPECT_EQ(info.view.name, info.name);
    EXPECT_EQ(info.view.scale, nullptr);
    const std::string bytes = t["hex"].get<std::string>();
    ASSERT_EQ(info.view.bytes() * 2, bytes.size());
    EXPECT_EQ(hex(info.view.data, info.view.bytes()), bytes);
    // Data sits at a multiple of the alignment inside the map.
    const uint64_t at = static_cast<const uint8_t*>(info.view.data) - file.mapping()->data();
    EXPECT_EQ(at, file.data_offset() + info.offset);
    EXPECT_EQ(at % file.alignment(), 0u);
    if (t.contains("values")) {
      const auto values = t["values"].get<std::vector<float>>();
      const auto* f = static_cast<const float*>(info.view.data);
      for (size_t k = 0; k < values.size(); ++k) EXPECT_EQ(f[k], values[k]);
    }
    Result<TensorView> view = file.tensor(info.name);
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(view->data, info.view.data);
    EXPECT_EQ(file.find_tensor(info.name), &info);
  }
}

TEST(GgufReader, ReadsPythonWrittenFile) {
  const nlohmann::json want = expected_json()["gguf"][0];
  Result<GgufFile> file = GgufFile::open(kData + "/tiny.gguf");
  ASSERT_TRUE(file.ok()) << file.message();
  EXPECT_EQ(file->version(), want["version"].get<uint32_t>());
  EXPECT_EQ(file->alignment(), 32u);
  EXPECT_EQ(file->path(), kData + "/tiny.gguf");
  ASSERT_EQ(file->metadata().size(), want["metadata"].size());
  for (const auto& [key, m] : want["metadata"].items()) {
    ASSERT_TRUE(file->has(key)) << key;
    const GgufValue& v = file->metadata().at(key);
    expect_value(key, v, type_from_name(m["type"]), m["value"]);
    if (m.contains("element")) {
      EXPECT_EQ(v.element_type, type_from_name(m["element"])) << key;
    }
  }
  expect_tensors(*file, want["tensors"]);
}

TEST(GgufReader, TypedGetters) {
  Result<GgufFile> file = GgufFile::open(kData + "/tiny.gguf");
  ASSERT_TRUE(file.ok()) << file.message();
  EXPECT_EQ(*file->get_string("general.architecture"), "llama");
  EXPECT_EQ(*file->get_int("test.u8"), 200);
  EXPECT_EQ(*file->get_int("test.i64"), -9000000000000000000LL);
  EXPECT_EQ(*file->get_int("test.u32"), 4000000000LL);
  EXPECT_EQ(*file->get_float("test.f32"), 0.5);
  EXPECT_EQ(*file->get_float("test.i16"), -30000.0);  // integers convert
  EXPECT_EQ(*file->get_bool("test.bool_true"), true);
  EXPECT_EQ(*file->get_bool("test.bool_false"), false);
  EXPECT_EQ(*file->get_string("test.empty_string"), "");
  EXPECT_EQ(*file->get_string_array("test.array_str"), (std::vector<std::string>{"a", "bc", "",
                                                                                 "d\xc3\xa9"
                                                                                 "f"}));
  EXPECT_EQ(*file->get_int_array("test.array_i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(*file->get_int_array("test.array_u8"), (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(*file->get_float_array("test.array_f32"), (std::vector<double>{0.25, -1.5}));
  EXPECT_EQ(*file->get_int_or("llama.block_count", 7), 2);
  EXPECT_EQ(*file->get_int_or("llama.absent", 7), 7);
  EXPECT_EQ(*file->get_float_or("llama.absent", 1.5), 1.5);

  Result<int64_t> big = file->get_int("test.u64");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.message().find("does not fit in int64"), std::string::npos) << big.message();
  Result<std::string> wrong = file->get_string("test.u8");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("tiny.gguf: metadata key 'test.u8': expected string, got uint8"),
            std::string::npos)
      << wrong.message();
  Result<int64_t> wrong_or = file->get_int_or("test.string", 1);
  ASSERT_FALSE(wrong_or.ok());
  EXPECT_NE(wrong_or.message().find("expected an integer, got string"), std::string::npos);
  Result<std::vector<std::string>> wrong_array = file->get_string_array("test.array_i32");
  ASSERT_FALSE(wrong_array.ok());
  EXPECT_NE(wrong_array.message().find("expected array of string, got array of int32"),
            std::string::npos)
      << wrong_array.message();
  Result<bool> missing = file->get_bool("test.nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("metadata key 'test.nope' not found"), std::string::npos);
  Result<TensorView> no_tensor = file->tensor("nope.weight");
  ASSERT_FALSE(no_tensor.ok());
  EXPECT_NE(no_tensor.message().find("tensor 'nope.weight' not found"), std::string::npos);
  EXPECT_EQ(file->find_tensor("nope.weight"), nullptr);
}

TEST(GgufReader, CustomAlignment) {
  const nlohmann::json want = expected_json()["gguf"][1];
  Result<GgufFile> file = GgufFile::open(kData + "/align64.gguf");
  ASSERT_TRUE(file.ok()) << file.message();
  EXPECT_EQ(file->alignment(), 64u);
  EXPECT_EQ(*file->get_int("general.alignment"), 64);
  EXPECT_EQ(file->data_offset() % 64, 0u);
  expect_tensors(*file, want["tensors"]);
}

TEST(GgufReader, AcceptsVersion2) {
  // v2 and v3 share a layout (v3 added big-endian files, which carry a different version word).
  std::vector<uint8_t> bytes = read_bytes(kData + "/tiny.gguf");
  bytes[4] = 2;
  const std::string path = temp_dir() + "/v2.gguf";
  write_bytes(path, bytes);
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.ok()) << file.message();
  EXPECT_EQ(file->version(), 2u);
  EXPECT_EQ(file->tensors().size(), 9u);
}

// Opens `bytes` as a file and expects an error containing each of `substrings`.
void expect_error(const std::vector<uint8_t>& bytes,
                  std::initializer_list<std::string> substrings) {
  const std::string path = temp_dir() + "/bad.gguf";
  write_bytes(path, bytes);
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_FALSE(file.ok()) << "opened a bad file";
  EXPECT_NE(file.message().find(path), std::string::npos) << file.message();
  for (const std::string& s : substrings) {
    EXPECT_NE(file.message().find(s), std::string::npos)
        << "expected '" << s << "' in: " << file.message();
  }
}

TEST(GgufReader, WrongMagic) {
  std::vector<uint8_t> bytes = read_bytes(kData + "/tiny.gguf");
  std::memcpy(bytes.data(), "GGML", 4);
  expect_error(bytes, {"not a GGUF file", "47 47 4d 4c", "expected 'GGUF'"});
}

TEST(GgufReader, BadVersion) {
  std::vector<uint8_t> bytes = read_bytes(kData + "/tiny.gguf");
  bytes[4] = 7;
  expect_error(bytes, {"unsupported GGUF version 7 (expected 2 or 3)"});
  bytes[4] = 1;
  expect_error(bytes, {"GGUF version 1 is not supported"});
}

TEST(GgufReader, EmptyFile) { expect_error({}, {"not a GGUF file: 0 bytes"}); }

// Every prefix of the fixture: the ones that cut into the header or tensor data must fail with
// a clean error; none may crash. (Prefixes that only drop the final padding are still valid.)
TEST(GgufReader, TruncatedAtEveryLength) {
  const std::vector<uint8_t> bytes = read_bytes(kData + "/tiny.gguf");
  Result<GgufFile> full = GgufFile::open(kData + "/tiny.gguf");
  ASSERT_TRUE(full.ok()) << full.message();
  uint64_t needed = 0;
  for (const GgufTensorInfo& t : full->tensors()) {
    needed = std::max<uint64_t>(needed, full->data_offset() + t.offset + t.view.bytes());
  }
  const std::string path = temp_dir() + "/cut.gguf";
  int errors = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(path, bytes.data(), n);
    Result<GgufFile> file = GgufFile::open(path);
    if (n < needed) {
      ASSERT_FALSE(file.ok()) << "prefix of " << n << " bytes opened";
      ASSERT_NE(file.message().find(path), std::string::npos) << file.message();
      const std::string& m = file.message();
      ASSERT_TRUE(m.find("truncated") != std::string::npos ||
                  m.find("past end of file") != std::string::npos ||
                  m.find("cannot fit") != std::string::npos ||
                  m.find("not a GGUF file") != std::string::npos)
          << "prefix " << n << ": " << m;
      ++errors;
    } else {
      ASSERT_TRUE(file.ok()) << "prefix " << n << ": " << file.message();
    }
  }
  EXPECT_EQ(errors, static_cast<int>(needed));
}

// Reads every byte a view claims, so an out-of-bounds view fails under ASan (and the explicit
// range check fails everywhere).
uint64_t touch(const GgufFile& file) {
  uint64_t sum = 0;
  const uint8_t* begin = file.mapping()->data();
  const uint8_t* end = begin + file.mapping()->size();
  for (const GgufTensorInfo& t : file.tensors()) {
    const auto* p = static_cast<const uint8_t*>(t.view.data);
    EXPECT_TRUE(p >= begin && p + t.view.bytes() <= end) << t.name;
    if (!(p >= begin && p + t.view.bytes() <= end)) continue;
    for (size_t i = 0; i < t.view.bytes(); ++i) sum += p[i];
  }
  for (const auto& [key, value] : file.metadata()) {
    (void)file.get_string(key);
    (void)file.get_int(key);
    (void)file.get_float(key);
    (void)file.get_string_array(key);
    (void)file.get_int_array(key);
    (void)file.get_float_array(key);
  }
  return sum;
}

TEST(GgufReader, RandomByteFlipsNeverCrash) {
  const std::vector<uint8_t> original = read_bytes(kData + "/tiny.gguf");
  Result<GgufFile> full = GgufFile::open(kData + "/tiny.gguf");
  ASSERT_TRUE(full.ok());
  const size_t header = full->data_offset();  // flips in tensor data are always harmless
  const std::string path = temp_dir() + "/flip.gguf";
  std::mt19937 rng(20240611);
  int opened = 0, failed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % header;
      bytes[at] ^= static_cast<uint8_t>(1 + rng() % 255);
    }
    write_bytes(path, bytes);
    Result<GgufFile> file = GgufFile::open(path);
    if (file.ok()) {
      ++opened;
      touch(*file);
    } else {
      ++failed;
      ASSERT_FALSE(file.message().empty());
      ASSERT_NE(file.message().find(path), std::string::npos) << file.message();
    }
  }
  // Both outcomes occur (a flip inside a string's characters is harmless).
  EXPECT_GT(opened, 0);
  EXPECT_GT(failed, 0);
}

// Builds GGUF bytes field by field, including values no valid writer would produce.
class RawGguf {
 public:
  RawGguf& u8(uint8_t v) { return put(&v, 1); }
  RawGguf& u32(uint32_t v) { return put(&v, 4); }
  RawGguf& u64(uint64_t v) { return put(&v, 8); }
  RawGguf& str(const std::string& s) {
    u64(s.size());
    return put(s.data(), s.size());
  }
  RawGguf& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    put("GGUF", 4);
    u32(version);
    u64(tensors);
    return u64(kvs);
  }
  // Tensor info; ne in ggml order (ne[0] contiguous).
  RawGguf& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                  uint64_t offset) {
    str(name);
    u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) u64(n);
    u32(type);
    return u64(offset);
  }
  RawGguf& pad(size_t alignment = 32) {
    while (bytes_.size() % alignment) bytes_.push_back(0);
    return *this;
  }
  RawGguf& zeros(size_t n) {
    bytes_.insert(bytes_.end(), n, 0);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  RawGguf& put(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
    return *this;
  }
  std::vector<uint8_t> bytes_;
};

TEST(GgufReader, MinimalHandBuiltFileOpens) {
  // Guards the hand-built cases below: the same file with valid values opens.
  RawGguf g;
  g.header(1, 1).str("a.key").u32(4).u32(7);
  g.tensor("blk.0.attn_q.weight", {4, 2}, 0, 0).pad().zeros(32);
  const std::string path = temp_dir() + "/ok.gguf";
  write_bytes(path, g.bytes());
  Result<GgufFile> file = GgufFile::open(path);
  ASSERT_TRUE(file.ok()) << file.message();
  const TensorView view = *file->tensor("blk.0.attn_q.weight");
  EXPECT_EQ(view.n_dims, 2);
  EXPECT_EQ(view.shape[0], 2);  // PyTorch order: ne reversed
  EXPECT_EQ(view.shape[1], 4);
  EXPECT_EQ(view.bytes(), 32u);
}

TEST(GgufReader, TensorDataOutOfBounds) {
  RawGguf g;
  g.header(1, 0).tensor("blk.0.attn_q.weight", {4, 4}, 0, 0).pad().zeros(32);  // needs 64
  expect_error(g.bytes(), {"tensor 'blk.0.attn_q.weight': data [offset 0, 64 bytes] runs past "
                           "end of file",
                           "file size"});
}

TEST(GgufReader, TensorOffsetOutOfBounds) {
  RawGguf g;
  g.header(1, 0).tensor("w", {8}, 0, 1ull << 62).pad().zeros(32);
  expect_error(g.bytes(), {"tensor 'w'", "runs past end of file"});
}

TEST(GgufReader, ShapeNotMultipleOfBlockSize) {
  RawGguf g;
  g.header(1, 0).tensor("blk.0.ffn_up.weight", {33, 2}, 8, 0).pad().zeros(128);
  expect_error(g.bytes(), {"tensor 'blk.0.ffn_up.weight'", "ne[0] = 33",
                           "not a multiple of the Q8_0 block size 32"});
}

TEST(GgufReader, UnknownTensorType) {
  RawGguf g;
  g.header(1, 0).tensor("blk.3.ffn_down.weight", {256}, 10, 0).pad().zeros(256);
  expect_error(g.bytes(), {"tensor 'blk.3.ffn_down.weight'", "unsupported ggml type 10 (Q2_K)"});
  RawGguf h;
  h.header(1, 0).tensor("x", {256}, 999, 0).pad().zeros(256);
  expect_error(h.bytes(), {"tensor 'x'", "unsupported ggml type 999"});
}

TEST(GgufReader, MisalignedTensorOffset) {
  RawGguf g;
  g.header(1, 0).tensor("w", {4}, 0, 4).pad().zeros(64);
  expect_error(g.bytes(), {"tensor 'w': offset 4 is not a multiple of the alignment 32"});
}

TEST(GgufReader, BadDims) {
  RawGguf zero_dims;
  zero_dims.header(1, 0).tensor("w", {}, 0, 0).pad().zeros(64);
  expect_error(zero_dims.bytes(), {"tensor 'w': n_dims is 0, expected 1..4"});
  RawGguf five;
  five.header(1, 0).tensor("w", {1, 1, 1, 1, 1}, 0, 0).pad().zeros(64);
  expect_error(five.bytes(), {"tensor 'w': n_dims is 5"});
  RawGguf zero;
  zero.header(1, 0).tensor("w", {4, 0}, 0, 0).pad().zeros(64);
  expect_error(zero.bytes(), {"tensor 'w': ne[1] is 0, expected > 0"});
  RawGguf overflow;
  overflow.header(1, 0).tensor("w", {1ull << 40, 1ull << 40}, 0, 0).pad().zeros(64);
  expect_error(overflow.bytes(), {"tensor 'w': element count overflows"});
  RawGguf bytes_overflow;  // numel fits int64, numel * 4 bytes does not
  bytes_overflow.header(1, 0).tensor("w", {1ull << 31, 1ull << 31}, 0, 0).pad().zeros(64);
  expect_error(bytes_overflow.bytes(), {"tensor 'w': byte size overflows"});
}

TEST(GgufReader, DuplicateNames) {
  RawGguf keys;
  keys.header(0, 2).str("a").u32(4).u32(1).str("a").u32(4).u32(2);
  expect_error(keys.bytes(), {"metadata key 'a' appears twice"});
  RawGguf tensors;
  tensors.header(2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).pad().zeros(64);
  expect_error(tensors.bytes(), {"tensor 'w' appears twice"});
}

TEST(GgufReader, HugeCountsAreRejectedBeforeAllocating) {
  RawGguf tensors;
  tensors.header(1ull << 60, 0).zeros(64);
  expect_error(tensors.bytes(), {"tensor count 1152921504606846976 cannot fit"});
  RawGguf kvs;
  kvs.header(0, ~0ull).zeros(64);
  expect_error(kvs.bytes(), {"metadata count 18446744073709551615 cannot fit"});
  RawGguf string;
  string.header(0, 1).str("k").u32(8).u64(1ull << 50).zeros(16);
  expect_error(string.bytes(),
               {"metadata key 'k'", "string of 1125899906842624 bytes", "runs past end of file"});
  RawGguf array;
  array.header(0, 1).str("k").u32(9).u32(4).u64(1ull << 40).zeros(16);
  expect_error(array.bytes(),
               {"metadata key 'k': array of 1099511627776 uint32 elements", "cannot fit"});
  RawGguf key;
  key.header(0, 1).u64(~0ull).zeros(16);
  expect_error(key.bytes(), {"metadata key #0", "runs past end of file"});
}

TEST(GgufReader, BadMetadataValues) {
  RawGguf type;
  type.header(0, 1).str("k").u32(13).zeros(16);
  expect_error(type.bytes(), {"metadata key 'k': unknown value type 13"});
  RawGguf element;
  element.header(0, 1).str("k").u32(9).u32(42).u64(1).zeros(16);
  expect_error(element.bytes(), {"metadata key 'k': unknown array element type 42"});
  RawGguf boolean;
  boolean.header(0, 1).str("k").u32(7).u8(2).zeros(16);
  expect_error(boolean.bytes(), {"metadata key 'k': bool at offset", "is 2, expected 0 or 1"});
  RawGguf deep;  // arrays of arrays, 9 deep: one level past the limit
  deep.header(0, 1).str("k").u32(9);
  for (int i = 0; i < 9; ++i) deep.u32(9).u64(1);
  deep.zeros(64);
  expect_error(deep.bytes(), {"metadata key 'k': arrays nested deeper than 8 levels"});
  RawGguf empty_key;
  empty_key.header(0, 1).str("").u32(4).u32(0).zeros(16);
  expect_error(empty_key.bytes(), {"metadata key #0 is empty"});
}

TEST(GgufReader, BadAlignment) {
  RawGguf odd;
  odd.header(0, 1).str("general.alignment").u32(4).u32(48).zeros(16);
  expect_error(odd.bytes(), {"'general.alignment': 48 is not a power of two"});
  RawGguf zero;
  zero.header(0, 1).str("general.alignment").u32(4).u32(0).zeros(16);
  expect_error(zero.bytes(), {"'general.alignment': 0 is not a power of two"});
  RawGguf text;
  text.header(0, 1).str("general.alignment").u32(8).str("32").zeros(16);
  expect_error(text.bytes(), {"'general.alignment': expected an unsigned integer, got string"});
}

TEST(GgufWriter, RoundTripsEveryValueTypeAndTensor) {
  for (uint32_t alignment : {32u, 64u, 8u}) {
    SCOPED_TRACE(alignment);
    GgufWriter w(alignment);
    w.add_string("general.architecture", "deepseek2");
    w.add_uint8("t.u8", 255);
    w.add_int8("t.i8", -128);
    w.add_uint16("t.u16", 65535);
    w.add_int16("t.i16", -32768);
    w.add_uint32("t.u32", 0xffffffffu);
    w.add_int32("t.i32", -2147483647 - 1);
    w.add_uint64("t.u64", ~0ull);
    w.add_int64("t.i64", -1234567890123LL);
    w.add_float32("t.f32", 1e-6f);
    w.add_float64("t.f64", -2.5e300);
    w.add_bool("t.bool", true);
    w.add_string("t.str", std::string("nul\0inside", 10));
    w.add_string_array("t.strs", {"x", "", "yz"});
    w.add_string_array("t.empty", {});
    w.add_int_array("t.i32s", GgufValueType::Int32, {1, -1, 2147483647});
    w.add_int_array("t.u64s", GgufValueType::UInt64, {0, 1, 1ll << 62});
    w.add_float_array("t.f32s", GgufValueType::Float32, {0.5, -0.25});
    w.add_float_array("t.f64s", GgufValueType::Float64, {0.1});
    // Nested: [[1, 2], []] of uint16.
    GgufValue nested;
    nested.type = GgufValueType::Array;
    nested.element_type = GgufValueType::Array;
    auto outer = std::make_shared<GgufArray>();
    for (int n : {2, 0}) {
      GgufValue inner;
      inner.type = GgufValueType::Array;
      inner.element_type = GgufValueType::UInt16;
      auto items = std::make_shared<GgufArray>();
      for (int i = 1; i <= n; ++i) {
        GgufValue x;
        x.type = GgufValueType::UInt16;
        x.value = uint64_t(i);
        items->push_back(x);
      }
      inner.value = items;
      outer->push_back(inner);
    }
    nested.value = outer;
    w.add("t.nested", nested);

    std::mt19937 rng(7);
    auto random_bytes = [&](size_t n) {
      std::vector<uint8_t> b(n);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
      return b;
    };
    struct Spec {
      std::string name;
      DType dtype;
      std::vector<int64_t> shape;
    };
    const std::vector<Spec> specs = {{"f32", DType::F32, {3, 5}},
                                     {"f16", DType::F16, {7}},
                                     {"bf16", DType::BF16, {2, 2, 3}},
                                     {"q8_0", DType::Q8_0, {2, 64}},
                                     {"q4_k", DType::Q4_K, {1, 256}},
                                     {"q6_k", DType::Q6_K, {2, 1, 1, 256}},
                                     {"i32", DType::I32, {3}},
                                     {"i64", DType::I64, {1}},
                                     {"q5_0", DType::Q5_0, {32}},
                                     {"q5_1", DType::Q5_1, {32}},
                                     {"q4_0", DType::Q4_0, {32}},
                                     {"q4_1", DType::Q4_1, {32}},
                                     {"q5_k", DType::Q5_K, {256}},
                                     {"q8_k", DType::Q8_K, {256}},
                                     {"i8", DType::I8, {5}}};
    std::vector<std::vector<uint8_t>> datas;
    for (const Spec& s : specs) {
      int64_t numel = 1;
      for (int64_t d : s.shape) numel *= d;
      datas.push_back(random_bytes(dtype_row_bytes(s.dtype, numel)));
    }
    for (size_t i = 0; i < specs.size(); ++i) {
      if (i % 2) {
        w.add_tensor(specs[i].name, specs[i].dtype, specs[i].shape, datas[i]);  // owned copy
      } else {
        w.add_tensor(specs[i].name, specs[i].dtype, specs[i].shape, datas[i].data(),
                     datas[i].size());
      }
    }
    const std::string path = temp_dir() + "/rt.gguf";
    Status written = w.write(path);
    ASSERT_TRUE(written.ok()) << written.message();
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    Result<std::vector<uint8_t>> in_memory = w.to_bytes();
    ASSERT_TRUE(in_memory.ok());
    EXPECT_EQ(*in_memory, read_bytes(path));

    Result<GgufFile> file = GgufFile::open(path);
    ASSERT_TRUE(file.ok()) << file.message();
    EXPECT_EQ(file->version(), 3u);
    EXPECT_EQ(file->alignment(), alignment);
    EXPECT_EQ(file->has("general.alignment"), alignment != 32);
    EXPECT_EQ(*file->get_string("general.architecture"), "deepseek2");
    EXPECT_EQ(*file->get_int("t.u8"), 255);
    EXPECT_EQ(*file->get_int("t.i8"), -128);
    EXPECT_EQ(*file->get_int("t.u16"), 65535);
    EXPECT_EQ(*file->get_int("t.i16"), -32768);
    EXPECT_EQ(*file->get_int("t.u32"), 0xffffffffll);
    EXPECT_EQ(*file->get_int("t.i32"), -2147483648ll);
    EXPECT_EQ(std::get<uint64_t>(file->metadata().at("t.u64").value), ~0ull);
    EXPECT_EQ(*file->get_int("t.i64"), -1234567890123LL);
    EXPECT_EQ(*file->get_float("t.f32"), static_cast<double>(1e-6f));
    EXPECT_EQ(*file->get_float("t.f64"), -2.5e300);
    EXPECT_EQ(*file->get_bool("t.bool"), true);
    EXPECT_EQ(*file->get_string("t.str"), std::string("nul\0inside", 10));
    EXPECT_EQ(*file->get_string_array("t.strs"), (std::vector<std::string>{"x", "", "yz"}));
    EXPECT_TRUE(file->get_string_array("t.empty")->empty());
    EXPECT_EQ(*file->get_int_array("t.i32s"), (std::vector<int64_t>{1, -1, 2147483647}));
    EXPECT_EQ(*file->get_int_array("t.u64s"), (std::vector<int64_t>{0, 1, 1ll << 62}));
    EXPECT_EQ(*file->get_float_array("t.f32s"), (std::vector<double>{0.5, -0.25}));
    EXPECT_EQ(*file->get_float_array("t.f64s"), (std::vector<double>{0.1}));
    const GgufValue& n = file->metadata().at("t.nested");
    ASSERT_EQ(n.element_type, GgufValueType::Array);
    const GgufArray& o = *std::get<std::shared_ptr<GgufArray>>(n.value);
    ASSERT_EQ(o.size(), 2u);
    EXPECT_EQ(o[0].element_type, GgufValueType::UInt16);
    EXPECT_EQ(std::get<std::shared_ptr<GgufArray>>(o[0].value)->size(), 2u);
    EXPECT_EQ(std::get<uint64_t>(std::get<std::shared_ptr<GgufArray>>(o[0].value)->at(1).value),
              2u);
    EXPECT_TRUE(std::get<std::shared_ptr<GgufArray>>(o[1].value)->empty());

    ASSERT_EQ(file->tensors().size(), specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const GgufTensorInfo& t = file->tensors()[i];
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.name, specs[i].name);
      EXPECT_EQ(t.view.dtype, specs[i].dtype);
      EXPECT_EQ(t.ggml_type, ggml_from_dtype(specs[i].dtype));
      ASSERT_EQ(t.view.n_dims, static_cast<int>(specs[i].shape.size()));
      for (size_t d = 0; d < specs[i].shape.size(); ++d)
        EXPECT_EQ(t.view.shape[d], specs[i].shape[d]);
      ASSERT_EQ(t.view.bytes(), datas[i].size());
      EXPECT_EQ(std::memcmp(t.view.data, datas[i].data(), datas[i].size()), 0);
      EXPECT_EQ((static_cast<const uint8_t*>(t.view.data) - file->mapping()->data()) % alignment,
                0);
    }
  }
}

TEST(GgufWriter, RejectsBadInput) {
  auto expect_write_error = [](const GgufWriter& w, const std::string& substring) {
    Result<std::vector<uint8_t>> bytes = w.to_bytes();
    ASSERT_FALSE(bytes.ok());
    EXPECT_NE(bytes.message().find(substring), std::string::npos) << bytes.message();
  };
  const std::vector<uint8_t> data(64);
  {
    GgufWriter w;
    w.add_tensor("w", DType::F32, {4, 4}, data.data(), 60);
    expect_write_error(w, "tensor 'w': 60 bytes supplied, expected 64 for F32 of shape 4x4");
  }
  {
    GgufWriter w;
    w.add_tensor("w", DType::Q8_0, {2, 16}, data.data(), 34);
    expect_write_error(w,
                       "tensor 'w': last dimension 16 is not a multiple of the Q8_0 block "
                       "size 32");
  }
  {
    GgufWriter w;
    w.add_tensor("w", DType::F8_E4M3, {8}, data.data(), 8);
    expect_write_error(w, "tensor 'w': dtype F8_E4M3 has no GGUF type");
  }
  {
    GgufWriter w;
    w.add_tensor("w", DType::F32, {1, 1, 1, 1, 1}, data.data(), 4);
    expect_write_error(w, "tensor 'w': 5 dimensions");
  }
  {
    GgufWriter w;
    w.add_tensor("w", DType::F32, {2}, data.data(), 8);
    w.add_tensor("w", DType::F32, {2}, data.data(), 8);
    expect_write_error(w, "tensor 'w' added twice");
  }
  {
    GgufWriter w;
    w.add_uint32("k", 1);
    w.add_string("k", "again");
    expect_write_error(w, "metadata key 'k' added twice");
  }
  {
    GgufWriter w;
    w.add_int_array("k", GgufValueType::UInt8, {1, 256});
    expect_write_error(w, "metadata key 'k': 256 does not fit");
  }
  {
    GgufWriter w;
    w.add_uint32("general.alignment", 64);
    expect_write_error(w, "GgufWriter constructor");
  }
  {
    GgufWriter w(48);
    expect_write_error(w, "alignment 48 is not a power of two");
  }
  {
    GgufWriter w;
    w.add_uint8("k", 1);
    Status s = w.write("/nonexistent-dir/x.gguf");
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("/nonexistent-dir/x.gguf.tmp: cannot create"), std::string::npos)
        << s.message();
  }
}

TEST(GgufTypes, GgmlIdsRoundTrip) {
  const std::vector<std::pair<uint32_t, DType>> ids = {
      {0, DType::F32},   {1, DType::F16},  {2, DType::Q4_0},  {3, DType::Q4_1},  {6, DType::Q5_0},
      {7, DType::Q5_1},  {8, DType::Q8_0}, {12, DType::Q4_K}, {13, DType::Q5_K}, {14, DType::Q6_K},
      {15, DType::Q8_K}, {24, DType::I8},  {26, DType::I32},  {27, DType::I64},  {30, DType::BF16}};
  for (const auto& [id, dtype] : ids) {
    Result<DType> d = dtype_from_ggml(id);
    ASSERT_TRUE(d.ok()) << id;
    EXPECT_EQ(*d, dtype);
    EXPECT_EQ(ggml_from_dtype(dtype), id);
  }
  EXPECT_EQ(ggml_from_dtype(DType::F8_E4M3), kGgmlTypeNone);
  for (uint32_t id : {4u, 5u, 9u, 10u, 11u, 16u, 25u, 28u, 31u, 1000u}) {
    EXPECT_FALSE(dtype_from_ggml(id).ok()) << id;
  }
}

// The demo model (tools/test.sh sets SPUTNIK_DEMO_MODEL). Values read with the Python gguf
// package: 272 tensors (30 layers x 9 + token_embd + output_norm; the output head is tied).
TEST(GgufDemoModel, SmolLM2) {
  const char* env = std::getenv("SPUTNIK_DEMO_MODEL");
  ASSERT_TRUE(env != nullptr && *env != '\0')
      << "SPUTNIK_DEMO_MODEL is not set: run the suite through tools/test.sh, or set it to "
         "SmolLM2-135M-Instruct.Q4_1.gguf (tools/fetch_demo_model.sh prints its path)";
  Result<GgufFile> file = GgufFile::open(env);
  ASSERT_TRUE(file.ok()) << file.message();
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(*file->get_string("general.architecture"), "llama");
  EXPECT_EQ(*file->get_int("llama.block_count"), 30);
  EXPECT_EQ(*file->get_int("llama.embedding_length"), 576);
  EXPECT_EQ(*file->get_int("llama.context_length"), 8192);
  EXPECT_EQ(*file->get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(*file->get_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*file->get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(*file->get_int("general.file_type"), 3);
  EXPECT_EQ(*file->get_bool("tokenizer.ggml.add_bos_token"), false);
  EXPECT_EQ(*file->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*file->get_string("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ(*file->get_int("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_EQ(file->metadata().size(), 33u);  // the header's kv_count
  Result<std::vector<std::string>> tokens = file->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.message();
  ASSERT_EQ(tokens->size(), 49152u);
  EXPECT_EQ((*tokens)[0], "<|endoftext|>");
  EXPECT_EQ((*tokens)[2], "<|im_end|>");
  Result<std::vector<std::string>> merges = file->get_string_array("tokenizer.ggml.merges");
  ASSERT_TRUE(merges.ok());
  ASSERT_EQ(merges->size(), 48900u);
  EXPECT_EQ((*merges)[0], "\xc4\xa0 t");
  EXPECT_EQ(file->get_int_array("tokenizer.ggml.token_type")->size(), 49152u);

  EXPECT_EQ(file->tensors().size(), 272u);
  Result<TensorView> embed = file->tensor("token_embd.weight");
  ASSERT_TRUE(embed.ok()) << embed.message();
  EXPECT_EQ(embed->dtype, DType::Q8_0);
  ASSERT_EQ(embed->n_dims, 2);
  EXPECT_EQ(embed->shape[0], 49152);
  EXPECT_EQ(embed->shape[1], 576);
  EXPECT_EQ(hex(embed->data, 8), "3219d60d13f7e5ee");
  Result<TensorView> q = file->tensor("blk.0.attn_q.weight");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->dtype, DType::Q4_1);
  EXPECT_EQ(q->shape[0], 576);
  EXPECT_EQ(q->shape[1], 576);
  EXPECT_EQ(hex(q->data, 8), "0f30d8b945876540");
  Result<TensorView> norm = file->tensor("output_norm.weight");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->dtype, DType::F32);
  EXPECT_EQ(static_cast<const float*>(norm->data)[0], 1.7578125f);
  EXPECT_EQ(static_cast<const float*>(norm->data)[2], 1.78125f);
  int q4_1 = 0, f32 = 0, q8_0 = 0;
  for (const GgufTensorInfo& t : file->tensors()) {
    q4_1 += t.view.dtype == DType::Q4_1;
    f32 += t.view.dtype == DType::F32;
    q8_0 += t.view.dtype == DType::Q8_0;
  }
  EXPECT_EQ(q4_1, 210);
  EXPECT_EQ(f32, 61);
  EXPECT_EQ(q8_0, 1);
}

}  // namespace
}  // namespace sputnik
