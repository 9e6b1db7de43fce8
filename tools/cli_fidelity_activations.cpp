// `hattn fidelity activations`: which approximate variant fits a model, measured on the model's own
// Q, K and V (dumped per layer, README "Fidelity on your model's activations").
//   hattn fidelity activations --q q.npy --k k.npy --v v.npy [--causal] [--json f.json] ...
// For each layer and query head, and each knob of a grid (topk k; Loki (d_f, k_f); SPARSEK k with
// a window, from the user's key scores u): the output error against dense attention (relative
// over the head, and its worst row), the recall of the exact top-|S| keys by the variant's
// selection S, and the softmax mass S carries; for Loki, the share of the evaluated keys' variance
// that the basis's leading r axes hold. Then the cheapest knob per layer (by the bytes a decode
// step reads) that meets --max-error and --min-recall in every head.
// Outputs come from hattn's kernels; selections and exact softmaxes are recomputed in double
// (tools/fidelity_metrics.h) on a sample of --rows query rows per head.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_common.h"
#include "fidelity_metrics.h"
#include "hattn/loki_prep.h"

namespace hattn_cli {

namespace {

struct ActivationArgs {
  std::vector<std::string> q, k, v, u;
  std::string basis, json;
  std::vector<std::string> variants;
  std::vector<int64_t> topk, sparsek_k;
  std::vector<double> loki_d_f = {0.125, 0.25, 0.5}, loki_k_f = {0.125, 0.25, 0.5};
  int64_t sparsek_window = 0, rows = 64;
  bool causal = false;
  double scale = 0, max_error = 0.05, min_recall = 0;
  int threads = 0;
};

// A tensor per layer: one file per layer of rank `rank`, or one file with a leading layer axis.
struct PerLayer {
  std::vector<hattn::npy::Array> files;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<const float*> data;
};

int64_t elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

PerLayer load_layers(const std::vector<std::string>& paths, const char* name, size_t rank,
                     const char* layout) {
  PerLayer t;
  for (const std::string& path : paths) {
    hattn::npy::Array a;
    std::string error;
    if (!hattn::npy::read_f32(path, &a, &error)) die(1, error);
    t.files.push_back(std::move(a));
  }
  if (t.files.size() == 1 && t.files[0].shape.size() == rank + 1) {
    const hattn::npy::Array& a = t.files[0];
    const std::vector<int64_t> shape(a.shape.begin() + 1, a.shape.end());
    for (int64_t l = 0; l < a.shape[0]; ++l) {
      t.shapes.push_back(shape);
      t.data.push_back(a.data.data() + l * elements(shape));
    }
    return t;
  }
  for (size_t i = 0; i < t.files.size(); ++i) {
    if (t.files[i].shape.size() != rank) {
      die(1, paths[i] + ": --" + name + " takes " + layout + " per file (one file per layer) or " +
                 "one file [layers, " + std::string(layout + 1) + ", got " +
                 shape_text(t.files[i].shape));
    }
    t.shapes.push_back(t.files[i].shape);
    t.data.push_back(t.files[i].data.data());
  }
  return t;
}

// One layer's evaluated tensors: batches [b0, b0 + batch) of the user's, contiguous views.
struct Layer {
  int64_t batch, hq, hkv, lq, lk, d;
  const float *q, *k, *v, *u;  // u: null without --u
  std::vector<int64_t> q_shape() const { return {batch, hq, lq, d}; }
  std::vector<int64_t> kv_shape() const { return {batch, hkv, lk, d}; }
  int64_t visible(int64_t i, bool causal) const {
    return causal ? std::min(lk, i + lk - lq + 1) : lk;
  }
};

// One knob of one variant, its results summed per query head.
struct HeadStats {
  ErrorSums error;
  double recall = 0, mass = 0, min_mass = INFINITY;
  int64_t rows = 0;
};

struct Knob {
  std::string variant, label;
  nlohmann::json value;
  double bytes;  // K/V bytes a decode step reads, as a fraction of dense attention's
  std::vector<HeadStats> heads;
};

// The exact rows sampled per (b, q head): `rows` evenly spaced rows ending with the last (the
// decode row). Causal rows that see no key are left out.
struct Sample {
  std::vector<int64_t> rows;
  std::vector<ExactRow> exact;  // [(b * Hq + h) * rows.size() + s]
};

Sample sample_rows(const Layer& L, int64_t want, bool causal, double scale) {
  Sample s;
  const int64_t n = std::min(want, L.lq);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = L.lq - 1 - i * L.lq / n;
    if (L.visible(row, causal) > 0) s.rows.insert(s.rows.begin(), row);
  }
  const int64_t group = L.hq / L.hkv;
  for (int64_t b = 0; b < L.batch; ++b) {
    for (int64_t h = 0; h < L.hq; ++h) {
      const float* k = L.k + ((b * L.hkv + h / group) * L.lk) * L.d;
      for (int64_t row : s.rows) {
        const float* q = L.q + ((b * L.hq + h) * L.lq + row) * L.d;
        s.exact.push_back(exact_row(q, k, L.d, L.visible(row, causal), L.d, scale));
      }
    }
  }
  return s;
}

// A variant's selection for sampled row `row` (the `n`th sampled row of sequence b, q head h).
struct RowRef {
  int64_t b, h, n, row, visible;
  const ExactRow& exact;
};
using Selector = std::function<std::vector<int32_t>(const RowRef&)>;

// A knob's output (from its kernel) against dense, and its selection on the sampled rows.
void measure(const Layer& L, const Sample& s, bool causal, const std::vector<float>& out,
             const std::vector<float>& dense, const Selector& select, Knob* knob) {
  knob->heads.assign(static_cast<size_t>(L.hq), {});
  size_t at = 0;
  for (int64_t b = 0; b < L.batch; ++b) {
    for (int64_t h = 0; h < L.hq; ++h) {
      HeadStats& st = knob->heads[h];
      const size_t first = static_cast<size_t>((b * L.hq + h) * L.lq * L.d);
      st.error.add(out.data() + first, dense.data() + first, L.lq, L.d);
      for (size_t n = 0; n < s.rows.size(); ++n, ++at) {
        const int64_t row = s.rows[n];
        const RowRef ref{b, h, static_cast<int64_t>(n), row, L.visible(row, causal), s.exact[at]};
        const SelectionStats sel = selection_stats(s.exact[at], select(ref));
        st.recall += sel.recall;
        st.mass += sel.mass;
        st.min_mass = std::min(st.min_mass, sel.mass);
        ++st.rows;
      }
    }
  }
}

struct Summary {
  double mean_error = 0, worst_error = 0, worst_row = 0, mean_recall = 0, min_recall = INFINITY;
  double mean_mass = 0, min_mass = INFINITY;
};

Summary summarize(const Knob& k) {
  Summary s;
  const auto n = static_cast<double>(k.heads.size());
  for (const HeadStats& h : k.heads) {
    const double rel = h.error.relative(), recall = h.rows ? h.recall / h.rows : 1.0;
    s.mean_error += rel / n;
    if (!(rel <= s.worst_error)) s.worst_error = rel;
    if (!(h.error.worst_row <= s.worst_row)) s.worst_row = h.error.worst_row;
    s.mean_recall += recall / n;
    s.min_recall = std::min(s.min_recall, recall);
    s.mean_mass += (h.rows ? h.mass / h.rows : 1.0) / n;
    s.min_mass = std::min(s.min_mass, h.rows ? h.min_mass : 1.0);
  }
  return s;
}

bool meets(const Summary& s, const ActivationArgs& a) {
  return s.worst_error <= a.max_error && s.min_recall >= a.min_recall;
}

nlohmann::json knob_json(const Knob& k) {
  const Summary s = summarize(k);
  nlohmann::json heads = nlohmann::json::array();
  for (const HeadStats& h : k.heads) {
    heads.push_back({{"rel_error", h.error.relative()},
                     {"worst_row_error", h.error.worst_row},
                     {"recall", h.rows ? h.recall / h.rows : 1.0},
                     {"mass", h.rows ? h.mass / h.rows : 1.0},
                     {"min_mass", h.rows ? h.min_mass : 1.0}});
  }
  return {{"variant", k.variant},
          {"knob", k.value},
          {"label", k.label},
          {"bytes", k.bytes},
          {"summary",
           {{"mean_error", s.mean_error},
            {"worst_head_error", s.worst_error},
            {"worst_row_error", s.worst_row},
            {"mean_recall", s.mean_recall},
            {"min_head_recall", s.min_recall},
            {"mean_mass", s.mean_mass},
            {"min_row_mass", s.min_mass}}},
          {"heads", heads}};
}

// Powers of two up to Lk / 2, the largest eight.
std::vector<int64_t> default_ks(int64_t lk) {
  std::vector<int64_t> ks;
  for (int64_t k = 1; k <= lk / 2; k *= 2) ks.push_back(k);
  if (ks.size() > 8) ks.erase(ks.begin(), ks.end() - 8);
  return ks;
}

class Progress {
 public:
  void operator()(const std::string& what) const {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "[fidelity %6.1f s] %s\n", s, what.c_str());
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// Gathers [batch, Hkv, Lk, D] keys into [Hkv, batch * Lk, D] (the samples calibrate reads).
std::vector<float> keys_by_head(const float* k, int64_t batch, int64_t hkv, int64_t lk, int64_t d) {
  std::vector<float> out(static_cast<size_t>(batch * hkv * lk * d));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < hkv; ++g) {
      std::copy_n(k + ((b * hkv + g) * lk) * d, lk * d, out.begin() + ((g * batch + b) * lk) * d);
    }
  }
  return out;
}

struct LokiSetup {
  std::vector<float> basis, k_rot;
  nlohmann::json variance;  // per head: share at every r, evaluated (and calibration) keys
};

// The layer's Loki basis (given, or calibrated on the other batches) and the rotated keys.
LokiSetup prepare_loki(const Layer& L, const float* given_basis, const float* calib_k,
                       int64_t calib_batch) {
  LokiSetup s;
  const int64_t d = L.d;
  s.basis.resize(static_cast<size_t>(L.hkv * d * d));
  std::vector<float> calib_share;
#if HATTN_HAS_LOKI_PREP
  if (given_basis != nullptr) {
    std::copy_n(given_basis, s.basis.size(), s.basis.begin());
  } else {
    std::vector<float> keys = keys_by_head(calib_k, calib_batch, L.hkv, L.lk, d), ratio(L.hkv * d);
    const std::vector<int64_t> shape = {L.hkv, calib_batch * L.lk, d};
    check(hattn::loki_calibrate(hattn::TensorView::contiguous(keys.data(), shape),
                                hattn::TensorView::contiguous(s.basis.data(), {L.hkv, d, d}),
                                hattn::TensorView::contiguous(ratio.data(), {L.hkv, d})));
    calib_share.resize(ratio.size());
    check(hattn::loki_captured_variance(
        hattn::TensorView::contiguous(keys.data(), shape),
        hattn::TensorView::contiguous(s.basis.data(), {L.hkv, d, d}),
        hattn::TensorView::contiguous(calib_share.data(), {L.hkv, d})));
  }
  const hattn::TensorView basis = hattn::TensorView::contiguous(s.basis.data(), {L.hkv, d, d});
  s.k_rot.resize(static_cast<size_t>(elements(L.kv_shape())));
  check(hattn::loki_rotate(hattn::TensorView::contiguous(L.k, L.kv_shape()), basis,
                           hattn::TensorView::contiguous(s.k_rot.data(), L.kv_shape())));
#else
  (void)given_basis;
  (void)calib_k;
  (void)calib_batch;
  die(1,
      "loki fidelity needs Loki's calibration and rotation (hattn_loki_prep), which this "
      "build lacks (no LAPACKE when it was configured)");
#endif
  std::vector<float> keys = keys_by_head(L.k, L.batch, L.hkv, L.lk, d), share(L.hkv * d);
  check(hattn::loki_captured_variance(
      hattn::TensorView::contiguous(keys.data(), {L.hkv, L.batch * L.lk, d}),
      hattn::TensorView::contiguous(s.basis.data(), {L.hkv, d, d}),
      hattn::TensorView::contiguous(share.data(), {L.hkv, d})));
  s.variance = nlohmann::json::array();
  for (int64_t g = 0; g < L.hkv; ++g) {
    nlohmann::json h = {
        {"evaluated", std::vector<float>(share.begin() + g * d, share.begin() + (g + 1) * d)}};
    if (!calib_share.empty()) {
      h["calibration"] =
          std::vector<float>(calib_share.begin() + g * d, calib_share.begin() + (g + 1) * d);
    }
    s.variance.push_back(h);
  }
  return s;
}

std::string sci(double x) {
  char t[32];
  std::snprintf(t, sizeof t, "%.2e", x);
  return t;
}

// "topk k=32 (bytes 0.53, worst head error 1.2e-02)", or what came closest when nothing met the
// targets. `knobs` are one variant's, in increasing bytes.
std::string recommend(const std::vector<const Knob*>& knobs, const ActivationArgs& a,
                      nlohmann::json* out) {
  const Knob* best = nullptr;
  for (const Knob* k : knobs) {
    const Summary s = summarize(*k);
    if (meets(s, a)) {
      *out = {{"knob", k->value}, {"label", k->label}, {"bytes", k->bytes}, {"met", true}};
      return k->label + " (bytes " + std::to_string(k->bytes).substr(0, 5) + ", worst head error " +
             sci(s.worst_error) + ")";
    }
    if (best == nullptr || s.worst_error < summarize(*best).worst_error) best = k;
  }
  if (best == nullptr) return "no knob in the grid";
  *out = {{"knob", best->value}, {"label", best->label}, {"met", false}};
  return "none in the grid (closest: " + best->label + ", worst head error " +
         sci(summarize(*best).worst_error) + ")";
}

void print_knob(const Knob& k) {
  const Summary s = summarize(k);
  std::printf("%-8s %-22s %6.3f %11s %11s %11s %8.4f %8.4f %8.4f %8.4f\n", k.variant.c_str(),
              k.label.c_str(), k.bytes, sci(s.mean_error).c_str(), sci(s.worst_error).c_str(),
              sci(s.worst_row).c_str(), s.mean_recall, s.min_recall, s.mean_mass, s.min_mass);
}

// One variant's knobs, in increasing bytes (stable: grid order among equals).
std::vector<const Knob*> by_bytes(const std::vector<Knob>& knobs, const char* variant) {
  std::vector<const Knob*> mine;
  for (const Knob& k : knobs) {
    if (k.variant == variant) mine.push_back(&k);
  }
  std::stable_sort(mine.begin(), mine.end(),
                   [](const Knob* x, const Knob* y) { return x->bytes < y->bytes; });
  return mine;
}

// "loki basis: variance of the evaluated keys in the leading r axes: r=4 mean 71.2% (lowest head
// 60.1%), ...", per d_f of the grid.
void print_loki_variance(const nlohmann::json& heads, const std::vector<double>& dfs, int64_t d) {
  std::printf("loki basis, share of the evaluated keys' variance in the leading r axes:");
  for (double f : dfs) {
    const int64_t r = std::max<int64_t>(1, std::llround(f * static_cast<double>(d)));
    double mean = 0, low = 1;
    for (const nlohmann::json& h : heads) {
      const double x = h["evaluated"][static_cast<size_t>(r - 1)].get<double>();
      mean += x / static_cast<double>(heads.size());
      low = std::min(low, x);
    }
    std::printf(" r=%lld mean %.1f%% (lowest head %.1f%%)", static_cast<long long>(r), 100 * mean,
                100 * low);
  }
  std::printf("\n");
}

int run_activations(const ActivationArgs& a) {
  if (a.threads > 0) hattn::set_num_threads(a.threads);
  if (a.rows < 1) die(2, "--rows must be >= 1, got " + std::to_string(a.rows));
  if (!(a.max_error > 0)) die(2, "--max-error must be > 0");
  if (!(a.min_recall >= 0 && a.min_recall <= 1)) die(2, "--min-recall must be in [0, 1]");
  if (a.sparsek_window < 0) die(2, "--sparsek-window must be >= 0");
  for (int64_t k : a.topk)
    if (k < 1) die(2, "--topk values must be >= 1, got " + std::to_string(k));
  for (int64_t k : a.sparsek_k) {
    if (k < 0) die(2, "--sparsek-k values must be >= 0, got " + std::to_string(k));
  }
  for (double f : a.loki_d_f)
    if (!(f > 0 && f <= 1)) die(2, "--loki-d-f values must be in (0, 1]");
  for (double f : a.loki_k_f)
    if (!(f > 0 && f <= 1)) die(2, "--loki-k-f values must be in (0, 1]");
  const PerLayer q = load_layers(a.q, "q", 4, "[B, Hq, Lq, D]");
  const PerLayer k = load_layers(a.k, "k", 4, "[B, Hkv, Lk, D]");
  const PerLayer v = load_layers(a.v, "v", 4, "[B, Hkv, Lk, D]");
  PerLayer u;
  if (!a.u.empty()) u = load_layers(a.u, "u", 3, "[B, Hkv, Lk]");
  const size_t layers = q.data.size();
  if (k.data.size() != layers || v.data.size() != layers ||
      (!a.u.empty() && u.data.size() != layers)) {
    die(1, "--q, --k and --v" + std::string(a.u.empty() ? "" : " and --u") +
               " must hold the same number of layers, got " + std::to_string(layers) + ", " +
               std::to_string(k.data.size()) + ", " + std::to_string(v.data.size()) +
               (a.u.empty() ? "" : ", " + std::to_string(u.data.size())));
  }
  int64_t min_lk = INT64_MAX;
  for (size_t l = 0; l < layers; ++l) {
    const std::vector<int64_t>&qs = q.shapes[l], &ks = k.shapes[l];
    const std::string where = "layer " + std::to_string(l) + ": ";
    if (k.shapes[l] != v.shapes[l]) {
      die(1, where + "k " + shape_text(ks) + " and v " + shape_text(v.shapes[l]) + " differ");
    }
    if (qs[0] != ks[0] || qs[3] != ks[3] || qs[1] % ks[1] != 0) {
      die(1, where + "q " + shape_text(qs) + " does not fit k " + shape_text(ks) +
                 ": B and D must match and Hq be a multiple of Hkv");
    }
    if (!a.u.empty() && u.shapes[l] != std::vector<int64_t>{ks[0], ks[1], ks[2]}) {
      die(1, where + "u " + shape_text(u.shapes[l]) +
                 " must be [B, Hkv, Lk] = " + shape_text({ks[0], ks[1], ks[2]}));
    }
    min_lk = std::min(min_lk, ks[2]);
  }

  // Variants: as asked, or every one these inputs allow.
  std::vector<std::string> variants = a.variants;
  if (variants.empty()) {
    variants.push_back("topk");
#if HATTN_HAS_LOKI_PREP
    variants.push_back("loki");
#else
    if (a.basis.empty()) {
      std::printf("loki: left out: this build has no LAPACKE to calibrate a basis\n");
    }
#endif
    if (!a.u.empty()) {
      variants.push_back("sparsek");
    } else {
      std::printf("sparsek: left out: it needs its scoring network's key scores (--u)\n");
    }
  }
  bool want[3] = {false, false, false};
  const char* const kNames[3] = {"topk", "loki", "sparsek"};
  for (const std::string& name : variants) {
    const auto it = std::find(std::begin(kNames), std::end(kNames), name);
    if (it == std::end(kNames))
      die(2, "--variants: unknown variant '" + name + "' (topk, loki, sparsek)");
    want[it - std::begin(kNames)] = true;
  }
  if (want[2] && a.u.empty()) {
    die(2,
        "sparsek needs the key scores u [B, Hkv, Lk] of its scoring network (--u; "
        "hattn::sparsek_scores computes them from the layer input)");
  }
  if (want[2] && !a.causal) {
    die(2,
        "sparsek attends to past keys only: add --causal to compare it (and the other "
        "variants) with causal dense attention");
  }

  // Loki's basis: given (one per layer), or calibrated on the first half of the batch, every
  // variant then evaluated on the other half.
  hattn::npy::Array basis_file;
  if (want[1] && !a.basis.empty()) {
    std::string error;
    if (!hattn::npy::read_f32(a.basis, &basis_file, &error)) die(1, error);
    const std::vector<int64_t>& bs = basis_file.shape;
    const bool per_layer = bs.size() == 4;
    if (!(bs.size() == 3 && layers == 1) && !(per_layer && bs[0] == static_cast<int64_t>(layers))) {
      die(1, a.basis + ": basis must be [L, Hkv, D, D] with L = " + std::to_string(layers) +
                 " layers (or [Hkv, D, D] for one layer), got " + shape_text(bs));
    }
    for (size_t l = 0; l < layers; ++l) {
      const std::vector<int64_t> want_shape = {k.shapes[l][1], k.shapes[l][3], k.shapes[l][3]};
      if (std::vector<int64_t>(bs.end() - 3, bs.end()) != want_shape) {
        die(1, a.basis + ": layer " + std::to_string(l) + " needs a basis [Hkv, D, D] = " +
                   shape_text(want_shape) + ", got " + shape_text(bs));
      }
    }
  }
  const int64_t batch = q.shapes[0][0];
  for (size_t l = 1; l < layers; ++l) {
    if (q.shapes[l][0] != batch) die(1, "every layer must hold the same batch B");
  }
  const bool calibrate = want[1] && a.basis.empty();
  if (calibrate && batch < 2) {
    die(2,
        "loki needs a basis: give --basis (hattn calibrate loki), or B >= 2 sequences so "
        "that the basis is calibrated on half of them and evaluated on the others");
  }
  const int64_t b0 = calibrate ? batch / 2 : 0, eval_batch = batch - b0;
  const double scale_given = a.scale;
  const std::vector<int64_t> topk_ks = a.topk.empty() ? default_ks(min_lk) : a.topk;
  const std::vector<int64_t> sparsek_ks = a.sparsek_k.empty() ? default_ks(min_lk) : a.sparsek_k;
  if ((want[0] && topk_ks.empty()) || (want[2] && sparsek_ks.empty())) {
    die(2, "Lk = " + std::to_string(min_lk) +
               " is too short for the default k grid; give --topk "
               "and --sparsek-k");
  }

  std::printf(
      "fidelity on %zu layer(s): batches [%lld, %lld) of %lld evaluated%s%s; recall and "
      "mass over <= %lld rows per (sequence, head); targets: worst head error <= %g%s\n",
      layers, static_cast<long long>(b0), static_cast<long long>(batch),
      static_cast<long long>(batch), calibrate ? " (Loki's basis calibrated on the others)" : "",
      a.causal ? ", causal" : "", static_cast<long long>(a.rows), a.max_error,
      a.min_recall > 0 ? (", min head recall >= " + std::to_string(a.min_recall)).c_str() : "");
  Progress progress;
  nlohmann::json layers_json = nlohmann::json::array();
  std::vector<std::vector<Knob>> all(layers);
  for (size_t l = 0; l < layers; ++l) {
    const std::vector<int64_t>&qs = q.shapes[l], &ks = k.shapes[l];
    const int64_t q_batch = qs[1] * qs[2] * qs[3], kv_batch = ks[1] * ks[2] * ks[3];
    const Layer L{eval_batch,
                  qs[1],
                  ks[1],
                  qs[2],
                  ks[2],
                  qs[3],
                  q.data[l] + b0 * q_batch,
                  k.data[l] + b0 * kv_batch,
                  v.data[l] + b0 * kv_batch,
                  a.u.empty() ? nullptr : u.data[l] + b0 * ks[1] * ks[2]};
    const double scale = scale_given > 0 ? scale_given : 1.0 / std::sqrt(static_cast<double>(L.d));
    const hattn::TensorView qv = hattn::TensorView::contiguous(L.q, L.q_shape()),
                            kv = hattn::TensorView::contiguous(L.k, L.kv_shape()),
                            vv = hattn::TensorView::contiguous(L.v, L.kv_shape());
    std::vector<float> dense(static_cast<size_t>(elements(L.q_shape()))), out(dense.size());
    const hattn::TensorView ov = hattn::TensorView::contiguous(out.data(), L.q_shape());
    {
      hattn::AttentionOptions opt;
      opt.causal = a.causal;
      set_scale(scale_given, &opt);
      check(hattn::attention(qv, kv, vv, hattn::TensorView::contiguous(dense.data(), L.q_shape()),
                             opt));
    }
    progress("layer " + std::to_string(l + 1) + "/" + std::to_string(layers) +
             ": dense done, sampling exact rows");
    const Sample sample = sample_rows(L, a.rows, a.causal, scale);
    std::vector<Knob>& knobs = all[l];
    const auto poison = [&] { std::fill(out.begin(), out.end(), NAN); };
    const int64_t group = L.hq / L.hkv;
    const auto n_rows = static_cast<int64_t>(sample.rows.size());
    if (want[0]) {
      for (int64_t kk : topk_ks) {
        hattn::TopkOptions opt;
        opt.k = kk;
        opt.causal = a.causal;
        set_scale(scale_given, &opt);
        poison();
        check(hattn::topk_attention(qv, kv, vv, ov, opt));
        Knob knob{"topk",
                  "k=" + std::to_string(kk),
                  {{"k", kk}},
                  (static_cast<double>(L.lk) + static_cast<double>(std::min(kk, L.lk))) /
                      (2.0 * static_cast<double>(L.lk)),
                  {}};
        measure(
            L, sample, a.causal, out, dense,
            [&](const RowRef& r) {  // the exact top-k: recall 1 by construction
              std::vector<int32_t> sel;
              for (size_t j = 0; j < r.exact.rank.size(); ++j) {
                if (r.exact.rank[j] < kk) sel.push_back(static_cast<int32_t>(j));
              }
              return sel;
            },
            &knob);
        knobs.push_back(std::move(knob));
      }
      progress("layer " + std::to_string(l + 1) + ": topk done");
    }
    nlohmann::json layer_json = {{"layer", l},      {"batch_evaluated", L.batch},
                                 {"q_heads", L.hq}, {"kv_heads", L.hkv},
                                 {"lq", L.lq},      {"lk", L.lk},
                                 {"head_dim", L.d}, {"sampled_rows", sample.rows}};
    if (want[1]) {
      const LokiSetup loki = prepare_loki(
          L,
          basis_file.data.empty()
              ? nullptr
              : basis_file.data.data() + (basis_file.shape.size() == 4 ? l * L.hkv * L.d * L.d : 0),
          k.data[l], b0);
      layer_json["loki_variance"] = loki.variance;
      const hattn::TensorView krot = hattn::TensorView::contiguous(loki.k_rot.data(), L.kv_shape());
      const hattn::TensorView bv =
          hattn::TensorView::contiguous(loki.basis.data(), {L.hkv, L.d, L.d});
      // Each sampled query in its kv head's basis, qh = q P, for the approximate scores.
      std::vector<std::vector<double>> qh;
      for (int64_t b = 0; b < L.batch; ++b) {
        for (int64_t h = 0; h < L.hq; ++h) {
          const float* p = loki.basis.data() + (h / group) * L.d * L.d;
          for (int64_t row : sample.rows) {
            const float* qr = L.q + ((b * L.hq + h) * L.lq + row) * L.d;
            std::vector<double> x(static_cast<size_t>(L.d), 0.0);
            for (int64_t e = 0; e < L.d; ++e) {
              for (int64_t c = 0; c < L.d; ++c) x[c] += static_cast<double>(qr[e]) * p[e * L.d + c];
            }
            qh.push_back(std::move(x));
          }
        }
      }
      for (double d_f : a.loki_d_f) {
        for (double k_f : a.loki_k_f) {
          hattn::LokiOptions opt;
          opt.rank_fraction = d_f;
          opt.k_fraction = k_f;
          opt.causal = a.causal;
          set_scale(scale_given, &opt);
          poison();
          check(hattn::loki_attention(qv, krot, vv, bv, ov, opt));
          const int64_t r = std::max<int64_t>(1, std::llround(d_f * static_cast<double>(L.d)));
          const int64_t kk = std::max<int64_t>(1, std::llround(k_f * static_cast<double>(L.lk)));
          char label[64];
          std::snprintf(label, sizeof label, "d_f=%g k_f=%g", d_f, k_f);
          Knob knob{"loki",
                    label,
                    {{"d_f", d_f}, {"k_f", k_f}, {"r", r}, {"k", kk}},
                    (static_cast<double>(r) / static_cast<double>(L.d) * static_cast<double>(L.lk) +
                     2.0 * static_cast<double>(std::min(kk, L.lk))) /
                        (2.0 * static_cast<double>(L.lk)),
                    {}};
          measure(
              L, sample, a.causal, out, dense,
              [&](const RowRef& x) {
                const float* kr = loki.k_rot.data() + ((x.b * L.hkv + x.h / group) * L.lk) * L.d;
                const size_t at = static_cast<size_t>((x.b * L.hq + x.h) * n_rows + x.n);
                return loki_selection(qh[at], kr, L.d, x.visible, r, kk);
              },
              &knob);
          knobs.push_back(std::move(knob));
        }
      }
      progress("layer " + std::to_string(l + 1) + ": loki done");
    }
    if (want[2]) {
      const hattn::TensorView uv = hattn::TensorView::contiguous(L.u, {L.batch, L.hkv, L.lk});
      for (int64_t kk : sparsek_ks) {
        hattn::SparsekOptions opt;
        opt.k = kk;
        opt.window = a.sparsek_window;
        set_scale(scale_given, &opt);
        poison();
        check(hattn::sparsek_attention_scored(qv, kv, vv, uv, ov, opt));
        Knob knob{
            "sparsek",
            "k=" + std::to_string(kk) + " w=" + std::to_string(a.sparsek_window),
            {{"k", kk}, {"window", a.sparsek_window}},
            std::min(1.0, static_cast<double>(kk + a.sparsek_window) / static_cast<double>(L.lk)),
            {}};
        measure(
            L, sample, a.causal, out, dense,
            [&](const RowRef& x) {
              std::vector<int32_t> sel;
              check(sparsek_selection(L.u + (x.b * L.hkv + x.h / group) * L.lk, x.row + L.lk - L.lq,
                                      kk, a.sparsek_window, &sel));
              return sel;
            },
            &knob);
        knobs.push_back(std::move(knob));
      }
      progress("layer " + std::to_string(l + 1) + ": sparsek done");
    }
    std::printf("\nlayer %zu: B=%lld Hq=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld\n", l,
                static_cast<long long>(L.batch), static_cast<long long>(L.hq),
                static_cast<long long>(L.hkv), static_cast<long long>(L.lq),
                static_cast<long long>(L.lk), static_cast<long long>(L.d));
    if (want[1]) print_loki_variance(layer_json["loki_variance"], a.loki_d_f, L.d);
    std::printf("%-8s %-22s %6s %11s %11s %11s %8s %8s %8s %8s\n", "variant", "knob", "bytes",
                "err mean", "err worst", "worst row", "recall", "min head", "mass", "min row");
    nlohmann::json results = nlohmann::json::array(), rec = nlohmann::json::object();
    for (const Knob& kn : knobs) {
      print_knob(kn);
      results.push_back(knob_json(kn));
    }
    std::string line;
    for (const char* name : kNames) {
      const std::vector<const Knob*> mine = by_bytes(knobs, name);
      if (mine.empty()) continue;
      nlohmann::json r;
      line += std::string(line.empty() ? "" : "; ") + name + " " + recommend(mine, a, &r);
      rec[name] = r;
    }
    std::printf("recommended: %s\n", line.c_str());
    layer_json["results"] = results;
    layer_json["recommendation"] = rec;
    layers_json.push_back(layer_json);
  }

  // One knob for the whole model: the cheapest that meets the targets in every layer.
  nlohmann::json model_rec = nlohmann::json::object();
  std::string line;
  for (const char* name : kNames) {
    const std::vector<const Knob*> first = by_bytes(all[0], name);
    if (first.empty()) continue;
    nlohmann::json r = {{"met", false}};
    std::string text = "none in the grid meets the targets in every layer";
    for (const Knob* cand : first) {
      bool ok = true;
      for (size_t l = 0; l < layers && ok; ++l) {
        for (const Knob& kn : all[l]) {
          if (kn.variant == name && kn.label == cand->label) ok = meets(summarize(kn), a);
        }
      }
      if (ok) {
        r = {{"knob", cand->value}, {"label", cand->label}, {"met", true}};
        text = cand->label;
        break;
      }
    }
    model_rec[name] = r;
    line += std::string(line.empty() ? "" : "; ") + name + " " + text;
  }
  std::printf("\nrecommended for every layer: %s\n", line.c_str());
  if (!a.json.empty()) {
    nlohmann::json report = {
        {"inputs", {{"q", a.q}, {"k", a.k}, {"v", a.v}, {"u", a.u}, {"basis", a.basis}}},
        {"causal", a.causal},
        {"batch", batch},
        {"evaluated_batches", {b0, batch}},
        {"basis_calibrated_here", calibrate},
        {"targets", {{"max_error", a.max_error}, {"min_recall", a.min_recall}}},
        {"layers", layers_json},
        {"recommendation", model_rec}};
    write_json(a.json, report);
    std::printf("wrote %s (plot it: python3 scripts/plot_fidelity.py %s out.png)\n", a.json.c_str(),
                a.json.c_str());
  }
  return 0;
}

}  // namespace

Action add_fidelity_activations(CLI::App* fidelity) {
  static ActivationArgs a;
  CLI::App* c = fidelity->add_subcommand(
      "activations", "topk, Loki and SPARSEK against dense on your model's own Q, K, V");
  const char* per_layer = "one file per layer, or one file with a leading layer axis";
  c->add_option("--q", a.q, std::string("queries [B, Hq, Lq, D] float32 .npy: ") + per_layer)
      ->required()
      ->delimiter(',');
  c->add_option("--k", a.k, "keys [B, Hkv, Lk, D], as --q")->required()->delimiter(',');
  c->add_option("--v", a.v, "values [B, Hkv, Lk, D], as --q")->required()->delimiter(',');
  c->add_option("--u", a.u, "SPARSEK key scores [B, Hkv, Lk] (its scoring network's), as --q")
      ->delimiter(',');
  c->add_option("--basis", a.basis,
                "Loki basis [L, Hkv, D, D] from hattn calibrate loki (default: calibrated on "
                "the first half of the batch, every variant evaluated on the second)");
  c->add_option("--variants", a.variants, "topk,loki,sparsek (default: each the inputs allow)")
      ->delimiter(',');
  c->add_option("--topk", a.topk, "k grid (default: powers of two up to Lk/2, the largest 8)")
      ->delimiter(',');
  c->add_option("--loki-d-f", a.loki_d_f, "Loki d_f grid (default 0.125,0.25,0.5)")->delimiter(',');
  c->add_option("--loki-k-f", a.loki_k_f, "Loki k_f grid (default 0.125,0.25,0.5)")->delimiter(',');
  c->add_option("--sparsek-k", a.sparsek_k, "SPARSEK budget grid (default as --topk)")
      ->delimiter(',');
  c->add_option("--sparsek-window", a.sparsek_window, "SPARSEK window w (default 0)");
  c->add_flag("--causal", a.causal, "causal mask (decoders; SPARSEK needs it)");
  c->add_option("--scale", a.scale, "softmax scale (default 1/sqrt(D))")
      ->check(CLI::PositiveNumber);
  c->add_option("--rows", a.rows,
                "query rows per (sequence, head) for recall and mass (default 64, evenly spaced, "
                "the last row included)");
  c->add_option("--max-error", a.max_error,
                "recommendation target: worst head's relative output error (default 0.05)");
  c->add_option("--min-recall", a.min_recall,
                "recommendation target: worst head's mean top-k recall (default 0: none)");
  c->add_option("--json", a.json, "JSON report to write (scripts/plot_fidelity.py plots it)");
  c->add_option("--threads", a.threads, "worker threads")->check(CLI::NonNegativeNumber);
  return [c]() { return *c ? run_activations(a) : -1; };
}

}  // namespace hattn_cli
