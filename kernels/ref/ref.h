// Scalar reference kernels: the spec every SIMD version is tested against. Plain loops, no
// intrinsics, built for baseline x86-64. kernels/dispatch.cpp also uses them as the "scalar" set.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "core/threads.h"
#include "kernels/kernels.h"

namespace sputnik::ref {

// --- Dequantisation (bit-exact with ggml / gguf-py) ----------------------------------------------
void dequantize_row(DType type, const void* src, float* dst, int64_t n);
void dequantize_weight_row(const TensorView& w, int64_t r, float* dst);

// --- Quantisation from f32 (for `sputnik quantize`) --------------------------------------------
// Q8_0 and Q4_0 reproduce ggml's quantize_row_*_ref (and gguf-py) byte for byte. The K-quants
// search the scale per sub-block as ggml's make_qkx / make_qx do, but are not byte-identical.
// n is a multiple of the block size; dst receives n / block_elements blocks.
void quantize_row_q8_0(const float* x, void* dst, int64_t n);
void quantize_row_q4_0(const float* x, void* dst, int64_t n);
void quantize_row_q4_K(const float* x, void* dst, int64_t n);
void quantize_row_q5_K(const float* x, void* dst, int64_t n);
void quantize_row_q6_K(const float* x, void* dst, int64_t n);
// ggml's Q8_K activation block (d = max / -127 convention aside: we use amax / 127).
void quantize_row_q8_K(const float* x, void* dst, int64_t n);
// Dispatches on type (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, F32, F16, BF16); false for other types.
bool quantize_row(DType type, const float* x, void* dst, int64_t n);

// --- Activation quantisation used by the integer matmuls ----------------------------------------
// Per block of `block` (32 or 256) elements, exactly as ggml's x86 quantize_row_q8_0 / q8_1
// (block 32) and quantize_row_q8_K_ref (block 256) round llama.cpp's activations:
// id = 127 / max|x|, q = nearbyint(x * id) (ties to even, as cvtps2dq and ggml's nearest_int).
// Block 32: d = fp16(max|x| / 127) and, when s is given, s = fp16(d_f32 * sum q) (block_q8_1's
// s, used by the Q4_1/Q5_1 min term), both returned as the f32 value of the fp16. Block 256:
// d = 1 / id in f32. qs: n bytes; d (and s): n / block floats.
void quantize_activation(const float* x, int64_t n, int block, int8_t* qs, float* d, float* s = nullptr);

// y[t, r] = sum_c w[r, c] * xq[t, c] where xq = d * q from quantize_activation with the block size
// the SIMD path uses for w's type (32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256 for K-quants); computed in
// double from exactly dequantised values. Q4_1/Q5_1 (w = d_w * q_w + m) take the min term as
// m * s per block, as ggml_vec_dot_q4_1_q8_1 does. The SIMD integer matmuls must match it to f32 rounding.
int activation_block(DType weight_type);  // 0: the SIMD path keeps f32 activations
void matmul_quantized_activations(const TensorView& w, const float* x, int64_t n_tokens, float* y);
// Q4_1 weights (rows of whole blocks) exactly as llama.cpp's x86 build computes them
// (ggml_vec_dot_q4_1_q8_1 after quantize_row_q8_1): per block the 8 int32 sums of 4 products
// (lane j: elements 4j..4j+3), acc[j] = fma(d_w * d_x, sum_j, acc[j]) block after block, the lanes
// added as hsum_float_8 ((0+4) + (2+6)) + ((1+5) + (3+7)), plus sum_b fma(m_w, s_x) in f32. The
// AVX-512 and AVX2 Q4_1 matmuls equal it bit for bit.
void matmul_q4_1_as_ggml(const TensorView& w, const float* x, int64_t n_tokens, float* y);

// --- The reference ops --------------------------------------------------------------------------
void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);
void softmax(float* x, int64_t n);
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void axpy(float a, const float* x, int64_t n, float* y);
float dot_f32(const float* a, const float* b, int64_t n);

// --- Attention (kernels.h multi_query_attention) ------------------------------------------------
// The online-softmax state of positions [begin, end) for every head: max[h] = max_j s_hj,
// sum[h] = sum_j exp(s_hj - max[h]), out[h, :dv] = sum_j exp(s_hj - max[h]) v_j (unnormalised),
// with s_hj = scale * q[h] . k_j. Each ISA has one; multi_query_attention_split merges them.
using AttentionChunkFn = void (*)(const MultiQueryAttention& a, int64_t begin, int64_t end,
                                  float* max, float* sum, float* out);
void attention_chunk(const MultiQueryAttention& a, int64_t begin, int64_t end, float* max,
                     float* sum, float* out);
// Splits [0, n_keys) into chunks across the pool, runs `chunk` on each and merges the partial
// (max, sum, out) triples: out = sum_c e^(max_c - M) out_c / sum_c e^(max_c - M) sum_c, with the
// ISA's `axpy` (y += a x over dv values, the merge's inner loop).
using AxpyFn = void (*)(float a, const float* x, int64_t n, float* y);
void multi_query_attention_split(AttentionChunkFn chunk, AxpyFn axpy, const MultiQueryAttention& a,
                                 int64_t n_keys, float* out, ThreadPool& pool);
// The definition, two passes in double (all scores, softmax, weighted sum): what tests compare with.
void multi_query_attention_two_pass(const MultiQueryAttention& a, int64_t n_keys, float* out);

// --- Attention over an f16 KV cache (kernels.h attention_scores_f16 / attention_values_f16) ---
void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores);
void attention_values_f16(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p,
                          int64_t n_rows, bool single_token, float* out);
// Whether a dot product of n elements takes ggml_vec_dot_f16's order (else tinyBLAS's).
bool attention_f16_vec_dot_order(int64_t n, bool single_token);
// kernels.h attention_decode_f16 as the calls it is defined by, one kv head per task, with the
// given softmax (each ISA's rounds as its own).
void attention_decode_f16(const GroupedQueryAttentionF16& a, int64_t n_keys, float* out, ThreadPool& pool,
                          void (*softmax)(float* x, int64_t n));

}  // namespace sputnik::ref
