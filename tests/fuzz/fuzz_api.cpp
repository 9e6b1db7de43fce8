// libFuzzer target: the public API's validation layer and the kernels behind it, driven by fuzzed
// shapes, strides, offsets, ranks, dtypes, devices, pointers and option knobs over small real
// buffers.
//
// Every tensor of a call lives inside one arena (so the fuzzer can make outputs overlap inputs).
// The harness only ever passes views that either lie inside the arena or that the library must
// refuse without reading them (a view hattn cannot check, e.g. a pointer to memory that is not
// there, is the caller's responsibility: README "Guarantees"). Per call it checks:
//   * refused: a non-empty message, and not one byte of the arena changed;
//   * accepted: the output's elements all written, nothing else in the arena changed, no output
//     overlapping an input, and (finite inputs, moderate scale) the result matches the
//     double-precision reference of tests/reference.cpp (or, for a variant whose result is not
//     an elementwise function of a reference, satisfies its invariants: `Variant::verify`).
// A finding aborts with a line saying what was wrong.
//
// Variants: one entry each in kVariants below (an el or sparsek variant is one more entry: its
// tensors, its knobs and how to call it; see `Variant`). The SparseK operator (sparsek_mask) is
// one such entry, with its own draws (per-row lengths, rows built on the selection's boundaries)
// and its own invariants.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "reference.h"

namespace {

using hattn::Status;
using hattn::TensorView;

// The harness's own element loops (fills, copies, output scans) are bookkeeping, not code under
// test: without coverage instrumentation their comparisons are not traced (that tracing took
// half of the run time) and add no features that would steer the fuzzer.
#define HATTN_HARNESS_LOOP __attribute__((no_sanitize("coverage")))

constexpr size_t kArenaFloats = size_t{1} << 16;  // 256 KiB: every tensor of a call fits

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_api finding: %s: %s\n", what, detail.c_str());
  std::abort();
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
constexpr uint32_t kPoison = 0x7fa5a5a5u;  // a NaN payload no input ever holds

// The knobs every variant may read (each reads the ones it has).
struct Knobs {
  bool causal = false;
  bool has_scale = false;
  float scale = 0.f;
  int64_t k = 0;
  int64_t rank = 0;
  double rank_fraction = 0, k_fraction = 0;
  int decode_splits = 0;
  std::string kernel;
  bool check_finite = false;
  bool check_basis = true;
  bool use_lse = false;         // dense: the optional lse output
  bool use_lead = false;        // loki: the optional k_lead
  int64_t heads = 1, beam = 1;  // el
  int64_t window = 0;           // sparsek (k is its budget)
  float slope = 0.f;            // sparsek
  bool logit = false;           // sparsek: SparsekGate::logit
  // sparsek_mask (drawn by its `prepare`): lengths passed when has_lengths, and what each row of
  // z holds (a finding prints it).
  bool has_lengths = false;
  std::vector<int64_t> lengths;
  std::vector<std::string> row_kind;
};

// Logical sizes of one call (each variant maps them to its tensors).
struct Dims {
  int64_t b, hq, hkv, lq, lk, d, lead;
  int64_t dm, beam;  // el: model width, beams per sample (x has b * beam rows)
};

// One tensor of a call: its role name and its well-formed shape for `Dims`.
struct Role {
  const char* name;
  bool output;
  std::vector<int64_t> (*shape)(const Dims&);
  float amplitude = 1.f;      // inputs are uniform in [-2, 2) times this
  bool may_be_rank0 = false;  // an optional tensor given as rank 0 (el's biases: zero)
};

std::vector<int64_t> q_shape(const Dims& s) { return {s.b, s.hq, s.lq, s.d}; }
std::vector<int64_t> kv_shape(const Dims& s) { return {s.b, s.hkv, s.lk, s.d}; }
std::vector<int64_t> lse_shape(const Dims& s) { return {s.b, s.hq, s.lq}; }
std::vector<int64_t> basis_shape(const Dims& s) { return {s.hkv, s.d, s.d}; }
std::vector<int64_t> lead_shape(const Dims& s) { return {s.b, s.hkv, s.lk, s.lead}; }
// topk_ffn: T = lq tokens, D = d, d_ff = lk hidden units.
std::vector<int64_t> x_shape(const Dims& s) { return {s.lq, s.d}; }
std::vector<int64_t> w_shape(const Dims& s) { return {s.lk, s.d}; }
// el: x [b * beam, T = lq, Dm], memory [b, N = lk, Dm], W [Dm, Dm], bias [Dm].
std::vector<int64_t> el_x_shape(const Dims& s) { return {s.b * s.beam, s.lq, s.dm}; }
std::vector<int64_t> el_mem_shape(const Dims& s) { return {s.b, s.lk, s.dm}; }
std::vector<int64_t> el_w_shape(const Dims& s) { return {s.dm, s.dm}; }
std::vector<int64_t> el_bias_shape(const Dims& s) { return {s.dm}; }
// sparsek: x [B, Lk, Dm = D], w_score [Hkv, D].
std::vector<int64_t> sk_x_shape(const Dims& s) { return {s.b, s.lk, s.d}; }
std::vector<int64_t> sk_w_shape(const Dims& s) { return {s.hkv, s.d}; }
// sparsek_mask: z and p [rows = B Lq, m], tau [rows]. m is Lk times 1, 2 or 4 (the query group
// and the beam): widths up to 132, several vectors of partial sums, from draws already made.
int64_t mask_width(const Dims& s) { return s.lk * (s.hq / s.hkv) * s.beam; }
std::vector<int64_t> mask_z_shape(const Dims& s) { return {s.b * s.lq, mask_width(s)}; }
std::vector<int64_t> mask_tau_shape(const Dims& s) { return {s.b * s.lq}; }

struct Variant {
  const char* name;
  std::vector<Role> roles;  // inputs, then outputs (the first output is the result)
  // Calls the variant. t[i] is the view of roles[i].
  Status (*call)(const std::vector<TensorView>& t, const Knobs& k);
  // The double-precision result of roles' first output, for finite inputs (empty: not checked
  // for this call); `skip_row[r]` marks rows too close to a selection tie to compare.
  void (*reference)(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
                    std::vector<bool>* skip_row);
  // Optional: the variant's own draws, made after the views are laid out and filled with noise
  // (only for this variant: the others' inputs do not carry them). It may rewrite the values of
  // the views marked `writable` (inside the arena, aligned) and set its knobs.
  void (*prepare)(FuzzedDataProvider& f, const Dims& s, const std::vector<TensorView>& t,
                  const std::vector<bool>& writable, Knobs* k) = nullptr;
  // Optional, instead of `reference`: checks an accepted call's result against the variant's
  // invariants ("" when they hold, else what is wrong). Arguments it should have refused are
  // checked whatever the inputs; the values only when `finite` (no non-finite value injected).
  std::string (*verify)(const std::vector<TensorView>& t, const Knobs& k, bool finite) = nullptr;
};

int64_t pick(FuzzedDataProvider& f, std::initializer_list<int64_t> values) {
  std::vector<int64_t> v(values);
  return v[f.ConsumeIntegralInRange<size_t>(0, v.size() - 1)];
}

hattn_test::AttnStrides strides_of(const TensorView& q, const TensorView& k, const TensorView& v) {
  hattn_test::AttnStrides s;
  for (int i = 0; i < 4; ++i) {
    s.q[i] = q.strides[i];
    s.k[i] = k.strides[i];
    s.v[i] = v.strides[i];
  }
  return s;
}

hattn_test::AttnShape attn_shape(const TensorView& q, const TensorView& k) {
  return {q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3]};
}

double scale_of(const Knobs& k, int64_t d) {
  return k.has_scale ? k.scale : 1.0 / std::sqrt(static_cast<double>(static_cast<float>(d)));
}

// Rows whose k-th and (k+1)-th score are this close may legitimately select differently.
void gap_rows(const std::vector<double>& gap, std::vector<bool>* skip) {
  skip->assign(gap.size(), false);
  for (size_t r = 0; r < gap.size(); ++r) (*skip)[r] = !(gap[r] > 1e-3);
}

Status dense_call(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::AttentionOptions o;
  o.causal = k.causal;
  o.has_scale = k.has_scale;
  o.scale = k.scale;
  o.kernel = k.kernel;
  o.check_finite = k.check_finite;
  o.decode_splits = k.decode_splits;
  if (t.size() > 4) o.lse = &t[4];
  return hattn::attention(t[0], t[1], t[2], t[3], o);
}
void dense_ref(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
               std::vector<bool>* skip) {
  hattn_test::reference_attention(
      static_cast<const float*>(t[0].data), static_cast<const float*>(t[1].data),
      static_cast<const float*>(t[2].data), attn_shape(t[0], t[1]), strides_of(t[0], t[1], t[2]),
      k.causal, scale_of(k, t[0].shape[3]), out, nullptr);
  skip->clear();
}

Status topk_call(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::TopkOptions o;
  o.k = k.k;
  o.causal = k.causal;
  o.has_scale = k.has_scale;
  o.scale = k.scale;
  o.kernel = k.kernel;
  o.check_finite = k.check_finite;
  return hattn::topk_attention(t[0], t[1], t[2], t[3], o);
}
void topk_ref(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
              std::vector<bool>* skip) {
  std::vector<double> gap;
  hattn_test::reference_topk_attention(
      static_cast<const float*>(t[0].data), static_cast<const float*>(t[1].data),
      static_cast<const float*>(t[2].data), attn_shape(t[0], t[1]), strides_of(t[0], t[1], t[2]),
      k.causal, scale_of(k, t[0].shape[3]), k.k, out, &gap);
  gap_rows(gap, skip);
}

// A dense row-major copy of any view (empty for rank 0).
HATTN_HARNESS_LOOP std::vector<float> dense_copy(const TensorView& t) {
  if (t.rank == 0) return {};
  int64_t n = 1;
  for (int i = 0; i < t.rank; ++i) n *= t.shape[i];
  std::vector<float> d(static_cast<size_t>(n));
  int64_t idx[4] = {0, 0, 0, 0};
  for (int64_t e = 0; e < n; ++e) {
    int64_t off = 0;
    for (int i = 0; i < t.rank; ++i) off += idx[i] * t.strides[i];
    d[static_cast<size_t>(e)] = static_cast<const float*>(t.data)[off];
    for (int i = t.rank - 1; i >= 0 && ++idx[i] == t.shape[i]; --i) idx[i] = 0;
  }
  return d;
}

Status ffn_call(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::TopkFfnOptions o;
  o.k = k.k;
  o.kernel = k.kernel;
  o.check_finite = k.check_finite;
  return hattn::topk_ffn(t[0], t[1], t[2], t[3], o);
}
void ffn_ref(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
             std::vector<bool>* skip) {
  std::vector<float> x = dense_copy(t[0]), w1 = dense_copy(t[1]), w2t = dense_copy(t[2]);
  std::vector<double> gap;
  hattn_test::reference_topk_ffn(x.data(), w1.data(), w2t.data(), t[0].shape[0], t[0].shape[1],
                                 t[1].shape[0], k.k, out, &gap);
  gap_rows(gap, skip);
}

Status loki_call(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::LokiOptions o;
  o.rank = k.rank;
  o.rank_fraction = k.rank_fraction;
  o.k = k.k;
  o.k_fraction = k.k_fraction;
  o.causal = k.causal;
  o.has_scale = k.has_scale;
  o.scale = k.scale;
  o.kernel = k.kernel;
  o.check_finite = k.check_finite;
  o.check_basis = k.check_basis;
  if (t.size() > 5) o.k_lead = &t[5];
  return hattn::loki_attention(t[0], t[1], t[2], t[3], t[4], o);
}
void loki_ref(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
              std::vector<bool>* skip) {
  // Only absolute r and k with an orthonormal basis and no k_lead have a plain reference here
  // (fractions are resolved by the library; k_lead may differ from k_rot's channels).
  out->clear();
  if (k.rank <= 0 || k.k <= 0 || k.rank_fraction != 0 || k.k_fraction != 0 || t.size() > 5) return;
  const TensorView& basis = t[3];
  const int64_t d = basis.shape[1];
  std::vector<float> p(static_cast<size_t>(basis.shape[0] * d * d));
  for (int64_t h = 0; h < basis.shape[0]; ++h)
    for (int64_t e = 0; e < d; ++e)
      for (int64_t c = 0; c < d; ++c)
        p[static_cast<size_t>((h * d + e) * d + c)] =
            static_cast<const float*>(basis.data)[h * basis.strides[0] + e * basis.strides[1] + c];
  std::vector<double> gap;
  hattn_test::reference_loki_attention(
      static_cast<const float*>(t[0].data), static_cast<const float*>(t[1].data),
      static_cast<const float*>(t[2].data), p.data(), attn_shape(t[0], t[1]),
      strides_of(t[0], t[1], t[2]), k.causal, scale_of(k, t[0].shape[3]), k.rank, k.k, out, &gap);
  gap_rows(gap, skip);
}

// el's roles: x, memory, wq, bq, wk, bk, wv, bv, wo, bo, y.
Status el_call(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::MhaWeights w{t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
  hattn::ElOptions o;
  o.heads = k.heads;
  o.beam = k.beam;
  o.causal = k.causal;
  o.has_scale = k.has_scale;
  o.scale = k.scale;
  o.kernel = k.kernel;
  o.check_finite = k.check_finite;
  return hattn::el_attention(t[0], t[1], w, t[10], o);
}
void el_ref(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
            std::vector<bool>* skip) {
  const int64_t dm = t[1].shape[2];
  hattn_test::MhaHostWeights w;
  w.dm = dm;
  std::vector<float>* parts[8] = {&w.wq, &w.bq, &w.wk, &w.bk, &w.wv, &w.bv, &w.wo, &w.bo};
  for (size_t i = 0; i < 8; ++i) *parts[i] = dense_copy(t[i + 2]);
  const std::vector<float> x = dense_copy(t[0]), mem = dense_copy(t[1]);
  std::vector<float> y(x.size());
  const double scale = k.has_scale
                           ? k.scale
                           : 1.0 / std::sqrt(static_cast<double>(static_cast<float>(dm / k.heads)));
  hattn_test::reference_mha(x.data(), mem.data(), w, t[0].shape[0], t[0].shape[1], t[1].shape[1],
                            k.heads, k.beam, k.causal, nullptr, scale, y.data());
  out->assign(y.begin(), y.end());
  skip->clear();
}

// sparsek's roles: q, k, v, x, w_score, out.
Status sparsek_call(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::SparsekOptions o;
  o.k = k.k;
  o.window = k.window;
  o.slope = k.slope;
  o.gate = k.logit ? hattn::SparsekGate::logit : hattn::SparsekGate::value;
  o.has_scale = k.has_scale;
  o.scale = k.scale;
  o.kernel = k.kernel;
  o.check_finite = k.check_finite;
  return hattn::sparsek_attention(t[0], t[1], t[2], t[3], t[4], t[5], o);
}
void sparsek_ref(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
                 std::vector<bool>* skip) {
  const hattn_test::AttnShape s = attn_shape(t[0], t[1]);
  const std::vector<float> q = dense_copy(t[0]), key = dense_copy(t[1]), val = dense_copy(t[2]);
  const std::vector<float> x = dense_copy(t[3]), w = dense_copy(t[4]);
  std::vector<float> u;
  hattn_test::reference_sparsek_scores(x.data(), w.data(), s.batch, s.kv_heads, s.lk, t[3].shape[2],
                                       k.slope, &u);
  std::vector<double> gap;
  hattn_test::reference_sparsek_attention(q.data(), key.data(), val.data(), u.data(), s, k.k,
                                          k.window, k.logit, scale_of(k, s.head_dim), out, &gap);
  gap_rows(gap, skip);
}

// sparsek_mask's roles: z, p, tau.
Status mask_call(const std::vector<TensorView>& t, const Knobs& k) {
  return hattn::sparsek_mask(t[0], k.has_lengths ? &k.lengths : nullptr, k.k, t[1], t[2]);
}

// The values of the mask's patterned rows, from a seed the fuzzer draws.
using PatternRng = hattn_test::SplitMix64;

std::string g9(double x) {  // round-trips a float
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", x);
  return b;
}

// What a row of z holds (sparsek_mask).
enum MaskRowKind { kNoiseRow, kBoundaryRow, kIntegerRow, kPowerRow };

// A row of m integers on a grid, or of signed powers of two and their float neighbours.
HATTN_HARNESS_LOOP std::vector<float> pattern_row(int kind, int64_t m, PatternRng& rng,
                                                  std::string* what) {
  std::vector<float> v(static_cast<size_t>(m));
  if (kind == kIntegerRow) {
    const float steps[] = {1.f, 2.f, 0.5f, 3.f}, bases[] = {0.f, 0.5f, -7.f, 1024.f};
    const float step = steps[rng.below(4)], base = bases[rng.below(4)];
    for (float& x : v) x = base + step * static_cast<float>(rng.below(2 * m + 1) - m);
    *what = "integers " + g9(base) + " + " + g9(step) + " * [-m, m]";
    return v;
  }
  for (float& x : v) {
    x = std::ldexp(1.f, static_cast<int>(rng.below(17)) - 4);
    const int64_t c = rng.below(8);
    if (c == 0) x = std::nextafter(x, 0.f);
    if (c == 1) x = std::nextafter(x, 1e30f);
    if (rng.below(4) == 0) x = -x;
  }
  *what = "powers of two and their neighbours";
  return v;
}

// Row r of a rank-2 view (in the arena) gets v's values, as many as fit.
HATTN_HARNESS_LOOP void write_row(const TensorView& z, int64_t r, const std::vector<float>& v) {
  if (r >= z.shape[0]) return;
  for (int64_t j = 0; j < std::min<int64_t>(static_cast<int64_t>(v.size()), z.shape[1]); ++j) {
    static_cast<float*>(z.data)[r * z.strides[0] + j * z.strides[1]] = v[static_cast<size_t>(j)];
  }
}

// The mask's own draws: k (around the width m); what each row of z holds: the noise as filled,
// a row of hattn_test::boundary_rows (integer-spaced values, flat roots with the k-th largest
// just above a power of two, all-0/1 solutions, ties, coinciding breakpoints, subnormal and huge
// magnitudes; row r takes the (first + r)-th, and the call's k is mostly the first one's own),
// integers on a grid, or signed powers of two and their float neighbours: one kind for every row
// or one per row; and the lengths: none, valid ones (a boundary row's own length), or invalid
// ones (a wrong count, an entry outside [0, m]) that the call must refuse.
void mask_prepare(FuzzedDataProvider& f, const Dims& s, const std::vector<TensorView>& t,
                  const std::vector<bool>& writable, Knobs* k) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  const int64_t rows = s.b * s.lq, m = mask_width(s);
  k->k = pick(f, {0, 1, 2, 3, 5, 9, 17, m / 2, m - 1, m, m + 1, -1, kMin, kMax,
                  (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 2});
  const int mode = f.ConsumeIntegralInRange<int>(0, 7);  // 0-2 noise, 3-4 boundary, 5 integers,
                                                         // 6 powers, 7 a kind per row
  const uint64_t seed = f.ConsumeIntegral<uint64_t>();
  const bool own_k = f.ConsumeIntegralInRange<int>(0, 3) != 0;
  PatternRng rng{seed};
  std::vector<hattn_test::BoundaryRow> boundary;
  size_t first = 0;
  if (mode >= 3 && mode != 5 && mode != 6) {
    boundary = hattn_test::boundary_rows(seed, m);
    first = f.ConsumeIntegralInRange<size_t>(0, boundary.size() - 1);
  }
  const TensorView& z = t[0];
  const bool write = writable[0] && z.rank == 2;
  k->row_kind.assign(static_cast<size_t>(rows), "uniform noise");
  std::vector<int64_t> own_len(static_cast<size_t>(rows), -1);  // -1: none of its own
  for (int64_t r = 0; r < rows; ++r) {
    int kind = mode < 3 ? kNoiseRow : mode < 5 ? kBoundaryRow : mode == 5 ? kIntegerRow : kPowerRow;
    if (mode == 7) kind = f.ConsumeIntegralInRange<int>(kNoiseRow, kPowerRow);
    std::string& what = k->row_kind[static_cast<size_t>(r)];
    std::vector<float> v;
    if (kind == kNoiseRow) continue;
    if (kind == kBoundaryRow) {
      const size_t i = (first + static_cast<size_t>(r)) % boundary.size();
      v = boundary[i].z;
      what = boundary[i].kind + " (boundary_rows(" + std::to_string(seed) + ", " +
             std::to_string(m) + ")[" + std::to_string(i) + "]";
      if (static_cast<int64_t>(v.size()) > m) {
        v.resize(static_cast<size_t>(m));
        what += ", cut to m";
      }
      what += ")";
      own_len[static_cast<size_t>(r)] = static_cast<int64_t>(v.size());
      if (r == 0 && own_k) k->k = boundary[i].k;
    } else {
      v = pattern_row(kind, m, rng, &what);
    }
    if (write) write_row(z, r, v);
  }
  const int lengths = f.ConsumeIntegralInRange<int>(0, 7);  // 0-1 none, 2-3 valid, 4-6 a row's
                                                            // own (else valid), 7 invalid
  k->has_lengths = lengths >= 2;
  if (!k->has_lengths) return;
  k->lengths.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t& n = k->lengths[static_cast<size_t>(r)];
    n = own_len[static_cast<size_t>(r)];
    if (n >= 0 && lengths >= 4) continue;
    switch (f.ConsumeIntegralInRange<int>(0, 4)) {
      case 0:
        n = 0;
        break;
      case 1:
        n = 1;
        break;
      case 2:
        n = m - 1;
        break;
      case 3:
        n = m;
        break;
      default:
        n = f.ConsumeIntegralInRange<int64_t>(0, m);
        break;
    }
  }
  if (lengths == 7) {
    switch (f.ConsumeIntegralInRange<int>(0, 2)) {
      case 0:
        k->lengths.pop_back();
        break;
      case 1:
        k->lengths.push_back(0);
        break;
      default:
        k->lengths[f.ConsumeIntegralInRange<size_t>(0, k->lengths.size() - 1)] =
            pick(f, {-1, m + 1, kMax, kMin, int64_t{1} << 31, int64_t{1} << 32});
        break;
    }
  }
}

// What a checked row of the mask was (or that the call's values went unchecked), as coverage
// the fuzzer can see: mask_verify is not instrumented, and the kernel (generated code) never is,
// so without this an input reaching a flat root or k >= n would look like any other.
enum MaskReached { kUnchecked, kEmptyRow, kZeroK, kAllOnes, kFlatRoot, kFreeRoot };
volatile int mask_sink;  // a distinct store per case: distinct edges
__attribute__((noinline)) void mask_reached(MaskReached what) {
  switch (what) {
    case kUnchecked:
      mask_sink = 0;
      break;
    case kEmptyRow:
      mask_sink = 1;
      break;
    case kZeroK:
      mask_sink = 2;
      break;
    case kAllOnes:
      mask_sink = 3;
      break;
    case kFlatRoot:
      mask_sink = 4;
      break;
    case kFreeRoot:
      mask_sink = 5;
      break;
  }
}

// The operator's invariants, per row of length n: p = 0 past n, and for finite inputs
// hattn_test::check_sparsek_row, the oracle tests/test_sparsek.cpp uses (p in [0, 1], p ==
// clamp(z - tau, 0, 1) in float exactly, tau = +-inf for k = 0 and k >= n, tau and sum p against
// the sort-based float64 roots with the tolerances stated in tests/reference.h).
HATTN_HARNESS_LOOP std::string mask_verify(const std::vector<TensorView>& t, const Knobs& k,
                                           bool finite) {
  const TensorView &z = t[0], &p = t[1], &tau = t[2];
  const int64_t rows = z.shape[0], m = z.shape[1];
  if (z.rank != 2 || p.rank != 2 || tau.rank != 1 || p.shape[0] != rows || p.shape[1] != m ||
      tau.shape[0] != rows) {
    return "accepted mismatched shapes: z " + z.describe() + ", p " + p.describe() + ", tau " +
           tau.describe();
  }
  if (k.k < 0) return "accepted k = " + std::to_string(k.k);
  if (k.has_lengths) {
    if (static_cast<int64_t>(k.lengths.size()) != rows) {
      return "accepted " + std::to_string(k.lengths.size()) + " lengths for " +
             std::to_string(rows) + " rows";
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = k.lengths[static_cast<size_t>(r)];
      if (n < 0 || n > m) {
        return "accepted lengths[" + std::to_string(r) + "] = " + std::to_string(n) +
               " outside [0, " + std::to_string(m) + "]";
      }
    }
  }
  if (!finite) {
    mask_reached(kUnchecked);
    return "";
  }
  const std::vector<float> zf = dense_copy(z), pf = dense_copy(p);
  const float* td = static_cast<const float*>(tau.data);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = k.has_lengths ? k.lengths[static_cast<size_t>(r)] : m;
    const float* zr = zf.data() + r * m;
    const float* pr = pf.data() + r * m;
    const float tr = td[r * tau.strides[0]];
    const std::string kind = static_cast<size_t>(r) < k.row_kind.size()
                                 ? k.row_kind[static_cast<size_t>(r)]
                                 : std::string("?");
    auto wrong = [&](const std::string& what) {
      std::string msg = "row " + std::to_string(r) + " (" + kind + ") n=" + std::to_string(n) +
                        " k=" + std::to_string(k.k) + " tau=" + g9(tr) + ": " + what +
                        "; z[0:n] = [";
      for (int64_t j = 0; j < n; ++j) msg += g9(zr[j]) + (j + 1 < n ? ", " : "");
      return msg + "]";
    };
    for (int64_t j = n; j < m; ++j) {
      if (!(pr[j] == 0.f)) return wrong("p[" + std::to_string(j) + "] = " + g9(pr[j]) + " past n");
    }
    if (n == 0) mask_reached(kEmptyRow);
    hattn_test::SparsekRootKind reached{};
    const std::string why = hattn_test::check_sparsek_row(zr, pr, n, k.k, tr, &reached);
    switch (reached) {
      case hattn_test::SparsekRootKind::zero_k:
        mask_reached(kZeroK);
        break;
      case hattn_test::SparsekRootKind::all_ones:
        mask_reached(kAllOnes);
        break;
      case hattn_test::SparsekRootKind::flat:
        mask_reached(kFlatRoot);
        break;
      case hattn_test::SparsekRootKind::free:
        mask_reached(kFreeRoot);
        break;
    }
    if (!why.empty()) return wrong(why);
  }
  return "";
}

// The variants. Loki's roles put the basis before out (its call order): q, k_rot, v, basis, out.
const std::vector<Variant> kVariants = {
    {"dense",
     {{"q", false, q_shape},
      {"k", false, kv_shape},
      {"v", false, kv_shape},
      {"out", true, q_shape}},
     dense_call,
     dense_ref},
    {"dense_lse",
     {{"q", false, q_shape},
      {"k", false, kv_shape},
      {"v", false, kv_shape},
      {"out", true, q_shape},
      {"lse", true, lse_shape}},
     dense_call,
     dense_ref},
    {"topk",
     {{"q", false, q_shape},
      {"k", false, kv_shape},
      {"v", false, kv_shape},
      {"out", true, q_shape}},
     topk_call,
     topk_ref},
    {"topk_ffn",
     {{"x", false, x_shape}, {"w1", false, w_shape}, {"w2t", false, w_shape}, {"y", true, x_shape}},
     ffn_call,
     ffn_ref},
    {"loki",
     {{"q", false, q_shape},
      {"k_rot", false, kv_shape},
      {"v", false, kv_shape},
      {"basis", false, basis_shape},
      {"out", true, q_shape}},
     loki_call,
     loki_ref},
    {"loki_lead",
     {{"q", false, q_shape},
      {"k_rot", false, kv_shape},
      {"v", false, kv_shape},
      {"basis", false, basis_shape},
      {"out", true, q_shape},
      {"k_lead", false, lead_shape}},
     loki_call,
     loki_ref},
    {"el",
     {{"x", false, el_x_shape},
      {"memory", false, el_mem_shape},
      // Weights scaled as a trained layer's, so that scores stay of order 1.
      {"wq", false, el_w_shape, 0.125f},
      {"bq", false, el_bias_shape, 0.5f, true},
      {"wk", false, el_w_shape, 0.125f},
      {"bk", false, el_bias_shape, 0.5f, true},
      {"wv", false, el_w_shape, 0.125f},
      {"bv", false, el_bias_shape, 0.5f, true},
      {"wo", false, el_w_shape, 0.125f},
      {"bo", false, el_bias_shape, 0.5f, true},
      {"y", true, el_x_shape}},
     el_call,
     el_ref},
    {"sparsek",
     {{"q", false, q_shape},
      {"k", false, kv_shape},
      {"v", false, kv_shape},
      {"x", false, sk_x_shape},
      {"w_score", false, sk_w_shape, 0.25f},
      {"out", true, q_shape}},
     sparsek_call,
     sparsek_ref},
    {"sparsek_mask",
     {{"z", false, mask_z_shape}, {"p", true, mask_z_shape}, {"tau", true, mask_tau_shape}},
     mask_call,
     nullptr,
     mask_prepare,
     mask_verify},
};

// Loki's output is not last (k_lead follows it): the checks find outputs by Role::output.

// Hostile values for one shape entry or stride.
const std::initializer_list<int64_t> kHostileDims = {0,
                                                     -1,
                                                     -5,
                                                     int64_t{1} << 31,
                                                     (int64_t{1} << 31) - 1,
                                                     int64_t{1} << 32,
                                                     std::numeric_limits<int64_t>::max(),
                                                     std::numeric_limits<int64_t>::min()};
const std::initializer_list<int64_t> kHostileStrides = {-1,
                                                        0,
                                                        2,
                                                        (int64_t{1} << 31) - 1,
                                                        int64_t{1} << 31,
                                                        std::numeric_limits<int64_t>::max(),
                                                        std::numeric_limits<int64_t>::min()};

// The largest element offset of a view whose sizes are all >= 1 and strides >= 0, or -1 if it
// does not fit in 62 bits (such a view cannot lie in the arena).
int64_t max_offset(const TensorView& t) {
  __int128 last = 0;
  for (int i = 0; i < t.rank; ++i) last += static_cast<__int128>(t.shape[i] - 1) * t.strides[i];
  return last > (__int128{1} << 62) ? -1 : static_cast<int64_t>(last);
}

// Whether hattn could access memory through `t` (every property it checks looks sane), so
// the view must lie inside the arena for the call to be safe to make at all.
bool plausible(const TensorView& t) {
  if (t.rank < 1 || t.rank > 4 || t.data == nullptr) return false;
  for (int i = 0; i < t.rank; ++i) {
    if (t.shape[i] < 1 || t.strides[i] < 0) return false;
  }
  return true;
}

bool aligned(const TensorView& t) { return (reinterpret_cast<uintptr_t>(t.data) & 3) == 0; }

struct Span {
  int64_t lo, hi;  // element offsets in the arena, inclusive
};

class Harness {
 public:
  Harness() : arena_(kArenaFloats), before_(kArenaFloats) {}

  void run(FuzzedDataProvider& f) {
    const Variant& var = kVariants[f.ConsumeIntegralInRange<size_t>(0, kVariants.size() - 1)];
    Dims s;
    s.b = f.ConsumeIntegralInRange<int64_t>(1, 2);
    // Small enough that the double reference stays cheap (it dominates an accepted call); Lq
    // crosses the decode threshold (8), D covers the specializations (64, 128) and others.
    s.hkv = f.ConsumeIntegralInRange<int64_t>(1, 2);
    s.hq = s.hkv * f.ConsumeIntegralInRange<int64_t>(1, 2);
    s.lq = pick(f, {1, 2, 3, 5, 8, 9, 12});
    s.lk = pick(f, {1, 2, 3, 7, 16, 31, 33});
    s.d = pick(f, {1, 2, 3, 8, 16, 24, 33, 64, 128});
    s.lead = std::max<int64_t>(1, std::min<int64_t>(s.d, f.ConsumeIntegralInRange<int64_t>(1, 9)));
    // el: 64 and 80 are taken (Dm >= 64, a multiple of 16), the others refused.
    s.dm = pick(f, {64, 64, 80, 16, 33, 48});
    s.beam = f.ConsumeIntegralInRange<int64_t>(1, 2);
    Knobs k = knobs(f, s);

    // Views: consecutive in the arena by default, each then possibly bent out of shape.
    const size_t n = var.roles.size();
    std::vector<TensorView> t(n);
    int64_t next = f.ConsumeIntegralInRange<int64_t>(0, 8);
    for (size_t i = 0; i < n; ++i) {
      std::vector<int64_t> shape = var.roles[i].shape(s);
      TensorView& v = t[i];
      v.rank = static_cast<int>(shape.size());
      int64_t stride = 1;
      const int64_t pad = f.ConsumeBool() ? f.ConsumeIntegralInRange<int64_t>(0, 3) : 0;
      for (int d = v.rank - 1; d >= 0; --d) {
        v.shape[d] = shape[static_cast<size_t>(d)];
        v.strides[d] = stride;
        stride = stride * v.shape[d] + (d == v.rank - 1 ? 0 : pad);
      }
      int64_t offset = next;
      if (f.ConsumeIntegralInRange<int>(0, 7) == 0) {  // anywhere: may overlap another tensor
        offset = f.ConsumeIntegralInRange<int64_t>(0, static_cast<int64_t>(kArenaFloats) - 1);
      }
      v.data = arena_.data() + offset;
      next = offset + stride + f.ConsumeIntegralInRange<int64_t>(0, 4);
      if (next >= static_cast<int64_t>(kArenaFloats)) next = 0;
      bend(f, &v);
    }
    fill(f, var, s, t, &k);

    // Views hattn cannot check (plausible but outside the arena): only dense has a call that
    // validates without touching memory.
    bool in_arena = true;
    for (const TensorView& v : t) {
      if (plausible(v) && spans_of(v).empty()) in_arena = false;
    }
    if (!in_arena) {
      if (var.call == dense_call) {
        hattn::AttentionOptions o;
        o.causal = k.causal;
        o.has_scale = k.has_scale;
        o.scale = k.scale;
        o.kernel = k.kernel;
        o.decode_splits = k.decode_splits;
        if (t.size() > 4) o.lse = &t[4];
        hattn::Dispatch d;
        Status st = hattn::plan_attention(t[0], t[1], t[2], t[3], o, &d);
        if (!st.ok() && st.message.empty()) finding("refusal without a message", var.name);
      }
      return;
    }

    // Outputs poisoned, then the whole arena remembered.
    for (size_t i = 0; i < n; ++i) {
      if (var.roles[i].output && plausible(t[i]) && aligned(t[i])) {
        for_each(t[i], [](float& x) { x = from_bits(kPoison); });
      }
    }
    before_ = arena_;
    Status st = var.call(t, k);
    check(var, t, k, st);
  }

 private:
  Knobs knobs(FuzzedDataProvider& f, const Dims& s) {
    Knobs k;
    k.causal = f.ConsumeBool();
    if (f.ConsumeBool()) {
      k.has_scale = true;
      const float scales[] = {0.125f, 1.f, 0.f, -1.f, NAN, INFINITY, 1e-30f, 1e30f};
      k.scale = scales[f.ConsumeIntegralInRange<int>(0, 7)];
    }
    k.k = pick(f, {1, 2, 3, s.lk - 1, s.lk, s.lk + 1, 0, -1, std::numeric_limits<int64_t>::max(),
                   std::numeric_limits<int64_t>::min(), int64_t{1} << 31});
    k.rank = pick(f, {1, 2, s.d / 2, s.d, s.d + 1, 0, -1, std::numeric_limits<int64_t>::max()});
    if (f.ConsumeIntegralInRange<int>(0, 3) == 0) {
      const double fr[] = {0, 1e-9, 0.25, 1, 1.5, NAN, -0.5, INFINITY};
      k.rank_fraction = fr[f.ConsumeIntegralInRange<int>(0, 7)];
      if (f.ConsumeBool()) k.rank = 0;
    }
    if (f.ConsumeIntegralInRange<int>(0, 3) == 0) {
      const double fr[] = {0, 1e-300, 0.125, 1, 1.01, NAN, -1, INFINITY};
      k.k_fraction = fr[f.ConsumeIntegralInRange<int>(0, 7)];
      if (f.ConsumeBool()) k.k = 0;
    }
    k.decode_splits = static_cast<int>(pick(
        f, {0, 0, 1, 3, 64, -1, std::numeric_limits<int>::max(), std::numeric_limits<int>::min()}));
    const auto& kernels = hattn::list_kernels();
    switch (f.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        if (!kernels.empty()) {
          k.kernel = kernels[f.ConsumeIntegralInRange<size_t>(0, kernels.size() - 1)].name;
        }
        break;
      case 1:
        k.kernel = f.ConsumeRandomLengthString(40);
        break;
      default:
        break;
    }
    k.check_finite = f.ConsumeBool();
    k.check_basis = f.ConsumeBool();
    k.heads = pick(f, {1, 2, 4, 4, 16, 3, 0, -1, std::numeric_limits<int64_t>::max()});
    k.beam = f.ConsumeIntegralInRange<int>(0, 3) != 0 ? s.beam : pick(f, {0, -1, 3, s.beam + 1});
    k.window = pick(
        f, {0, 1, 2, s.lk, s.lk + 1, -1, int64_t{1} << 30, std::numeric_limits<int64_t>::min()});
    const float slopes[] = {0.f, 0.1f, -0.5f, NAN, INFINITY};
    k.slope = slopes[f.ConsumeIntegralInRange<int>(0, 4)];
    k.logit = f.ConsumeBool();
    return k;
  }

  // One property of a view made hostile, or none.
  void bend(FuzzedDataProvider& f, TensorView* v) {
    switch (f.ConsumeIntegralInRange<int>(0, 15)) {
      case 0:
        v->shape[f.ConsumeIntegralInRange<int>(0, v->rank - 1)] = pick(f, kHostileDims);
        break;
      case 1:
        v->strides[f.ConsumeIntegralInRange<int>(0, v->rank - 1)] = pick(f, kHostileStrides);
        break;
      case 2:
        v->strides[f.ConsumeIntegralInRange<int>(0, v->rank - 1)] =
            f.ConsumeIntegralInRange<int64_t>(-3, 200);
        break;
      case 3:
        v->rank = static_cast<int>(pick(f, {0, 1, 2, 3, 4, 5, -1, 1000}));
        break;
      case 4:
        v->dtype = static_cast<hattn::DType>(pick(f, {1, 2, 3, -1}));
        break;
      case 5:
        v->device = static_cast<hattn::Device>(pick(f, {1, 2, -1}));
        break;
      case 6:
        v->data = nullptr;
        break;
      case 7:  // misaligned: a pointer into the middle of a float
        v->data = static_cast<char*>(v->data) + f.ConsumeIntegralInRange<int>(1, 3);
        break;
      default:
        break;
    }
  }

  template <typename Fn>
  HATTN_HARNESS_LOOP static void for_each(const TensorView& t, Fn fn) {
    int64_t idx[4] = {0, 0, 0, 0};
    float* base = static_cast<float*>(t.data);
    for (;;) {
      int64_t off = 0;
      for (int i = 0; i < t.rank; ++i) off += idx[i] * t.strides[i];
      fn(base[off]);
      int i = t.rank - 1;
      while (i >= 0 && ++idx[i] == t.shape[i]) idx[i--] = 0;
      if (i < 0) break;
    }
  }

  // Input values: a seeded normal-ish fill (then the variant's own, `Variant::prepare`); a few
  // non-finite values when the fuzzer asks; the Loki basis orthonormal (a signed permutation)
  // unless the fuzzer asks for garbage.
  void fill(FuzzedDataProvider& f, const Variant& var, const Dims& s,
            const std::vector<TensorView>& t, Knobs* k) {
    uint64_t state = f.ConsumeIntegral<uint64_t>() | 1;
    std::vector<Span> used;
    for (const TensorView& v : t) {
      for (Span sp : spans_of(v)) used.push_back(sp);
    }
    // Only the views' own elements (a strided view's span may cover most of the arena).
    for (size_t i = 0; i < t.size(); ++i) {
      const TensorView& v = t[i];
      if (spans_of(v).empty() || !aligned(v)) continue;
      const double amplitude = var.roles[i].amplitude;
      for_each(v, [&](float& x) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        // Uniform in [-2, 2): close enough to a normal for attention scores.
        x = static_cast<float>((static_cast<double>(state >> 40) * (4.0 / 16777216.0) - 2.0) *
                               amplitude);
      });
    }
    if (var.prepare != nullptr) {
      std::vector<bool> writable;
      for (const TensorView& v : t) writable.push_back(!spans_of(v).empty() && aligned(v));
      var.prepare(f, s, t, writable, k);
    }
    non_finite_ = false;
    const int bad =
        f.ConsumeIntegralInRange<int>(0, 15) == 0 ? f.ConsumeIntegralInRange<int>(1, 3) : 0;
    for (int b = 0; b < bad && !used.empty(); ++b) {
      const float values[] = {NAN, INFINITY, -INFINITY};
      const Span sp = used[f.ConsumeIntegralInRange<size_t>(0, used.size() - 1)];
      arena_[static_cast<size_t>(f.ConsumeIntegralInRange<int64_t>(sp.lo, sp.hi))] =
          values[f.ConsumeIntegralInRange<int>(0, 2)];
      non_finite_ = true;
    }
    for (size_t i = 0; i < var.roles.size(); ++i) {
      const TensorView& p = t[i];
      if (std::strcmp(var.roles[i].name, "basis") != 0 || p.rank != 3 || spans_of(p).empty() ||
          !aligned(p)) {
        continue;
      }
      if (f.ConsumeIntegralInRange<int>(0, 7) == 0) continue;  // leave garbage: must be refused
      const int64_t d = std::min(p.shape[1], p.shape[2]);
      // Column c of head h: +-e_perm(c); zeros elsewhere (written over the view's elements).
      for_each(p, [](float& x) { x = 0.f; });
      for (int64_t h = 0; h < p.shape[0]; ++h) {
        std::vector<int64_t> perm(static_cast<size_t>(d));
        for (int64_t c = 0; c < d; ++c) perm[static_cast<size_t>(c)] = c;
        for (int64_t c = d - 1; c > 0; --c) {
          std::swap(perm[static_cast<size_t>(c)],
                    perm[static_cast<size_t>(f.ConsumeIntegralInRange<int64_t>(0, c))]);
        }
        for (int64_t c = 0; c < d; ++c) {
          float* x = static_cast<float*>(p.data) + h * p.strides[0] +
                     perm[static_cast<size_t>(c)] * p.strides[1] + c * p.strides[2];
          *x = f.ConsumeBool() ? 1.f : -1.f;
        }
      }
    }
  }

  // The element span of a plausible view inside the arena (byte-exact for misaligned views:
  // lo and hi are rounded outwards), or nothing if it is not plausible or leaves the arena.
  std::vector<Span> spans_of(const TensorView& t) const {
    if (!plausible(t) || max_offset(t) < 0) return {};
    const auto base = reinterpret_cast<uintptr_t>(arena_.data());
    const auto at = reinterpret_cast<uintptr_t>(t.data);
    if (at < base) return {};
    const int64_t lo = static_cast<int64_t>((at - base) / 4);
    const int64_t hi = static_cast<int64_t>((at - base + 3) / 4) + max_offset(t);
    if (hi >= static_cast<int64_t>(kArenaFloats)) return {};
    return {{lo, hi}};
  }

  void check(const Variant& var, const std::vector<TensorView>& t, const Knobs& k,
             const Status& st) {
    const std::string what =
        std::string(var.name) + ": " + hattn::to_string(st.code) + ": " + st.message;
    if (!st.ok()) {
      if (st.message.empty()) finding("refusal without a message", var.name);
      if (std::memcmp(arena_.data(), before_.data(), kArenaFloats * sizeof(float)) != 0) {
        finding("a refused call wrote memory", what);
      }
      return;
    }
    // Accepted: every view well-formed, and outputs overlapping nothing.
    for (size_t i = 0; i < t.size(); ++i) {
      const TensorView& v = t[i];
      if (v.rank == 0 && var.roles[i].may_be_rank0) continue;  // an absent optional tensor
      if (!plausible(v) || !aligned(v) || v.dtype != hattn::DType::f32 ||
          v.device != hattn::Device::cpu || v.strides[v.rank - 1] != 1) {
        finding("accepted an invalid view", what + " " + var.roles[i].name + " " + v.describe());
      }
    }
    // Every output element written; then, with the outputs copied into the snapshot, the
    // arena must equal it (one memcmp: nothing outside the outputs changed).
    for (size_t i = 0; i < t.size(); ++i) {
      if (!var.roles[i].output) continue;
      for (size_t j = 0; j < t.size(); ++j) {
        if (j == i) continue;
        for (Span a : spans_of(t[i]))
          for (Span b : spans_of(t[j]))
            if (a.lo <= b.hi && b.lo <= a.hi) finding("accepted overlapping tensors", what);
      }
      for_each(t[i], [&](float& x) {
        if (bits(x) == kPoison) finding("an output element was not written", what);
        before_[static_cast<size_t>(&x - arena_.data())] = x;
      });
    }
    if (std::memcmp(arena_.data(), before_.data(), kArenaFloats * sizeof(float)) != 0) {
      size_t e = 0;
      while (bits(arena_[e]) == bits(before_[e])) ++e;
      finding("memory outside the outputs changed",
              what + " at arena element " + std::to_string(e));
    }
    // The result against the variant's invariants, or against the reference when it is well
    // defined and numerically tame.
    if (var.verify != nullptr) {
      const std::string wrong = var.verify(t, k, !non_finite_);
      if (!wrong.empty())
        finding("the result breaks the operator's invariants", what + ": " + wrong);
      return;
    }
    if (non_finite_ || (k.has_scale && k.scale > 100.f)) return;
    size_t out_i = 0;
    while (!var.roles[out_i].output) ++out_i;
    std::vector<double> ref;
    std::vector<bool> skip;
    var.reference(t, k, &ref, &skip);
    if (ref.empty()) return;
    const TensorView& o = t[out_i];
    const int64_t row_len = o.shape[o.rank - 1];
    int64_t flat = 0;
    for_each(o, [&](float& x) {
      const size_t row = static_cast<size_t>(flat / row_len);
      const double r = ref[static_cast<size_t>(flat++)];
      if (!skip.empty() && skip[row]) return;
      if (!(std::abs(x - r) <= 1e-4 + 1e-3 * std::abs(r))) {
        finding("result differs from the reference", what + " element " + std::to_string(flat - 1) +
                                                         " got " + std::to_string(x) + " ref " +
                                                         std::to_string(r));
      }
    });
  }

  std::vector<float> arena_, before_;
  bool non_finite_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One worker: the kernels run on the fuzzing thread (threads are tested in tests/).
  hattn::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  FuzzedDataProvider f(data, size);
  harness->run(f);
  return 0;
}
