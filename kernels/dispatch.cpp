// Picks the kernel set once, by CPU feature, and forwards the kernels.h calls through it.
// SPUTNIK_ISA=scalar|avx2|avx512 overrides the choice (ignored, with a warning, if the CPU lacks it).
#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "kernels/kernels.h"
#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/repack.h"
#include "kernels/x86/x86.h"

namespace sputnik {
namespace {

const KernelSet kScalarSet{"scalar", ref::matmul, ref::rms_norm, ref::softmax, ref::silu_mul, ref::axpy, ref::dot_f32};

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("bmi2");
}

// libgcc's checks include the OS's XSAVE support for the ZMM state.
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

const KernelSet* set_for(const std::string& isa) {
  if (isa == "scalar") return &kScalarSet;
  if (isa == "avx2") return cpu_has_avx2() ? &avx2::kernel_set() : nullptr;
  if (isa == "avx512") return cpu_has_avx512() ? &avx512::kernel_set() : nullptr;
  return nullptr;
}

const KernelSet* detect() {
  if (const char* env = std::getenv("SPUTNIK_ISA"); env != nullptr && *env != '\0') {
    if (const KernelSet* s = set_for(env)) return s;
    std::fprintf(stderr, "sputnik: SPUTNIK_ISA=%s is not available on this CPU (expected scalar, avx2 or "
                 "avx512); detecting instead\n", env);
  }
  if (cpu_has_avx512()) return &avx512::kernel_set();
  if (cpu_has_avx2()) return &avx2::kernel_set();
  return &kScalarSet;
}

const KernelSet*& active() {
  static const KernelSet* set = detect();
  return set;
}

// The interleaved layouts have an AVX-512 kernel only; elsewhere they go through ref::matmul.
bool active_is_avx512() { return active() != &kScalarSet && cpu_has_avx512() && active() == &avx512::kernel_set(); }

}  // namespace

void dequantize_row(DType type, const void* src, float* dst, int64_t n) { ref::dequantize_row(type, src, dst, n); }
void dequantize_weight_row(const TensorView& w, int64_t r, float* dst) { ref::dequantize_weight_row(w, r, dst); }

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  if (dtype_row_group(w.dtype) > 1) {
    if (active_is_avx512()) return avx512::matmul_interleaved(w, x, n_tokens, y, pool);
    return ref::matmul(w, x, n_tokens, y, pool);
  }
  active()->matmul(w, x, n_tokens, y, pool);
}

DType preferred_weight_type(DType type) {
  const DType interleaved = ref::interleaved_type(type);
  return active_is_avx512() && interleaved != DType::Count ? interleaved : type;
}

TensorView repack_weight(const TensorView& w, DType to, void* dst, ThreadPool& pool) {
  assert(ref::interleaved_type(w.dtype) == to && w.rows() % kInterleaveRows == 0);
  const int64_t groups = w.rows() / kInterleaveRows, cols = w.cols();
  const size_t group_in = kInterleaveRows * w.row_bytes(), group_out = kInterleaveRows * dtype_row_bytes(to, cols);
  const int64_t per_task = std::max<int64_t>(1, groups / (4 * pool.size()));
  pool.parallel_for((groups + per_task - 1) / per_task, [&](int64_t task, int) {
    const int64_t g0 = task * per_task, g1 = std::min(groups, g0 + per_task);
    ref::repack_interleaved(w.dtype, static_cast<const uint8_t*>(w.data) + g0 * group_in,
                            (g1 - g0) * kInterleaveRows, cols, static_cast<uint8_t*>(dst) + g0 * group_out);
  });
  TensorView v = w;
  v.dtype = to;
  v.data = dst;
  return v;
}

int64_t weight_row_granularity(const TensorView& w) {
  if (w.dtype == DType::F8_E4M3 && w.scale != nullptr) return w.scale_block;
  return dtype_row_group(w.dtype);
}

TensorView slice_rows(const TensorView& w, int64_t r0, int64_t r1) {
  const int64_t g = weight_row_granularity(w), cols = w.cols();
  assert(0 <= r0 && r0 <= r1 && r1 <= w.rows() && r0 % g == 0 && (r1 % g == 0 || r1 == w.rows()));
  TensorView v = w;
  v.n_dims = 2;
  v.shape = {r1 - r0, cols, 0, 0};
  v.data = w.row(r0);
  if (v.scale != nullptr) v.scale = w.scale + (r0 / g) * ((cols + g - 1) / g);
  return v;
}

// AVX-512 or the scalar spec: both give ggml's bits (AVX2 has no version of its own yet).
void attention_scores_f16(const uint16_t* k, int64_t n_keys, int64_t head_dim, const float* q,
                          int64_t n_rows, bool single_token, float* scores) {
  if (active_is_avx512()) return avx512::attention_scores_f16(k, n_keys, head_dim, q, n_rows, single_token, scores);
  ref::attention_scores_f16(k, n_keys, head_dim, q, n_rows, single_token, scores);
}
void attention_values_f16(const uint16_t* v, int64_t n_blocks, int64_t head_dim, const float* p,
                          int64_t n_rows, bool single_token, float* out) {
  if (active_is_avx512()) return avx512::attention_values_f16(v, n_blocks, head_dim, p, n_rows, single_token, out);
  ref::attention_values_f16(v, n_blocks, head_dim, p, n_rows, single_token, out);
}
void attention_decode_f16(const GroupedQueryAttentionF16& a, int64_t n_keys, float* out, ThreadPool& pool) {
  if (active_is_avx512()) return avx512::attention_decode_f16(a, n_keys, out, pool);
  ref::attention_decode_f16(a, n_keys, out, pool, active()->softmax);
}

void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out) {
  active()->rms_norm(x, weight, eps, n, out);
}
void softmax(float* x, int64_t n) { active()->softmax(x, n); }
void silu_mul(const float* gate, const float* up, int64_t n, float* out) { active()->silu_mul(gate, up, n, out); }
void axpy(float a, const float* x, int64_t n, float* y) { active()->axpy(a, x, n, y); }
float dot_f32(const float* a, const float* b, int64_t n) { return active()->dot_f32(a, b, n); }

namespace {
// The attention chunks live in their own files, outside KernelSet; each goes with its ISA's set.
ref::AttentionChunkFn attention_chunk_of(const KernelSet* s) {
  if (s == &kScalarSet) return ref::attention_chunk;
  return s == &avx512::kernel_set() ? avx512::attention_chunk : avx2::attention_chunk;
}
}  // namespace

void multi_query_attention(const MultiQueryAttention& a, int64_t n_keys, float* out, ThreadPool& pool) {
  ref::multi_query_attention_split(attention_chunk_of(active()), active()->axpy, a, n_keys, out, pool);
}

#if defined(__x86_64__) || defined(__i386__)
// MXCSR bits 15 (FTZ: denormal results become 0) and 6 (DAZ: denormal inputs read as 0).
constexpr unsigned kFlushDenormalBits = 0x8040;
FlushDenormals::FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushDenormalBits); }
FlushDenormals::~FlushDenormals() { _mm_setcsr(saved_); }
#else
FlushDenormals::FlushDenormals() = default;
FlushDenormals::~FlushDenormals() = default;
#endif

bool matmul_quantizes_activations(DType weight_type) {
  if (dtype_row_group(weight_type) > 1) return active_is_avx512();
  const KernelSet* s = active();
  if (s == &kScalarSet) return false;
  return x86_has_fast_matmul(weight_type) && ref::activation_block(weight_type) != 0;
}

bool x86_has_fast_matmul(DType type) {
  switch (type) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
    case DType::F32: case DType::F16: case DType::BF16: case DType::F8_E4M3: return true;
    default: return false;
  }
}

std::string kernel_isa() { return active()->name; }

bool set_kernel_isa(const std::string& isa) {
  const KernelSet* s = set_for(isa);
  if (s == nullptr) return false;
  active() = s;
  return true;
}

}  // namespace sputnik
