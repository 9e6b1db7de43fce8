// `hattn run sparsek` (SPARSEK attention from the layer input's scores) and `hattn run
// sparsek-mask` (the SparseK operator alone, to inspect masks).
#include <cstdio>
#include <string>
#include <vector>

#include "cli_common.h"

namespace hattn_cli {

namespace {

struct SparsekArgs {
  std::string q, k, v, x, w_score, out, gate = "value";
  std::string dtype = "f32";  // of q, k, v, out and the scoring inputs x and w_score
  int64_t budget = 0, window = 0;
  float slope = 0.f, scale = 0.f;
  CommonRunArgs common;
};

struct MaskArgs {
  std::string z, out, tau, lengths;
  int64_t budget = 0;
  CommonRunArgs common;
};

int run_sparsek(const SparsekArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  if (a.gate != "value" && a.gate != "logit") {
    die(2, "--gate must be value or logit, got '" + a.gate + "'");
  }
  hattn::npy::Array q = load(a.q, "q", 4, "[B, Hq, Lq, D]");
  hattn::npy::Array k = load(a.k, "k", 4, "[B, Hkv, Lk, D]");
  hattn::npy::Array v = load(a.v, "v", 4, "[B, Hkv, Lk, D]");
  hattn::npy::Array x = load(a.x, "x", 3, "[B, Lk, Dm]");
  hattn::npy::Array w = load(a.w_score, "w-score", 2, "[Hkv, Dm]");
  hattn::SparsekOptions opt;
  opt.k = a.budget;
  opt.window = a.window;
  opt.slope = a.slope;
  opt.gate = a.gate == "logit" ? hattn::SparsekGate::logit : hattn::SparsekGate::value;
  set_scale(a.scale, &opt);
  set_common(a.common, &opt);
  // Every tensor in --dtype (bf16|f16: rounded to it in memory; cli_common.h).
  const hattn::DType dtype = parse_dtype(a.dtype);
  std::vector<uint16_t> q16, k16, v16, x16, w16, out16;
  const hattn::TensorView qv = as_dtype(q, dtype, &q16), kv = as_dtype(k, dtype, &k16),
                          vv = as_dtype(v, dtype, &v16), xv = as_dtype(x, dtype, &x16),
                          wv = as_dtype(w, dtype, &w16);
  std::vector<float> out(q.data.size());
  const hattn::TensorView out_view = output_as(dtype, q.shape, &out, &out16);
  hattn::Dispatch chosen;
  const double t = median_seconds(a.common.repeat, [&] {
    return hattn::sparsek_attention(qv, kv, vv, xv, wv, out_view, opt, &chosen);
  });
  std::printf("kernel: %s (%s)\ntime: %.3f ms (median of %d)\n", chosen.kernel.c_str(),
              chosen.reason.c_str(), t * 1e3, a.common.repeat);
  save_output(a.out, dtype, q.shape, out16, &out);
  if (a.common.verbose) std::printf("wrote %s\n", a.out.c_str());
  return 0;
}

int run_mask(const MaskArgs& a) {
  if (a.common.threads > 0) hattn::set_num_threads(a.common.threads);
  hattn::npy::Array z = load(a.z, "z", 2, "[rows, m]");
  std::vector<int64_t> lengths;
  if (!a.lengths.empty()) {
    hattn::npy::Array l = load(a.lengths, "lengths", 1, "[rows] (float32 holding integers)");
    for (float f : l.data) {
      if (!(f >= 0) || f != static_cast<float>(static_cast<int64_t>(f))) {
        die(1, a.lengths + ": lengths must be non-negative integers, got " + std::to_string(f));
      }
      lengths.push_back(static_cast<int64_t>(f));
    }
  }
  std::vector<float> p(z.data.size()), tau(static_cast<size_t>(z.shape[0]));
  hattn::Dispatch chosen;
  const double t = median_seconds(a.common.repeat, [&] {
    return hattn::sparsek_mask(view(z), a.lengths.empty() ? nullptr : &lengths, a.budget,
                               hattn::TensorView::contiguous(p.data(), z.shape),
                               hattn::TensorView::contiguous(tau.data(), {z.shape[0]}), &chosen);
  });
  std::printf("kernel: %s (%s)\ntime: %.3f ms (median of %d), %.3g rows/s\n", chosen.kernel.c_str(),
              chosen.reason.c_str(), t * 1e3, a.common.repeat, static_cast<double>(z.shape[0]) / t);
  save(a.out, z.shape, p.data());
  if (!a.tau.empty()) save(a.tau, {z.shape[0]}, tau.data());
  if (a.common.verbose) {
    for (size_t r = 0; r < tau.size() && r < 8; ++r) {
      double sum = 0;
      for (int64_t j = 0; j < z.shape[1]; ++j) sum += p[r * static_cast<size_t>(z.shape[1]) + j];
      std::printf("row %zu: tau %.6g, sum of mask %.6f\n", r, static_cast<double>(tau[r]), sum);
    }
  }
  return 0;
}

}  // namespace

Action add_run_sparsek(CLI::App* run) {
  static SparsekArgs args;
  static MaskArgs margs;
  CLI::App* c = run->add_subcommand(
      "sparsek", "SPARSEK attention: sliding window plus the keys the SparseK mask selects");
  c->add_option("--q", args.q, "queries [B, Hq, Lq, D], float32 .npy")->required();
  c->add_option("--k", args.k, "keys [B, Hkv, Lk, D]")->required();
  c->add_option("--v", args.v, "values [B, Hkv, Lk, D]")->required();
  c->add_option("--x", args.x, "layer input [B, Lk, Dm] (scored by --w-score)")->required();
  c->add_option("--w-score", args.w_score, "scoring weights [Hkv, Dm]: u_j = w . x_j + S j")
      ->required();
  c->add_option("--budget", args.budget, "K: keys selected per query beyond the window (>= 0)")
      ->required();
  c->add_option("--window", args.window, "W: sliding window (>= 0)")->required();
  c->add_option("--slope", args.slope, "S: position slope delta (default 0)");
  c->add_option("--gate", args.gate, "value (default: the gate scales the value) or logit");
  c->add_option("--scale", args.scale, "softmax scale (default 1/sqrt(D))");
  c->add_option("--out", args.out, "output [B, Hq, Lq, D] .npy to write")->required();
  add_dtype_option(c, &args.dtype);
  add_common_run_options(c, &args.common);

  CLI::App* m = run->add_subcommand("sparsek-mask",
                                    "the SparseK operator: p = clip(z - tau, 0, 1), sum p = K");
  m->add_option("--z", margs.z, "scores [rows, m], float32 .npy")->required();
  m->add_option("--budget", margs.budget, "K >= 0")->required();
  m->add_option("--lengths", margs.lengths, "valid entries per row [rows] (default: all m)");
  m->add_option("--out", margs.out, "mask [rows, m] .npy to write")->required();
  m->add_option("--tau", margs.tau, "write tau [rows] here too");
  add_common_run_options(m, &margs.common);
  return [c, m]() {
    if (*c) return run_sparsek(args);
    if (*m) return run_mask(margs);
    return -1;
  };
}

}  // namespace hattn_cli
