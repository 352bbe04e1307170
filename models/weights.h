// Where a model's weights come from: a GGUF file or a safetensors checkpoint. The model file
// owns the table from checkpoint names to its own; this only fetches and checks shapes.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
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
  const SafetensorsCheckpoint* safetensors() const { return safetensors_.get(); }  // null if GGUF

  bool has(const std::string& name) const;
  // The tensor, with its shape checked (PyTorch order); the error names the tensor and gives
  // expected vs actual shape.
  Result<TensorView> get(const std::string& name, std::initializer_list<int64_t> shape) const;
  // A small tensor (norm weight, bias, router bias) converted to f32, shape checked.
  Result<std::vector<float>> get_f32(const std::string& name,
                                     std::initializer_list<int64_t> shape) const;
  // Total bytes of all tensors (for progress and rooflines).
  size_t total_bytes() const;

 private:
  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsCheckpoint> safetensors_;
};

}  // namespace sputnik
