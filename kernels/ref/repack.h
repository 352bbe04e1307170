// Scalar reference of the interleaved weight layouts (kernels/quant_blocks.h, DType::*x16): the
// repacking done once at load and the dequantisation that defines what a repacked row means.
// The AVX-512 matmul over these layouts (kernels/x86/gemm_interleaved_avx512.cpp) is tested
// against it.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace sputnik::ref {

// The interleaved type `plain` repacks into (Q8_0 -> Q8_0x16, Q4_0 -> Q4_0x16, Q4_K -> Q4_Kx16,
// Q5_0 -> Q5_0x16, Q4_1 -> Q4_1x16), DType::Count for every other type.
DType interleaved_type(DType plain);
// The inverse: the plain type an interleaved type was repacked from (DType::Count if none).
DType plain_type(DType interleaved);

// Repacks `rows` rows (a multiple of 16) of `cols` columns of `plain` weights, stored row-major at
// src, into dst (rows * dtype_row_bytes(interleaved_type(plain), cols) bytes).
void repack_interleaved(DType plain, const void* src, int64_t rows, int64_t cols, void* dst);

// Row r of interleaved weights starting at data (row 0 of a 16-row group), as f32: bit-equal to
// dequantize_row of the plain row it was repacked from.
void dequantize_interleaved_row(DType type, const void* data, int64_t r, int64_t cols, float* dst);

}  // namespace sputnik::ref
