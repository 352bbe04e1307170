// matmul_batch: several independent matmuls in one parallel dispatch (kernels.h).
//
// Why: a DeepSeek MoE layer at decode multiplies one token by ~14 small matrices (gate and up of
// 6 routed experts and the shared one, then 7 down projections). One parallel_for per matrix
// costs a hand-out and a barrier each, and a 1408-row expert matrix is too small to keep two
// threads streaming; one dispatch over the row slices of all of them keeps every thread reading
// weights from the first byte to the last.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"

namespace sputnik {
namespace {

// Rows of each slice are a multiple of this: the layout's granularity (slice_rows) and the
// kernels' 4-row register tile, so a slice is tiled exactly as the whole matrix would be
// (bit-identical y).
int64_t slice_step(const TensorView& w) {
  const int64_t g = weight_row_granularity(w);
  return g % 4 == 0 ? g : g * 4;
}

struct Slice {
  int32_t job;
  int64_t r0, r1;
  double cost;
};

// Prefill: slices handed out per thread: enough that a thread slowed by the shared machine does
// not hold up the rest, few enough that each slice still streams a good run of weight rows.
constexpr int64_t kSlicesPerThread = 8;

}  // namespace

void matmul_batch(std::span<const MatmulJob> jobs, ThreadPool& pool) {
  if (pool.size() == 1 || jobs.size() == 1) {
    for (const MatmulJob& j : jobs) matmul(*j.w, j.x, j.n_tokens, j.y, pool);
    return;
  }
  // Work of a row, in bytes of weights streamed: once per 4-token tile (the kernels reuse each
  // unpacked weight block for the tokens of one tile), so decode balances by bytes and prefill
  // by bytes x tiles.
  auto row_cost = [](const MatmulJob& j) {
    return static_cast<double>(j.w->row_bytes()) * static_cast<double>((j.n_tokens + 3) / 4);
  };
  double total = 0;
  bool one_pass = true;
  for (const MatmulJob& j : jobs) {
    total += row_cost(j) * static_cast<double>(j.w->rows());
    one_pass = one_pass && j.n_tokens <= kMatmulOnePassTokens;
  }
  // Decode streams every weight byte once, so a thread idle at the end is DRAM bandwidth lost:
  // its slices follow the jobs in order, each 1 / (2 * threads) of the work left (guided
  // scheduling, like the interleaved kernels' decode slabs) down to one row step, so the threads
  // finish within one small slice of each other. (Equal slices of 1 / (8 * threads) left one
  // thread idle for up to a whole 1.6 MB routed expert of DeepSeek-V2-Lite at Q4_0.)
  const double slice_target = total / (kSlicesPerThread * pool.size());
  double left = total;

  std::vector<Slice> slices;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const MatmulJob& j = jobs[i];
    if (j.n_tokens <= 0) continue;
    const int64_t rows = j.w->rows(), step = slice_step(*j.w);
    for (int64_t r0 = 0; r0 < rows;) {
      const double target = one_pass ? left / (2.0 * pool.size()) : slice_target;
      const auto target_rows = static_cast<int64_t>(target / row_cost(j));
      const int64_t r1 = std::min(rows, r0 + std::max<int64_t>(step, target_rows / step * step));
      const double cost = row_cost(j) * static_cast<double>(r1 - r0);
      slices.push_back({static_cast<int32_t>(i), r0, r1, cost});
      left -= cost;
      r0 = r1;
    }
  }
  // Prefill, largest first: threads take the next slice as they finish, so the small ones (a
  // rarely chosen expert, a matrix's last rows) fill the gaps at the end instead of a big one
  // starting last. Decode's guided slices already shrink towards the end.
  if (!one_pass) {
    std::stable_sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) { return a.cost > b.cost; });
  }
  pool.parallel_for(static_cast<int64_t>(slices.size()), [&](int64_t task, int) {
    // Each slice is one single-threaded call of the active kernel set's matmul.
    thread_local ThreadPool inline_pool(1);
    thread_local std::vector<float> slice_y;
    const Slice& s = slices[task];
    const MatmulJob& j = jobs[s.job];
    const TensorView w = slice_rows(*j.w, s.r0, s.r1);
    const int64_t n = s.r1 - s.r0, rows = j.w->rows();
    if (j.n_tokens == 1) {
      matmul(w, j.x, 1, j.y + s.r0, inline_pool);
      return;
    }
    // The slice's output is [n_tokens, n]; y's rows are w->rows() long.
    slice_y.resize(static_cast<size_t>(j.n_tokens * n));
    matmul(w, j.x, j.n_tokens, slice_y.data(), inline_pool);
    for (int64_t t = 0; t < j.n_tokens; ++t) {
      std::memcpy(j.y + t * rows + s.r0, slice_y.data() + t * n, sizeof(float) * n);
    }
  });
}

}  // namespace sputnik
