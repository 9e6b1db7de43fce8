// `hattn calibrate loki` and `hattn rotate`: Loki's offline preparation (hattn/loki_prep.h).
//   hattn calibrate loki --keys keys.npy --out basis.npy [--variances var.npy] [--variance 0.9]
//                        [--holdout 0.2] [--d-f 0.25] [--warn-below 0.8] [--report r.json]
//   hattn rotate --keys k.npy --basis basis.npy --out krot.npy [--layer L]
// Both come from the library hattn_loki_prep, which needs LAPACKE. A build without it
// (HATTN_HAS_LOKI_PREP unset) still has both commands, with the same options, and they fail with
// a one-line error saying why, rather than being unknown.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_common.h"
#include "hattn/loki_prep.h"

namespace hattn_cli {

namespace {

struct CalibrateArgs {
  std::string keys, out, variances, report;
  double variance = 0.9;
  double holdout = 0.2;     // fraction of each head's samples held out for the report
  double d_f = 0.25;        // the rank fraction the user means to run Loki with
  double warn_below = 0.8;  // warn where that rank keeps less of the held-out variance
};

struct RotateArgs {
  std::string keys, basis, out;
  int64_t layer = -1;
  std::string lead_out;  // also write the first `lead` channels contiguous (LokiOptions::k_lead)
  int64_t lead = 0;
};

#if HATTN_HAS_LOKI_PREP

// `<out stem>.variance.npy` next to --out.
std::string default_variances_path(const std::string& out) {
  return std::filesystem::path(out).replace_extension(".variance.npy").string();
}

// Fails with the status, naming the keys file and the layer.
void check_layer(const hattn::Status& s, const std::string& keys, bool layered, int64_t l) {
  if (!s.ok()) {
    die(1, keys + (layered ? " layer " + std::to_string(l) : "") + ": " + hattn::to_string(s.code) +
               ": " + s.message);
  }
}

// Percent with one decimal.
std::string pct(double share) {
  char text[16];
  std::snprintf(text, sizeof text, "%.1f%%", 100.0 * share);
  return text;
}

int run_calibrate(const CalibrateArgs& a) {
  if (!(a.variance > 0.0 && a.variance <= 1.0)) {
    die(2, "--variance must be in (0, 1], got " + std::to_string(a.variance));
  }
  if (!(a.holdout >= 0.0 && a.holdout <= 0.5)) {
    die(2, "--holdout must be in [0, 0.5], got " + std::to_string(a.holdout));
  }
  if (!(a.d_f > 0.0 && a.d_f <= 1.0))
    die(2, "--d-f must be in (0, 1], got " + std::to_string(a.d_f));
  if (!(a.warn_below >= 0.0 && a.warn_below <= 1.0)) {
    die(2, "--warn-below must be in [0, 1], got " + std::to_string(a.warn_below));
  }
  const std::string variances = a.variances.empty() ? default_variances_path(a.out) : a.variances;
  if (variances == a.out) die(2, "--variances and --out name the same file " + a.out);
  if (a.report == a.out || a.report == variances) {
    die(2, "--report names the same file as --out or --variances: " + a.report);
  }
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
  // Held-out split: the last n_hold samples of each head (keys gathered along a sequence are
  // correlated with their neighbours, so a tail is a stricter test than a random subset).
  const int64_t n_hold = std::llround(a.holdout * static_cast<double>(n)), n_cal = n - n_hold;
  if (n_hold > 0 && (n_hold < 2 || n_cal < 2)) {
    die(2, "--holdout " + std::to_string(a.holdout) + " of N = " + std::to_string(n) +
               " keys leaves " + std::to_string(n_cal) + " to calibrate on and " +
               std::to_string(n_hold) + " held out; each needs >= 2 (or --holdout 0)");
  }
  std::vector<float> basis(static_cast<size_t>(layers * heads * d * d));
  std::vector<float> ratio(static_cast<size_t>(layers * heads * d));
  // Shares of variance in the leading r axes, cumulative over r: on the calibration keys and on
  // the held-out ones (of the basis calibrated without them), per (layer, head).
  std::vector<float> cal_share(ratio.size()), held_share(n_hold > 0 ? ratio.size() : 0);
  hattn::LokiCalibrateOptions opt;
  opt.variance = a.variance;
  std::vector<int> ranks;
  std::vector<float> split_basis(static_cast<size_t>(heads * d * d)), split_ratio(heads * d);
  // One layer per call, so that long calibrations show progress.
  for (int64_t l = 0; l < layers; ++l) {
    hattn::LokiCalibration info;
    const float* k = keys.data.data() + l * heads * n * d;
    float* b = basis.data() + l * heads * d * d;
    float* share = cal_share.data() + l * heads * d;
    check_layer(
        hattn::loki_calibrate(
            hattn::TensorView::contiguous(k, per_layer),
            hattn::TensorView::contiguous(b, {heads, d, d}),
            hattn::TensorView::contiguous(ratio.data() + l * heads * d, {heads, d}), opt, &info),
        a.keys, layered, l);
    ranks.insert(ranks.end(), info.ranks.begin(), info.ranks.end());
    const std::vector<float> layer_ratio(ratio.begin() + l * heads * d,
                                         ratio.begin() + (l + 1) * heads * d);
    if (n_hold == 0) {
      const std::vector<float> cum = cumulative_shares(layer_ratio, d);
      std::copy(cum.begin(), cum.end(), share);
    } else {
      // The basis the report describes comes from the first n_cal keys only; the basis written
      // uses all n (as without --holdout), so the held-out figures are a conservative estimate.
      auto part = [&](int64_t first, int64_t count) {
        hattn::TensorView t = hattn::TensorView::contiguous(k + first * d, {heads, count, d});
        t.strides[0] = n * d;
        return t;
      };
      const hattn::TensorView sb = hattn::TensorView::contiguous(split_basis.data(), {heads, d, d});
      check_layer(hattn::loki_calibrate(
                      part(0, n_cal), sb,
                      hattn::TensorView::contiguous(split_ratio.data(), {heads, d}), opt, nullptr),
                  a.keys, layered, l);
      const std::vector<float> cum = cumulative_shares(split_ratio, d);
      std::copy(cum.begin(), cum.end(), share);
      check_layer(hattn::loki_captured_variance(
                      part(n_cal, n_hold), sb,
                      hattn::TensorView::contiguous(held_share.data() + l * heads * d, {heads, d})),
                  a.keys, layered, l);
    }
    if (layered) {
      std::printf("layer %lld/%lld calibrated\n", static_cast<long long>(l) + 1,
                  static_cast<long long>(layers));
      std::fflush(stdout);
    }
  }

  // The report: per (layer, head), the share at the rank r = max(1, round(d_f D)) that Loki uses
  // for the paper's d_f values (Singhania et al. 2024: 1/8, 1/4, 1/2) and for --d-f.
  std::vector<double> dfs = {0.125, 0.25, 0.5};
  if (std::find(dfs.begin(), dfs.end(), a.d_f) == dfs.end()) dfs.push_back(a.d_f);
  auto rank_of = [d](double d_f) { return hattn::loki_count(d_f, d); };
  const char* split = n_hold > 0 ? "calibration / held-out" : "calibration keys";
  std::printf(
      "share of the keys' variance in the leading r = round(d_f D) axes (%s; held out: "
      "the last %lld of %lld keys per head):\n",
      split, static_cast<long long>(n_hold), static_cast<long long>(n));
  std::printf("%-16s %6s", "", "r@var");
  for (double f : dfs)
    std::printf("   d_f=%-5g (r=%3lld)  ", f, static_cast<long long>(rank_of(f)));
  std::printf("\n");
  nlohmann::json heads_json = nlohmann::json::array();
  int warnings = 0;
  const int64_t chosen_r = rank_of(a.d_f);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t at = (l * heads + h) * d;
      const std::string who =
          (layered ? "layer " + std::to_string(l) + " " : "") + "head " + std::to_string(h);
      std::printf("%-16s %6d", who.c_str(), ranks[static_cast<size_t>(l * heads + h)]);
      nlohmann::json by_df = nlohmann::json::array();
      for (double f : dfs) {
        const int64_t r = rank_of(f);
        const double c = cal_share[at + r - 1];
        std::string cell = pct(c);
        nlohmann::json e = {{"d_f", f}, {"r", r}, {"calibration", c}};
        if (n_hold > 0) {
          cell += " / " + pct(held_share[at + r - 1]);
          e["heldout"] = held_share[at + r - 1];
        }
        std::printf("   %-21s", cell.c_str());
        by_df.push_back(e);
      }
      std::printf("\n");
      const double kept = n_hold > 0 ? held_share[at + chosen_r - 1] : cal_share[at + chosen_r - 1];
      const bool warn = kept < a.warn_below;
      nlohmann::json hj = {{"layer", l},
                           {"head", h},
                           {"rank_for_variance", ranks[static_cast<size_t>(l * heads + h)]},
                           {"shares", by_df},
                           {"calibration_share",
                            std::vector<float>(cal_share.begin() + at, cal_share.begin() + at + d)},
                           {"warning", warn}};
      if (n_hold > 0) {
        hj["heldout_share"] =
            std::vector<float>(held_share.begin() + at, held_share.begin() + at + d);
      }
      heads_json.push_back(hj);
      if (warn) ++warnings;
    }
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
  const char* which = n_hold > 0 ? "held-out" : "calibration";
  if (warnings == 0) {
    std::printf("every head keeps >= %s of the %s keys' variance at d_f = %g (r = %lld)\n",
                pct(a.warn_below).c_str(), which, a.d_f, static_cast<long long>(chosen_r));
  } else {
    std::string list;
    for (const nlohmann::json& hj : heads_json) {
      if (!hj["warning"].get<bool>()) continue;
      const int64_t l = hj["layer"].get<int64_t>(), h = hj["head"].get<int64_t>();
      const int64_t at = (l * heads + h) * d + chosen_r - 1;
      list += std::string(list.empty() ? "" : ", ") +
              (layered ? "layer " + std::to_string(l) + " " : "") + "head " + std::to_string(h) +
              " " + pct(n_hold > 0 ? held_share[at] : cal_share[at]);
    }
    std::printf(
        "warning: %d of %lld heads keep less than --warn-below %s of the %s keys' variance at "
        "d_f = %g (r = %lld): %s. Loki's approximate scores miss what the other axes hold there; "
        "raise d_f or measure with `hattn fidelity activations` first\n",
        warnings, static_cast<long long>(layers) * heads, pct(a.warn_below).c_str(), which, a.d_f,
        static_cast<long long>(chosen_r), list.c_str());
  }
  std::vector<int64_t> basis_shape = {heads, d, d}, ratio_shape = {heads, d};
  if (layered) {
    basis_shape.insert(basis_shape.begin(), layers);
    ratio_shape.insert(ratio_shape.begin(), layers);
  }
  save(a.out, basis_shape, basis.data());
  save(variances, ratio_shape, ratio.data());
  std::printf("wrote %s %s and %s %s\n", a.out.c_str(), shape_text(basis_shape).c_str(),
              variances.c_str(), shape_text(ratio_shape).c_str());
  if (!a.report.empty()) {
    const nlohmann::json report = {
        {"keys", a.keys},         {"layers", layers},     {"kv_heads", heads},
        {"samples", n},           {"head_dim", d},        {"heldout_samples", n_hold},
        {"d_f", a.d_f},           {"rank", chosen_r},     {"warn_below", a.warn_below},
        {"variance", a.variance}, {"warnings", warnings}, {"heads", heads_json}};
    write_json(a.report, report);
    std::printf("wrote %s\n", a.report.c_str());
  }
  return 0;
}

int run_rotate(const RotateArgs& a) {
  hattn::npy::Array keys = load(a.keys, "keys", 4, "[B, Hkv, L, D]");
  if (!a.lead_out.empty() && (a.lead < 1 || a.lead > keys.shape[3])) {
    die(2, "--lead must be in [1, D=" + std::to_string(keys.shape[3]) + "] with --lead-out, got " +
               std::to_string(a.lead));
  }
  const LayerBasis basis = load_basis(a.basis, a.layer);
  const hattn::TensorView& basis_view = basis.view;
  const std::vector<int64_t> shape(basis_view.shape, basis_view.shape + 3);
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
  c->add_option("--holdout", args.holdout,
                "fraction in [0, 0.5] of each head's keys (the last ones) held out: the report "
                "gives the variance a basis calibrated without them keeps of them (default 0.2; "
                "the basis written uses every key)");
  c->add_option("--d-f", args.d_f, "rank fraction d_f you mean to run Loki with (default 0.25)");
  c->add_option("--warn-below", args.warn_below,
                "warn for each head whose held-out variance share at --d-f is below this "
                "(default 0.8)");
  c->add_option("--report", args.report,
                "JSON file to write the per-(layer, head) shares to (every r, and per d_f)");
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
