#include "baselines.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

namespace hattn_bench {
namespace {

constexpr int64_t kQueryBlock = 256;

// Softmax of row[0, visible) in place, zeros in row[visible, n); max-subtracted, fp32.
void softmax_row(float* row, int64_t visible, int64_t n) {
  float m = -INFINITY;
  for (int64_t j = 0; j < visible; ++j) m = std::max(m, row[j]);
  float sum = 0.f;
  for (int64_t j = 0; j < visible; ++j) {
    row[j] = std::exp(row[j] - m);
    sum += row[j];
  }
  const float inv = visible > 0 ? 1.f / sum : 0.f;
  for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
  std::fill(row + visible, row + n, 0.f);
}

// Keys visible to query row i under the bottom-right causal mask (all of them if not causal).
int64_t visible_keys(const Shape& s, int64_t i) {
  return s.causal ? std::clamp<int64_t>(i + (s.lk - s.lq) + 1, 0, s.lk) : s.lk;
}

// One head: q [Lq, D], k and v [Lk, D], out [Lq, D]; `scores` holds kQueryBlock x Lk floats.
void attention_one_head(const Shape& s, const float* q, const float* k, const float* v, float* out,
                        std::vector<float>& scores) {
  const int64_t d = s.head_dim;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  for (int64_t r0 = 0; r0 < s.lq; r0 += kQueryBlock) {
    const int64_t rows = std::min(kQueryBlock, s.lq - r0);
    // Keys visible to the block's last row go through the GEMMs; earlier rows mask the rest of
    // the diagonal part.
    const int64_t keys = visible_keys(s, r0 + rows - 1);
    if (keys == 0) {
      std::fill(out + r0 * d, out + (r0 + rows) * d, 0.f);
      continue;
    }
    float* sc = scores.data();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(keys), static_cast<int>(d), scale, q + r0 * d, static_cast<int>(d),
                k, static_cast<int>(d), 0.f, sc, static_cast<int>(keys));
    for (int64_t i = 0; i < rows; ++i) {
      softmax_row(sc + i * keys, std::min(visible_keys(s, r0 + i), keys), keys);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                static_cast<int>(d), static_cast<int>(keys), 1.f, sc, static_cast<int>(keys), v,
                static_cast<int>(d), 0.f, out + r0 * d, static_cast<int>(d));
  }
}

// Runs body(h, scratch) for every head h in [0, heads) on `threads` workers; each worker owns
// `scratch_floats` floats of scratch.
template <typename Body>
void for_each_head(int64_t heads, int threads, int64_t scratch_floats, const Body& body) {
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::vector<float> scratch(static_cast<size_t>(scratch_floats));
      for (int64_t h; (h = next.fetch_add(1)) < heads;) body(h, scratch);
    });
  }
  for (std::thread& t : pool) t.join();
}

}  // namespace

void openblas_attention(const Shape& s, const float* q, const float* k, const float* v, float* out,
                        int threads, bool heads_parallel) {
  const int64_t heads = s.batch * s.heads;
  const int64_t qsize = s.lq * s.head_dim, ksize = s.lk * s.head_dim;
  if (!heads_parallel) {
    openblas_set_num_threads(threads);
    std::vector<float> scores(static_cast<size_t>(kQueryBlock * s.lk));
    for (int64_t h = 0; h < heads; ++h) {
      attention_one_head(s, q + h * qsize, k + h * ksize, v + h * ksize, out + h * qsize, scores);
    }
    return;
  }
  openblas_set_num_threads(1);
  for_each_head(heads, threads, kQueryBlock * s.lk, [&](int64_t h, std::vector<float>& scores) {
    attention_one_head(s, q + h * qsize, k + h * ksize, v + h * ksize, out + h * qsize, scores);
  });
}

void openblas_decode(const Shape& s, const float* q, const float* k, const float* v, float* out,
                     int threads) {
  const int64_t heads = s.batch * s.heads, d = s.head_dim;
  const int64_t qsize = s.lq * d, ksize = s.lk * d;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  openblas_set_num_threads(1);
  for_each_head(heads, threads, s.lk, [&](int64_t h, std::vector<float>& scores) {
    const float* kh = k + h * ksize;
    const float* vh = v + h * ksize;
    for (int64_t i = 0; i < s.lq; ++i) {
      const int64_t keys = visible_keys(s, i);
      float* o = out + h * qsize + i * d;
      if (keys == 0) {
        std::fill(o, o + d, 0.f);
        continue;
      }
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(keys), static_cast<int>(d), scale,
                  kh, static_cast<int>(d), q + h * qsize + i * d, 1, 0.f, scores.data(), 1);
      softmax_row(scores.data(), keys, keys);
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(keys), static_cast<int>(d), 1.f, vh,
                  static_cast<int>(d), scores.data(), 1, 0.f, o, 1);
    }
  });
}

void openblas_sgemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                       int threads) {
  openblas_set_num_threads(threads);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.f, a, static_cast<int>(k), b, static_cast<int>(k), 0.f, c,
              static_cast<int>(n));
}

void openblas_sgemm_nn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                       int threads) {
  openblas_set_num_threads(threads);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.f, a, static_cast<int>(k), b, static_cast<int>(n), 0.f, c,
              static_cast<int>(n));
}

namespace {

// Adds data[0, n) into 16 independent accumulators (the loop vectorizes and is bound by memory, not
// by the latency of a single add chain); returns the sum of the elements past the last 16.
double add_run(const float* data, int64_t n, float* acc) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) {
      acc[j] += data[i + j];
    }
  }
  double tail = 0;
  for (; i < n; ++i) {
    tail += data[i];
  }
  return tail;
}

// Runs read(t, acc) on `threads` threads, each with its own accumulators; returns the sum of all.
template <typename Read>
double threaded_sum(int threads, const Read& read) {
  std::vector<double> partial(static_cast<size_t>(threads), 0.0);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      float acc[16] = {};
      double s = read(t, acc);
      for (float a : acc) {
        s += a;
      }
      partial[static_cast<size_t>(t)] = s;
    });
  }
  for (std::thread& t : pool) {
    t.join();
  }
  double s = 0;
  for (double p : partial) {
    s += p;
  }
  return s;
}

}  // namespace

double array_read(const float* data, int64_t n, int threads) {
  return threaded_sum(threads, [&](int t, float* acc) {
    const int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
    return add_run(data + lo, hi - lo, acc);
  });
}

double runs_read(const float* data, int64_t run, const std::vector<int64_t>& order, int threads) {
  const auto runs = static_cast<int64_t>(order.size());
  return threaded_sum(threads, [&](int t, float* acc) {
    double tail = 0;
    for (int64_t r = runs * t / threads; r < runs * (t + 1) / threads; ++r) {
      tail += add_run(data + order[static_cast<size_t>(r)] * run, run, acc);
    }
    return tail;
  });
}

void rows_gather_sum(const float* rows, int64_t row_len, const int32_t* index, const float* weight,
                     int64_t tokens, int64_t k, float* out, int threads, int prefetch) {
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int th = 0; th < threads; ++th) {
    pool.emplace_back([=] {
      for (int64_t t = tokens * th / threads; t < tokens * (th + 1) / threads; ++t) {
        float* y = out + t * row_len;
        std::fill(y, y + row_len, 0.f);
        for (int64_t s = 0; s < k; ++s) {
          if (prefetch > 0 && s + prefetch < k) {  // every cache line of a row `prefetch` ahead
            const char* ahead = reinterpret_cast<const char*>(
                rows + static_cast<int64_t>(index[t * k + s + prefetch]) * row_len);
            for (int64_t b = 0; b < row_len * 4; b += 64) {
              __builtin_prefetch(ahead + b);
            }
          }
          const float g = weight[t * k + s];
          const float* r = rows + static_cast<int64_t>(index[t * k + s]) * row_len;
          for (int64_t c = 0; c < row_len; ++c) {
            y[c] += g * r[c];
          }
        }
      }
    });
  }
  for (std::thread& t : pool) {
    t.join();
  }
}

double fma_peak(int threads, int64_t rounds, float* sink) {
  using V16 = float __attribute__((vector_size(64)));
  constexpr int kChains = 12;
  std::vector<float> partial(static_cast<size_t>(threads), 0.f);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      V16 acc[kChains];
      for (int j = 0; j < kChains; ++j) {
        for (int l = 0; l < 16; ++l) acc[j][l] = 0.5f + 0.01f * static_cast<float>(j + l + t);
      }
      // x <- x * 0.999 + 1e-3 converges to 1: no overflow, no denormals, however long it runs.
      const V16 m = V16{} + 0.999f, a = V16{} + 1e-3f;
      for (int64_t r = 0; r < rounds; ++r) {
        for (int j = 0; j < kChains; ++j) acc[j] = acc[j] * m + a;
      }
      float s = 0.f;
      for (int j = 0; j < kChains; ++j) {
        for (int l = 0; l < 16; ++l) s += acc[j][l];
      }
      partial[static_cast<size_t>(t)] = s;
    });
  }
  for (std::thread& th : pool) th.join();
  float s = 0.f;
  for (float p : partial) s += p;
  *sink = s;
  return 2.0 * threads * static_cast<double>(rounds) * kChains * 16;
}

}  // namespace hattn_bench
