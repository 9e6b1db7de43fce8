#include "reference.h"

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

}  // namespace hattn_test
