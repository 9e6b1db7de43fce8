// Helpers shared by the benchmark files: threads, input buffers (random, never zeros, allocated
// once per shape), registration with the suite's defaults.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "baselines.h"
#include "hattn/hattn.h"

namespace hattn_bench {

constexpr uint64_t kSeed = 20261122;

// 2, or HATTN_BENCH_THREADS.
int bench_threads();

// Uniform in [-1, 1) from splitmix64 seeded by kSeed + salt: fast enough to fill 1 GiB.
void fill_random(std::vector<float>& x, uint64_t salt);

// k distinct values of [0, n) drawn uniformly (a partial Fisher-Yates shuffle from `state`, which
// advances), in ascending order as a top-k selection lists them. 1 <= k <= n.
std::vector<int32_t> sorted_random_subset(int64_t n, int64_t k, uint64_t* state);

// A one-slot cache of random buffers keyed by `key`: a benchmark's repetitions (and the
// baselines at the same shape, under the same key) reuse its inputs; a new key frees the old.
std::vector<std::vector<float>>& buffers(const std::string& key, const std::vector<int64_t>& sizes);

// Query-key pairs visible under the (bottom-right) causal mask: the useful work.
double visible_pairs(const Shape& s);

// q, k, v, out of a shape (k and v with s.kv() heads).
struct Inputs {
  float *q, *k, *v, *out;
  explicit Inputs(const Shape& s);
};

// Views of a shape's q, k, v, out in `dtype`: the fp32 Inputs themselves, or (bf16, f16) the
// same random values rounded to nearest even with hattn::to_16bit, held here. fp32_query: q and
// out stay fp32 over the 16-bit k and v.
struct TypedInputs {
  TypedInputs(const Shape& s, hattn::DType dtype, bool fp32_query = false);
  std::vector<std::vector<uint16_t>> sixteen;  // q, k, v, out in 16 bits
  hattn::TensorView q, k, v, out;
};

template <typename... Args>
void add(const std::string& name, Args&&... args) {
  benchmark::RegisterBenchmark(name.c_str(), std::forward<Args>(args)...)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

// bench_topk.cpp: topk attention and topk_ffn next to dense and OpenBLAS.
void register_topk();
// bench_loki.cpp: Loki decode at a dense decode shape, over the papers' (d_f, k_f) grid.
void register_loki_decode(const Shape& s);
// bench_el.cpp: an EL decode step next to the standard multi-head path and sgemm.
void register_el();
// bench_sparsek.cpp: SPARSEK prefill vs dense, its masks alone, bounded-cache decode, the operator.
void register_sparsek();
// bench_paged.cpp: batch decode over paged caches next to contiguous ones, a tiny cache's call.
void register_paged();

}  // namespace hattn_bench
