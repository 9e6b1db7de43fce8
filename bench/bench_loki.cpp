// Loki decode next to hattn's dense decode at the same shape (same inputs, same run):
//   hattn_loki/decode/Lk:<Lk>/D:128/df:<d_f>/kf:<k_f>   vs   hattn_dense/decode/Lk:<Lk>/D:128
//   hattn_loki_{bf16,f16}/...                           vs   hattn_dense_{bf16,f16}/... (Lk 32K)
// with the leading r channels in a contiguous copy (LokiOptions::k_lead), and
// hattn_loki_strided/... reading them from the rotated cache itself (r of every D channels).
// Counters: GB/s of the bytes Loki's model says it must read (Lk*r + 2*k*D elements per head:
// the first r channels of every rotated key, then k whole key and value rows), and
// model_bytes_vs_dense = (Lk*r + 2kD) / (2 Lk D) ~ d_f/2 + k_f, the speedup bound of a
// bandwidth-bound decode; report.py prints the measured time ratio next to it.
//   loki_part/decode/Lk:<Lk>/D:128/df:1/4/kf:<k_f>/bound   the same bytes read by plain loops
// (the leading channels in order, then each head's k random rows of K and V): this machine's
// floor for Loki at that point.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bench_common.h"
#include "hattn/hattn.h"
#include "hattn/loki_prep.h"

namespace hattn_bench {

namespace {

// A dense orthonormal basis per head without a factorization: the Householder reflection
// I - 2 u u^T / |u|^2 of a random u (the timing does not depend on which basis it is).
const std::vector<float>& householder_bases(int64_t heads, int64_t d) {
  static std::vector<float> p;
  if (static_cast<int64_t>(p.size()) == heads * d * d) return p;
  p.assign(static_cast<size_t>(heads * d * d), 0.f);
  std::vector<float> u(static_cast<size_t>(d));
  for (int64_t h = 0; h < heads; ++h) {
    fill_random(u, 1000 + static_cast<uint64_t>(h));
    double norm = 0;
    for (float x : u) norm += double(x) * x;
    for (int64_t e = 0; e < d; ++e) {
      for (int64_t c = 0; c < d; ++c) {
        p[static_cast<size_t>((h * d + e) * d + c)] =
            static_cast<float>((e == c ? 1.0 : 0.0) - 2.0 * u[e] * u[c] / norm);
      }
    }
  }
  return p;
}

// The leading r channels of the rotated cache, contiguous per key (LokiOptions::k_lead).
const std::vector<float>& lead_copy(const float* k, const Shape& s, int64_t r) {
  static std::vector<float> lead;
  static const float* made_from = nullptr;
  static int64_t made_r = 0, made_lk = 0;
  if (made_from != k || made_r != r || made_lk != s.lk) {
    const int64_t rows = s.batch * s.kv() * s.lk;
    lead.resize(static_cast<size_t>(rows * r));
    for (int64_t j = 0; j < rows; ++j) {
      for (int64_t c = 0; c < r; ++c) {
        lead[static_cast<size_t>(j * r + c)] = k[static_cast<size_t>(j * s.head_dim + c)];
      }
    }
    made_from = k;
    made_r = r;
    made_lk = s.lk;
  }
  return lead;
}

void run_loki(benchmark::State& state, Shape s, double d_f, double k_f, bool contiguous_lead,
              hattn::DType dtype) {
  // The rotated key cache is just a key cache: the same random inputs as dense, in `dtype`.
  TypedInputs in(s, dtype);
  const std::vector<float>& basis = householder_bases(s.kv(), s.head_dim);
  hattn::LokiOptions opt;
  opt.rank_fraction = d_f;
  opt.k_fraction = k_f;
  opt.check_basis = false;  // checked once, as a decode loop would
  const auto basis_view =
      hattn::TensorView::contiguous(basis.data(), {s.kv(), s.head_dim, s.head_dim});
  hattn::Status checked = hattn::loki_check_basis(basis_view, 1e-4);
  if (!checked.ok()) {
    state.SkipWithError(checked.message.c_str());
    return;
  }
  const int64_t r_used = std::max<int64_t>(1, std::llround(d_f * static_cast<double>(s.head_dim)));
  hattn::TensorView lead_view;
  std::vector<uint16_t> lead16;
  if (contiguous_lead) {
    const std::vector<float>& lead = lead_copy(Inputs(s).k, s, r_used);
    const std::vector<int64_t> shape = {s.batch, s.kv(), s.lk, r_used};
    lead_view = hattn::TensorView::contiguous(lead.data(), shape);
    if (dtype != hattn::DType::f32) {  // the copy in the cache's dtype (the same values)
      lead16.resize(lead.size());
      for (size_t i = 0; i < lead.size(); ++i) lead16[i] = hattn::to_16bit(dtype, lead[i]);
      lead_view = hattn::TensorView::contiguous(lead16.data(), dtype, shape);
    }
    opt.k_lead = &lead_view;
  }
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st = hattn::loki_attention(in.q, in.k, in.v, basis_view, in.out, opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(in.out.data);
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel + (contiguous_lead ? " (k_lead)" : " (strided)"));
  const double r = static_cast<double>(r_used);
  const double k = std::max(1.0, std::round(k_f * s.lk));
  // The leading channels once per kv head, then k whole K and V rows per query head.
  const double floats =
      static_cast<double>(s.batch) * (s.kv() * s.lk * r + s.heads * 2 * k * s.head_dim);
  const double bytes = floats * (dtype == hattn::DType::f32 ? 4 : 2);
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["model_bytes_vs_dense"] = floats / (2.0 * s.batch * s.kv() * s.lk * s.head_dim);
}

// What Loki's decode must read, as plain loops with a free selection: the leading channels of
// every key (array_read over the contiguous copy), then each query head's k rows of K and of V
// (rows_gather_sum: sorted, uniformly random distinct rows of its kv head, as a selection lists
// them). Its time is a floor for hattn_loki at the same point on this machine; dense decode's
// time over it is the speedup Loki can reach here.
void run_loki_bound(benchmark::State& state, Shape s, double d_f, double k_f, int prefetch) {
  const Inputs in(s);
  const int64_t r = std::max<int64_t>(1, std::llround(d_f * static_cast<double>(s.head_dim)));
  const int64_t k = std::max<int64_t>(1, std::llround(k_f * static_cast<double>(s.lk)));
  const std::vector<float>& lead = lead_copy(in.k, s, r);
  const int64_t rows = s.batch * s.heads;
  std::vector<int32_t> index(static_cast<size_t>(rows * k));
  std::vector<float> weight(index.size());
  std::vector<float> out(static_cast<size_t>(rows * s.head_dim));
  uint64_t draw = kSeed + 11;
  for (int64_t row = 0; row < rows; ++row) {  // row = (b, h): its kv head's rows of K and V
    const int64_t b = row / s.heads, hk = (row % s.heads) / (s.heads / s.kv());
    const std::vector<int32_t> keys = sorted_random_subset(s.lk, k, &draw);
    for (int64_t j = 0; j < k; ++j) {
      index[static_cast<size_t>(row * k + j)] =
          static_cast<int32_t>((b * s.kv() + hk) * s.lk + keys[static_cast<size_t>(j)]);
      weight[static_cast<size_t>(row * k + j)] = 1e-3f;
    }
  }
  const int threads = bench_threads();
  for (auto _ : state) {
    benchmark::DoNotOptimize(array_read(lead.data(), static_cast<int64_t>(lead.size()), threads));
    rows_gather_sum(in.k, s.head_dim, index.data(), weight.data(), rows, k, out.data(), threads,
                    prefetch);
    rows_gather_sum(in.v, s.head_dim, index.data(), weight.data(), rows, k, out.data(), threads,
                    prefetch);
    benchmark::DoNotOptimize(out.data());
  }
  const double floats = static_cast<double>(lead.size()) + 2.0 * rows * k * s.head_dim;
  state.counters["GB/s"] =
      benchmark::Counter(4.0 * floats * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

void register_loki_decode(const Shape& s) {
  auto frac = [](double f) { return f == 0.125 ? std::string("1/8") : f == 0.25 ? "1/4" : "1/2"; };
  const hattn::DType f32 = hattn::DType::f32;
  const std::string shape =
      "/decode/Lk:" + std::to_string(s.lk) + "/D:" + std::to_string(s.head_dim);
  if (s.kv() != s.heads) {  // grouped-query: the paper's two points only
    const std::string gqa = "/Hkv:" + std::to_string(s.kv());
    add("hattn_loki" + shape + "/df:1/4/kf:1/8" + gqa, run_loki, s, 0.25, 0.125, true, f32);
    add("hattn_loki" + shape + "/df:1/4/kf:1/4" + gqa, run_loki, s, 0.25, 0.25, true, f32);
    return;
  }
  for (double d_f : {0.125, 0.25, 0.5}) {
    for (double k_f : {0.125, 0.25, 0.5}) {
      add("hattn_loki" + shape + "/df:" + frac(d_f) + "/kf:" + frac(k_f), run_loki, s, d_f, k_f,
          true, f32);
    }
  }
  // The floor of the paper's two points on this machine (run_loki_bound).
  for (double k_f : {0.125, 0.25}) {
    for (int pf : {0, 8}) {
      add("loki_part" + shape + "/df:1/4/kf:" + frac(k_f) + "/bound/pf:" + std::to_string(pf),
          run_loki_bound, s, 0.25, k_f, pf);
    }
  }
  // Without the contiguous copy: the approximate scores read r of every D channels of k_rot.
  for (double k_f : {0.125, 0.25}) {
    add("hattn_loki_strided" + shape + "/df:1/4/kf:" + frac(k_f), run_loki, s, 0.25, k_f, false,
        f32);
  }
  // Over a 16-bit cache (and leading-channel copy), the paper's two points: vs
  // hattn_dense_{bf16,f16}/decode at the same Lk.
  if (s.lk == 32768) {
    for (const auto& [name, dt] :
         {std::pair{"bf16", hattn::DType::bf16}, std::pair{"f16", hattn::DType::f16}}) {
      for (double k_f : {0.125, 0.25}) {
        add(std::string("hattn_loki_") + name + shape + "/df:1/4/kf:" + frac(k_f), run_loki, s,
            0.25, k_f, true, dt);
      }
    }
  }
}

}  // namespace hattn_bench
