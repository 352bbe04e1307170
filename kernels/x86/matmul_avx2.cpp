// AVX2 matmul. (Work in progress: falls back to ref::matmul.)
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

namespace sputnik::avx2 {

void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);
void softmax(float* x, int64_t n);
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void axpy(float a, const float* x, int64_t n, float* y);
float dot_f32(const float* a, const float* b, int64_t n);

bool has_fast_matmul(DType) { return false; }

const KernelSet& kernel_set() {
  static const KernelSet set{"avx2", ref::matmul, rms_norm, softmax, silu_mul, axpy, dot_f32};
  return set;
}

}  // namespace sputnik::avx2
