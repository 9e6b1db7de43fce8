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
#include "fidelity_report.h"
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
    calib_share = cumulative_shares(ratio, d);
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

// The validated inputs: every layer's tensors, the variants to run and their grids.
struct Inputs {
  PerLayer q, k, v, u;
  hattn::npy::Array basis;  // given Loki basis [L, Hkv, D, D] or [Hkv, D, D] (empty: calibrate)
  bool topk = false, loki = false, sparsek = false;
  int64_t batch = 0, b0 = 0;  // sequences [b0, batch) are evaluated; [0, b0) calibrate Loki
  std::vector<int64_t> topk_ks, sparsek_ks;
  size_t layers() const { return q.data.size(); }
};

void check_grids(const ActivationArgs& a) {
  if (a.rows < 1) die(2, "--rows must be >= 1, got " + std::to_string(a.rows));
  if (!(a.max_error > 0)) die(2, "--max-error must be > 0");
  if (!(a.min_recall >= 0 && a.min_recall <= 1)) die(2, "--min-recall must be in [0, 1]");
  if (a.sparsek_window < 0) die(2, "--sparsek-window must be >= 0");
  for (int64_t k : a.topk) {
    if (k < 1) die(2, "--topk values must be >= 1, got " + std::to_string(k));
  }
  for (int64_t k : a.sparsek_k) {
    if (k < 0) die(2, "--sparsek-k values must be >= 0, got " + std::to_string(k));
  }
  for (const std::vector<double>* grid : {&a.loki_d_f, &a.loki_k_f}) {
    for (double f : *grid) {
      if (!(f > 0 && f <= 1)) die(2, "--loki-d-f and --loki-k-f values must be in (0, 1]");
    }
  }
}

// Variants: as asked, or every one these inputs allow (saying what is left out and why).
void choose_variants(const ActivationArgs& a, Inputs* in) {
  std::vector<std::string> variants = a.variants;
  if (variants.empty()) {
    variants.push_back("topk");
#if HATTN_HAS_LOKI_PREP
    variants.push_back("loki");
#else
    std::printf("loki: left out: this build has no LAPACKE (Loki's calibration and rotation)\n");
#endif
    if (!a.u.empty()) {
      variants.push_back("sparsek");
    } else {
      std::printf("sparsek: left out: it needs its scoring network's key scores (--u)\n");
    }
  }
  for (const std::string& name : variants) {
    bool* flag = name == "topk"      ? &in->topk
                 : name == "loki"    ? &in->loki
                 : name == "sparsek" ? &in->sparsek
                                     : nullptr;
    if (flag == nullptr) die(2, "--variants: unknown variant '" + name + "' (topk, loki, sparsek)");
    *flag = true;
  }
  if (in->sparsek && a.u.empty()) {
    die(2,
        "sparsek needs the key scores u [B, Hkv, Lk] of its scoring network (--u; "
        "hattn::sparsek_scores computes them from the layer input)");
  }
  if (in->sparsek && !a.causal) {
    die(2,
        "sparsek attends to past keys only: add --causal to compare it (and the other "
        "variants) with causal dense attention");
  }
}

Inputs load_inputs(const ActivationArgs& a) {
  check_grids(a);
  Inputs in;
  choose_variants(a, &in);
  in.q = load_layers(a.q, "q", 4, "[B, Hq, Lq, D]");
  in.k = load_layers(a.k, "k", 4, "[B, Hkv, Lk, D]");
  in.v = load_layers(a.v, "v", 4, "[B, Hkv, Lk, D]");
  if (!a.u.empty()) in.u = load_layers(a.u, "u", 3, "[B, Hkv, Lk]");
  const size_t layers = in.layers();
  if (in.k.data.size() != layers || in.v.data.size() != layers ||
      (!a.u.empty() && in.u.data.size() != layers)) {
    die(1, "--q, --k and --v" + std::string(a.u.empty() ? "" : " and --u") +
               " must hold the same number of layers, got " + std::to_string(layers) + ", " +
               std::to_string(in.k.data.size()) + ", " + std::to_string(in.v.data.size()) +
               (a.u.empty() ? "" : ", " + std::to_string(in.u.data.size())));
  }
  in.batch = in.q.shapes[0][0];
  int64_t min_lk = INT64_MAX;
  for (size_t l = 0; l < layers; ++l) {
    const std::vector<int64_t>&qs = in.q.shapes[l], &ks = in.k.shapes[l];
    const std::string where = "layer " + std::to_string(l) + ": ";
    if (ks != in.v.shapes[l]) {
      die(1, where + "k " + shape_text(ks) + " and v " + shape_text(in.v.shapes[l]) + " differ");
    }
    if (qs[0] != ks[0] || qs[3] != ks[3] || qs[1] % ks[1] != 0) {
      die(1, where + "q " + shape_text(qs) + " does not fit k " + shape_text(ks) +
                 ": B and D must match and Hq be a multiple of Hkv");
    }
    if (qs[0] != in.batch) die(1, where + "every layer must hold the same batch B");
    if (!a.u.empty() && in.u.shapes[l] != std::vector<int64_t>{ks[0], ks[1], ks[2]}) {
      die(1, where + "u " + shape_text(in.u.shapes[l]) +
                 " must be [B, Hkv, Lk] = " + shape_text({ks[0], ks[1], ks[2]}));
    }
    min_lk = std::min(min_lk, ks[2]);
  }
  // Loki's basis: given (one per layer), or calibrated on the first half of the batch, every
  // variant then evaluated on the other half.
  if (in.loki && !a.basis.empty()) {
    std::string error;
    if (!hattn::npy::read_f32(a.basis, &in.basis, &error)) die(1, error);
    const std::vector<int64_t>& bs = in.basis.shape;
    if (!(bs.size() == 3 && layers == 1) &&
        !(bs.size() == 4 && bs[0] == static_cast<int64_t>(layers))) {
      die(1, a.basis + ": basis must be [L, Hkv, D, D] with L = " + std::to_string(layers) +
                 " layers (or [Hkv, D, D] for one layer), got " + shape_text(bs));
    }
    for (size_t l = 0; l < layers; ++l) {
      const int64_t hkv = in.k.shapes[l][1], d = in.k.shapes[l][3];
      if (std::vector<int64_t>(bs.end() - 3, bs.end()) != std::vector<int64_t>{hkv, d, d}) {
        die(1, a.basis + ": layer " + std::to_string(l) + " needs a basis [Hkv, D, D] = " +
                   shape_text({hkv, d, d}) + ", got " + shape_text(bs));
      }
    }
  }
  if (in.loki && a.basis.empty()) {
    if (in.batch < 2) {
      die(2,
          "loki needs a basis: give --basis (hattn calibrate loki), or B >= 2 sequences so "
          "that the basis is calibrated on half of them and evaluated on the others");
    }
    in.b0 = in.batch / 2;
  }
  in.topk_ks = a.topk.empty() ? default_ks(min_lk) : a.topk;
  in.sparsek_ks = a.sparsek_k.empty() ? default_ks(min_lk) : a.sparsek_k;
  if ((in.topk && in.topk_ks.empty()) || (in.sparsek && in.sparsek_ks.empty())) {
    die(2, "Lk = " + std::to_string(min_lk) +
               " is too short for the default k grid; give --topk and --sparsek-k");
  }
  return in;
}

// What every variant's run on a layer shares: the inputs as views, dense's output, the sampled
// exact rows, and the output buffer each kernel writes (poisoned before each call).
struct LayerRun {
  const ActivationArgs& a;
  const Layer& L;
  hattn::TensorView q, k, v, out;
  const std::vector<float>& dense;
  std::vector<float>& out_data;
  const Sample& sample;
  int64_t group() const { return L.hq / L.hkv; }
  void poison() const { std::fill(out_data.begin(), out_data.end(), NAN); }
  void measure(const Selector& select, Knob* knob) const {
    hattn_cli::measure(L, sample, a.causal, out_data, dense, select, knob);
  }
};

void run_topk(const LayerRun& r, const std::vector<int64_t>& ks, std::vector<Knob>* knobs) {
  const double lk = static_cast<double>(r.L.lk);
  for (int64_t kk : ks) {
    hattn::TopkOptions opt;
    opt.k = kk;
    opt.causal = r.a.causal;
    set_scale(r.a.scale, &opt);
    r.poison();
    check(hattn::topk_attention(r.q, r.k, r.v, r.out, opt));
    // Reads every key for the scores, then the k kept values.
    Knob knob{"topk",
              "k=" + std::to_string(kk),
              {{"k", kk}},
              (lk + static_cast<double>(std::min(kk, r.L.lk))) / (2 * lk),
              {}};
    r.measure(
        [&](const RowRef& x) {  // the exact top-k: recall 1 by construction
          std::vector<int32_t> sel;
          for (size_t j = 0; j < x.exact.rank.size(); ++j) {
            if (x.exact.rank[j] < kk) sel.push_back(static_cast<int32_t>(j));
          }
          return sel;
        },
        &knob);
    knobs->push_back(std::move(knob));
  }
}

void run_loki(const LayerRun& r, const LokiSetup& loki, std::vector<Knob>* knobs) {
  const Layer& L = r.L;
  const hattn::TensorView krot = hattn::TensorView::contiguous(loki.k_rot.data(), L.kv_shape());
  const hattn::TensorView basis =
      hattn::TensorView::contiguous(loki.basis.data(), {L.hkv, L.d, L.d});
  // Each sampled query in its kv head's basis, qh = q P, for the approximate scores.
  const auto n_rows = static_cast<int64_t>(r.sample.rows.size());
  std::vector<std::vector<double>> qh;
  for (int64_t b = 0; b < L.batch; ++b) {
    for (int64_t h = 0; h < L.hq; ++h) {
      const float* p = loki.basis.data() + (h / r.group()) * L.d * L.d;
      for (int64_t row : r.sample.rows) {
        const float* qr = L.q + ((b * L.hq + h) * L.lq + row) * L.d;
        std::vector<double> x(static_cast<size_t>(L.d), 0.0);
        for (int64_t e = 0; e < L.d; ++e) {
          for (int64_t c = 0; c < L.d; ++c) x[c] += static_cast<double>(qr[e]) * p[e * L.d + c];
        }
        qh.push_back(std::move(x));
      }
    }
  }
  for (double d_f : r.a.loki_d_f) {
    for (double k_f : r.a.loki_k_f) {
      hattn::LokiOptions opt;
      opt.rank_fraction = d_f;
      opt.k_fraction = k_f;
      opt.causal = r.a.causal;
      set_scale(r.a.scale, &opt);
      r.poison();
      check(hattn::loki_attention(r.q, krot, r.v, basis, r.out, opt));
      const int64_t rank = hattn::loki_count(d_f, L.d), kk = hattn::loki_count(k_f, L.lk);
      char label[64];
      std::snprintf(label, sizeof label, "d_f=%g k_f=%g", d_f, k_f);
      // Reads r of D channels of every key, then the k kept keys and values.
      const double lk = static_cast<double>(L.lk);
      Knob knob{"loki",
                label,
                {{"d_f", d_f}, {"k_f", k_f}, {"r", rank}, {"k", kk}},
                (static_cast<double>(rank) / static_cast<double>(L.d) * lk +
                 2.0 * static_cast<double>(std::min(kk, L.lk))) /
                    (2 * lk),
                {}};
      r.measure(
          [&](const RowRef& x) {
            const float* kr = loki.k_rot.data() + ((x.b * L.hkv + x.h / r.group()) * L.lk) * L.d;
            const size_t at = static_cast<size_t>((x.b * L.hq + x.h) * n_rows + x.n);
            return loki_selection(qh[at], kr, L.d, x.visible, rank, kk);
          },
          &knob);
      knobs->push_back(std::move(knob));
    }
  }
}

void run_sparsek(const LayerRun& r, const std::vector<int64_t>& ks, std::vector<Knob>* knobs) {
  const Layer& L = r.L;
  const int64_t w = r.a.sparsek_window;
  const hattn::TensorView u = hattn::TensorView::contiguous(L.u, {L.batch, L.hkv, L.lk});
  for (int64_t kk : ks) {
    hattn::SparsekOptions opt;
    opt.k = kk;
    opt.window = w;
    set_scale(r.a.scale, &opt);
    r.poison();
    check(hattn::sparsek_attention_scored(r.q, r.k, r.v, u, r.out, opt));
    // Reads the k selected and w window keys and values.
    Knob knob{"sparsek",
              "k=" + std::to_string(kk) + " w=" + std::to_string(w),
              {{"k", kk}, {"window", w}},
              std::min(1.0, static_cast<double>(kk + w) / static_cast<double>(L.lk)),
              {}};
    r.measure(
        [&](const RowRef& x) {
          std::vector<int32_t> sel;
          check(sparsek_selection(L.u + (x.b * L.hkv + x.h / r.group()) * L.lk, x.row + L.lk - L.lq,
                                  kk, w, &sel));
          return sel;
        },
        &knob);
    knobs->push_back(std::move(knob));
  }
}

// One layer: dense, then each variant's grid; prints the layer's table and returns its JSON.
nlohmann::json evaluate_layer(const ActivationArgs& a, const Inputs& in, size_t l,
                              const Progress& progress, std::vector<Knob>* knobs) {
  const std::vector<int64_t>&qs = in.q.shapes[l], &ks = in.k.shapes[l];
  const int64_t b0 = in.b0, q_seq = qs[1] * qs[2] * qs[3], kv_seq = ks[1] * ks[2] * ks[3];
  const Layer L{in.batch - b0,
                qs[1],
                ks[1],
                qs[2],
                ks[2],
                qs[3],
                in.q.data[l] + b0 * q_seq,
                in.k.data[l] + b0 * kv_seq,
                in.v.data[l] + b0 * kv_seq,
                in.u.data.empty() ? nullptr : in.u.data[l] + b0 * ks[1] * ks[2]};
  const std::string name = "layer " + std::to_string(l + 1) + "/" + std::to_string(in.layers());
  const hattn::TensorView qv = hattn::TensorView::contiguous(L.q, L.q_shape()),
                          kv = hattn::TensorView::contiguous(L.k, L.kv_shape()),
                          vv = hattn::TensorView::contiguous(L.v, L.kv_shape());
  std::vector<float> dense(static_cast<size_t>(elements(L.q_shape()))), out(dense.size());
  hattn::AttentionOptions opt;
  opt.causal = a.causal;
  set_scale(a.scale, &opt);
  check(
      hattn::attention(qv, kv, vv, hattn::TensorView::contiguous(dense.data(), L.q_shape()), opt));
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(L.d));
  const Sample sample = sample_rows(L, a.rows, a.causal, scale);
  progress(name + ": dense and " + std::to_string(sample.exact.size()) + " exact rows");
  const LayerRun run{
      a, L, qv, kv, vv, hattn::TensorView::contiguous(out.data(), L.q_shape()), dense, out, sample};
  nlohmann::json layer = {{"layer", l},      {"batch_evaluated", L.batch},
                          {"q_heads", L.hq}, {"kv_heads", L.hkv},
                          {"lq", L.lq},      {"lk", L.lk},
                          {"head_dim", L.d}, {"sampled_rows", sample.rows}};
  if (in.topk) {
    run_topk(run, in.topk_ks, knobs);
    progress(name + ": topk");
  }
  if (in.loki) {
    const float* given = nullptr;
    if (!in.basis.data.empty()) {
      given = in.basis.data.data() + (in.basis.shape.size() == 4 ? l * L.hkv * L.d * L.d : 0);
    }
    const LokiSetup loki = prepare_loki(L, given, in.k.data[l], b0);
    layer["loki_variance"] = loki.variance;
    run_loki(run, loki, knobs);
    progress(name + ": loki");
  }
  if (in.sparsek) {
    run_sparsek(run, in.sparsek_ks, knobs);
    progress(name + ": sparsek");
  }
  std::printf("\nlayer %zu: B=%lld Hq=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld\n", l,
              static_cast<long long>(L.batch), static_cast<long long>(L.hq),
              static_cast<long long>(L.hkv), static_cast<long long>(L.lq),
              static_cast<long long>(L.lk), static_cast<long long>(L.d));
  if (in.loki) print_loki_variance(layer["loki_variance"], a.loki_d_f, L.d);
  print_knobs(*knobs);
  nlohmann::json results = nlohmann::json::array(), rec;
  for (const Knob& k : *knobs) results.push_back(knob_json(k));
  std::printf("recommended: %s\n",
              recommend_layer(*knobs, {a.max_error, a.min_recall}, &rec).c_str());
  layer["results"] = results;
  layer["recommendation"] = rec;
  return layer;
}

int run_activations(const ActivationArgs& a) {
  if (a.threads > 0) hattn::set_num_threads(a.threads);
  const Inputs in = load_inputs(a);
  const size_t layers = in.layers();
  std::printf(
      "fidelity on %zu layer(s): sequences [%lld, %lld) of %lld evaluated%s%s; recall and mass "
      "over <= %lld rows per (sequence, head); targets: worst head error <= %g%s\n",
      layers, static_cast<long long>(in.b0), static_cast<long long>(in.batch),
      static_cast<long long>(in.batch), in.b0 > 0 ? " (Loki's basis calibrated on the others)" : "",
      a.causal ? ", causal" : "", static_cast<long long>(a.rows), a.max_error,
      a.min_recall > 0 ? (", min head recall >= " + std::to_string(a.min_recall)).c_str() : "");
  const Progress progress;
  nlohmann::json layers_json = nlohmann::json::array();
  std::vector<std::vector<Knob>> knobs(layers);
  for (size_t l = 0; l < layers; ++l) {
    layers_json.push_back(evaluate_layer(a, in, l, progress, &knobs[l]));
  }
  nlohmann::json model_rec;
  const std::string line = recommend_model(knobs, {a.max_error, a.min_recall}, &model_rec);
  std::printf("\nrecommended for every layer: %s\n", line.c_str());
  if (!a.json.empty()) {
    const nlohmann::json report = {
        {"inputs", {{"q", a.q}, {"k", a.k}, {"v", a.v}, {"u", a.u}, {"basis", a.basis}}},
        {"causal", a.causal},
        {"batch", in.batch},
        {"evaluated_batches", {in.b0, in.batch}},
        {"basis_calibrated_here", in.b0 > 0},
        {"targets", {{"max_error", a.max_error}, {"min_recall", a.min_recall}}},
        {"layers", layers_json},
        {"recommendation", model_rec}};
    write_json(a.json, report);
    std::printf("wrote %s (plot it: .venv/bin/python scripts/plot_fidelity.py %s out.png)\n",
                a.json.c_str(), a.json.c_str());
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
