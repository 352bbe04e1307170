// GGUF v3 writer: metadata of every value type and tensors of any DType GGUF can hold, each
// tensor's data placed at a multiple of the alignment. Used by `sputnik quantize` and by tests
// (round trip with GgufFile). Layout: see formats/gguf.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/tensor.h"
#include "formats/gguf.h"

namespace sputnik {

class GgufWriter {
 public:
  // `alignment` must be a power of two; anything but 32 (the default) is recorded as
  // general.alignment, as the spec requires.
  explicit GgufWriter(uint32_t alignment = 32);

  // Metadata, written in the order added. Keys must be unique and non-empty; a wrong key or value
  // makes write() fail with a message naming it (so callers can chain the adds).
  void add(const std::string& key, GgufValue value);
  void add_uint8(const std::string& key, uint8_t v);
  void add_int8(const std::string& key, int8_t v);
  void add_uint16(const std::string& key, uint16_t v);
  void add_int16(const std::string& key, int16_t v);
  void add_uint32(const std::string& key, uint32_t v);
  void add_int32(const std::string& key, int32_t v);
  void add_uint64(const std::string& key, uint64_t v);
  void add_int64(const std::string& key, int64_t v);
  void add_float32(const std::string& key, float v);
  void add_float64(const std::string& key, double v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  // Integer arrays: `element_type` is any integer type; values must fit it.
  void add_int_array(const std::string& key, GgufValueType element_type,
                     const std::vector<int64_t>& v);
  // Float arrays: element_type Float32 or Float64.
  void add_float_array(const std::string& key, GgufValueType element_type,
                       const std::vector<double>& v);

  // Tensors, written in the order added. `shape` is in PyTorch order (the last dimension is
  // contiguous and must be a multiple of the dtype's block size); `bytes` must be exactly the
  // tensor's size. The data is NOT copied: it must stay valid until write() returns.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  const void* data, size_t bytes);
  // The same, taking ownership of the bytes.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  std::vector<uint8_t> bytes);

  // Writes the file (through `path`.tmp, renamed at the end, so a failed write leaves no partial
  // file under `path`). Errors name the path and the offending key or tensor.
  Status write(const std::string& path) const;
  // The file's bytes in memory (for tests and small files).
  Result<std::vector<uint8_t>> to_bytes() const;

 private:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t bytes;
    std::shared_ptr<std::vector<uint8_t>> owned;
  };
  template <typename Sink>
  Status emit(Sink& sink) const;
  Status validate() const;

  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace sputnik
