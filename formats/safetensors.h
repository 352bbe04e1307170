// Safetensors reader: one file, or a sharded checkpoint through model.safetensors.index.json,
// plus the directory's config.json. Dtypes F32, F16, BF16, F8_E4M3 (DeepSeek-V3's
// `<name>_scale_inv` 128x128 fp32 block scales are attached to the weight's TensorView::scale).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/mmap.h"
#include "core/result.h"
#include "core/tensor.h"

namespace sputnik {

class SafetensorsCheckpoint {
 public:
  // `path` is a directory (config.json + model.safetensors or the sharded index) or one
  // .safetensors file (config.json is then looked up beside it, and may be absent).
  static Result<SafetensorsCheckpoint> open(const std::string& path);

  const std::string& directory() const { return directory_; }
  const nlohmann::json& config() const { return config_; }  // empty object if absent
  bool has_config() const { return !config_.empty(); }
  std::vector<std::string> tensor_names() const;
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // The view of a tensor; an F8_E4M3 weight comes with its scale attached when the checkpoint
  // has `<name>_scale_inv` (shape checked: {ceil(rows/128), ceil(cols/128)}).
  Result<TensorView> tensor(const std::string& name) const;

 private:
  std::string directory_;
  nlohmann::json config_ = nlohmann::json::object();
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::map<std::string, TensorView> tensors_;
  // Tensors listed in a header with a valid layout but a dtype or shape sputnik does not read
  // (F64, BOOL, a zero-sized dimension, ...): tensor() gives this message instead of a view.
  std::map<std::string, std::string> unsupported_;
  friend class SafetensorsLoader;
};

// Reads and parses a JSON file; the error names the file and the position of a syntax error.
Result<nlohmann::json> read_json_file(const std::string& path);

}  // namespace sputnik
