#include "reference.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace hattn_test {

std::array<int64_t, 4> dense_strides(int64_t b, int64_t h, int64_t l, int64_t d) {
  (void)b;
  return {h * l * d, l * d, d, 1};
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

double reference_sparsek_tau(const std::vector<double>& z, int64_t n, int64_t k) {
  if (k >= n) return -std::numeric_limits<double>::infinity();
  if (k == 0) return std::numeric_limits<double>::infinity();
  double lo = *std::min_element(z.begin(), z.begin() + n) - 1;
  double hi = *std::max_element(z.begin(), z.begin() + n);
  for (int it = 0; it < 100; ++it) {
    const double mid = 0.5 * (lo + hi);
    double f = 0;
    for (int64_t j = 0; j < n; ++j) f += std::clamp(z[static_cast<size_t>(j)] - mid, 0.0, 1.0);
    (f >= static_cast<double>(k) ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
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

}  // namespace hattn_test
