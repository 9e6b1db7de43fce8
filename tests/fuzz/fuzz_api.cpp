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
//     double-precision reference of tests/reference.cpp.
// A finding aborts with a line saying what was wrong.
//
// Variants: one entry each in kVariants below (an el or sparsek variant is one more entry: its
// tensors, its knobs and how to call it; see `Variant`).
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

struct Variant {
  const char* name;
  std::vector<Role> roles;  // inputs, then outputs (the first output is the result)
  // Calls the variant. t[i] is the view of roles[i].
  Status (*call)(const std::vector<TensorView>& t, const Knobs& k);
  // The double-precision result of roles' first output, for finite inputs (empty: not checked
  // for this call); `skip_row[r]` marks rows too close to a selection tie to compare.
  void (*reference)(const std::vector<TensorView>& t, const Knobs& k, std::vector<double>* out,
                    std::vector<bool>* skip_row);
};

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
};

// Loki's output is not last (k_lead follows it): the checks find outputs by Role::output.

int64_t pick(FuzzedDataProvider& f, std::initializer_list<int64_t> values) {
  std::vector<int64_t> v(values);
  return v[f.ConsumeIntegralInRange<size_t>(0, v.size() - 1)];
}

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
    fill(f, var, t);

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

  // Input values: a seeded normal-ish fill; a few non-finite values when the fuzzer asks; the
  // Loki basis orthonormal (a signed permutation) unless the fuzzer asks for garbage.
  void fill(FuzzedDataProvider& f, const Variant& var, const std::vector<TensorView>& t) {
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
    // The result against the reference, when it is well defined and numerically tame.
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
