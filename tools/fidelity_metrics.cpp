#include "fidelity_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace hattn_cli {

namespace {

// Key order by descending score, ties to the lower index (hattn's selection rule).
std::vector<int32_t> order_by_score(const std::vector<double>& score) {
  std::vector<int32_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  return order;
}

}  // namespace

ExactRow exact_row(const float* q, const float* k, int64_t key_stride, int64_t visible, int64_t d,
                   double scale) {
  ExactRow row;
  std::vector<double> s(static_cast<size_t>(visible));
  double top = -INFINITY;
  for (int64_t j = 0; j < visible; ++j) {
    double dot = 0;
    for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * k[j * key_stride + c];
    s[j] = scale * dot;
    top = std::max(top, s[j]);
  }
  row.p.resize(s.size());
  double sum = 0;
  for (size_t j = 0; j < s.size(); ++j) sum += row.p[j] = std::exp(s[j] - top);
  for (double& x : row.p) x /= sum;
  const std::vector<int32_t> order = order_by_score(s);
  row.rank.resize(s.size());
  for (size_t r = 0; r < order.size(); ++r) row.rank[order[r]] = static_cast<int32_t>(r);
  return row;
}

std::vector<int32_t> top_indices(const std::vector<double>& score, int64_t k) {
  const size_t n = std::min(score.size(), static_cast<size_t>(std::max<int64_t>(k, 0)));
  std::vector<int32_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  const auto before = [&](int32_t a, int32_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  };
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(n), idx.end(), before);
  idx.resize(n);
  return idx;
}

std::vector<int32_t> loki_selection(const std::vector<double>& qh, const float* k_rot,
                                    int64_t key_stride, int64_t visible, int64_t r, int64_t k) {
  std::vector<double> approx(static_cast<size_t>(visible));
  for (int64_t j = 0; j < visible; ++j) {
    double dot = 0;
    for (int64_t c = 0; c < r; ++c) dot += qh[c] * k_rot[j * key_stride + c];
    approx[j] = dot;
  }
  return top_indices(approx, k);
}

hattn::Status sparsek_selection(const float* u, int64_t position, int64_t k, int64_t w,
                                std::vector<int32_t>* selected) {
  selected->clear();
  const int64_t candidates = position - w + 1;  // keys j <= position - w
  if (candidates > 0 && k > 0) {
    std::vector<float> z(u, u + candidates), mask(z.size());
    float tau = 0;
    hattn::Status s =
        hattn::sparsek_mask(hattn::TensorView::contiguous(z.data(), {1, candidates}), nullptr, k,
                            hattn::TensorView::contiguous(mask.data(), {1, candidates}),
                            hattn::TensorView::contiguous(&tau, {1}));
    if (!s.ok()) return s;
    std::vector<double> kept_u;
    std::vector<int32_t> kept;
    for (int64_t j = 0; j < candidates; ++j) {
      if (mask[j] > 0) {
        kept.push_back(static_cast<int32_t>(j));
        kept_u.push_back(u[j]);
      }
    }
    for (int32_t i : top_indices(kept_u, k)) selected->push_back(kept[i]);
  }
  for (int64_t j = std::max<int64_t>(0, position - w + 1); j <= position; ++j) {
    selected->push_back(static_cast<int32_t>(j));
  }
  return hattn::Status::success();
}

SelectionStats selection_stats(const ExactRow& row, const std::vector<int32_t>& selected) {
  SelectionStats st;
  if (selected.empty()) return st;
  const auto size = static_cast<int32_t>(selected.size());
  int64_t hits = 0;
  for (int32_t j : selected) {
    hits += row.rank[j] < size;
    st.mass += row.p[j];
  }
  st.recall = static_cast<double>(hits) / static_cast<double>(size);
  return st;
}

void ErrorSums::add(const float* out, const float* ref, int64_t rows, int64_t d) {
  for (int64_t i = 0; i < rows; ++i) {
    double e2 = 0, r2 = 0;
    for (int64_t c = 0; c < d; ++c) {
      const double e = static_cast<double>(out[i * d + c]) - ref[i * d + c];
      e2 += e * e;
      r2 += static_cast<double>(ref[i * d + c]) * ref[i * d + c];
    }
    diff2 += e2;
    ref2 += r2;
    const double row = r2 > 0 ? std::sqrt(e2 / r2) : std::sqrt(e2);
    if (!(row <= worst_row)) worst_row = row;  // a NaN row stays visible
  }
}

double ErrorSums::relative() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2); }

}  // namespace hattn_cli
