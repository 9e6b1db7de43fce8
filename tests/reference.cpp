#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>

namespace hattn_test {

std::array<int64_t, 4> dense_strides(int64_t b, int64_t h, int64_t l, int64_t d) {
  (void)b;
  return {h * l * d, l * d, d, 1};
}

AttnStrides dense_strides(const AttnShape& s) {
  return {dense_strides(s.batch, s.q_heads, s.lq, s.head_dim),
          dense_strides(s.batch, s.kv_heads, s.lk, s.head_dim),
          dense_strides(s.batch, s.kv_heads, s.lk, s.head_dim)};
}

void reference_attention(const float* q, const float* k, const float* v, const AttnShape& shape,
                         const AttnStrides& strides, bool causal, double scale,
                         std::vector<double>* out, std::vector<double>* lse) {
  const int64_t B = shape.batch, Hq = shape.q_heads, Hkv = shape.kv_heads;
  const int64_t Lq = shape.lq, Lk = shape.lk, D = shape.head_dim;
  const int64_t group = Hq / Hkv;
  out->assign(static_cast<size_t>(B * Hq * Lq * D), 0.0);
  if (lse != nullptr) lse->assign(static_cast<size_t>(B * Hq * Lq), 0.0);

  const auto& sq = strides.q;
  const auto& sk = strides.k;
  const auto& sv = strides.v;
  std::vector<double> scores(static_cast<size_t>(Lk));
  std::vector<double> acc(static_cast<size_t>(D));

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < Lq; ++i) {
        // Keys 0 .. visible-1 are visible to row i.
        int64_t visible = Lk;
        if (causal) {
          const int64_t last = i + (Lk - Lq);  // last visible key index
          visible = last < 0 ? 0 : (last + 1 < Lk ? last + 1 : Lk);
        }
        const size_t row = static_cast<size_t>(((b * Hq + h) * Lq + i));
        double* o = out->data() + row * static_cast<size_t>(D);
        if (visible == 0) {
          // `out` is already zero.
          if (lse != nullptr) (*lse)[row] = -std::numeric_limits<double>::infinity();
          continue;
        }
        const float* qrow = q + b * sq[0] + h * sq[1] + i * sq[2];
        // Pass 1: scores and their max.
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < visible; ++j) {
          const float* krow = k + b * sk[0] + hk * sk[1] + j * sk[2];
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            dot += static_cast<double>(qrow[d * sq[3]]) * static_cast<double>(krow[d * sk[3]]);
          }
          const double s = scale * dot;
          scores[static_cast<size_t>(j)] = s;
          if (s > max_score) max_score = s;
        }
        // Pass 2: normaliser and weighted sum of values.
        double sum = 0.0;
        for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] = 0.0;
        for (int64_t j = 0; j < visible; ++j) {
          const double p = std::exp(scores[static_cast<size_t>(j)] - max_score);
          sum += p;
          const float* vrow = v + b * sv[0] + hk * sv[1] + j * sv[2];
          for (int64_t d = 0; d < D; ++d) {
            acc[static_cast<size_t>(d)] += p * static_cast<double>(vrow[d * sv[3]]);
          }
        }
        for (int64_t d = 0; d < D; ++d) o[d] = acc[static_cast<size_t>(d)] / sum;
        if (lse != nullptr) (*lse)[row] = max_score + std::log(sum);
      }
    }
  }
}

namespace {

// Indices of `scores` ordered by (score descending, index ascending); the kept count; the gap.
std::vector<int64_t> top_indices(const std::vector<double>& scores, int64_t keep, double* gap) {
  std::vector<int64_t> order(scores.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = static_cast<int64_t>(j);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  const size_t n = std::min(order.size(), static_cast<size_t>(std::max<int64_t>(keep, 0)));
  *gap = n < order.size() && n > 0 ? scores[order[n - 1]] - scores[order[n]]
                                   : std::numeric_limits<double>::infinity();
  order.resize(n);
  return order;
}

}  // namespace

void reference_topk_attention(const float* q, const float* k, const float* v, const AttnShape& s,
                              const AttnStrides& st, bool causal, double scale, int64_t topk,
                              std::vector<double>* out, std::vector<double>* gap) {
  out->assign(static_cast<size_t>(s.batch * s.q_heads * s.lq * s.head_dim), 0.0);
  if (gap != nullptr) gap->assign(static_cast<size_t>(s.batch * s.q_heads * s.lq), 0.0);
  const int64_t group = s.q_heads / s.kv_heads;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < s.lq; ++i) {
        const int64_t visible = causal ? std::clamp<int64_t>(i + s.lk - s.lq + 1, 0, s.lk) : s.lk;
        const float* qi = q + b * st.q[0] + h * st.q[1] + i * st.q[2];
        std::vector<double> scores(static_cast<size_t>(visible));
        for (int64_t j = 0; j < visible; ++j) {
          const float* kj = k + b * st.k[0] + hk * st.k[1] + j * st.k[2];
          double dot = 0.0;
          for (int64_t d = 0; d < s.head_dim; ++d) dot += double(qi[d]) * double(kj[d]);
          scores[static_cast<size_t>(j)] = scale * dot;
        }
        double g = 0.0;
        std::vector<int64_t> kept = top_indices(scores, topk, &g);
        const size_t row = static_cast<size_t>((b * s.q_heads + h) * s.lq + i);
        if (gap != nullptr) (*gap)[row] = g;
        if (kept.empty()) continue;
        double m = scores[static_cast<size_t>(kept[0])];
        double l = 0.0;
        for (int64_t j : kept) l += std::exp(scores[static_cast<size_t>(j)] - m);
        double* o = out->data() + row * static_cast<size_t>(s.head_dim);
        for (int64_t j : kept) {
          const double p = std::exp(scores[static_cast<size_t>(j)] - m) / l;
          const float* vj = v + b * st.v[0] + hk * st.v[1] + j * st.v[2];
          for (int64_t d = 0; d < s.head_dim; ++d) o[d] += p * double(vj[d]);
        }
      }
    }
  }
}

void reference_topk_ffn(const float* x, const float* w1, const float* w2t, int64_t tokens,
                        int64_t dim, int64_t d_ff, int64_t topk, std::vector<double>* y,
                        std::vector<double>* gap) {
  y->assign(static_cast<size_t>(tokens * dim), 0.0);
  if (gap != nullptr) gap->assign(static_cast<size_t>(tokens), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<double> h(static_cast<size_t>(d_ff));
    for (int64_t f = 0; f < d_ff; ++f) {
      double acc = 0.0;
      for (int64_t d = 0; d < dim; ++d) acc += double(x[t * dim + d]) * double(w1[f * dim + d]);
      h[static_cast<size_t>(f)] = acc;
    }
    double g = 0.0;
    for (int64_t f : top_indices(h, topk, &g)) {
      const double a = std::max(h[static_cast<size_t>(f)], 0.0);
      for (int64_t d = 0; d < dim; ++d)
        (*y)[static_cast<size_t>(t * dim + d)] += a * w2t[f * dim + d];
    }
    if (gap != nullptr) (*gap)[static_cast<size_t>(t)] = g;
  }
}

void reference_loki_attention(const float* q, const float* k_rot, const float* v,
                              const float* basis, const AttnShape& s, const AttnStrides& st,
                              bool causal, double scale, int64_t rank, int64_t topk,
                              std::vector<double>* out, std::vector<double>* gap) {
  const int64_t d_all = s.head_dim;
  out->assign(static_cast<size_t>(s.batch * s.q_heads * s.lq * d_all), 0.0);
  gap->assign(static_cast<size_t>(s.batch * s.q_heads * s.lq), 0.0);
  const int64_t group = s.q_heads / s.kv_heads;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t hk = h / group;
      const float* p = basis + hk * d_all * d_all;
      for (int64_t i = 0; i < s.lq; ++i) {
        const float* qi = q + b * st.q[0] + h * st.q[1] + i * st.q[2];
        std::vector<double> qh(static_cast<size_t>(d_all), 0.0);
        for (int64_t c = 0; c < d_all; ++c) {
          for (int64_t e = 0; e < d_all; ++e) qh[c] += double(qi[e]) * double(p[e * d_all + c]);
        }
        const int64_t visible = causal ? std::clamp<int64_t>(i + s.lk - s.lq + 1, 0, s.lk) : s.lk;
        std::vector<double> approx(static_cast<size_t>(visible)), exact(approx.size());
        for (int64_t j = 0; j < visible; ++j) {
          const float* kj = k_rot + b * st.k[0] + hk * st.k[1] + j * st.k[2];
          double a = 0.0, x = 0.0;
          for (int64_t c = 0; c < d_all; ++c) {
            x += qh[c] * double(kj[c]);
            if (c < rank) a = x;
          }
          approx[static_cast<size_t>(j)] = scale * a;
          exact[static_cast<size_t>(j)] = scale * x;
        }
        const size_t row = static_cast<size_t>((b * s.q_heads + h) * s.lq + i);
        std::vector<int64_t> kept = top_indices(approx, topk, &(*gap)[row]);
        if (kept.empty()) continue;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j : kept) m = std::max(m, exact[static_cast<size_t>(j)]);
        double l = 0.0;
        for (int64_t j : kept) l += std::exp(exact[static_cast<size_t>(j)] - m);
        double* o = out->data() + row * static_cast<size_t>(d_all);
        for (int64_t j : kept) {
          const double w = std::exp(exact[static_cast<size_t>(j)] - m) / l;
          const float* vj = v + b * st.v[0] + hk * st.v[1] + j * st.v[2];
          for (int64_t c = 0; c < d_all; ++c) o[c] += w * double(vj[c]);
        }
      }
    }
  }
}

}  // namespace hattn_test

namespace hattn_test {

namespace {

// out[o] = sum_i W[o][i] in[i] + b[o], in double.
std::vector<double> project(const std::vector<float>& w, const std::vector<float>& b,
                            const std::vector<double>& in, int64_t dm) {
  std::vector<double> out(static_cast<size_t>(dm));
  for (int64_t o = 0; o < dm; ++o) {
    double acc = b.empty() ? 0.0 : b[o];
    for (int64_t i = 0; i < dm; ++i) acc += double(w[o * dm + i]) * in[i];
    out[o] = acc;
  }
  return out;
}

}  // namespace

void reference_linear_row(const float* x, const float* w, const float* bias, int64_t in_dim,
                          int64_t out_dim, double scale, std::vector<double>* y) {
  y->assign(static_cast<size_t>(out_dim), 0.0);
  for (int64_t o = 0; o < out_dim; ++o) {
    double acc = bias[o];
    for (int64_t i = 0; i < in_dim; ++i) acc += double(x[i]) * double(w[o * in_dim + i]);
    (*y)[static_cast<size_t>(o)] = scale * acc;
  }
}

void reference_mha(const float* x, const float* memory, const MhaHostWeights& w, int64_t rows,
                   int64_t tokens, int64_t mem_len, int64_t heads, int64_t beam, bool causal,
                   const int32_t* lengths, double scale, float* y) {
  const int64_t dm = w.dm, dh = dm / heads;
  const int64_t samples = rows / beam;
  for (int64_t b = 0; b < samples; ++b) {
    const int64_t len = lengths != nullptr ? lengths[b] : mem_len;
    std::vector<std::vector<double>> keys, values;
    for (int64_t j = 0; j < len; ++j) {
      std::vector<double> hs(memory + (b * mem_len + j) * dm, memory + (b * mem_len + j + 1) * dm);
      keys.push_back(project(w.wk, w.bk, hs, dm));
      values.push_back(project(w.wv, w.bv, hs, dm));
    }
    for (int64_t r = b * beam; r < (b + 1) * beam; ++r) {
      for (int64_t t = 0; t < tokens; ++t) {
        const float* xr = x + (r * tokens + t) * dm;
        std::vector<double> q = project(w.wq, w.bq, std::vector<double>(xr, xr + dm), dm);
        std::vector<double> att(static_cast<size_t>(dm), 0.0);
        const int64_t last = causal ? std::min<int64_t>(len - 1, t + len - tokens) : len - 1;
        for (int64_t h = 0; h < heads && last >= 0; ++h) {
          std::vector<double> s(static_cast<size_t>(last + 1));
          double mx = -1e300;
          for (int64_t j = 0; j <= last; ++j) {
            double dot = 0;
            for (int64_t d = 0; d < dh; ++d) dot += q[h * dh + d] * keys[j][h * dh + d];
            s[j] = scale * dot;
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (double& e : s) sum += (e = std::exp(e - mx));
          for (int64_t j = 0; j <= last; ++j) {
            for (int64_t d = 0; d < dh; ++d) att[h * dh + d] += s[j] / sum * values[j][h * dh + d];
          }
        }
        std::vector<double> out = project(w.wo, w.bo, att, dm);
        for (int64_t o = 0; o < dm; ++o) y[(r * tokens + t) * dm + o] = static_cast<float>(out[o]);
      }
    }
  }
}

namespace {
// An exact running sum of doubles (Shewchuk's expansion: non-overlapping partials, smallest
// first): the free set's sum after entries join and leave it, with no residue of the large ones
// that left (a long double sum lost 1e-42 against 0.3 and found a root among subnormals).
class ExactSum {
 public:
  void add(double x) {
    size_t kept = 0;
    for (size_t i = 0; i < partials_.size(); ++i) {
      double y = partials_[i];
      if (std::abs(x) < std::abs(y)) std::swap(x, y);
      const double hi = x + y;
      const double lo = y - (hi - x);
      if (lo != 0) partials_[kept++] = lo;
      x = hi;
    }
    partials_.resize(kept);
    partials_.push_back(x);
  }
  long double value() const {
    long double s = 0;
    for (double p : partials_) s += p;
    return s;
  }
  void clear() { partials_.clear(); }

 private:
  std::vector<double> partials_;
};
}  // namespace

SparsekRoots reference_sparsek_roots(const std::vector<double>& z, int64_t n, int64_t k) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (n <= 0) return {-kInf, kInf, 0};
  const auto first = z.begin(), last = z.begin() + n;
  // A NaN or infinite score has no projection (f is undefined or never reaches k): NaN roots.
  if (!std::all_of(first, last, [](double v) { return std::isfinite(v); })) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return {nan, nan, 0};
  }
  if (k <= 0) return {*std::max_element(first, last), kInf, 0};
  if (k >= n) return {-kInf, *std::min_element(first, last) - 1, 0};
  // Breakpoints: entry j turns from saturated to free at z_j - 1, from free to dead at z_j.
  struct Event {
    double t;
    bool dies;  // false: saturated -> free; true: free -> dead
    double z;
  };
  std::vector<Event> events;
  events.reserve(static_cast<size_t>(2 * n));
  for (auto it = first; it != last; ++it) {
    events.push_back({*it - 1, false, *it});
    events.push_back({*it, true, *it});
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.t < b.t; });
  // Left of every breakpoint all n entries are saturated (f = n > k).
  int64_t sat = n, free = 0;
  ExactSum free_sum;
  double prev = -kInf;
  const long double kk = static_cast<long double>(k);
  for (size_t e = 0; e < events.size();) {
    const double b = events[e].t;
    // The piece (prev, b): f(t) = sat + free_sum - free * t.
    if (free == 0) {
      if (sat == k) return {prev, b, 0};
    } else {
      // The integers first: 1 + 1e-42 - 1 would lose what a tiny free set sums to.
      const long double root = (static_cast<long double>(sat) - kk + free_sum.value()) / free;
      if (root < b) {  // at b itself the next piece may be flat at k: look there
        const double r = static_cast<double>(std::max<long double>(root, prev));
        return {r, r, free};
      }
    }
    for (; e < events.size() && events[e].t == b; ++e) {
      if (events[e].dies) {
        --free;
        free_sum.add(-events[e].z);
      } else {
        --sat;
        ++free;
        free_sum.add(events[e].z);
      }
    }
    if (free == 0) free_sum.clear();
    // From |z| >= 2^53 on, z - 1 == z in double: an entry's free piece collapses into its
    // breakpoint and f jumps there. If it jumped below k, the root is b (to a double's spacing).
    if (static_cast<long double>(sat) - kk + free_sum.value() - static_cast<long double>(free) * b <
        0) {
      return {b, b, std::max<int64_t>(free, 1)};
    }
    prev = b;
  }
  return {prev, prev, 0};  // not reached for 0 < k < n: f is 0 right of max z
}

double reference_sparsek_tau(const std::vector<double>& z, int64_t n, int64_t k) {
  if (k >= n) return -std::numeric_limits<double>::infinity();
  if (k <= 0) return std::numeric_limits<double>::infinity();
  const SparsekRoots r = reference_sparsek_roots(z, n, k);
  return r.lo == r.hi ? r.lo : 0.5 * (r.lo + r.hi);
}

namespace {
// The float spacing at |t| (its unit in the last place), in double.
double float_spacing(double t) {
  const float a =
      static_cast<float>(std::min(std::abs(t), double(std::numeric_limits<float>::max())));
  return double(std::nextafter(a, std::numeric_limits<float>::infinity())) - double(a);
}
std::string g17(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
}  // namespace

std::string check_sparsek_row(const float* z, const float* p, int64_t n, int64_t k, float tau,
                              SparsekRootKind* kind) {
  double sum = 0, zmax = 1;
  for (int64_t j = 0; j < n; ++j) {
    const float want = std::clamp(z[j] - tau, 0.f, 1.f);
    if (!(p[j] >= 0.f && p[j] <= 1.f) || !(p[j] == want)) {
      return "p[" + std::to_string(j) + "] = " + g17(p[j]) +
             " but clip(z - tau, 0, 1) = " + g17(want) + " (z = " + g17(z[j]) + ")";
    }
    sum += p[j];
    zmax = std::max(zmax, double(std::abs(z[j])));
  }
  constexpr float kInf = std::numeric_limits<float>::infinity();
  if (k <= 0 || k >= n) {
    if (kind != nullptr) *kind = k <= 0 ? SparsekRootKind::zero_k : SparsekRootKind::all_ones;
    const float want = k <= 0 ? kInf : -kInf;
    if (!(tau == want)) return "tau = " + g17(tau) + ", want " + g17(want);
    if (sum != double(k <= 0 ? 0 : n)) return "sum p = " + g17(sum);
    return "";
  }
  const SparsekRoots roots = reference_sparsek_roots(std::vector<double>(z, z + n), n, k);
  if (kind != nullptr)
    *kind = roots.free_count == 0 ? SparsekRootKind::flat : SparsekRootKind::free;
  const std::string root = "the reference's root [" + g17(roots.lo) + ", " + g17(roots.hi) + "] (" +
                           std::to_string(roots.free_count) + " free)";
  const double u = float_spacing(std::max(std::abs(roots.lo), std::abs(roots.hi)));
  const double slack = u + double(n) * 0x1p-52 * zmax;
  if (!(tau >= roots.lo - slack && tau <= roots.hi + slack)) {
    return "tau = " + g17(tau) + " outside " + root + " +- " + g17(slack);
  }
  if (roots.free_count == 0 && u < 0.5 && sum != double(k)) {
    return "sum p = " + g17(sum) + " at a flat root, want exactly " + std::to_string(k);
  }
  const double sum_tol = double(n) * (u + 0x1p-23);
  if (!(std::abs(sum - double(k)) <= sum_tol)) {
    return "sum p = " + g17(sum) + ", want " + std::to_string(k) + " within " + g17(sum_tol) +
           ", " + root;
  }
  return "";
}

namespace {

// SplitMix64 with the draws boundary_rows needs.
struct RowRng : SplitMix64 {
  double normal() {
    const double u = std::max(uniform(), 1e-300), v = uniform();
    return std::sqrt(-2 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
  void shuffle(std::vector<float>* z) {
    for (size_t i = z->size(); i > 1; --i)
      std::swap((*z)[i - 1], (*z)[static_cast<size_t>(below(static_cast<int64_t>(i)))]);
  }
};

}  // namespace

uint64_t SplitMix64::next() {
  uint64_t x = (state += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
int64_t SplitMix64::below(int64_t n) {
  return static_cast<int64_t>(next() % static_cast<uint64_t>(n));
}
double SplitMix64::uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }

std::vector<BoundaryRow> boundary_rows(uint64_t seed, int64_t max_len) {
  RowRng rng{{seed}};
  std::vector<BoundaryRow> rows;
  const int64_t cap = std::max<int64_t>(max_len, 2);
  auto len = [&](int64_t lo) {
    return std::min(cap, lo + rng.below(std::max<int64_t>(1, cap - lo + 1)));
  };
  // Every k that matters for a row of length n, plus one random one.
  auto add_ks = [&](const std::string& kind, const std::vector<float>& z) {
    const int64_t n = static_cast<int64_t>(z.size());
    for (int64_t k :
         {int64_t{0}, int64_t{1}, n - 1, n, n + 3, 1 + rng.below(std::max<int64_t>(1, n))}) {
      if (k >= 0) rows.push_back({kind + " k=" + std::to_string(k), z, k});
    }
  };

  // The row of issue 21, and its family: the top k - 1 far above, z_(k) in [P, P + 1) for a power
  // of two P below k, the rest more than 1 below z_(k) (or exactly 1 below: coinciding
  // breakpoints). The root is flat: every p is 0 or 1.
  rows.push_back({"issue21 [11.5, 1.5, 0] k=2", {11.5f, 1.5f, 0.f}, 2});
  for (int64_t k : {2, 3, 5, 9, 17, 33, 37, 41, 65, 129}) {
    if (k + 1 > cap) continue;
    for (int variant = 0; variant < 3; ++variant) {
      int64_t p2 = 1;
      while (p2 * 2 < k) p2 *= 2;
      const float zk =
          static_cast<float>(p2) + (variant == 2 ? 0.f : static_cast<float>(rng.uniform()));
      const int64_t n = std::min(cap, k + 1 + rng.below(k + 8));
      std::vector<float> z;
      for (int64_t i = 0; i + 1 < k; ++i)
        z.push_back(zk + 2.f + static_cast<float>(rng.below(3 * k)));
      z.push_back(zk);
      for (int64_t i = k; i < n; ++i) {
        z.push_back(variant == 1 && i == k
                        ? zk - 1.f
                        : zk - 1.f - 0.25f - static_cast<float>(rng.below(4 * k)) * 0.5f);
      }
      rng.shuffle(&z);
      rows.push_back({"pow2-flat P=" + std::to_string(p2) + " v" + std::to_string(variant) +
                          " k=" + std::to_string(k),
                      z, k});
    }
  }
  // Distinct integers spaced 1, 2 or 3 apart (maybe all + 0.5), shuffled.
  for (int spacing = 1; spacing <= 3; ++spacing) {
    const int64_t n = len(2);
    std::vector<float> z;
    const float base = static_cast<float>(rng.below(200)) - 100.f + (rng.below(2) ? 0.5f : 0.f);
    for (int64_t i = 0; i < n; ++i) z.push_back(base + static_cast<float>(spacing * i));
    rng.shuffle(&z);
    add_ks("integers spaced " + std::to_string(spacing), z);
  }
  // All-0/1 solutions: k values within 0.5 of each other, more than 1 above the rest.
  for (int rep = 0; rep < 2; ++rep) {
    const int64_t n = len(3), k = 1 + rng.below(n - 1);
    std::vector<float> z;
    for (int64_t i = 0; i < n; ++i) {
      z.push_back(static_cast<float>(i < k ? 4 + 0.5 * rng.uniform() : 2.5 - 3 * rng.uniform()));
    }
    rng.shuffle(&z);
    rows.push_back({"all-0/1 k=" + std::to_string(k), z, k});
  }
  // Ties: a coarse grid, so the k-th place is shared with others.
  {
    const int64_t n = len(4);
    std::vector<float> z;
    for (int64_t i = 0; i < n; ++i) z.push_back(0.25f * static_cast<float>(rng.below(9)));
    add_ks("ties on a 0.25 grid", z);
    add_ks("all equal", std::vector<float>(static_cast<size_t>(n), 1.f));
  }
  // Values at and around powers of two (their neighbours in float too).
  {
    const int64_t n = len(4);
    std::vector<float> z;
    for (int64_t i = 0; i < n; ++i) {
      float v = std::ldexp(1.f, static_cast<int>(rng.below(24)) - 8);
      if (rng.below(3) == 0) v = std::nextafter(v, rng.below(2) ? 0.f : 1e30f);
      z.push_back(rng.below(4) == 0 ? -v : v);
    }
    add_ks("powers of two", z);
  }
  // Tiny, subnormal and huge magnitudes, the float range's ends.
  for (double scale : {1e-30, 1e-42, 1e30}) {
    const int64_t n = len(2);
    std::vector<float> z;
    for (int64_t i = 0; i < n; ++i) z.push_back(static_cast<float>(scale * rng.normal()));
    add_ks("normal x " + std::to_string(scale), z);
  }
  // Subnormals among values of order 1 (the top k clear of them): a sum over the free set that
  // keeps residue of the large entries that passed through it finds a root among the subnormals.
  {
    const int64_t n = len(8);
    std::vector<float> z;
    for (int64_t i = 0; i < n; ++i) {
      z.push_back(static_cast<float>(i % 3 == 0 ? 1e-42 * rng.normal() : rng.normal()));
    }
    add_ks("subnormals among normal x 1", z);
  }
  {
    const float big = std::numeric_limits<float>::max();
    add_ks("+-FLT_MAX", {big, -big, 0.f, big, 1.f});
    add_ks("near -FLT_MAX", {-big, std::nextafter(-big, 0.f), -1e38f});
  }
  // Signed zeros: equal scores in different bits (-0 and +0 must tie, by the lower index).
  for (int64_t k = 1; k <= 7; ++k) {
    rows.push_back(
        {"signed zeros k=" + std::to_string(k), {-0.f, 0.f, 1.f, -0.f, -1.f, 0.f, -0.f}, k});
  }
  // Rows of length 1 and a plain random row.
  add_ks("length 1", {static_cast<float>(rng.normal())});
  {
    const int64_t n = len(2);
    std::vector<float> z;
    for (int64_t i = 0; i < n; ++i) z.push_back(static_cast<float>(2 * rng.normal()));
    add_ks("normal x 2", z);
  }
  return rows;
}

void reference_sparsek_scores(const float* x, const float* w_score, int64_t batch, int64_t kv_heads,
                              int64_t len, int64_t dm, double slope, std::vector<float>* u) {
  u->assign(static_cast<size_t>(batch * kv_heads * len), 0.f);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < kv_heads; ++h) {
      for (int64_t j = 0; j < len; ++j) {
        double dot = slope * static_cast<double>(j);
        for (int64_t m = 0; m < dm; ++m) {
          dot += static_cast<double>(w_score[h * dm + m]) * x[(b * len + j) * dm + m];
        }
        (*u)[static_cast<size_t>((b * kv_heads + h) * len + j)] = static_cast<float>(dot);
      }
    }
  }
}

void reference_sparsek_attention(const float* q, const float* k, const float* v, const float* u,
                                 const AttnShape& s, int64_t budget, int64_t window, bool logit,
                                 double scale, std::vector<double>* out, std::vector<double>* gap) {
  const int64_t D = s.head_dim, group = s.q_heads / s.kv_heads;
  out->assign(static_cast<size_t>(s.batch * s.q_heads * s.lq * D), 0.0);
  gap->assign(static_cast<size_t>(s.batch * s.q_heads * s.lq), 1e30);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.q_heads; ++h) {
      const int64_t hk = h / group;
      std::vector<double> uu(static_cast<size_t>(s.lk));
      for (int64_t j = 0; j < s.lk; ++j) uu[j] = u[(b * s.kv_heads + hk) * s.lk + j];
      for (int64_t i = 0; i < s.lq; ++i) {
        const int64_t pos = i + s.lk - s.lq;
        const size_t row = static_cast<size_t>((b * s.q_heads + h) * s.lq + i);
        std::vector<std::pair<int64_t, double>> keys;  // (j, gate)
        for (int64_t j = std::max<int64_t>(0, pos - window + 1); j <= pos; ++j)
          keys.push_back({j, 1.0});
        const int64_t cands = std::max<int64_t>(0, std::min(s.lk, pos - window + 1));
        if (budget > 0 && cands > 0) {
          const double tau = reference_sparsek_tau(uu, cands, budget);
          std::vector<int64_t> order(static_cast<size_t>(cands));
          for (int64_t j = 0; j < cands; ++j) order[static_cast<size_t>(j)] = j;
          std::stable_sort(order.begin(), order.end(),
                           [&](int64_t a, int64_t c) { return uu[a] > uu[c]; });
          const int64_t kept = std::min(budget, cands);
          for (int64_t r = 0; r < kept; ++r) {
            const double g = std::min(1.0, uu[order[r]] - tau);
            if (g > 0) keys.push_back({order[r], g});
          }
          if (std::isfinite(tau)) {
            for (int64_t j = 0; j < cands; ++j)
              (*gap)[row] = std::min((*gap)[row], std::abs(uu[j] - tau));
          }
          if (kept < cands)
            (*gap)[row] = std::min((*gap)[row], uu[order[kept - 1]] - uu[order[kept]]);
        }
        if (keys.empty()) continue;
        std::vector<double> sc(keys.size());
        double mx = -1e300;
        const float* qr = q + ((b * s.q_heads + h) * s.lq + i) * D;
        for (size_t t = 0; t < keys.size(); ++t) {
          const float* kr = k + ((b * s.kv_heads + hk) * s.lk + keys[t].first) * D;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(qr[d]) * kr[d];
          sc[t] = scale * dot + (logit ? std::log(keys[t].second) : 0.0);
          mx = std::max(mx, sc[t]);
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (size_t t = 0; t < keys.size(); ++t) {
          const double wgt = sc[t] / sum * (logit ? 1.0 : keys[t].second);
          const float* vr = v + ((b * s.kv_heads + hk) * s.lk + keys[t].first) * D;
          for (int64_t d = 0; d < D; ++d) (*out)[row * D + d] += wgt * vr[d];
        }
      }
    }
  }
}

std::vector<int64_t> stable_sort_topk(const std::vector<double>& values, int64_t m, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(m));
  for (int64_t j = 0; j < m; ++j) idx[static_cast<size_t>(j)] = j;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)];
  });
  idx.resize(static_cast<size_t>(std::max<int64_t>(0, std::min(k, m))));
  std::sort(idx.begin(), idx.end());
  return idx;
}

bool exact_boundary_scale(const std::vector<float>& z, float* scale, std::string* why) {
  double lo = z[0], hi = z[0];
  for (float v : z) {
    lo = std::min(lo, double(v));
    hi = std::max(hi, double(v));
  }
  int e = 0;
  while (e > -126 && std::ldexp(hi - lo, e) > 64) --e;
  if (std::ldexp(hi - lo, e) > 64) {
    *why = "range " + g17(hi - lo) + " cannot be scaled to <= 64";
    return false;
  }
  const float s = std::ldexp(1.f, e);
  for (float v : z) {
    const float scaled = v * s;
    if (double(scaled) != double(v) * double(s)) {
      *why =
          "2^" + std::to_string(e) + " * " + g17(v) + " is not exact in fp32 (" + g17(scaled) + ")";
      return false;
    }
  }
  *scale = s;
  return true;
}

}  // namespace hattn_test
