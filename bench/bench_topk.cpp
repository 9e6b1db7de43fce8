// topk attention and topk_ffn, in the same run as dense (bench_dense.cpp registers both):
//   hattn_topk/prefill/L:<L>/D:64/k:<k>       vs hattn_dense/prefill/L:<L>/D:64/causal:0
//   hattn_topk_bf16/prefill/L:<L>/D:64/k:64   bf16 (the generic-D kernel), vs the fp32 row
//   hattn_topk/decode/Lk:<Lk>/D:128/k:64      vs hattn_dense/decode/Lk:<Lk>/D:128
//   hattn_topk/decode/.../Hkv:8               grouped-query, vs hattn_dense/decode/.../Hkv:8
//   hattn_topk_{bf16,f16}/decode/...          over a 16-bit cache, vs hattn_dense_{bf16,f16}
//   hattn_topk_ffn[_bf16]/T:512/D:<D>/dff:<F>/k:<k>  vs openblas_ffn/T:512/D:<D>/dff:<F> (two
//   sgemms)
//   ffn_part/.../w1_sgemm and ffn_part/.../k:<k>/gather: the top-k FFN's two halves measured
//   apart (OpenBLAS x W1^T; a plain loop summing each token's k rows of W2^T, chosen uniformly
//   at random): their sum is what a top-k FFN that reads each token's rows for that token alone
//   would take on uniform selections (real ones that favour some units reuse rows in the caches)
// Counters: GFLOP/s of the work dense would do (so time ratios read directly), and scratch_MB,
// the most scratch the kernels held at once (linear in L for topk, never L x L).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>

#include "bench_common.h"
#include "hattn/hattn.h"

namespace hattn_bench {

namespace {

void set_scratch_counter(benchmark::State& state) {
  state.counters["scratch_MB"] = static_cast<double>(hattn::scratch_peak_bytes()) / (1 << 20);
}

void run_topk(benchmark::State& state, Shape s, int64_t k, hattn::DType dtype) {
  TypedInputs in(s, dtype);
  hattn::TopkOptions opt;
  opt.k = k;
  opt.causal = s.causal;
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  hattn::reset_scratch_peak();
  for (auto _ : state) {
    hattn::Status st = hattn::topk_attention(in.q, in.k, in.v, in.out, opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(in.out.data);
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel);
  const double flops = 4.0 * static_cast<double>(s.batch * s.heads * s.head_dim) * visible_pairs(s);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  set_scratch_counter(state);
}

struct FfnShape {
  int64_t tokens, dim, d_ff;
};

// x [T, D], w1 [d_ff, D], w2 [D, d_ff] (OpenBLAS), w2t [d_ff, D] (hattn), h [T, d_ff], y [T, D].
std::vector<std::vector<float>>& ffn_buffers(const FfnShape& f) {
  const std::string key = "ffn " + std::to_string(f.tokens) + "x" + std::to_string(f.dim) + "x" +
                          std::to_string(f.d_ff);
  auto& b = buffers(key, {f.tokens * f.dim, f.d_ff * f.dim, f.dim * f.d_ff, f.d_ff * f.dim,
                          f.tokens * f.d_ff, f.tokens * f.dim});
  static std::string transposed_for;
  if (transposed_for != key) {  // w2t = w2^T, so both compute the same layer
    for (int64_t r = 0; r < f.dim; ++r) {
      for (int64_t c = 0; c < f.d_ff; ++c) b[3][c * f.dim + r] = b[2][r * f.d_ff + c];
    }
    transposed_for = key;
  }
  return b;
}

void set_ffn_counter(benchmark::State& state, const FfnShape& f) {
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * f.tokens * f.dim * f.d_ff * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// x, w1, w2t and y in `dtype` (bf16, f16: the fp32 buffers' values rounded, held in `bits`).
hattn::TensorView ffn_view(std::vector<float>& src, hattn::DType dtype, std::vector<int64_t> shape,
                           std::vector<uint16_t>* bits) {
  if (dtype == hattn::DType::f32)
    return hattn::TensorView::contiguous(src.data(), std::move(shape));
  bits->resize(src.size());
  for (size_t i = 0; i < src.size(); ++i) (*bits)[i] = hattn::to_16bit(dtype, src[i]);
  return hattn::TensorView::contiguous(bits->data(), dtype, std::move(shape));
}

void run_topk_ffn(benchmark::State& state, FfnShape f, int64_t k, hattn::DType dtype) {
  auto& b = ffn_buffers(f);
  std::vector<uint16_t> x16, w1_16, w2t16, y16;
  auto x = ffn_view(b[0], dtype, {f.tokens, f.dim}, &x16);
  auto w1 = ffn_view(b[1], dtype, {f.d_ff, f.dim}, &w1_16);
  auto w2t = ffn_view(b[3], dtype, {f.d_ff, f.dim}, &w2t16);
  auto y = ffn_view(b[5], dtype, {f.tokens, f.dim}, &y16);
  hattn::TopkFfnOptions opt;
  opt.k = k;
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  hattn::reset_scratch_peak();
  for (auto _ : state) {
    hattn::Status st = hattn::topk_ffn(x, w1, w2t, y, opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(y.data);
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel);
  set_ffn_counter(state, f);
  set_scratch_counter(state);
}

// The dense FFN on OpenBLAS: h = x w1^T, relu, y = h w2^T (w2 [D, d_ff]), N-thread BLAS; or,
// with whole = false, its first half alone (h = x w1^T, the top-k FFN's dense part).
void run_openblas_ffn(benchmark::State& state, FfnShape f, bool whole) {
  auto& b = ffn_buffers(f);
  openblas_set_num_threads(bench_threads());
  const int t = static_cast<int>(f.tokens), d = static_cast<int>(f.dim),
            ff = static_cast<int>(f.d_ff);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, ff, d, 1.f, b[0].data(), d, b[1].data(),
                d, 0.f, b[4].data(), ff);
    if (whole) {
      for (float& h : b[4]) {
        h = std::max(h, 0.f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, d, ff, 1.f, b[4].data(), ff,
                  b[2].data(), ff, 0.f, b[5].data(), d);
    }
    benchmark::DoNotOptimize(b[5].data());
    benchmark::DoNotOptimize(b[4].data());
  }
  set_ffn_counter(state, f);
}

// The second half alone: each token sums k distinct rows of w2t drawn at random (seeded),
// in ascending order as a selection lists them, weighted by positive values.
void run_ffn_gather(benchmark::State& state, FfnShape f, int64_t k) {
  auto& b = ffn_buffers(f);
  std::vector<int32_t> index(static_cast<size_t>(f.tokens * k));
  std::vector<float> weight(index.size());
  uint64_t draw = kSeed + 7;
  std::mt19937_64 rng(kSeed + 8);
  for (int64_t t = 0; t < f.tokens; ++t) {
    const std::vector<int32_t> units = sorted_random_subset(f.d_ff, k, &draw);
    for (int64_t s = 0; s < k; ++s) {
      index[static_cast<size_t>(t * k + s)] = units[static_cast<size_t>(s)];
      weight[static_cast<size_t>(t * k + s)] = 0.5f + static_cast<float>(rng() % 1000) * 1e-3f;
    }
  }
  for (auto _ : state) {
    rows_gather_sum(b[3].data(), f.dim, index.data(), weight.data(), f.tokens, k, b[5].data(),
                    bench_threads());
    benchmark::DoNotOptimize(b[5].data());
  }
  set_ffn_counter(state, f);
  state.counters["GB/s"] =
      benchmark::Counter(4.0 * static_cast<double>(f.tokens * k * f.dim) * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

void register_topk() {
  for (int64_t l : {2048, 8192}) {
    const Shape s{1, 8, l, l, 64, false};
    for (int64_t k : {32, 64, 128}) {
      add("hattn_topk/prefill/L:" + std::to_string(l) + "/D:64/k:" + std::to_string(k), run_topk, s,
          k, hattn::DType::f32);
    }
    // bf16 prefill (the generic-D kernel) next to the fp32 row above.
    add("hattn_topk_bf16/prefill/L:" + std::to_string(l) + "/D:64/k:64", run_topk, s, int64_t{64},
        hattn::DType::bf16);
  }
  for (int64_t lk : {32768, 131072}) {
    const Shape s{1, 32, 1, lk, 128, false};
    const std::string shape = "/decode/Lk:" + std::to_string(lk) + "/D:128/k:64";
    add("hattn_topk" + shape, run_topk, s, int64_t{64}, hattn::DType::f32);
    // Over a 16-bit cache: vs hattn_dense_{bf16,f16}/decode/Lk:<Lk>/D:128.
    add("hattn_topk_bf16" + shape, run_topk, s, int64_t{64}, hattn::DType::bf16);
    add("hattn_topk_f16" + shape, run_topk, s, int64_t{64}, hattn::DType::f16);
  }
  // Grouped-query decode (Hq = 32 over Hkv = 8): vs hattn_dense/decode/Lk:32768/D:128/Hkv:8.
  Shape gqa{1, 32, 1, 32768, 128, false};
  gqa.kv_heads = 8;
  add("hattn_topk/decode/Lk:32768/D:128/k:64/Hkv:8", run_topk, gqa, int64_t{64}, hattn::DType::f32);
  add("hattn_topk_bf16/decode/Lk:32768/D:128/k:64/Hkv:8", run_topk, gqa, int64_t{64},
      hattn::DType::bf16);
  // T5-base (D=768, d_ff=3072, the paper's k=256) and T5-3B-like (D=1024, d_ff=16384, k=512),
  // each also at k = d_ff/8 (the target's shape).
  for (FfnShape f : {FfnShape{512, 768, 3072}, FfnShape{512, 1024, 16384}}) {
    const std::string shape = "/T:" + std::to_string(f.tokens) + "/D:" + std::to_string(f.dim) +
                              "/dff:" + std::to_string(f.d_ff);
    add("openblas_ffn" + shape, run_openblas_ffn, f, true);
    add("ffn_part" + shape + "/w1_sgemm", run_openblas_ffn, f, false);
    add("ffn_part" + shape + "/k:" + std::to_string(f.d_ff / 8) + "/gather", run_ffn_gather, f,
        f.d_ff / 8);
    for (int64_t k : {f.d_ff == 3072 ? int64_t{256} : int64_t{512}, f.d_ff / 8}) {
      add("hattn_topk_ffn" + shape + "/k:" + std::to_string(k), run_topk_ffn, f, k,
          hattn::DType::f32);
      // bf16 x and weights (half the bytes of each selected row): vs the fp32 row above.
      add("hattn_topk_ffn_bf16" + shape + "/k:" + std::to_string(k), run_topk_ffn, f, k,
          hattn::DType::bf16);
    }
  }
}

}  // namespace hattn_bench
