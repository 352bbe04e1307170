// GGUF v2/v3 reader over mmap (spec: ggml/docs/gguf.md). Only reads: mapping checkpoint names to
// model weights is the model file's job. Every offset, count and shape is validated at open().
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/mmap.h"
#include "core/result.h"
#include "core/tensor.h"

namespace sputnik {

enum class GgufValueType : uint32_t {
  UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
  String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
};

struct GgufValue;
using GgufArray = std::vector<GgufValue>;

// One metadata value. Integers of every width are held as int64/uint64, floats as double;
// `type` keeps the on-disk type for `inspect`.
struct GgufValue {
  GgufValueType type = GgufValueType::UInt32;
  GgufValueType element_type = GgufValueType::UInt32;  // for arrays
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> value;
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;  // on-disk ggml type id
  TensorView view;         // PyTorch-order shape (reversed ne), data into the map
  uint64_t offset = 0;     // relative to the data section
};

class GgufFile {
 public:
  static Result<GgufFile> open(const std::string& path);

  const std::string& path() const;
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  // Typed getters: the error names the key and the expected vs actual type.
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;  // any integer type
  Result<double> get_float(const std::string& key) const; // any float or integer type
  Result<bool> get_bool(const std::string& key) const;
  Result<std::vector<std::string>> get_string_array(const std::string& key) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& key) const;
  Result<std::vector<double>> get_float_array(const std::string& key) const;
  // Optional variants return the fallback when the key is absent (but error on a wrong type).
  Result<int64_t> get_int_or(const std::string& key, int64_t fallback) const;
  Result<double> get_float_or(const std::string& key, double fallback) const;

  // Forgets a metadata value. The model loader drops the tokenizer's arrays once the Tokenizer
  // holds its own copy: as GgufValues they take ~48 bytes per entry (14 MiB for Qwen2's 152k
  // tokens and merges) for the life of the model.
  void erase_metadata(const std::string& key) { metadata_.erase(key); }

  const GgufTensorInfo* find_tensor(const std::string& name) const;
  Result<TensorView> tensor(const std::string& name) const;  // error names the missing tensor

  std::shared_ptr<MappedFile> mapping() const { return file_; }
  uint64_t alignment() const { return alignment_; }        // general.alignment, default 32
  uint64_t data_offset() const { return data_offset_; }    // file offset of the tensor data

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
  friend class GgufParser;
};

// ggml type id <-> DType (error for types sputnik does not read). ggml_from_dtype returns
// kGgmlTypeNone for a DType that GGUF cannot hold (F8_E4M3).
constexpr uint32_t kGgmlTypeNone = 0xffffffffu;
Result<DType> dtype_from_ggml(uint32_t ggml_type);
uint32_t ggml_from_dtype(DType dtype);

}  // namespace sputnik
