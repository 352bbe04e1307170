// TensorView: a non-owning view of weights or activations, usually straight into an mmap.
// Shapes are in PyTorch order: shape[0] is the outermost dimension, the last one is contiguous.
// A weight matrix of a Linear layer is {out_features, in_features}, as in the checkpoints.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace sputnik {

constexpr int kMaxDims = 4;

struct TensorView {
  DType dtype = DType::F32;
  int n_dims = 0;
  std::array<int64_t, kMaxDims> shape{};  // only the first n_dims entries are meaningful
  const void* data = nullptr;
  // Block scales of DeepSeek FP8 weights (F8_E4M3): fp32, shape {ceil(rows/128), ceil(cols/128)},
  // multiplied in (weight = fp8 * scale_inv). Null for every other type.
  const float* scale = nullptr;
  int scale_block = 128;
  std::string name;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < n_dims; ++i) n *= shape[i];
    return n;
  }
  int64_t rows() const { return n_dims == 0 ? 1 : numel() / shape[n_dims - 1]; }  // all but last
  int64_t cols() const { return n_dims == 0 ? 1 : shape[n_dims - 1]; }
  size_t row_bytes() const { return dtype_row_bytes(dtype, cols()); }
  size_t bytes() const { return row_bytes() * static_cast<size_t>(rows()); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(); }
  std::string shape_string() const;
};

}  // namespace sputnik
