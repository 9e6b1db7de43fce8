#include "variants.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <iostream>
#include <limits>

namespace hattn_test {
namespace {

using hattn::Status;
using hattn::TensorView;

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();

std::vector<std::vector<int64_t>> attention_shapes(const AttnShape& s) {
  const std::vector<int64_t> q = {s.batch, s.q_heads, s.lq, s.head_dim};
  const std::vector<int64_t> kv = {s.batch, s.kv_heads, s.lk, s.head_dim};
  return {q, kv, kv, q};
}

// The host tensor seen with `rank` dimensions: its leading (unit) dimensions dropped, so that a
// [1, rows, cols] host tensor is a matrix and [1, 1, n] a vector.
TensorView view_with_rank(const HostTensor& t, int rank) {
  if (rank == t.rank()) return t.view();
  const size_t drop = static_cast<size_t>(t.rank() - rank);
  std::vector<int64_t> shape(t.shape().begin() + static_cast<std::ptrdiff_t>(drop),
                             t.shape().end());
  std::vector<int64_t> strides(t.strides().begin() + static_cast<std::ptrdiff_t>(drop),
                               t.strides().end());
  return TensorView::strided(t.data(), shape, strides);
}

// Rows of a [B * beam, T, ...] result: row = r * T + t.
int64_t el_sample_of_row(int64_t row, const AttnShape& s) { return row / s.lq; }

double scale_of(const Knobs& k, int64_t d) {
  return k.has_scale ? k.scale : 1.0 / std::sqrt(static_cast<double>(d));
}

AttnStrides strides_of(const HostTensor& q, const HostTensor& k, const HostTensor& v) {
  return {q.strides4(), k.strides4(), v.strides4()};
}

// Attention rows are (b, h, i) in row-major order. A key or value reaches every row of its batch
// and kv head, masked or not: the kernels process key blocks whole and zero masked keys by
// arithmetic (weight 0, score -inf), which a NaN or infinity survives (measured: a NaN in a key
// that a causal row cannot see makes that row NaN, in dense, topk and loki).
bool attention_reads(int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape& s,
                     bool /*causal*/) {
  const int64_t i = row % s.lq, h = (row / s.lq) % s.q_heads, b = row / (s.lq * s.q_heads);
  const int64_t kv_head = h / (s.q_heads / s.kv_heads);
  switch (role) {
    case 0:  // q
      return idx[0] == b && idx[1] == h && idx[2] == i;
    case 1:  // k (k_rot)
    case 2:  // v
      return idx[0] == b && idx[1] == kv_head;
    default:  // Loki's basis: the kv head's
      return idx[0] == kv_head;
  }
}

Knobs with_k(int64_t k) {
  Knobs o;
  o.k = k;
  return o;
}

// A random orthonormal basis per kv head: Gram-Schmidt (twice) of Gaussian columns in double.
void fill_orthonormal(HostTensor* basis, TestRng& rng) {
  const int64_t heads = basis->shape()[0], d = basis->shape()[1];
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<double> p(static_cast<size_t>(d * d));
    for (double& x : p) x = rng.normal();
    for (int64_t c = 0; c < d; ++c) {
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t prev = 0; prev < c; ++prev) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e)
            dot += p[static_cast<size_t>(e * d + c)] * p[static_cast<size_t>(e * d + prev)];
          for (int64_t e = 0; e < d; ++e)
            p[static_cast<size_t>(e * d + c)] -= dot * p[static_cast<size_t>(e * d + prev)];
        }
      }
      double norm = 0;
      for (int64_t e = 0; e < d; ++e) norm += p[static_cast<size_t>(e * d + c)] * p[static_cast<size_t>(e * d + c)];
      norm = std::sqrt(norm);
      for (int64_t e = 0; e < d; ++e) p[static_cast<size_t>(e * d + c)] /= norm;
    }
    for (int64_t f = 0; f < d * d; ++f)
      basis->at_flat(h * d * d + f) = static_cast<float>(p[static_cast<size_t>(f)]);
  }
}

std::vector<Variant> build() {
  std::vector<Variant> v;

  Variant dense;
  dense.name = "dense";
  dense.roles = {"q", "k", "v", "out"};
  dense.written = {false, false, false, true};
  dense.result = 3;
  dense.shapes = attention_shapes;
  dense.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::AttentionOptions o;
    o.causal = k.causal;
    o.has_scale = k.has_scale;
    o.scale = k.scale;
    o.decode_splits = k.decode_splits;
    o.kernel = k.kernel;
    return hattn::attention(t[0], t[1], t[2], t[3], o, d);
  };
  dense.reference = [](const std::vector<HostTensor>& t, const AttnShape& s, const Knobs& k,
                       std::vector<double>* out, std::vector<double>* gap) {
    reference_attention(t[0].data(), t[1].data(), t[2].data(), s, strides_of(t[0], t[1], t[2]),
                        k.causal, scale_of(k, s.head_dim), out, nullptr);
    gap->clear();
  };
  dense.reads = attention_reads;
  dense.knob_cases = [](const AttnShape&) {
    std::vector<KnobCase> c;
    Knobs o;
    o.decode_splits = 1;
    c.push_back({"decode_splits=1", o, true, ""});
    o.decode_splits = std::numeric_limits<int>::max();
    c.push_back({"decode_splits=INT_MAX", o, true, ""});
    o.decode_splits = -1;
    c.push_back({"decode_splits=-1", o, false, "decode_splits must be >= 0"});
    o.decode_splits = std::numeric_limits<int>::min();
    c.push_back({"decode_splits=INT_MIN", o, false, "decode_splits must be >= 0"});
    o = Knobs{};
    o.has_scale = true;
    o.scale = 1e-30f;
    c.push_back({"scale=1e-30", o, true, ""});
    o.scale = 0.f;
    c.push_back({"scale=0", o, false, "scale must be finite and > 0"});
    o.scale = std::numeric_limits<float>::quiet_NaN();
    c.push_back({"scale=NaN", o, false, "scale must be finite and > 0"});
    return c;
  };
  v.push_back(dense);

  Variant topk = dense;
  topk.name = "topk";
  topk.defaults = with_k(5);
  topk.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::TopkOptions o;
    o.k = k.k;
    o.causal = k.causal;
    o.has_scale = k.has_scale;
    o.scale = k.scale;
    o.kernel = k.kernel;
    return hattn::topk_attention(t[0], t[1], t[2], t[3], o, d);
  };
  topk.reference = [](const std::vector<HostTensor>& t, const AttnShape& s, const Knobs& k,
                      std::vector<double>* out, std::vector<double>* gap) {
    reference_topk_attention(t[0].data(), t[1].data(), t[2].data(), s,
                             strides_of(t[0], t[1], t[2]), k.causal, scale_of(k, s.head_dim), k.k,
                             out, gap);
  };
  topk.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    for (int64_t k : {int64_t{1}, s.lk - 1, s.lk, s.lk + 1, kI64Max}) {
      if (k >= 1) c.push_back({"k=" + std::to_string(k), with_k(k), true, ""});
    }
    for (int64_t k : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"k=" + std::to_string(k), with_k(k), false, "must be >= 1"});
    }
    return c;
  };
  v.push_back(topk);

  Variant ffn;
  ffn.name = "topk_ffn";
  ffn.roles = {"x", "w1", "w2t", "y"};
  ffn.written = {false, false, false, true};
  ffn.result = 3;
  ffn.has_causal = false;
  ffn.defaults = with_k(6);
  ffn.shapes = [](const AttnShape& s) {
    const std::vector<int64_t> x = {1, s.lq, s.head_dim}, w = {1, s.lk, s.head_dim};
    return std::vector<std::vector<int64_t>>{x, w, w, x};
  };
  ffn.view_ranks = {2, 2, 2, 2};
  ffn.shared = {false, true, true, false};
  // Weights scaled as a trained layer's (and as test_topk's): pre-activations and outputs of
  // order 1, so that fp32 accumulation stays within the comparison's tolerance.
  ffn.stddev = [](size_t role, const AttnShape& s) {
    return role == 0 ? 1.f
                     : 1.f / std::sqrt(static_cast<float>(role == 1 ? s.head_dim : s.lk));
  };
  ffn.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::TopkFfnOptions o;
    o.k = k.k;
    o.kernel = k.kernel;
    return hattn::topk_ffn(t[0], t[1], t[2], t[3], o, d);
  };
  ffn.reference = [](const std::vector<HostTensor>& t, const AttnShape& s, const Knobs& k,
                     std::vector<double>* out, std::vector<double>* gap) {
    std::vector<float> x = t[0].to_dense(), w1 = t[1].to_dense(), w2t = t[2].to_dense();
    reference_topk_ffn(x.data(), w1.data(), w2t.data(), s.lq, s.head_dim, s.lk, k.k, out, gap);
  };
  ffn.reads = [](int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape&, bool) {
    return role == 0 ? idx[1] == row : true;  // every token reads all of w1 (and w2t's kept rows)
  };
  ffn.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    for (int64_t k : {int64_t{1}, s.lk, s.lk + 1, kI64Max}) {
      c.push_back({"k=" + std::to_string(k), with_k(k), true, ""});
    }
    for (int64_t k : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"k=" + std::to_string(k), with_k(k), false, "must be >= 1"});
    }
    return c;
  };
  v.push_back(ffn);

  Variant loki = dense;
  loki.name = "loki";
  loki.roles = {"q", "k_rot", "v", "basis", "out"};
  loki.written = {false, false, false, false, true};
  loki.result = 4;
  loki.defaults.rank = 0;
  loki.defaults.rank_fraction = 0.5;
  loki.defaults.k = 5;
  loki.shapes = [](const AttnShape& s) {
    std::vector<std::vector<int64_t>> a = attention_shapes(s);
    a.insert(a.begin() + 3, std::vector<int64_t>{s.kv_heads, s.head_dim, s.head_dim});
    return a;
  };
  loki.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::LokiOptions o;
    o.rank = k.rank;
    o.rank_fraction = k.rank_fraction;
    o.k = k.k;
    o.k_fraction = k.k_fraction;
    o.causal = k.causal;
    o.has_scale = k.has_scale;
    o.scale = k.scale;
    o.kernel = k.kernel;
    return hattn::loki_attention(t[0], t[1], t[2], t[3], t[4], o, d);
  };
  loki.reference = [](const std::vector<HostTensor>& t, const AttnShape& s, const Knobs& k,
                      std::vector<double>* out, std::vector<double>* gap) {
    // r and k resolved from fractions exactly as LokiOptions documents.
    const int64_t rank =
        k.rank != 0 ? k.rank
                    : std::max<int64_t>(1, std::llround(k.rank_fraction * double(s.head_dim)));
    const int64_t kept =
        k.k != 0 ? k.k : std::max<int64_t>(1, std::llround(k.k_fraction * double(s.lk)));
    std::vector<float> basis = t[3].to_dense();
    reference_loki_attention(t[0].data(), t[1].data(), t[2].data(), basis.data(), s,
                             strides_of(t[0], t[1], t[2]), k.causal, scale_of(k, s.head_dim), rank,
                             kept, out, gap);
  };
  loki.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    auto rk = [](int64_t rank, int64_t k) {
      Knobs o;
      o.rank = rank;
      o.k = k;
      return o;
    };
    const std::string outside = "outside [1, D=" + std::to_string(s.head_dim) + "]";
    c.push_back({"r=1", rk(1, 4), true, ""});
    c.push_back({"r=D", rk(s.head_dim, 4), true, ""});
    c.push_back({"r=D,k=Lk+1", rk(s.head_dim, s.lk + 1), true, ""});
    c.push_back({"k=INT64_MAX", rk(2, kI64Max), true, ""});
    c.push_back({"r=D+1", rk(s.head_dim + 1, 4), false, outside});
    c.push_back({"r=-1", rk(-1, 4), false, outside});
    c.push_back({"r=INT64_MAX", rk(kI64Max, 4), false, outside});
    c.push_back({"r=0 without fraction", rk(0, 4), false, "rank_fraction in (0, 1]"});
    c.push_back({"k=0 without fraction", rk(2, 0), false, "must be >= 1"});
    c.push_back({"k=INT64_MIN", rk(2, kI64Min), false, "must be >= 1"});
    for (double f : {1e-9, 1.0}) {
      Knobs o = rk(0, 4);
      o.rank_fraction = f;
      c.push_back({"rank_fraction=" + std::to_string(f), o, true, ""});
    }
    for (double f : {1.5, -0.5, std::nan(""), HUGE_VAL}) {
      Knobs o = rk(0, 4);
      o.rank_fraction = f;
      c.push_back({"rank_fraction=" + std::to_string(f), o, false, "rank_fraction in (0, 1]"});
    }
    for (double f : {1e-300, 1.0}) {
      Knobs o = rk(2, 0);
      o.k_fraction = f;
      c.push_back({"k_fraction=" + std::to_string(f), o, true, ""});
    }
    for (double f : {1.01, -1.0, std::nan(""), HUGE_VAL}) {
      Knobs o = rk(2, 0);
      o.k_fraction = f;
      c.push_back({"k_fraction=" + std::to_string(f), o, false, "k_fraction must be in (0, 1]"});
    }
    Knobs both = rk(2, 4);
    both.rank_fraction = 0.5;
    c.push_back({"rank and rank_fraction", both, false, "not both"});
    both = rk(2, 4);
    both.k_fraction = 0.5;
    c.push_back({"k and k_fraction", both, false, "not both"});
    return c;
  };
  v.push_back(loki);

  Variant el;
  el.name = "el";
  el.roles = {"x", "memory", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "y"};
  el.written.assign(11, false);
  el.written[10] = true;
  el.result = 10;
  el.view_ranks = {3, 3, 2, 1, 2, 1, 2, 1, 2, 1, 3};
  el.shared = {false, false, true, true, true, true, true, true, true, true, false};
  el.masked_rows_zero = false;  // a row that sees no memory row is bo (y = 0 Wo^T + bo)
  el.defaults.heads = 2;
  el.shapes = [](const AttnShape& s) {
    const int64_t dm = el_model_dim(s);
    const std::vector<int64_t> x = {s.batch, s.lq, dm}, mem = {s.batch, s.lk, dm};
    const std::vector<int64_t> w = {1, dm, dm}, b = {1, 1, dm};
    return std::vector<std::vector<int64_t>>{x, mem, w, b, w, b, w, b, w, b, x};
  };
  // Weights as a trained layer's (1/sqrt(Dm)): projections of order 1.
  el.stddev = [](size_t role, const AttnShape& s) {
    if (role < 2) return 1.f;
    return role % 2 == 0 ? 1.f / std::sqrt(static_cast<float>(el_model_dim(s))) : 0.5f;
  };
  el.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::MhaWeights w{t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
    hattn::ElOptions o;
    o.heads = k.heads;
    o.beam = k.beam;
    o.causal = k.causal;
    o.has_scale = k.has_scale;
    o.scale = k.scale;
    o.kernel = k.kernel;
    return hattn::el_attention(t[0], t[1], w, t[10], o, d);
  };
  el.reference = [](const std::vector<HostTensor>& t, const AttnShape& s, const Knobs& k,
                    std::vector<double>* out, std::vector<double>* gap) {
    const int64_t dm = el_model_dim(s);
    MhaHostWeights w;
    w.dm = dm;
    std::vector<float>* parts[8] = {&w.wq, &w.bq, &w.wk, &w.bk, &w.wv, &w.bv, &w.wo, &w.bo};
    for (size_t i = 0; i < 8; ++i) *parts[i] = t[i + 2].to_dense();
    const std::vector<float> x = t[0].to_dense(), mem = t[1].to_dense();
    std::vector<float> y(x.size());
    const double scale = k.has_scale ? k.scale : 1.0 / std::sqrt(static_cast<double>(dm / k.heads));
    reference_mha(x.data(), mem.data(), w, s.batch * k.beam, s.lq, s.lk, k.heads, k.beam, k.causal,
                  nullptr, scale, y.data());
    out->assign(y.begin(), y.end());
    gap->clear();
  };
  el.reads = [](int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape& s, bool) {
    if (role == 0) return idx[0] * s.lq + idx[1] == row;       // x: its own token
    if (role == 1) return idx[0] == el_sample_of_row(row, s);  // memory: its sample's rows
    return true;                                               // weights and biases: every row
  };
  el.knob_cases = [](const AttnShape& s) {
    const int64_t dm = el_model_dim(s);
    std::vector<KnobCase> c;
    auto hb = [](int64_t heads, int64_t beam) {
      Knobs o;
      o.heads = heads;
      o.beam = beam;
      return o;
    };
    for (int64_t h : {int64_t{1}, dm / 16, dm}) {
      c.push_back({"heads=" + std::to_string(h), hb(h, 1), true, ""});
    }
    for (int64_t h : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"heads=" + std::to_string(h), hb(h, 1), false, "heads must be >= 1"});
    }
    for (int64_t h : {int64_t{3}, dm + 1, kI64Max}) {
      c.push_back({"heads=" + std::to_string(h), hb(h, 1), false,
                   "not divisible by heads=" + std::to_string(h)});
    }
    for (int64_t b : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"beam=" + std::to_string(b), hb(2, b), false, "beam must be >= 1"});
    }
    for (int64_t b : {s.batch + 1, kI64Max}) {
      c.push_back({"beam=" + std::to_string(b), hb(2, b), false,
                   "not divisible by beam=" + std::to_string(b)});
    }
    Knobs o = hb(2, 1);
    o.has_scale = true;
    o.scale = 1e-30f;
    c.push_back({"scale=1e-30", o, true, ""});
    o.scale = 0.f;
    c.push_back({"scale=0", o, false, "scale must be positive and finite"});
    o.scale = std::numeric_limits<float>::infinity();
    c.push_back({"scale=inf", o, false, "scale must be positive and finite"});
    return c;
  };
  v.push_back(el);

  Variant sk = dense;
  sk.name = "sparsek";
  sk.roles = {"q", "k", "v", "x", "w_score", "out"};
  sk.written = {false, false, false, false, false, true};
  sk.result = 5;
  sk.view_ranks = {4, 4, 4, 3, 2, 4};
  sk.defaults = Knobs{};
  sk.defaults.k = 3;
  sk.defaults.window = 2;
  sk.defaults.slope = 0.05f;
  // x [B, Lk, Dm] with Dm = D; w_score [Hkv, Dm] as [1, Hkv, Dm].
  sk.shapes = [](const AttnShape& s) {
    std::vector<std::vector<int64_t>> a = attention_shapes(s);
    a.insert(a.begin() + 3, {s.batch, s.lk, s.head_dim});
    a.insert(a.begin() + 4, {1, s.kv_heads, s.head_dim});
    return a;
  };
  sk.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::SparsekOptions o;
    o.k = k.k;
    o.window = k.window;
    o.slope = k.slope;
    o.gate = k.logit ? hattn::SparsekGate::logit : hattn::SparsekGate::value;
    o.has_scale = k.has_scale;
    o.scale = k.scale;
    o.kernel = k.kernel;
    return hattn::sparsek_attention(t[0], t[1], t[2], t[3], t[4], t[5], o, d);
  };
  // Always causal (the knob is ignored, by the call and here).
  sk.reference = [](const std::vector<HostTensor>& t, const AttnShape& s, const Knobs& k,
                    std::vector<double>* out, std::vector<double>* gap) {
    const std::vector<float> q = t[0].to_dense(), key = t[1].to_dense(), val = t[2].to_dense();
    const std::vector<float> x = t[3].to_dense(), w = t[4].to_dense();
    std::vector<float> u;
    reference_sparsek_scores(x.data(), w.data(), s.batch, s.kv_heads, s.lk, s.head_dim, k.slope,
                             &u);
    reference_sparsek_attention(q.data(), key.data(), val.data(), u.data(), s, k.k, k.window,
                                k.logit, scale_of(k, s.head_dim), out, gap);
  };
  sk.reads = [](int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape& s,
                bool causal) {
    const int64_t b = row / (s.lq * s.q_heads);
    const int64_t kv_head = ((row / s.lq) % s.q_heads) / (s.q_heads / s.kv_heads);
    if (role == 3) return idx[0] == b;        // x: the scores of every kv head of its batch
    if (role == 4) return idx[1] == kv_head;  // w_score: its kv head's scores
    return attention_reads(role, idx, row, s, causal);
  };
  sk.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    auto kw = [](int64_t k, int64_t w) {
      Knobs o;
      o.k = k;
      o.window = w;
      return o;
    };
    const int64_t below30 = std::numeric_limits<int32_t>::max() / 2;
    for (int64_t k : {int64_t{0}, int64_t{1}, s.lk, s.lk + 1, below30}) {
      c.push_back({"k=" + std::to_string(k), kw(k, 2), true, ""});
    }
    for (int64_t w : {int64_t{0}, int64_t{1}, s.lk, s.lk + 1, below30}) {
      c.push_back({"w=" + std::to_string(w), kw(3, w), true, ""});
    }
    c.push_back({"k=0,w=0", kw(0, 0), true, ""});  // sees nothing: zeros
    for (int64_t k : {int64_t{-1}, kI64Min}) {
      c.push_back({"k=" + std::to_string(k), kw(k, 2), false, "budget k must be >= 0"});
    }
    for (int64_t w : {int64_t{-1}, kI64Min}) {
      c.push_back({"w=" + std::to_string(w), kw(3, w), false, "window w must be >= 0"});
    }
    c.push_back({"k=2^30", kw(below30 + 1, 2), false, "below 2^30"});
    c.push_back({"w=INT64_MAX", kw(3, kI64Max), false, "below 2^30"});
    Knobs o = kw(3, 2);
    o.logit = true;
    c.push_back({"gate=logit", o, true, ""});
    o.logit = false;
    o.slope = 1e6f;
    c.push_back({"slope=1e6", o, true, ""});
    o.slope = std::numeric_limits<float>::quiet_NaN();
    c.push_back({"slope=NaN", o, false, "slope must be finite"});
    o.slope = -std::numeric_limits<float>::infinity();
    c.push_back({"slope=-inf", o, false, "slope must be finite"});
    o.slope = 0.f;
    o.has_scale = true;
    o.scale = 0.f;
    c.push_back({"scale=0", o, false, "scale must be finite and > 0"});
    return c;
  };
  v.push_back(sk);
  return v;
}

}  // namespace

int64_t el_model_dim(const AttnShape& s) {
  const int64_t width = std::max<int64_t>(64, s.q_heads * s.head_dim);
  return (width + 15) / 16 * 16;
}

const std::vector<Variant>& all_variants() {
  static const std::vector<Variant> v = build();
  return v;
}

const Variant& variant_named(const std::string& name) {
  for (const Variant& v : all_variants()) {
    if (v.name == name) return v;
  }
  std::cerr << "variants: no variant named " << name << "\n";
  std::abort();
}

std::vector<HostTensor> make_tensors(const Variant& v, const AttnShape& s, TestRng& rng,
                                     Layout layout) {
  std::vector<std::vector<int64_t>> shapes = v.shapes(s);
  std::vector<HostTensor> t;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const bool basis = v.roles[i] == "basis";
    t.emplace_back(shapes[i], basis ? Layout::kContiguous : layout);
    if (basis) {
      fill_orthonormal(&t.back(), rng);
    } else if (v.written[i]) {
      t.back().poison();
    } else {
      t.back().fill_normal(rng, v.stddev ? v.stddev(i, s) : 1.f);
    }
    t.back().snapshot();
  }
  return t;
}

std::vector<TensorView> views_of(const Variant& v, const std::vector<HostTensor>& t) {
  std::vector<TensorView> views;
  for (size_t i = 0; i < t.size(); ++i) {
    views.push_back(v.view_ranks.empty() ? t[i].view() : view_with_rank(t[i], v.view_ranks[i]));
  }
  return views;
}

std::vector<float> run_result(const Variant& v, std::vector<HostTensor>* t, const Knobs& k,
                              std::string* error) {
  for (size_t i = 0; i < t->size(); ++i) {
    if (v.written[i]) (*t)[i].poison();
  }
  hattn::Dispatch d;
  Status s = v.call(views_of(v, *t), k, &d);
  if (!s.ok()) {
    *error = v.name + ": " + hattn::to_string(s.code) + ": " + s.message;
    return {};
  }
  error->clear();
  return (*t)[static_cast<size_t>(v.result)].to_dense();
}

std::string run_and_compare(const Variant& v, std::vector<HostTensor>* t, const AttnShape& s,
                            const Knobs& k, hattn::Dispatch* d) {
  for (size_t i = 0; i < t->size(); ++i) {
    if (v.written[i]) {
      (*t)[i].poison();
      (*t)[i].snapshot();
    }
  }
  hattn::Dispatch local;
  hattn::Dispatch* chosen = d ? d : &local;
  Status st = v.call(views_of(v, *t), k, chosen);
  if (!st.ok()) return v.name + " refused: " + hattn::to_string(st.code) + ": " + st.message;
  std::string problems;
  for (size_t i = 0; i < t->size(); ++i) {
    const std::string changed = (*t)[i].changed_since_snapshot(v.written[i]);
    if (!changed.empty()) {
      problems += "\n  " + v.roles[i] + (v.written[i] ? " padding written: " : " modified: ") + changed;
    }
  }
  std::vector<double> ref, gap;
  v.reference(*t, s, k, &ref, &gap);
  const HostTensor& out = (*t)[static_cast<size_t>(v.result)];
  int left_out = 0;
  problems += compare_rows(out, ref, gap.empty() ? nullptr : &gap,
                           out.shape().back(), &left_out);
  if (!problems.empty()) return v.name + " (kernel " + chosen->kernel + "):" + problems;
  return "";
}

}  // namespace hattn_test
