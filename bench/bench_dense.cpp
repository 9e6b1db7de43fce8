// Dense attention next to its baselines, measured in one run (see scripts/bench.sh for the table).
//   hattn_dense/{prefill,decode}/...    hattn::attention through the public API
//   openblas_attention/...              unfused attention, heads in parallel, 1-thread BLAS each
//   openblas_attention_mt/...           unfused attention, heads in sequence, N-thread BLAS
//   openblas_sgemm/{qk,pv}/...          sgemm alone at the matching GEMM shapes
//   array_read/threads:N                a 1 GiB read, for the bandwidth decode is bound by
// Threads: 2, or HATTN_BENCH_THREADS. Inputs are random (seed printed), never zeros.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "baselines.h"
#include "hattn/hattn.h"

namespace {

using hattn_bench::Shape;

constexpr uint64_t kSeed = 20261122;

int bench_threads() {
  const char* env = std::getenv("HATTN_BENCH_THREADS");
  const int n = env ? std::atoi(env) : 2;
  return n > 0 ? n : 2;
}

std::vector<float> random_floats(size_t n, uint64_t salt) {
  std::mt19937_64 rng(kSeed + salt);
  std::normal_distribution<float> dist;
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

// Query-key pairs visible under the (bottom-right) causal mask: the useful work.
double visible_pairs(const Shape& s) {
  if (!s.causal) return static_cast<double>(s.lq) * static_cast<double>(s.lk);
  double n = 0;
  for (int64_t i = 0; i < s.lq; ++i) {
    n += static_cast<double>(std::clamp<int64_t>(i + s.lk - s.lq + 1, 0, s.lk));
  }
  return n;
}

struct Inputs {
  std::vector<float> q, k, v, out;
  explicit Inputs(const Shape& s)
      : q(random_floats(static_cast<size_t>(s.batch * s.heads * s.lq * s.head_dim), 1)),
        k(random_floats(static_cast<size_t>(s.batch * s.heads * s.lk * s.head_dim), 2)),
        v(random_floats(static_cast<size_t>(s.batch * s.heads * s.lk * s.head_dim), 3)),
        out(q.size(), 0.f) {}
};

void set_counters(benchmark::State& state, const Shape& s) {
  const double flops = 4.0 * static_cast<double>(s.batch * s.heads * s.head_dim) * visible_pairs(s);
  const double bytes =
      4.0 * static_cast<double>(s.batch * s.heads * s.head_dim) * (2.0 * s.lq + 2.0 * s.lk);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void run_hattn(benchmark::State& state, Shape s) {
  Inputs in(s);
  auto view = [&](std::vector<float>& x, int64_t l) {
    return hattn::TensorView::contiguous(x.data(), {s.batch, s.heads, l, s.head_dim});
  };
  hattn::AttentionOptions opt;
  opt.causal = s.causal;
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st = hattn::attention(view(in.q, s.lq), view(in.k, s.lk), view(in.v, s.lk),
                                        view(in.out, s.lq), opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      return;
    }
    benchmark::DoNotOptimize(in.out.data());
  }
  state.SetLabel(chosen.kernel);
  set_counters(state, s);
}

void run_openblas_attention(benchmark::State& state, Shape s, bool heads_parallel) {
  Inputs in(s);
  const int threads = bench_threads();
  for (auto _ : state) {
    hattn_bench::openblas_attention(s, in.q.data(), in.k.data(), in.v.data(), in.out.data(),
                                    threads, heads_parallel);
    benchmark::DoNotOptimize(in.out.data());
  }
  set_counters(state, s);
}

// The GEMMs of one head's attention, alone: QK^T is [L, L] x D, PV is [L, D] x L.
void run_sgemm(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  std::vector<float> a = random_floats(static_cast<size_t>(m * k), 4);
  std::vector<float> b = random_floats(static_cast<size_t>(n * k), 5);
  std::vector<float> c(static_cast<size_t>(m * n));
  for (auto _ : state) {
    hattn_bench::openblas_sgemm_nt(m, n, k, a.data(), b.data(), c.data(), bench_threads());
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void run_array_read(benchmark::State& state, int threads) {
  const int64_t n = (int64_t{1} << 30) / 4;
  std::vector<float> x = random_floats(static_cast<size_t>(n), 6);
  for (auto _ : state) benchmark::DoNotOptimize(hattn_bench::array_read(x.data(), n, threads));
  state.counters["GB/s"] =
      benchmark::Counter(4.0 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

std::string prefill_name(const std::string& what, const Shape& s) {
  return what + "/prefill/L:" + std::to_string(s.lq) + "/D:" + std::to_string(s.head_dim) +
         "/causal:" + (s.causal ? "1" : "0");
}

void register_all() {
  std::printf("hattn_bench: %d threads, seed %llu\n", bench_threads(),
              static_cast<unsigned long long>(kSeed));
  for (int64_t d : {64, 128}) {
    for (int64_t l : {512, 2048, 8192}) {
      for (bool causal : {false, true}) {
        Shape s{1, 8, l, l, d, causal};
        benchmark::RegisterBenchmark(prefill_name("hattn_dense", s).c_str(), run_hattn, s)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(prefill_name("openblas_attention", s).c_str(),
                                     run_openblas_attention, s, true)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        if (l == 2048) {
          benchmark::RegisterBenchmark(prefill_name("openblas_attention_mt", s).c_str(),
                                       run_openblas_attention, s, false)
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
        }
      }
      const std::string shape = "/L:" + std::to_string(l) + "/D:" + std::to_string(d);
      benchmark::RegisterBenchmark(("openblas_sgemm/qk" + shape).c_str(), run_sgemm, l, l, d)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("openblas_sgemm/pv" + shape).c_str(), run_sgemm, l, d, l)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (int64_t lk : {4096, 32768, 131072}) {
    Shape s{1, 32, 1, lk, 128, false};
    benchmark::RegisterBenchmark(("hattn_dense/decode/Lk:" + std::to_string(lk) + "/D:128").c_str(),
                                 run_hattn, s)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (int t : {1, 2}) {
    benchmark::RegisterBenchmark(("array_read/threads:" + std::to_string(t)).c_str(),
                                 run_array_read, t)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
