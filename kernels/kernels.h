// The kernels models call. Each entry has a scalar reference in kernels/ref/ (the spec) and may
// have AVX2/AVX-512 versions in kernels/x86/; kernels/dispatch.cpp picks once, at start-up, by
// CPU feature. Models never see an intrinsic.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "core/tensor.h"
#include "core/threads.h"

namespace sputnik {

// --- Weights -------------------------------------------------------------------------------

// Dequantises n elements of one row stored as `type` (bit-exact with ggml's dequantisation).
// Not for F8_E4M3, whose block scales span rows: use dequantize_weight_row.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Row r of a 2-D weight (any type, F8_E4M3 with its block scale applied) as f32.
void dequantize_weight_row(const TensorView& w, int64_t r, float* dst);

// y[t, r] = sum_c w[r, c] * x[t, c] for t < n_tokens, r < w.rows().
// x: n_tokens rows of w.cols() f32, contiguous. y: n_tokens rows of w.rows() f32, contiguous.
// Quantised weights may round x to 8 bits per block first, as llama.cpp does (Q8_0 / Q8_K
// activations); every other type accumulates in f32.
void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
// True when the active matmul rounds x to 8 bits for this weight type (see matmul above); the
// scalar set and the float types keep f32 activations.
bool matmul_quantizes_activations(DType weight_type);

// One matmul of a matmul_batch: y = w x as matmul(*w, x, n_tokens, y) would compute it.
struct MatmulJob {
  const TensorView* w;  // outlives the matmul_batch call
  const float* x;       // [n_tokens, w->cols()]
  int64_t n_tokens;
  float* y;             // [n_tokens, w->rows()]; no two jobs' y overlap
};
// Runs independent matmuls in ONE parallel dispatch: every job's rows are cut into slices of
// about equal work (weight bytes x 4-token tiles), the pool's threads take slices, and each slice
// is a single-threaded call of the active matmul on a row slice of w. y equals the separate
// matmul calls' bit for bit. For the many small matrices of a MoE layer (kernels/matmul_batch.cpp).
void matmul_batch(std::span<const MatmulJob> jobs, ThreadPool& pool);

// --- Element-wise and row ops (f32) ----------------------------------------------------------

// out = x / sqrt(mean(x^2) + eps) * weight, over n elements. out may alias x.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);
// In-place softmax over n elements (max-subtracted).
void softmax(float* x, int64_t n);
// out[i] = silu(gate[i]) * up[i]. out may alias gate.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
// y[i] += a * x[i]
void axpy(float a, const float* x, int64_t n, float* y);
// dot product
float dot_f32(const float* a, const float* b, int64_t n);

// --- Introspection -----------------------------------------------------------------------------

// Which implementation set dispatch chose, e.g. "avx512" / "avx2" / "scalar".
std::string kernel_isa();
// Forces an implementation set ("scalar", "avx2", "avx512"); false if this CPU lacks it.
// Tests and benchmarks use it to compare versions side by side.
bool set_kernel_isa(const std::string& isa);

}  // namespace sputnik
