// `hattn calibrate loki` and `hattn rotate`: Loki's offline preparation (hattn/loki_prep.h).
//   hattn calibrate loki --keys keys.npy --out basis.npy [--variances var.npy] [--variance 0.9]
//   hattn rotate --keys k.npy --basis basis.npy --out krot.npy [--layer L]
// Both come from the library hattn_loki_prep, which needs LAPACKE. A build without it
// (HATTN_HAS_LOKI_PREP unset) still has both commands, with the same options, and they fail with
// a one-line error saying why, rather than being unknown.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_common.h"
#if HATTN_HAS_LOKI_PREP
#include "hattn/loki_prep.h"
#endif

namespace hattn_cli {

namespace {

struct CalibrateArgs {
  std::string keys, out, variances;
  double variance = 0.9;
};

struct RotateArgs {
  std::string keys, basis, out;
  int64_t layer = -1;
  std::string lead_out;  // also write the first `lead` channels contiguous (LokiOptions::k_lead)
  int64_t lead = 0;
};

#if HATTN_HAS_LOKI_PREP

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// `<out stem>.variance.npy` next to --out.
std::string default_variances_path(const std::string& out) {
  return std::filesystem::path(out).replace_extension(".variance.npy").string();
}

int run_calibrate(const CalibrateArgs& a) {
  if (!(a.variance > 0.0 && a.variance <= 1.0)) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", a.variance);
    die(2, std::string("--variance must be in (0, 1], got ") + text);
  }
  const std::string variances = a.variances.empty() ? default_variances_path(a.out) : a.variances;
  if (variances == a.out) die(2, "--variances and --out name the same file " + a.out);
  hattn::npy::Array keys;
  std::string error;
  if (!hattn::npy::read_f32(a.keys, &keys, &error)) die(1, error);
  if (keys.shape.size() != 3 && keys.shape.size() != 4) {
    die(1, a.keys + ": keys must have rank 3 [Hkv, N, D] or 4 [L, Hkv, N, D], got rank " +
               std::to_string(keys.shape.size()) + " " + shape_text(keys.shape));
  }
  const bool layered = keys.shape.size() == 4;
  const int64_t layers = layered ? keys.shape[0] : 1;
  const std::vector<int64_t> per_layer(keys.shape.end() - 3, keys.shape.end());  // [Hkv, N, D]
  const int64_t heads = per_layer[0], n = per_layer[1], d = per_layer[2];
  std::vector<float> basis(static_cast<size_t>(layers * heads * d * d));
  std::vector<float> ratio(static_cast<size_t>(layers * heads * d));
  hattn::LokiCalibrateOptions opt;
  opt.variance = a.variance;
  std::vector<int> ranks;
  // One layer per call, so that long calibrations show progress.
  for (int64_t l = 0; l < layers; ++l) {
    hattn::LokiCalibration info;
    const float* k = keys.data.data() + l * heads * n * d;
    float* b = basis.data() + l * heads * d * d;
    float* r = ratio.data() + l * heads * d;
    const hattn::Status s =
        hattn::loki_calibrate(hattn::TensorView::contiguous(k, per_layer),
                              hattn::TensorView::contiguous(b, {heads, d, d}),
                              hattn::TensorView::contiguous(r, {heads, d}), opt, &info);
    if (!s.ok()) {
      die(1, a.keys + (layered ? " layer " + std::to_string(l) : "") + ": " +
                 hattn::to_string(s.code) + ": " + s.message);
    }
    if (layered) {
      std::printf("layer %lld/%lld: r per head =", static_cast<long long>(l) + 1,
                  static_cast<long long>(layers));
    }
    for (int64_t h = 0; h < heads; ++h) {
      double cum = 0.0;
      for (int c = 0; c < info.ranks[h]; ++c) cum += r[h * d + c];
      if (layered) {
        std::printf(" %d", info.ranks[h]);
      } else {
        std::printf("head %lld: r = %d of %lld (%.1f%% of the variance)\n",
                    static_cast<long long>(h), info.ranks[h], static_cast<long long>(d),
                    100.0 * cum);
      }
    }
    if (layered) std::printf("\n");
    std::fflush(stdout);
    ranks.insert(ranks.end(), info.ranks.begin(), info.ranks.end());
  }
  int max_rank = 0;
  double mean_rank = 0.0;
  for (int r : ranks) {
    max_rank = std::max(max_rank, r);
    mean_rank += r / static_cast<double>(ranks.size());
  }
  std::printf(
      "%lld layer(s) x %lld kv head(s), %lld keys each, D = %lld: %.3g of the variance needs "
      "r <= %d (mean %.1f, d_f = r/D <= %.3f)\n",
      static_cast<long long>(layers), static_cast<long long>(heads), static_cast<long long>(n),
      static_cast<long long>(d), a.variance, max_rank, mean_rank,
      static_cast<double>(max_rank) / static_cast<double>(d));
  std::vector<int64_t> basis_shape = {heads, d, d}, ratio_shape = {heads, d};
  if (layered) {
    basis_shape.insert(basis_shape.begin(), layers);
    ratio_shape.insert(ratio_shape.begin(), layers);
  }
  save(a.out, basis_shape, basis.data());
  save(variances, ratio_shape, ratio.data());
  std::printf("wrote %s %s and %s %s\n", a.out.c_str(), shape_text(basis_shape).c_str(),
              variances.c_str(), shape_text(ratio_shape).c_str());
  return 0;
}

int run_rotate(const RotateArgs& a) {
  hattn::npy::Array keys = load(a.keys, "keys", 4, "[B, Hkv, L, D]");
  if (!a.lead_out.empty() && (a.lead < 1 || a.lead > keys.shape[3])) {
    die(2, "--lead must be in [1, D=" + std::to_string(keys.shape[3]) + "] with --lead-out, got " +
               std::to_string(a.lead));
  }
  hattn::npy::Array basis;
  std::string error;
  if (!hattn::npy::read_f32(a.basis, &basis, &error)) die(1, error);
  const float* p = basis.data.data();
  std::vector<int64_t> shape = basis.shape;
  if (shape.size() == 4) {  // a multi-layer calibration: rotate with one layer's basis
    if (a.layer < 0 || a.layer >= shape[0]) {
      die(2, a.basis + " holds " + std::to_string(shape[0]) + " layers " + shape_text(shape) +
                 "; choose one with --layer in [0, " + std::to_string(shape[0] - 1) + "]");
    }
    shape.erase(shape.begin());
    p += a.layer * shape[0] * shape[1] * shape[2];
  } else if (shape.size() != 3) {
    die(1, a.basis + ": basis must have rank 3 [Hkv, D, D] or 4 [L, Hkv, D, D], got rank " +
               std::to_string(shape.size()));
  } else if (a.layer >= 0) {
    die(2,
        "--layer needs a per-layer basis [L, Hkv, D, D]; " + a.basis + " is " + shape_text(shape));
  }
  const hattn::TensorView basis_view = hattn::TensorView::contiguous(p, shape);
  std::string worst;
  // A basis that is not orthonormal would make the rotated scores differ from q . k.
  const hattn::Status ortho = hattn::loki_check_basis(basis_view, 1e-4, &worst);
  if (!ortho.ok()) die(1, a.basis + ": " + ortho.message);
  std::vector<float> out(keys.data.size());
  const hattn::Status s = hattn::loki_rotate(view(keys), basis_view,
                                             hattn::TensorView::contiguous(out.data(), keys.shape));
  if (!s.ok()) {
    die(1, a.keys + " with " + a.basis + ": " + hattn::to_string(s.code) + ": " + s.message);
  }
  save(a.out, keys.shape, out.data());
  std::printf("rotated keys %s with basis %s (worst %s); wrote %s\n",
              shape_text(keys.shape).c_str(), shape_text(shape).c_str(), worst.c_str(),
              a.out.c_str());
  if (!a.lead_out.empty()) {
    // The leading R channels of every rotated key, contiguous: what `run loki --k-lead` and
    // LokiOptions::k_lead read for the approximate scores instead of strided rows of k_rot.
    const int64_t d = keys.shape[3], rows = keys.shape[0] * keys.shape[1] * keys.shape[2];
    std::vector<float> lead(static_cast<size_t>(rows * a.lead));
    for (int64_t j = 0; j < rows; ++j) {
      std::copy_n(out.begin() + j * d, a.lead, lead.begin() + j * a.lead);
    }
    const std::vector<int64_t> lead_shape = {keys.shape[0], keys.shape[1], keys.shape[2], a.lead};
    save(a.lead_out, lead_shape, lead.data());
    std::printf("wrote the leading %lld channels %s to %s\n", static_cast<long long>(a.lead),
                shape_text(lead_shape).c_str(), a.lead_out.c_str());
  }
  return 0;
}

#else  // no LAPACKE in this build

[[noreturn]] void unavailable(const char* command) {
  die(1, std::string(command) +
             " is not available: this build of hattn has no LAPACKE (liblapacke-dev was not "
             "found when it was configured), which Loki calibration needs");
}
int run_calibrate(const CalibrateArgs&) { unavailable("calibrate loki"); }
int run_rotate(const RotateArgs&) { unavailable("rotate"); }

#endif

}  // namespace

Action add_calibrate(CLI::App* app) {
  static CalibrateArgs args;
  CLI::App* cal = app->add_subcommand("calibrate", "offline calibration of a variant");
  cal->require_subcommand(1);
  CLI::App* c =
      cal->add_subcommand("loki", "PCA basis of sample keys per (layer, kv head) for Loki");
  c->add_option("--keys", args.keys, "sample keys [Hkv, N, D] or [L, Hkv, N, D], float32 .npy")
      ->required();
  c->add_option("--out", args.out, "basis [(L,) Hkv, D, D] .npy to write (columns = axes)")
      ->required();
  c->add_option("--variances", args.variances,
                "explained-variance ratios [(L,) Hkv, D] .npy to write "
                "(default: <out stem>.variance.npy)");
  c->add_option("--variance", args.variance,
                "variance fraction in (0, 1] to report the rank r for (default 0.9)");
  return [c]() { return *c ? run_calibrate(args) : -1; };
}

Action add_rotate(CLI::App* app) {
  static RotateArgs args;
  CLI::App* c = app->add_subcommand("rotate", "rotate a key cache into a Loki basis (k P)");
  c->add_option("--keys", args.keys, "keys [B, Hkv, L, D], float32 .npy")->required();
  c->add_option("--basis", args.basis, "basis [Hkv, D, D] or [L, Hkv, D, D] from calibrate loki")
      ->required();
  c->add_option("--out", args.out, "rotated keys [B, Hkv, L, D] .npy to write")->required();
  c->add_option("--layer", args.layer, "layer of a per-layer basis [L, Hkv, D, D] to use");
  CLI::Option* lead_out = c->add_option(
      "--lead-out", args.lead_out,
      "also write the leading --lead channels [B, Hkv, L, R] contiguous (run loki --k-lead)");
  c->add_option("--lead", args.lead, "channels R of --lead-out, in [1, D] (R >= the rank r used)")
      ->needs(lead_out);
  lead_out->needs("--lead");
  return [c]() { return *c ? run_rotate(args) : -1; };
}

}  // namespace hattn_cli
