// The hattn command line:
//   hattn list
//   hattn run dense --q q.npy --k k.npy --v v.npy --out o.npy [--causal] [--scale S] ...
// Every failure is one line on stderr starting with "hattn: error: " and a non-zero exit status
// (2 for usage errors, 1 for data and runtime errors).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "npy.h"

namespace {

struct RunArgs {
  std::string variant, q, k, v, out, lse, kernel;
  bool causal = false, check_finite = false, verbose = false;
  double scale = 0;
  int threads = 0, repeat = 1, splits = 0;
};

// A failure already reported to the user, with its exit status.
struct Failure {
  int status;
};

[[noreturn]] void die(int status, const std::string& message) {
  std::string line = message;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::fprintf(stderr, "hattn: error: %s\n", line.c_str());
  throw Failure{status};
}

hattn::npy::Array load(const std::string& path, const char* name) {
  hattn::npy::Array a;
  std::string error;
  if (!hattn::npy::read_f32(path, &a, &error)) die(1, error);
  if (a.shape.size() != 4) {
    die(1, path + ": " + name + " must have rank 4 [B, H, L, D], got rank " +
               std::to_string(a.shape.size()));
  }
  return a;
}

hattn::TensorView view(hattn::npy::Array& a) {
  return hattn::TensorView::contiguous(a.data.data(), a.shape);
}

// Query-key pairs that are visible (what the kernel really computes).
double visible_pairs(int64_t lq, int64_t lk, bool causal) {
  if (!causal) return static_cast<double>(lq) * static_cast<double>(lk);
  double n = 0;
  for (int64_t i = 0; i < lq; ++i)
    n += static_cast<double>(std::clamp<int64_t>(i + lk - lq + 1, 0, lk));
  return n;
}

// One row per kernel; the last column is the build this machine runs (of the kernel's
// multi-target builds) and how many builds the library holds.
int list_kernels() {
  std::printf("%-42s %-8s %-8s %-7s %-8s %-4s %-6s %s\n", "kernel", "variant", "phase", "causal",
              "head_dim", "lse", "dtype", "runs here (builds)");
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    std::string d = k.head_dim ? std::to_string(k.head_dim) : "any";
    std::string runs = hattn::selected_build(k);
    if (runs.empty()) runs = "none usable on this CPU";
    const long builds = 1 + std::count(k.target.begin(), k.target.end(), ',');
    std::printf("%-42s %-8s %-8s %-7s %-8s %-4s %-6s %s (%ld)\n", k.name.c_str(),
                k.variant.c_str(), k.phase.c_str(), k.causal ? "yes" : "no", d.c_str(),
                k.lse ? "yes" : "no", k.dtype.c_str(), runs.c_str(), builds);
  }
  return 0;
}

int run_dense(const RunArgs& a) {
  if (a.variant != "dense") die(2, "unknown variant '" + a.variant + "' (available: dense)");
  if (a.repeat < 1) die(2, "--repeat must be >= 1");
  if (a.threads > 0) hattn::set_num_threads(a.threads);
  hattn::npy::Array q = load(a.q, "q"), k = load(a.k, "k"), v = load(a.v, "v");
  std::vector<float> out(q.data.size());
  std::vector<float> lse;

  hattn::AttentionOptions opt;
  opt.causal = a.causal;
  opt.kernel = a.kernel;
  opt.check_finite = a.check_finite;
  opt.decode_splits = a.splits;
  if (a.scale != 0) {
    opt.has_scale = true;
    opt.scale = static_cast<float>(a.scale);
  }
  hattn::TensorView lse_view;
  if (!a.lse.empty()) {
    lse.resize(static_cast<size_t>(q.shape[0] * q.shape[1] * q.shape[2]));
    lse_view = hattn::TensorView::contiguous(lse.data(), {q.shape[0], q.shape[1], q.shape[2]});
    opt.lse = &lse_view;
  }
  hattn::TensorView ov = hattn::TensorView::contiguous(out.data(), q.shape);

  std::vector<double> seconds;
  hattn::Dispatch chosen;
  for (int r = 0; r < a.repeat; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    hattn::Status s = hattn::attention(view(q), view(k), view(v), ov, opt, &chosen);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!s.ok()) die(1, std::string(hattn::to_string(s.code)) + ": " + s.message);
  }
  std::sort(seconds.begin(), seconds.end());
  const double t = seconds[seconds.size() / 2];
  const double flops = 4.0 * static_cast<double>(q.shape[0] * q.shape[1] * q.shape[3]) *
                       visible_pairs(q.shape[2], k.shape[2], a.causal);
  std::printf("kernel: %s (%s", chosen.kernel.c_str(), chosen.reason.c_str());
  if (chosen.decode_splits > 1) std::printf(", %d key splits", chosen.decode_splits);
  std::printf(")\ntime: %.3f ms (median of %d), %.1f GFLOP/s\n", t * 1e3, a.repeat,
              flops / t * 1e-9);

  std::string error;
  if (!hattn::npy::write_f32(a.out, q.shape, out.data(), &error)) die(1, error);
  if (!a.lse.empty() &&
      !hattn::npy::write_f32(a.lse, {q.shape[0], q.shape[1], q.shape[2]}, lse.data(), &error)) {
    die(1, error);
  }
  if (a.verbose)
    std::printf("wrote %s%s%s\n", a.out.c_str(), a.lse.empty() ? "" : " and ", a.lse.c_str());
  return 0;
}

void add_run_options(CLI::App* run, RunArgs* a) {
  run->add_option("variant", a->variant, "attention variant (dense)")->required();
  run->add_option("--q", a->q, "queries [B, Hq, Lq, D], float32 .npy")->required();
  run->add_option("--k", a->k, "keys [B, Hkv, Lk, D], float32 .npy")->required();
  run->add_option("--v", a->v, "values [B, Hkv, Lk, D], float32 .npy")->required();
  run->add_option("--out", a->out, "output [B, Hq, Lq, D] .npy to write")->required();
  run->add_option("--lse", a->lse, "also write the log-sum-exp [B, Hq, Lq] here");
  run->add_flag("--causal", a->causal, "causal mask, aligned bottom-right");
  run->add_option("--scale", a->scale, "softmax scale (default 1/sqrt(D))")
      ->check(CLI::PositiveNumber);
  run->add_option("--kernel", a->kernel, "force a kernel by name (see `hattn list`)");
  run->add_option("--threads", a->threads, "worker threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  run->add_option("--repeat", a->repeat, "run N times and report the median time")
      ->check(CLI::PositiveNumber);
  run->add_option("--splits", a->splits, "decode key splits (0 = automatic)")
      ->check(CLI::NonNegativeNumber);
  run->add_flag("--check-finite", a->check_finite, "refuse inputs holding NaN or Inf");
  run->add_flag("-v,--verbose", a->verbose, "say more");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hattn: ahead-of-time compiled attention kernels"};
  app.require_subcommand(1);
  CLI::App* list = app.add_subcommand("list", "print the compiled kernels");
  CLI::App* run = app.add_subcommand("run", "run a kernel on .npy inputs");
  RunArgs args;
  add_run_options(run, &args);
  if (argc > 1 && argv[1][0] != '-' && std::string(argv[1]) != "list" &&
      std::string(argv[1]) != "run") {
    std::fprintf(stderr, "hattn: error: unknown command '%s' (commands: list, run)\n", argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "hattn: error: %s (try --help)\n", what.c_str());
    return 2;
  }
  try {
    if (*list) return list_kernels();
    return run_dense(args);
  } catch (const Failure& f) {
    return f.status;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hattn: error: %s\n", e.what());
    return 1;
  }
}
