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

// --- Weight layout: repacking at load, row slices -------------------------------------------------

// The type the active matmul multiplies fastest for `type` weights once repacked (repack_weight):
// on AVX-512, Q8_0 / Q4_0 / Q5_0 / Q4_1 / Q4_K -> Q8_0x16 / Q4_0x16 / Q5_0x16 / Q4_1x16 / Q4_Kx16
// (16 rows interleaved per block, kernels/quant_blocks.h; Q4_1x16 keeps llama.cpp's bits); `type` itself when repacking gains nothing (other types, AVX2, scalar).
// Every kernel set multiplies every layout; the interleaved ones are slow outside AVX-512.
DType preferred_weight_type(DType type);
// Writes w (a plain type with an interleaved form; w.rows() a multiple of 16) repacked as
// `to` = preferred_weight_type(w.dtype) into dst (w.rows() * dtype_row_bytes(to, w.cols()) bytes,
// any alignment) and returns the view of dst: same shape and name. Splits the work over the pool.
TensorView repack_weight(const TensorView& w, DType to, void* dst, ThreadPool& pool);

// A row slice of w must start at a multiple of this and end at one or at w.rows(): 16 for the
// interleaved types, the scale block (128) for FP8 weights with block scales, 1 otherwise.
int64_t weight_row_granularity(const TensorView& w);
// Rows [r0, r1) of a 2-D or stacked weight (all dimensions but the last flattened into rows) as a
// 2-D view of the same memory, for any layout; r0 and r1 as weight_row_granularity requires.
TensorView slice_rows(const TensorView& w, int64_t r0, int64_t r1);

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
// Decode and small batches: a matmul_batch whose jobs all have at most this many tokens is bound
// by streaming the weights, and is cut into guided slices that keep every thread busy to the end.
constexpr int64_t kMatmulOnePassTokens = 8;

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

// --- Attention over cached rows ----------------------------------------------------------------

// Cached K or V rows: row j starts at data + j * stride elements of type (F32 or F16).
struct CacheRows {
  const void* data = nullptr;
  DType type = DType::F32;
  int64_t stride = 0;  // elements
};

// One query token's attention for n_heads query heads that all read the same cached rows
// (multi-query attention). MLA's absorbed path is one: the keys are the kv_norm(latent) | k_pe
// rows and the values the latent part of the same rows (dk = kv_lora_rank + qk_rope_head_dim,
// dv = kv_lora_rank); one KV group of GQA is another.
struct MultiQueryAttention {
  const float* q = nullptr;  // [n_heads, dk]
  int64_t n_heads = 0;
  int64_t dk = 0;
  CacheRows keys;
  int64_t dv = 0;
  CacheRows values;
  float scale = 1.0f;  // applied to q . k before the softmax
  // Optional [n_heads]: query row h sees only keys [0, key_limits[h]) (>= 1; causal prefill of
  // several tokens as one group of rows). Null: every row sees all n_keys.
  const int64_t* key_limits = nullptr;
};

// out[h, :dv] = sum_{j < n_keys} softmax_j(scale * q[h] . k_j) v_j for every head h; n_keys >= 1.
// Each cached row is read once for all heads; positions are split across the pool's threads and
// the partial softmaxes merged (flash-decoding), so one token uses every thread.
void multi_query_attention(const MultiQueryAttention& a, int64_t n_keys, float* out, ThreadPool& pool);

// --- Attention over an f16 KV cache, in llama.cpp's summation order ---------------------------
// So that attention over an f16 cache rounds exactly as llama.cpp's (kq = k q, kqv = v kq; flash
// attention off), these reproduce ggml-cpu's two f16 dot-product orders: for a batch of one token
// (`single_token`) ggml_vec_dot_f16's (4 accumulators of 16 lanes, 64 elements a step), otherwise
// tinyBLAS's (llamafile_sgemm: one accumulator of 16 lanes; vec_dot's when n % 16 != 0, as ggml
// falls back), each reduced as _mm512_reduce_add_ps. kernels/ref/attention_f16_ref.cpp spells the
// order out. q and p must hold f16 values (ggml converts them to f16 first); every ISA gives the
// same bits.

// Positions per value block: the value cache stores V transposed in blocks of this many positions.
constexpr int64_t kAttentionValueBlock = 64;

// scores[g, j] = k[j, :] . q[g, :] for g < n_rows, j < n_keys. k: [n_keys, head_dim] f16 rows;
// q: [n_rows, head_dim]; scores: [n_rows, n_keys].
void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores);
// out[g, d] = sum_j p[g, j] v[d, j] for g < n_rows, d < head_dim, j < 64 n_blocks. v: n_blocks
// blocks [head_dim, 64] f16 (position j is column j % 64 of block j / 64); p: [n_rows, 64 n_blocks];
// out: [n_rows, head_dim].
void attention_values_f16(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p,
                          int64_t n_rows, bool single_token, float* out);

// One token's attention over an f16 cache for every query head of a GQA layer, as llama.cpp
// computes it (flash attention off): query head h reads kv head h / (n_heads / n_kv_heads), and
//   s = scale * (k q_h)   (attention_scores_f16's single-token order)
//   p = f16(softmax(s))   (ggml's soft_max, the kernels.h softmax; p rounded to f16 as ggml does)
//   out_h = v p           (attention_values_f16's single-token order, p zero past n_keys)
// The same bits as those calls in sequence, split for decode: one task per kv head when the
// pool's threads divide the kv heads, else three phases (scores over key chunks, softmax over
// rows, values over output rows); every K and V element converted once per token.
struct GroupedQueryAttentionF16 {
  const float* q = nullptr;  // [n_heads, head_dim], f16 values
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // divides n_heads
  int64_t head_dim = 0;
  const uint16_t* keys = nullptr;  // kv head h: [n_keys, head_dim] rows from keys + h * key_head_stride
  int64_t key_head_stride = 0;     // elements
  // kv head h: ceil(n_keys / 64) blocks [head_dim, 64] (attention_values_f16's layout) from
  // values + h * value_head_stride.
  const uint16_t* values = nullptr;
  int64_t value_head_stride = 0;  // elements
  float scale = 1.0f;
  // Scratch [n_heads, 64 ceil(n_keys / 64)]; holds the weights p on return.
  float* scores = nullptr;
};
// out: [n_heads, head_dim]; n_keys >= 1.
void attention_decode_f16(const GroupedQueryAttentionF16& a, int64_t n_keys, float* out, ThreadPool& pool);

// While it lives, this thread's float arithmetic flushes denormals (|x| < 2^-126) to zero, as
// inputs and as results (x86 MXCSR DAZ + FTZ; a no-op elsewhere); threads started meanwhile
// inherit the mode. Why: an AVX-512 multiply or FMA that meets a denormal takes a microcode assist
// (~100x slower); softmax weights of far-off keys and products of small activations underflow
// into that range (bench-v2-lite-L4-q4_k.gguf pp512: a sixth of its prefill CPU time). Values
// that small change no f32 sum they are added to.
class FlushDenormals {
 public:
  FlushDenormals();
  ~FlushDenormals();
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_ = 0;
};

// --- Introspection -----------------------------------------------------------------------------

// Which implementation set dispatch chose, e.g. "avx512" / "avx2" / "scalar".
std::string kernel_isa();
// Forces an implementation set ("scalar", "avx2", "avx512"); false if this CPU lacks it.
// Tests and benchmarks use it to compare versions side by side.
bool set_kernel_isa(const std::string& isa);

}  // namespace sputnik
