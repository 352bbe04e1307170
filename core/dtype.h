// Element types of weights and activations. Quantised types are stored in blocks; each block
// format's byte layout lives in kernels/quant_blocks.h, which owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sputnik {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q4_K,
  Q5_K,
  Q6_K,
  Q8_K,     // activation-only type used by the K-quant dot products (as in llama.cpp)
  F8_E4M3,  // float8_e4m3fn; DeepSeek-V3 pairs it with 128x128 fp32 block scales (TensorView::scale)
  I32,
  I64,
  I8,
  // Weights repacked at load for the AVX-512 matmul: 16 rows interleaved per block
  // (kernels/quant_blocks.h BlockQ8_0x16 / BlockQ4_0x16 / BlockQ4_Kx16 / BlockQ5_0x16 /
  // BlockQ4_1x16). Never in a file.
  Q8_0x16,
  Q4_0x16,
  Q4_Kx16,
  Q5_0x16,
  Q4_1x16,
  Count,
};

struct DTypeTraits {
  std::string_view name;
  int block_elements;  // elements per block (1 for plain types)
  int block_bytes;     // bytes per block
};

constexpr DTypeTraits dtype_traits(DType t) {
  switch (t) {
    case DType::F32: return {"F32", 1, 4};
    case DType::F16: return {"F16", 1, 2};
    case DType::BF16: return {"BF16", 1, 2};
    case DType::Q8_0: return {"Q8_0", 32, 34};
    case DType::Q4_0: return {"Q4_0", 32, 18};
    case DType::Q4_1: return {"Q4_1", 32, 20};
    case DType::Q5_0: return {"Q5_0", 32, 22};
    case DType::Q5_1: return {"Q5_1", 32, 24};
    case DType::Q4_K: return {"Q4_K", 256, 144};
    case DType::Q5_K: return {"Q5_K", 256, 176};
    case DType::Q6_K: return {"Q6_K", 256, 210};
    case DType::Q8_K: return {"Q8_K", 256, 292};
    case DType::F8_E4M3: return {"F8_E4M3", 1, 1};
    case DType::I32: return {"I32", 1, 4};
    case DType::I64: return {"I64", 1, 8};
    case DType::I8: return {"I8", 1, 1};
    // block_bytes is a row's share of a 16-row group (group bytes / 16), so row(r) and bytes()
    // stay right for whole groups.
    case DType::Q8_0x16: return {"Q8_0x16", 32, 34};
    case DType::Q4_0x16: return {"Q4_0x16", 32, 18};
    case DType::Q4_Kx16: return {"Q4_Kx16", 256, 148};
    case DType::Q5_0x16: return {"Q5_0x16", 32, 22};
    case DType::Q4_1x16: return {"Q4_1x16", 32, 20};
    case DType::Count: break;
  }
  return {"?", 1, 0};
}

constexpr std::string_view dtype_name(DType t) { return dtype_traits(t).name; }
constexpr bool dtype_is_quantized(DType t) { return dtype_traits(t).block_elements > 1; }
// Rows stored together: 16 for the interleaved types, whose views may start only at a multiple
// of 16 rows; 1 for every other type.
constexpr int64_t dtype_row_group(DType t) {
  return t == DType::Q8_0x16 || t == DType::Q4_0x16 || t == DType::Q4_Kx16 || t == DType::Q5_0x16 ||
                 t == DType::Q4_1x16
             ? 16
             : 1;
}

// Bytes taken by a row of n elements; n must be a multiple of the block size (checked at load).
constexpr size_t dtype_row_bytes(DType t, int64_t n) {
  const DTypeTraits tr = dtype_traits(t);
  return static_cast<size_t>(n / tr.block_elements) * static_cast<size_t>(tr.block_bytes);
}

}  // namespace sputnik
