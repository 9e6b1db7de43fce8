// Dense attention next to its baselines, measured in one run (see scripts/bench.sh for the table).
//   hattn_dense/{prefill,decode}/...    hattn::attention through the public API
//   hattn_dense_{bf16,f16}/...          the same on 16-bit q, k, v, out (GB/s of 2-byte elements)
//   hattn_dense_{bf16,f16}kv/decode/... fp32 q and out over a 16-bit K/V cache
//   hattn_dense*/decode/.../Hkv:8       grouped-query decode, 32 query heads over 8 kv heads
//   openblas_attention/...              unfused attention, heads in parallel, 1-thread BLAS each
//                                       (decode: sgemv per head)
//   openblas_attention_mt/...           unfused attention, heads in sequence, N-thread BLAS
//   openblas_sgemm/{qk,pv}/...          sgemm alone at the matching GEMM shapes, N-thread BLAS
//   array_read/threads:N                a 1 GiB read, for the bandwidth decode is bound by
//   machine_peak/fma/threads:N          the fp32 FMA peak, for the bound compute is read against
//   openblas_sgemm/square/N:2048        a square sgemm: how near the peak the BLAS here runs
// Threads: 2, or HATTN_BENCH_THREADS. Inputs are random (seed printed), never zeros.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "baselines.h"
#include "bench_common.h"
#include "hattn/hattn.h"

namespace {

using hattn_bench::bench_threads;
using hattn_bench::buffers;
using hattn_bench::Inputs;
using hattn_bench::Shape;
using hattn_bench::TypedInputs;
using hattn_bench::visible_pairs;

// GFLOP/s of the visible work and GB/s of q, k, v read and out written (elements of
// `element_bytes`).
void set_counters(benchmark::State& state, const Shape& s, double element_bytes = 4.0) {
  const double flops = 4.0 * static_cast<double>(s.batch * s.heads * s.head_dim) * visible_pairs(s);
  const double bytes = element_bytes * static_cast<double>(s.batch * s.head_dim) *
                       (2.0 * s.heads * s.lq + 2.0 * s.kv() * s.lk);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The ISA build of `kernel` that this CPU runs (the label shows which multi-target entry ran).
std::string isa_of(const std::string& kernel) {
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.name != kernel) continue;
    const std::string build = hattn::selected_build(k);
    if (build.find("avx512_zen4") != std::string::npos) return "avx512_zen4";
    if (build.find("avx512") != std::string::npos) return "avx512";
    if (build.find("avx2") != std::string::npos) return "avx2";
    if (build.find("sse41") != std::string::npos) return "sse41";
    return build;
  }
  return "?";
}

// hattn::attention on fp32 tensors, or (dtype bf16, f16) on the same random values rounded to
// nearest even with hattn::to_16bit.
void run_hattn(benchmark::State& state, Shape s, hattn::DType dtype, bool fp32_query) {
  TypedInputs in(s, dtype, fp32_query);
  hattn::AttentionOptions opt;
  opt.causal = s.causal;
  hattn::Dispatch chosen;
  hattn::set_num_threads(bench_threads());
  for (auto _ : state) {
    hattn::Status st = hattn::attention(in.q, in.k, in.v, in.out, opt, &chosen);
    if (!st.ok()) {
      state.SkipWithError(st.message.c_str());
      break;
    }
    benchmark::DoNotOptimize(in.out.data);
  }
  if (state.error_occurred()) return;
  state.SetLabel(chosen.kernel + " [" + isa_of(chosen.kernel) + "]");
  // Bytes of K and V (what decode streams) in their dtype.
  set_counters(state, s, dtype == hattn::DType::f32 ? 4.0 : 2.0);
}

void run_openblas_attention(benchmark::State& state, Shape s, bool heads_parallel) {
  Inputs in(s);
  const int threads = bench_threads();
  for (auto _ : state) {
    hattn_bench::openblas_attention(s, in.q, in.k, in.v, in.out, threads, heads_parallel);
    benchmark::DoNotOptimize(in.out);
  }
  set_counters(state, s);
}

void run_openblas_decode(benchmark::State& state, Shape s) {
  Inputs in(s);
  const int threads = bench_threads();
  for (auto _ : state) {
    hattn_bench::openblas_decode(s, in.q, in.k, in.v, in.out, threads);
    benchmark::DoNotOptimize(in.out);
  }
  set_counters(state, s);
}

// The GEMMs of one head's attention, alone, with N-thread BLAS: QK^T is C[L, L] = Q[L, D] K^T
// (nt), PV is C[L, D] = P[L, L] V[L, D] (nn).
void run_sgemm(benchmark::State& state, int64_t m, int64_t n, int64_t k, bool nt) {
  const std::string key = std::string(nt ? "sgemm nt " : "sgemm nn ") + std::to_string(m) + "x" +
                          std::to_string(n) + "x" + std::to_string(k);
  auto& b = buffers(key, {m * k, n * k, m * n});
  const int threads = bench_threads();
  for (auto _ : state) {
    if (nt) {
      hattn_bench::openblas_sgemm_nt(m, n, k, b[0].data(), b[1].data(), b[2].data(), threads);
    } else {
      hattn_bench::openblas_sgemm_nn(m, n, k, b[0].data(), b[1].data(), b[2].data(), threads);
    }
    benchmark::DoNotOptimize(b[2].data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The FMA peak of `threads` threads (GFLOP/s), the bound every compute rate here is read against.
void run_fma_peak(benchmark::State& state, int threads) {
  constexpr int64_t kRounds = int64_t{1} << 22;
  double flops = 0;
  float sink = 0.f;
  for (auto _ : state) {
    flops = hattn_bench::fma_peak(threads, kRounds, &sink);
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void run_array_read(benchmark::State& state, int threads) {
  const int64_t n = (int64_t{1} << 30) / 4;
  auto& b = buffers("array_read", {n});
  for (auto _ : state) benchmark::DoNotOptimize(hattn_bench::array_read(b[0].data(), n, threads));
  state.counters["GB/s"] =
      benchmark::Counter(4.0 * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

std::string prefill_name(const std::string& what, const Shape& s) {
  return what + "/prefill/L:" + std::to_string(s.lq) + "/D:" + std::to_string(s.head_dim) +
         "/causal:" + (s.causal ? "1" : "0");
}

using hattn_bench::add;

void register_all() {
  std::printf("hattn_bench: %d threads, seed %llu\n", bench_threads(),
              static_cast<unsigned long long>(hattn_bench::kSeed));
  for (int64_t d : {64, 128}) {
    for (int64_t l : {512, 2048, 8192}) {
      for (bool causal : {false, true}) {
        const Shape s{1, 8, l, l, d, causal};
        add(prefill_name("hattn_dense", s), run_hattn, s, hattn::DType::f32, false);
        // 16-bit prefill at the lengths of issue 23's targets (L = 2048 and 8192).
        if (l >= 2048) {
          add(prefill_name("hattn_dense_bf16", s), run_hattn, s, hattn::DType::bf16, false);
          add(prefill_name("hattn_dense_f16", s), run_hattn, s, hattn::DType::f16, false);
        }
        add(prefill_name("openblas_attention", s), run_openblas_attention, s, true);
        if (l == 2048)
          add(prefill_name("openblas_attention_mt", s), run_openblas_attention, s, false);
      }
      const std::string shape = "/L:" + std::to_string(l) + "/D:" + std::to_string(d);
      add("openblas_sgemm/qk" + shape, run_sgemm, l, l, d, true);
      add("openblas_sgemm/pv" + shape, run_sgemm, l, d, l, false);
    }
  }
  // The longest prefill, hattn alone (issue 25: GFLOP/s within 10% from L = 512 to 16384; the
  // unfused baselines would hold 1 GiB of scores per head here).
  for (int64_t d : {64, 128}) {
    for (bool causal : {false, true}) {
      const Shape s{1, 8, 16384, 16384, d, causal};
      add(prefill_name("hattn_dense", s), run_hattn, s, hattn::DType::f32, false);
      add(prefill_name("hattn_dense_bf16", s), run_hattn, s, hattn::DType::bf16, false);
    }
  }
  for (int64_t lk : {4096, 32768, 131072}) {
    const Shape s{1, 32, 1, lk, 128, false};
    const std::string shape = "/decode/Lk:" + std::to_string(lk) + "/D:128";
    add("hattn_dense" + shape, run_hattn, s, hattn::DType::f32, false);
    add("hattn_dense_bf16" + shape, run_hattn, s, hattn::DType::bf16, false);
    add("hattn_dense_f16" + shape, run_hattn, s, hattn::DType::f16, false);
    if (lk == 32768) {  // fp32 q and out over the 16-bit cache, as engines keep them
      add("hattn_dense_bf16kv" + shape, run_hattn, s, hattn::DType::bf16, true);
      add("hattn_dense_f16kv" + shape, run_hattn, s, hattn::DType::f16, true);
    }
    add("openblas_attention" + shape, run_openblas_decode, s);
    hattn_bench::register_loki_decode(s);  // right after dense: the same inputs, still cached
  }
  // Grouped-query decode (Hq = 32 over Hkv = 8, as Llama 3 8B): a quarter of the MHA cache, read
  // once per kv head, so ideally 0.25x the MHA time at the same Lk.
  for (int64_t lk : {4096, 32768}) {
    Shape s{1, 32, 1, lk, 128, false};
    s.kv_heads = 8;
    const std::string shape = "/decode/Lk:" + std::to_string(lk) + "/D:128/Hkv:8";
    add("hattn_dense" + shape, run_hattn, s, hattn::DType::f32, false);
    add("hattn_dense_bf16" + shape, run_hattn, s, hattn::DType::bf16, false);
    add("hattn_dense_f16" + shape, run_hattn, s, hattn::DType::f16, false);
    if (lk == 32768) {
      add("hattn_dense_bf16kv" + shape, run_hattn, s, hattn::DType::bf16, true);
      hattn_bench::register_loki_decode(s);  // Loki over the same GQA cache
    }
  }
  for (int t : {1, 2}) add("array_read/threads:" + std::to_string(t), run_array_read, t);
  // The machine's compute bound, and a square GEMM: a BLAS far below the peak at this shape is
  // misconfigured for this CPU, and bench/report.py then says so instead of quoting ratios to it.
  for (int t : {1, 2}) add("machine_peak/fma/threads:" + std::to_string(t), run_fma_peak, t);
  add("openblas_sgemm/square/N:2048", run_sgemm, 2048, 2048, 2048, false);
  hattn_bench::register_topk();
  hattn_bench::register_el();
  hattn_bench::register_sparsek();
  hattn_bench::register_paged();
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  // Defaults unless the command line says otherwise: a repetition runs for at least 0.2 s (one
  // iteration when that is longer), after a 0.05 s warm-up that pages the inputs in and lets the
  // previous benchmark's spinning BLAS/Halide workers go to sleep. With
  // --benchmark_repetitions=5 the whole suite takes about 5 minutes on 2 cores. (Flags rather
  // than MinTime() so the benchmark names stay clean.)
  std::vector<char*> args(argv, argv + argc);
  std::string defaults[] = {"--benchmark_min_time=0.2", "--benchmark_min_warmup_time=0.05"};
  for (std::string& flag : defaults) {
    const std::string prefix = flag.substr(0, flag.find('='));
    bool given = false;
    for (int i = 1; i < argc; ++i) given = given || std::string(argv[i]).rfind(prefix, 0) == 0;
    if (!given) args.insert(args.begin() + 1, flag.data());
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  // HATTN_BENCH_ISA=avx512|avx2|sse41 (neon): hattn's kernels run that build at most (the labels
  // say which ran), to time a lower ISA level on a machine that has a higher one.
  if (const char* isa = std::getenv("HATTN_BENCH_ISA")) {
    const hattn::Status st = hattn::limit_isa(isa);
    if (!st.ok()) {
      std::fprintf(stderr, "hattn_bench: HATTN_BENCH_ISA: %s\n", st.message.c_str());
      return 2;
    }
    benchmark::AddCustomContext("hattn_isa_limit", isa);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
