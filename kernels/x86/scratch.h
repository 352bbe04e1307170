// Per-thread scratch memory for the x86 kernels (quantised activations). Header-only, in an
// anonymous namespace, because each ISA file compiles it with its own target flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace sputnik {
namespace {

// 64-byte aligned, grows and never shrinks; one per thread that calls matmul.
struct Scratch {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> mem;
  size_t size = 0;
  uint8_t* get(size_t bytes) {
    if (bytes > size) {
      size = (bytes + 4095) & ~size_t{4095};
      mem.reset(static_cast<uint8_t*>(std::aligned_alloc(64, size)));
    }
    return mem.get();
  }
};

inline Scratch& activation_scratch() {
  thread_local Scratch s;
  return s;
}

constexpr int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Rows per parallel task: enough tasks to balance n_threads, few enough to amortise the hand-out,
// and (for prefill) a weight slab that stays in L2 while every token tile streams over it.
inline int64_t rows_per_task(int64_t rows, size_t row_bytes, int n_threads, int64_t n_tokens) {
  int64_t r = round_up((rows + 8 * n_threads - 1) / (8 * n_threads), 4);
  if (n_tokens > 4) {
    const int64_t l2_rows = static_cast<int64_t>((256 * 1024) / (row_bytes ? row_bytes : 1));
    r = std::min<int64_t>(r, std::max<int64_t>(4, l2_rows / 4 * 4));
  }
  return std::max<int64_t>(4, r);
}

}  // namespace
}  // namespace sputnik
