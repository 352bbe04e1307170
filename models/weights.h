// Where a model's weights come from: a GGUF file or a safetensors checkpoint. The model file
// owns the table from checkpoint names to its own; this only fetches and checks shapes.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/tensor.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"

namespace sputnik {

class WeightSource {
 public:
  // A path ending in .gguf is read as GGUF; a directory or .safetensors file as safetensors.
  static Result<std::shared_ptr<WeightSource>> open(const std::string& path);

  const std::string& path() const { return path_; }
  const GgufFile* gguf() const { return gguf_.get(); }                       // null if safetensors
  GgufFile* gguf() { return gguf_.get(); }
  const SafetensorsCheckpoint* safetensors() const { return safetensors_.get(); }  // null if GGUF

  bool has(const std::string& name) const;
  // The tensor, with its shape checked (PyTorch order); the error names the tensor and gives
  // expected vs actual shape.
  Result<TensorView> get(const std::string& name, std::initializer_list<int64_t> shape) const;
  // A weight only ever multiplied (kernels.h matmul, dequantize_weight_row, slice_rows): get(),
  // then repacked once into the layout the active kernels multiply fastest
  // (preferred_weight_type: 16 rows interleaved on AVX-512 for Q8_0 / Q4_0 / Q4_K) when each matrix
  // of it (each expert of a stacked [E, rows, cols]) has whole 16-row groups. The repacked copy is
  // owned here and the original's mapped pages are released, so resident memory stays about the
  // size of the weights. SPUTNIK_REPACK=0 in the environment keeps every weight as stored.
  Result<TensorView> get_matrix(const std::string& name, std::initializer_list<int64_t> shape) const;
  // A small tensor (norm weight, bias, router bias) converted to f32, shape checked.
  Result<std::vector<float>> get_f32(const std::string& name,
                                     std::initializer_list<int64_t> shape) const;
  // Total bytes of all tensors (for progress and rooflines).
  size_t total_bytes() const;

 private:
  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsCheckpoint> safetensors_;
  struct FreeBuffer {
    void operator()(uint8_t* p) const;
  };
  // get_matrix's repacked weights by tensor name (a second request returns the same copy).
  mutable std::mutex repacked_mutex_;
  mutable std::map<std::string, std::pair<TensorView, std::unique_ptr<uint8_t, FreeBuffer>>> repacked_;
};

}  // namespace sputnik
