// SPARSEK next to hattn's dense kernels, in the same run:
//   hattn_sparsek[_bf16]/prefill/L:<L>/D:128/kw:<k+w>  vs hattn_dense/prefill_causal/L:<L>/D:128/sk
//       (causal prefill, one head, k = w = (k+w)/2); counters: GFLOP/s of the work each does
//       (sparsek: 4 L (k+w) D; dense: 4 * visible pairs * D) and work_ratio = dense / sparsek work;
//   sparsek_mask_sweep/L:<L>/kw:<k+w>: the masks of every prefix alone (scoring, the sweep and
//       the per-row selections that the attention call builds), to compare with the call's time;
//   hattn_sparsek/decode/Lk:<Lk>: one step of SparsekDecoder (bounded cache: k + w KV per head)
//       after Lk tokens appended, Hq=8, Hkv=2, D=128, k = w = 256;
//   hattn_sparsek_mask/rows:<R>/m:<m>/k:<k>: the SparseK operator kernel alone (rows/s).
#include <cmath>
#include <string>
#include <vector>

#include "bench_common.h"
#include "hattn/hattn.h"
#include "sparsek_sweep.h"  // runtime/src: the per-prefix sweep, timed alone

namespace hattn_bench {

namespace {

constexpr int64_t kModelDim = 64;
constexpr int64_t kD = 128;

// The scoring network's inputs x [1, L, Dm] and w_score [1, Dm], kept apart from buffers()'s one
// slot (which holds q, k, v).
std::vector<std::vector<float>>& scoring_inputs(int64_t l) {
  static std::vector<std::vector<float>> xw(2);
  if (static_cast<int64_t>(xw[0].size()) != l * kModelDim) {
    xw[0].assign(static_cast<size_t>(l * kModelDim), 0.f);
    xw[1].assign(static_cast<size_t>(kModelDim), 0.f);
    fill_random(xw[0], 77);
    fill_random(xw[1], 78);
  }
  return xw;
}

void run_sparsek_prefill(benchmark::State& state, int64_t l, int64_t kw, hattn::DType dtype) {
  const Shape s{1, 1, l, l, kD, true};
  TypedInputs in(s, dtype);  // q, k, v, out in the dtype (x and w_score stay fp32)
  auto& extra = scoring_inputs(l);
  hattn::SparsekOptions opt;
  opt.k = kw / 2;
  opt.window = kw - kw / 2;
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st = hattn::sparsek_attention(
        in.q, in.k, in.v, hattn::TensorView::contiguous(extra[0].data(), {1, l, kModelDim}),
        hattn::TensorView::contiguous(extra[1].data(), {1, kModelDim}), in.out, opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(in.out.data);
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel);
  const double work = 4.0 * double(l) * double(kw) * kD;
  state.counters["GFLOP/s"] =
      benchmark::Counter(work * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["work_ratio"] = visible_pairs(s) / (double(l) * double(kw));
}

void run_dense_prefill(benchmark::State& state, int64_t l) {
  const Shape s{1, 1, l, l, kD, true};
  Inputs in(s);
  auto view = [&](float* x) { return hattn::TensorView::contiguous(x, {1, 1, l, kD}); };
  hattn::AttentionOptions opt;
  opt.causal = true;
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st =
        hattn::attention(view(in.q), view(in.k), view(in.v), view(in.out), opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(in.out);
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel);
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * visible_pairs(s) * kD * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// What sparsek_attention does before its kernel, per kv head: score the keys, sweep the
// prefixes, write each row's selection (indices and gates).
void run_mask_sweep(benchmark::State& state, int64_t l, int64_t kw) {
  auto& extra = scoring_inputs(l);
  const int64_t k = kw / 2, w = kw - kw / 2;
  std::vector<float> u(static_cast<size_t>(l));
  std::vector<int32_t> index(static_cast<size_t>(l * k));
  std::vector<float> gate(index.size());
  for (auto _ : state) {
    hattn::Status st =
        hattn::sparsek_scores(hattn::TensorView::contiguous(extra[0].data(), {1, l, kModelDim}),
                              hattn::TensorView::contiguous(extra[1].data(), {1, kModelDim}), 0.f,
                              hattn::TensorView::contiguous(u.data(), {1, 1, l}));
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    hattn::SparsekSweep sweep(k);
    int64_t pushed = 0, selected = 0;
    for (int64_t i = 0; i < l; ++i) {
      for (; pushed < i - w + 1; ++pushed) sweep.push(u[static_cast<size_t>(pushed)], pushed);
      selected += sweep.select(&index[static_cast<size_t>(i * k)],
                               &gate[static_cast<size_t>(i * k)], false);
    }
    benchmark::DoNotOptimize(selected);
  }
  state.counters["rows/s"] =
      benchmark::Counter(double(l), benchmark::Counter::kIsIterationInvariantRate);
}

void run_decode(benchmark::State& state, int64_t lk) {
  const int64_t B = 1, Hq = 8, Hkv = 2, chunk = 4096;
  auto& kv = buffers("sparsek_decode_kv_" + std::to_string(lk),
                     {Hkv * chunk * kD, Hkv * chunk * kD, lk * kModelDim, Hkv * kModelDim, Hq * kD,
                      Hkv * kD, Hkv * kD, kModelDim, Hq * kD});
  hattn::SparsekOptions opt;
  opt.k = 256;
  opt.window = 256;
  hattn::SparsekDecoder dec;
  hattn::Status st =
      dec.reset(B, Hq, Hkv, kD, hattn::TensorView::contiguous(kv[3].data(), {Hkv, kModelDim}), opt);
  for (int64_t t0 = 0; st.ok() && t0 < lk; t0 += chunk) {
    const int64_t n = std::min(chunk, lk - t0);
    st =
        dec.append(hattn::TensorView::strided(kv[0].data(), {B, Hkv, n, kD},
                                              {Hkv * chunk * kD, chunk * kD, kD, 1}),
                   hattn::TensorView::strided(kv[1].data(), {B, Hkv, n, kD},
                                              {Hkv * chunk * kD, chunk * kD, kD, 1}),
                   hattn::TensorView::contiguous(kv[2].data() + t0 * kModelDim, {B, n, kModelDim}));
  }
  if (!st.ok()) {
    state.SkipWithError(st.message.c_str());
    return;
  }
  hattn::set_num_threads(bench_threads());
  hattn::Dispatch chosen;
  for (auto _ : state) {
    st = dec.step(hattn::TensorView::contiguous(kv[4].data(), {B, Hq, 1, kD}),
                  hattn::TensorView::contiguous(kv[5].data(), {B, Hkv, 1, kD}),
                  hattn::TensorView::contiguous(kv[6].data(), {B, Hkv, 1, kD}),
                  hattn::TensorView::contiguous(kv[7].data(), {B, 1, kModelDim}),
                  hattn::TensorView::contiguous(kv[8].data(), {B, Hq, 1, kD}), &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(kv[8].data());
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel);
  state.counters["kv_pairs_held"] = double(dec.cached_pairs());
  state.counters["mask_scores"] = double(dec.mask_scores());
}

void run_mask(benchmark::State& state, int64_t rows, int64_t m, int64_t k) {
  auto& z = buffers("sparsek_mask", {rows * m, rows * m, rows});
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st =
        hattn::sparsek_mask(hattn::TensorView::contiguous(z[0].data(), {rows, m}), nullptr, k,
                            hattn::TensorView::contiguous(z[1].data(), {rows, m}),
                            hattn::TensorView::contiguous(z[2].data(), {rows}), &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(z[1].data());
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel);
  state.counters["rows/s"] =
      benchmark::Counter(double(rows), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

void register_sparsek() {
  for (int64_t l : {4096, 16384, 32768}) {
    const std::string L = "/L:" + std::to_string(l);
    add("hattn_dense/prefill_causal" + L + "/D:128/sk", run_dense_prefill, l);
    for (int64_t kw : {256, 512}) {
      const std::string KW = "/kw:" + std::to_string(kw);
      add("hattn_sparsek/prefill" + L + "/D:128" + KW, run_sparsek_prefill, l, kw,
          hattn::DType::f32);
      add("hattn_sparsek_bf16/prefill" + L + "/D:128" + KW, run_sparsek_prefill, l, kw,
          hattn::DType::bf16);
      add("sparsek_mask_sweep" + L + KW, run_mask_sweep, l, kw);
    }
  }
  for (int64_t lk : {4096, 32768, 131072}) {
    add("hattn_sparsek/decode/Lk:" + std::to_string(lk), run_decode, lk);
  }
  add("hattn_sparsek_mask/rows:1024/m:4096/k:256", run_mask, 1024, 4096, 256);
}

}  // namespace hattn_bench
