// EL-attention: one decode step (T = 1) of cross-attention over a memory of N rows, next to the
// standard multi-head path, at BART-large-like (Dm=1024, H=16) and GPT-2-small-like (Dm=768,
// H=12) shapes, N = 1024, batch x beam in {1x1, 8x4, 32x4}:
//   hattn_el/<model>/BxBeam          el_attention (q projection, EL core, output projection)
//   hattn_el_bf16/<model>/BxBeam     the same with bf16 x, memory, weights and y (fp32 inside)
//   hattn_mha_cached/<model>/BxBeam  q projection, attention() over a K/V cache per beam (as
//                                    beam search keeps it), output projection
//   hattn_mha_nocache/<model>/BxBeam the standard path re-projecting the memory every step
//   openblas_sgemm/el_core/<model>/BxBeam  one sample's [H*beam, Dm] x [Dm, N] sgemm: the GEMM
//                                    rate EL's core is measured against
// Counters: core_GFLOPs (EL's two attention products, 4 * H*beam * Dm * N per sample, over the
// whole step's time: a lower bound on the core's own rate), step_GFLOPs (EL: every product of the
// step, the projections' 8 * beam * Dm^2 per sample too, over the same time: the rate at which
// the step does its GEMM-shaped work), cache_MB_per_sample (EL keeps only the memory, N*Dm
// floats; the standard path 2*N*Dm per beam).
#include <string>

#include "bench_common.h"
#include "hattn/hattn.h"

namespace hattn_bench {

namespace {

struct ElShape {
  std::string model;
  int64_t dm, heads, mem_len, samples, beam;
  std::string name() const {
    return model + "/" + std::to_string(samples) + "x" + std::to_string(beam);
  }
};

struct ElBuffers {
  hattn::MhaWeights w;
  float *x, *mem, *y;
};

// Weights, x, memory and y of a shape; `caches` adds one K and one V cache per beam.
ElBuffers el_buffers(const ElShape& s, std::vector<float>** kc, std::vector<float>** vc) {
  const int64_t dm = s.dm, rows = s.samples * s.beam;
  std::vector<int64_t> sizes(8, dm * dm);
  for (int i = 1; i < 8; i += 2) sizes[i] = dm;
  sizes.push_back(rows * dm);                   // x
  sizes.push_back(s.samples * s.mem_len * dm);  // memory
  sizes.push_back(rows * dm);                   // y
  const bool with_cache = kc != nullptr;
  if (with_cache) {
    sizes.push_back(rows * s.mem_len * dm);
    sizes.push_back(rows * s.mem_len * dm);
  }
  auto& b = buffers("el/" + s.name() + (with_cache ? "/cache" : ""), sizes);
  ElBuffers e;
  hattn::TensorView* views[8] = {&e.w.wq, &e.w.bq, &e.w.wk, &e.w.bk,
                                 &e.w.wv, &e.w.bv, &e.w.wo, &e.w.bo};
  for (int i = 0; i < 8; ++i) {
    *views[i] = i % 2 == 0 ? hattn::TensorView::contiguous(b[i].data(), {dm, dm})
                           : hattn::TensorView::contiguous(b[i].data(), {dm});
  }
  e.x = b[8].data();
  e.mem = b[9].data();
  e.y = b[10].data();
  if (with_cache) {
    *kc = &b[11];
    *vc = &b[12];
  }
  return e;
}

void set_counters(benchmark::State& state, const ElShape& s, double cache_floats) {
  const double core = 4.0 * s.samples * s.heads * s.beam * s.dm * s.mem_len;
  state.counters["core_GFLOPs"] =
      benchmark::Counter(core * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["cache_MB_per_sample"] = cache_floats * 4.0 / 1e6;
}

hattn::ElOptions options(const ElShape& s) {
  hattn::ElOptions o;
  o.heads = s.heads;
  o.beam = s.beam;
  return o;
}

// A contiguous fp32 view as `dtype`: itself, or its values rounded into a copy held in `held`.
hattn::TensorView as_dtype(const hattn::TensorView& v, hattn::DType dtype,
                           std::vector<std::vector<uint16_t>>* held) {
  if (dtype == hattn::DType::f32) return v;
  std::vector<int64_t> shape(v.shape, v.shape + v.rank);
  int64_t n = 1;
  for (int64_t e : shape) n *= e;
  held->emplace_back(static_cast<size_t>(n));
  const float* src = static_cast<const float*>(v.data);
  for (int64_t i = 0; i < n; ++i) held->back()[size_t(i)] = hattn::to_16bit(dtype, src[i]);
  return hattn::TensorView::contiguous(held->back().data(), dtype, shape);
}

void run_el(benchmark::State& state, ElShape s, hattn::DType dtype) {
  ElBuffers b = el_buffers(s, nullptr, nullptr);
  const int64_t rows = s.samples * s.beam;
  std::vector<std::vector<uint16_t>> held;
  held.reserve(11);  // the views below point into it
  const auto x = as_dtype(hattn::TensorView::contiguous(b.x, {rows, 1, s.dm}), dtype, &held);
  const auto y = as_dtype(hattn::TensorView::contiguous(b.y, {rows, 1, s.dm}), dtype, &held);
  const auto mem =
      as_dtype(hattn::TensorView::contiguous(b.mem, {s.samples, s.mem_len, s.dm}), dtype, &held);
  hattn::MhaWeights w = b.w;
  for (hattn::TensorView* v : {&w.wq, &w.bq, &w.wk, &w.bk, &w.wv, &w.bv, &w.wo, &w.bo}) {
    *v = as_dtype(*v, dtype, &held);
  }
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    const hattn::Status st = hattn::el_attention(x, mem, w, y, options(s));
    if (!st.ok()) state.SkipWithError(st.message.c_str());
  }
  set_counters(state, s, static_cast<double>(s.mem_len * s.dm));
  // Every product of the step, all of them GEMM-shaped: per beam row, the q and output
  // projections and EL's Wk_h^T q_h and Wv r (2 Dm^2 each), and the core.
  const double step = 8.0 * s.samples * s.beam * s.dm * s.dm +
                      4.0 * s.samples * s.heads * s.beam * s.dm * s.mem_len;
  state.counters["step_GFLOPs"] =
      benchmark::Counter(step * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void run_mha(benchmark::State& state, ElShape s, bool cached) {
  std::vector<float>*kc = nullptr, *vc = nullptr;
  ElBuffers b = cached ? el_buffers(s, &kc, &vc) : el_buffers(s, nullptr, nullptr);
  const int64_t rows = s.samples * s.beam;
  const auto x = hattn::TensorView::contiguous(b.x, {rows, 1, s.dm});
  const auto y = hattn::TensorView::contiguous(b.y, {rows, 1, s.dm});
  const auto mem = hattn::TensorView::contiguous(b.mem, {s.samples, s.mem_len, s.dm});
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st;
    if (cached) {
      st = hattn::mha_attention_cached(
          x, hattn::TensorView::contiguous(kc->data(), {rows, s.mem_len, s.dm}),
          hattn::TensorView::contiguous(vc->data(), {rows, s.mem_len, s.dm}), b.w, y, options(s));
    } else {
      st = hattn::mha_attention(x, mem, b.w, y, options(s));
    }
    if (!st.ok()) state.SkipWithError(st.message.c_str());
  }
  set_counters(state, s, cached ? 2.0 * s.beam * s.mem_len * s.dm : 0.0);
}

void run_core_sgemm(benchmark::State& state, ElShape s) {
  const int64_t m = s.heads * s.beam;
  auto& b = buffers("el_sgemm/" + s.name(), {m * s.dm, s.mem_len * s.dm, m * s.mem_len});
  for (auto _ : state) {
    openblas_sgemm_nt(m, s.mem_len, s.dm, b[0].data(), b[1].data(), b[2].data(), bench_threads());
  }
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * m * s.dm * s.mem_len * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

void register_el() {
  const ElShape models[] = {{"bart_large", 1024, 16, 1024, 1, 1},
                            {"gpt2_small", 768, 12, 1024, 1, 1}};
  for (const ElShape& m : models) {
    for (auto [samples, beam] : {std::pair<int64_t, int64_t>{1, 1}, {8, 4}, {32, 4}}) {
      ElShape s = m;
      s.samples = samples;
      s.beam = beam;
      add("hattn_el/" + s.name(), run_el, s, hattn::DType::f32);
      add("hattn_el_bf16/" + s.name(), run_el, s, hattn::DType::bf16);
      add("hattn_mha_cached/" + s.name(), run_mha, s, true);
      add("hattn_mha_nocache/" + s.name(), run_mha, s, false);
      add("openblas_sgemm/el_core/" + s.name(), run_core_sgemm, s);
    }
  }
}

}  // namespace hattn_bench
