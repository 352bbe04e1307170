// Entry points of the per-ISA kernel sets in kernels/x86/. Each *_avx2.cpp / *_avx512.cpp file is
// built with its own target flags (CMakeLists.txt); nothing here may run before kernels/dispatch.cpp
// has checked the CPU.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "core/threads.h"
#include "kernels/kernels.h"

namespace sputnik {

// A complete set of the kernels in kernels.h; dispatch holds one per ISA.
struct KernelSet {
  const char* name;
  void (*matmul)(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
  void (*rms_norm)(const float* x, const float* weight, float eps, int64_t n, float* out);
  void (*softmax)(float* x, int64_t n);
  void (*silu_mul)(const float* gate, const float* up, int64_t n, float* out);
  void (*axpy)(float a, const float* x, int64_t n, float* y);
  float (*dot_f32)(const float* a, const float* b, int64_t n);
};

namespace avx2 {
const KernelSet& kernel_set();
// ref::attention_chunk's contract (kernels/x86/attention_avx2.cpp).
void attention_chunk(const MultiQueryAttention& a, int64_t begin, int64_t end, float* max,
                     float* sum, float* out);
}  // namespace avx2
namespace avx512 {
const KernelSet& kernel_set();
// Activations as Q8_K blocks of 256 (ggml's quantize_row_q8_K): codes, d per block, and 16 sums of
// 16 codes per block (kernels/x86/matmul_avx512.cpp; the interleaved Q4_K path uses it too).
void quantize_act256(const float* x, int64_t cols, int8_t* qs, float* d, int16_t* bsums);
// kernels.h attention_scores_f16 / attention_values_f16 / attention_decode_f16
// (kernels/x86/attention_f16_avx512.cpp).
void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores);
void attention_values_f16(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p,
                          int64_t n_rows, bool single_token, float* out);
void attention_decode_f16(const GroupedQueryAttentionF16& a, int64_t n_keys, float* out, ThreadPool& pool);
// matmul for the interleaved weight types (DType::*x16; kernels/x86/gemm_interleaved_avx512.cpp).
void matmul_interleaved(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
// ref::attention_chunk's contract (kernels/x86/attention_avx512.cpp).
void attention_chunk(const MultiQueryAttention& a, int64_t begin, int64_t end, float* max,
                     float* sum, float* out);
}  // namespace avx512

// True when the x86 sets' matmul has a fast path for the type (others fall back to ref::matmul).
bool x86_has_fast_matmul(DType type);

}  // namespace sputnik
