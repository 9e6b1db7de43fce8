// Serving-shaped decode: a batch of sequences of different lengths in paged KV caches, next to the
// same batch in contiguous per-sequence caches, and the cost of a call on a tiny cache.
//   hattn_paged_<dtype>/batch:32/page:<S>[/nhd]   paged_attention, one call over the batch; pages
//                                                 of S tokens handed out in a shuffled order; nhd:
//                                                 pages stored [P, S, Hkv, D], else [P, Hkv, S, D]
//   hattn_paged_<dtype>/batch:32/contiguous       attention() per sequence on [1, Hkv, L_b, D]
//   hattn_paged_topk_<dtype>/batch:32/page:<S>    paged_topk_attention (k = 64), the same batch
//   hattn_paged_topk_<dtype>/batch:32/contiguous  topk_attention (k = 64) per sequence
//   hattn_paged_<dtype>/tiny/Lk:16                paged_attention, one sequence of 16 tokens
//   hattn_dense_<dtype>/tiny/Lk:16                attention() at the same shape
//   runs_read/run:<R>KiB/shuffled                 the bound on reading such pages: 1 GiB read in
//                                                 runs of R bytes in shuffled order
// The batch: Hq = 32 query heads over Hkv = 8 kv heads, D = 128, one new token per sequence,
// lengths spread evenly from 512 to 32768. GB/s counts the bytes held (every cached K and V
// element of every sequence, q and out): read against array_read/threads:N of the same run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "hattn/hattn.h"

namespace hattn_bench {
namespace {

constexpr int64_t kQHeads = 32, kKvHeads = 8, kDim = 128;

// Random elements of `dtype` in [-1, 1), never zero (fp32, or 16-bit words).
struct Elements {
  hattn::DType dtype;
  std::vector<float> f32;
  std::vector<uint16_t> half;
  Elements(hattn::DType t, int64_t n, uint64_t salt) : dtype(t) {
    f32.resize(static_cast<size_t>(n));
    fill_random(f32, salt);
    if (t == hattn::DType::f32) return;
    half.resize(f32.size());
    for (size_t i = 0; i < f32.size(); ++i) half[i] = hattn::to_16bit(t, f32[i]);
    std::vector<float>().swap(f32);
  }
  void* data() { return dtype == hattn::DType::f32 ? static_cast<void*>(f32.data()) : half.data(); }
  size_t element_bytes() const { return dtype == hattn::DType::f32 ? 4 : 2; }
};

std::vector<int32_t> batch_lengths(int64_t batch) {
  std::vector<int32_t> len(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    len[static_cast<size_t>(b)] = static_cast<int32_t>(512 + (32768 - 512) * b / (batch - 1));
  }
  return len;
}

void set_held_counters(benchmark::State& state, const std::vector<int32_t>& lengths,
                       size_t element_bytes) {
  const double tokens = std::accumulate(lengths.begin(), lengths.end(), 0.0);
  const double bytes = static_cast<double>(element_bytes) * kDim *
                       (2.0 * kKvHeads * tokens + 2.0 * kQHeads * lengths.size());
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["held_GB"] = bytes * 1e-9;
}

constexpr int64_t kTopk = 64;  // the top-k rows' k (the top-k decode target's)

// page = 0: contiguous per-sequence caches and attention() (topk: topk_attention) per sequence.
void run_batch(benchmark::State& state, hattn::DType dtype, int64_t page, bool token_major,
               bool topk) {
  hattn::TopkOptions topk_options;
  topk_options.k = kTopk;
  const int64_t batch = 32;
  const std::vector<int32_t> lengths = batch_lengths(batch);
  Elements q(dtype, batch * kQHeads * kDim, 1), out(dtype, batch * kQHeads * kDim, 2);
  hattn::set_num_threads(bench_threads());
  hattn::Dispatch chosen;
  const std::vector<int64_t> q_shape = {batch, kQHeads, 1, kDim};
  const hattn::TensorView qv = hattn::TensorView::contiguous(q.data(), dtype, q_shape);
  const hattn::TensorView ov = hattn::TensorView::contiguous(out.data(), dtype, q_shape);
  if (page == 0) {
    std::vector<Elements> k, v;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t n = kKvHeads * lengths[static_cast<size_t>(b)] * kDim;
      k.emplace_back(dtype, n, 10 + 2 * b);
      v.emplace_back(dtype, n, 11 + 2 * b);
    }
    const size_t esize = q.element_bytes();
    for (auto _ : state) {
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t len = lengths[static_cast<size_t>(b)];
        char* qb = static_cast<char*>(q.data()) + b * kQHeads * kDim * esize;
        char* ob = static_cast<char*>(out.data()) + b * kQHeads * kDim * esize;
        const hattn::TensorView qs =
            hattn::TensorView::contiguous(qb, dtype, {1, kQHeads, 1, kDim});
        const hattn::TensorView ks = hattn::TensorView::contiguous(k[static_cast<size_t>(b)].data(),
                                                                   dtype, {1, kKvHeads, len, kDim});
        const hattn::TensorView vs = hattn::TensorView::contiguous(v[static_cast<size_t>(b)].data(),
                                                                   dtype, {1, kKvHeads, len, kDim});
        const hattn::TensorView os =
            hattn::TensorView::contiguous(ob, dtype, {1, kQHeads, 1, kDim});
        const hattn::Status st = topk ? hattn::topk_attention(qs, ks, vs, os, topk_options, &chosen)
                                      : hattn::attention(qs, ks, vs, os, {}, &chosen);
        if (!st.ok()) {
          state.SkipWithError(st.message.c_str());
          return;
        }
      }
    }
  } else {
    int64_t pages_per_seq = 0, num_pages = 0;
    for (int32_t len : lengths) {
      pages_per_seq = std::max(pages_per_seq, (len + page - 1) / page);
      num_pages += (len + page - 1) / page;
    }
    // Pages handed out in a shuffled order, as an allocator's free list leaves them.
    std::vector<int32_t> ids(static_cast<size_t>(num_pages));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(kSeed));
    std::vector<int32_t> table(static_cast<size_t>(batch * pages_per_seq), 0);
    size_t next = 0;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t p = 0; p < (lengths[static_cast<size_t>(b)] + page - 1) / page; ++p) {
        table[static_cast<size_t>(b * pages_per_seq + p)] = ids[next++];
      }
    }
    const int64_t n = num_pages * kKvHeads * page * kDim;
    Elements k(dtype, n, 3), v(dtype, n, 4);
    const std::vector<int64_t> strides =
        token_major ? std::vector<int64_t>{page * kKvHeads * kDim, kDim, kKvHeads * kDim, 1}
                    : std::vector<int64_t>{kKvHeads * page * kDim, page * kDim, kDim, 1};
    hattn::PagedKvCache cache;
    cache.k_pages =
        hattn::TensorView::strided(k.data(), dtype, {num_pages, kKvHeads, page, kDim}, strides);
    cache.v_pages =
        hattn::TensorView::strided(v.data(), dtype, {num_pages, kKvHeads, page, kDim}, strides);
    cache.page_table = table.data();
    cache.pages_per_seq = pages_per_seq;
    cache.lengths = lengths.data();
    cache.batch = batch;
    for (auto _ : state) {
      const hattn::Status st =
          topk ? hattn::paged_topk_attention(qv, cache, ov, topk_options, &chosen)
               : hattn::paged_attention(qv, cache, ov, {}, &chosen);
      if (!st.ok()) {
        state.SkipWithError(st.message.c_str());
        return;
      }
      benchmark::DoNotOptimize(ov.data);
    }
  }
  state.SetLabel(chosen.kernel + " splits " + std::to_string(chosen.decode_splits));
  set_held_counters(state, lengths, q.element_bytes());
}

// One sequence of 16 tokens: the time of a call is its overhead.
void run_tiny(benchmark::State& state, hattn::DType dtype, bool paged) {
  const int64_t len = 16;
  Elements q(dtype, kQHeads * kDim, 5), out(dtype, kQHeads * kDim, 6);
  Elements k(dtype, kKvHeads * len * kDim, 7), v(dtype, kKvHeads * len * kDim, 8);
  const hattn::TensorView qv =
      hattn::TensorView::contiguous(q.data(), dtype, {1, kQHeads, 1, kDim});
  const hattn::TensorView ov =
      hattn::TensorView::contiguous(out.data(), dtype, {1, kQHeads, 1, kDim});
  const hattn::TensorView kv =
      hattn::TensorView::contiguous(k.data(), dtype, {1, kKvHeads, len, kDim});
  const hattn::TensorView vv =
      hattn::TensorView::contiguous(v.data(), dtype, {1, kKvHeads, len, kDim});
  const int32_t table = 0, length = static_cast<int32_t>(len);
  hattn::PagedKvCache cache;
  cache.k_pages = kv;
  cache.v_pages = vv;
  cache.page_table = &table;
  cache.pages_per_seq = 1;
  cache.lengths = &length;
  cache.batch = 1;
  hattn::set_num_threads(bench_threads());
  hattn::Dispatch chosen;
  for (auto _ : state) {
    const hattn::Status st = paged ? hattn::paged_attention(qv, cache, ov, {}, &chosen)
                                   : hattn::attention(qv, kv, vv, ov, {}, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      return;
    }
    benchmark::DoNotOptimize(ov.data);
  }
  state.SetLabel(chosen.kernel);
}

// The bound for a paged cache's reads: 1 GiB read in runs of `run_bytes` (a page of one kv head:
// S x D elements) in shuffled order, next to array_read's one stream per thread.
void run_runs_read(benchmark::State& state, int64_t run_bytes) {
  const int64_t n = (int64_t{1} << 30) / 4, run = run_bytes / 4;
  auto& b = buffers("runs_read", {n});
  std::vector<int64_t> order(static_cast<size_t>(n / run));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(kSeed));
  for (auto _ : state) {
    benchmark::DoNotOptimize(runs_read(b[0].data(), run, order, bench_threads()));
  }
  state.counters["GB/s"] =
      benchmark::Counter(4.0 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

void register_paged() {
  // The runs of the pages below: S = 16 / 64 / 256 are 4 / 16 / 64 KiB in bf16, 8 / 32 / 128 KiB
  // in fp32.
  for (int64_t kib : {4, 8, 16, 32, 64, 128}) {
    add("runs_read/run:" + std::to_string(kib) + "KiB/shuffled", run_runs_read, kib << 10);
  }
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f32}) {
    const std::string prefix = std::string("hattn_paged_") + hattn::to_string(t) + "/batch:32/";
    const std::string topk = std::string("hattn_paged_topk_") + hattn::to_string(t) + "/batch:32/";
    for (int64_t page : {16, 64, 256}) {
      add(prefix + "page:" + std::to_string(page), run_batch, t, page, false, false);
    }
    add(prefix + "page:16/nhd", run_batch, t, int64_t{16}, true, false);
    add(prefix + "contiguous", run_batch, t, int64_t{0}, false, false);
    for (int64_t page : {16, 256}) {
      add(topk + "page:" + std::to_string(page), run_batch, t, page, false, true);
    }
    add(topk + "contiguous", run_batch, t, int64_t{0}, false, true);
    for (bool paged : {true, false}) {
      benchmark::RegisterBenchmark(((paged ? "hattn_paged_" : "hattn_dense_") +
                                    std::string(hattn::to_string(t)) + "/tiny/Lk:16")
                                       .c_str(),
                                   run_tiny, t, paged)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace hattn_bench
