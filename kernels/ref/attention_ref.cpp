// Multi-query attention of one token over cached rows (kernels.h multi_query_attention): the
// scalar online-softmax chunk (the spec each ISA's chunk is tested against), the split over
// positions with its merge that every ISA shares (flash-decoding: Dao et al., "Flash-Decoding
// for long-context inference", 2023), and the two-pass definition in double.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/quant_blocks.h"
#include "kernels/ref/ref.h"

namespace sputnik::ref {
namespace {

float cached(const CacheRows& rows, int64_t j, int64_t i) {
  const int64_t at = j * rows.stride + i;
  if (rows.type == DType::F16) return fp16_to_f32(static_cast<const uint16_t*>(rows.data)[at]);
  return static_cast<const float*>(rows.data)[at];
}

// Fewer positions than this per chunk cost more in hand-out and merge than they save.
constexpr int64_t kMinKeysPerChunk = 64;
// Chunks per thread: more than one so a thread that is descheduled (or a slower core) delays the
// token by a fraction of its share, not all of it.
constexpr int64_t kChunksPerThread = 4;
// ... unless the chunks' partial outputs (rows x dv floats each) would pass this size: beyond it
// they spill out of L2, and writing and merging them costs more than the extra chunks save
// (a prefill group of 256 rows x 512 has 512 KiB a chunk: 8 chunks took 1.3x the CPU time of 2).
constexpr int64_t kMaxPartialBytes = int64_t{1} << 20;
// Chunk lengths are multiples of the SIMD chunks' row blocks (32 rows), so only the last chunk
// ends in a partial block.
constexpr int64_t kChunkAlign = 32;

}  // namespace

void attention_chunk(const MultiQueryAttention& a, int64_t begin, int64_t end, float* max,
                     float* sum, float* out) {
  std::fill(max, max + a.n_heads, -std::numeric_limits<float>::infinity());
  std::fill(sum, sum + a.n_heads, 0.0f);
  std::fill(out, out + a.n_heads * a.dv, 0.0f);
  for (int64_t j = begin; j < end; ++j) {
    for (int64_t h = 0; h < a.n_heads; ++h) {
      if (a.key_limits != nullptr && j >= a.key_limits[h]) continue;
      float s = 0.0f;
      for (int64_t i = 0; i < a.dk; ++i) s += a.q[h * a.dk + i] * cached(a.keys, j, i);
      s *= a.scale;
      // Online softmax: rescale what was accumulated under the old max.
      const float new_max = std::max(max[h], s);
      const float correction = std::exp(max[h] - new_max);
      const float p = std::exp(s - new_max);
      sum[h] = sum[h] * correction + p;
      for (int64_t i = 0; i < a.dv; ++i)
        out[h * a.dv + i] = out[h * a.dv + i] * correction + p * cached(a.values, j, i);
      max[h] = new_max;
    }
  }
}

void multi_query_attention_split(AttentionChunkFn chunk, AxpyFn axpy, const MultiQueryAttention& a,
                                 int64_t n_keys, float* out, ThreadPool& pool) {
  assert(n_keys >= 1);
  const int64_t H = a.n_heads, dv = a.dv;
  int64_t n_chunks = std::min<int64_t>((n_keys + kMinKeysPerChunk - 1) / kMinKeysPerChunk,
                                       kChunksPerThread * pool.size());
  const int64_t partial_bytes = H * dv * static_cast<int64_t>(sizeof(float));
  n_chunks = std::min(n_chunks, std::max<int64_t>(pool.size(), kMaxPartialBytes / partial_bytes));
  if (pool.size() == 1) n_chunks = 1;
  const int64_t per_chunk =
      ((n_keys + n_chunks - 1) / n_chunks + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
  n_chunks = (n_keys + per_chunk - 1) / per_chunk;

  // Per chunk: max [H], sum [H], out [H, dv].
  thread_local std::vector<float> partials;
  const int64_t stride = H * (dv + 2);
  if (partials.size() < static_cast<size_t>(n_chunks * stride)) partials.resize(n_chunks * stride);
  float* base = partials.data();
  auto run = [&](int64_t c, int) {
    float* p = base + c * stride;
    chunk(a, c * per_chunk, std::min(n_keys, (c + 1) * per_chunk), p, p + H, p + 2 * H);
  };
  if (n_chunks == 1) {
    run(0, 0);
  } else {
    pool.parallel_for(n_chunks, run);
  }

  // The merge of head h. Across the pool when there is much to merge (a prefill group: rows x
  // dv values per chunk); a decode token's few heads are merged here, saving a hand-out, but on
  // the critical path: hence the ISA's axpy (this file is built for baseline x86-64, where the
  // loop vectorises 4 wide).
  auto merge = [&](int64_t h, int) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < n_chunks; ++c) m = std::max(m, base[c * stride + h]);
    float total = 0.0f;
    float* o = out + h * dv;
    std::fill(o, o + dv, 0.0f);
    for (int64_t c = 0; c < n_chunks; ++c) {
      const float* p = base + c * stride;
      if (p[H + h] == 0.0f) continue;  // a chunk wholly past this row's key limit
      const float weight = std::exp(p[h] - m);
      total += weight * p[H + h];
      axpy(weight, p + 2 * H + h * dv, dv, o);
    }
    const float inv = 1.0f / total;
    for (int64_t i = 0; i < dv; ++i) o[i] *= inv;
  };
  if (n_chunks * partial_bytes >= kMaxPartialBytes) {
    pool.parallel_for(H, merge);
  } else {
    for (int64_t h = 0; h < H; ++h) merge(h, 0);
  }
}

void multi_query_attention_two_pass(const MultiQueryAttention& a, int64_t n_keys, float* out) {
  std::vector<double> p(static_cast<size_t>(n_keys));
  for (int64_t h = 0; h < a.n_heads; ++h) {
    const int64_t n = a.key_limits != nullptr ? std::min(n_keys, a.key_limits[h]) : n_keys;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < a.dk; ++i)
        s += static_cast<double>(a.q[h * a.dk + i]) * cached(a.keys, j, i);
      p[j] = s * a.scale;
      m = std::max(m, p[j]);
    }
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) total += (p[j] = std::exp(p[j] - m));
    for (int64_t i = 0; i < a.dv; ++i) {
      double o = 0.0;
      for (int64_t j = 0; j < n; ++j) o += p[j] * cached(a.values, j, i);
      out[h * a.dv + i] = static_cast<float>(o / total);
    }
  }
}

}  // namespace sputnik::ref
