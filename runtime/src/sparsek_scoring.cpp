// SPARSEK's checks shared by its entry points, and its scoring network:
// u[b, h, j] = w_score[h] . x[b, j] + slope * j.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "halide_glue.h"
#include "sparsek_internal.h"

namespace hattn {

Status check_sparsek_options(const SparsekOptions& o) {
  if (o.k < 0) return invalid("sparsek budget k must be >= 0, got " + std::to_string(o.k));
  if (o.window < 0) {
    return invalid("sparsek window w must be >= 0, got " + std::to_string(o.window));
  }
  if (!std::isfinite(o.slope)) return invalid("sparsek slope must be finite");
  if (o.k > std::numeric_limits<int32_t>::max() / 2 ||
      o.window > std::numeric_limits<int32_t>::max() / 2) {
    return invalid("sparsek k and w must be below 2^30");
  }
  return Status::success();
}

Status check_sparsek_host(const TensorView& t, const char* name) {
  if (t.device != Device::cpu) {
    return Status{StatusCode::unsupported, std::string("sparsek has CPU kernels only; ") + name +
                                               " is on " + to_string(t.device)};
  }
  return Status::success();
}

Status check_scoring(const TensorView& x, const TensorView& w_score, int64_t batch, int64_t lk,
                     int64_t kv_heads) {
  static const char* const kX[3] = {"B", "L", "Dm"};
  static const char* const kW[2] = {"Hkv", "Dm"};
  // The scoring network's inputs in any dtype (a bf16 model's hidden states and weights): read
  // widened, the scores summed in fp32.
  Status s = check_tensor(x, "x", 3, kX, false, /*any_dtype=*/true);
  if (s.ok()) s = check_tensor(w_score, "w_score", 2, kW, false, /*any_dtype=*/true);
  if (s.ok()) s = check_sparsek_host(x, "x");
  if (s.ok()) s = check_sparsek_host(w_score, "w_score");
  if (!s.ok()) return s;
  if (x.shape[0] != batch || x.shape[1] != lk) {
    return invalid("x must be [B, Lk, Dm] with B=" + std::to_string(batch) + " and Lk=" +
                   std::to_string(lk) + " (the keys' batch and length), got " + shape_str(x));
  }
  if (w_score.shape[0] != kv_heads || w_score.shape[1] != x.shape[2]) {
    return invalid("w_score must be [Hkv, Dm] = [" + std::to_string(kv_heads) + ", " +
                   std::to_string(x.shape[2]) + "], got " + shape_str(w_score));
  }
  return Status::success();
}

float score_one(const float* w, const float* x, int64_t model_dim, float slope, int64_t position) {
  float acc = 0.f;
  for (int64_t m = 0; m < model_dim; ++m) acc += w[m] * x[m];
  return acc + slope * static_cast<float>(position);
}

void score_rows(const TensorView& x, const TensorView& w, float slope, int64_t b, int64_t h,
                int64_t j0, int64_t n, float* u) {
  const int64_t dm = x.shape[2];
  std::vector<float> w_scratch, x_scratch;
  const float* wr = row_f32(w, h * w.strides[0], dm, &w_scratch);
  for (int64_t j = 0; j < n; ++j) {
    const float* xr = row_f32(x, b * x.strides[0] + (j0 + j) * x.strides[1], dm, &x_scratch);
    u[j] = score_one(wr, xr, dm, slope, j0 + j);
  }
}

Status sparsek_scores(const TensorView& x, const TensorView& w_score, float slope,
                      const TensorView& u) {
  static const char* const kU[3] = {"B", "Hkv", "L"};
  if (!std::isfinite(slope)) return invalid("sparsek slope must be finite");
  Status s = check_tensor(u, "u", 3, kU, true);
  if (s.ok()) s = check_sparsek_host(u, "u");
  if (!s.ok()) return s;
  s = check_scoring(x, w_score, u.shape[0], u.shape[2], u.shape[1]);
  if (!s.ok()) return s;
  if (tensors_overlap(u, x) || tensors_overlap(u, w_score)) {
    return invalid("u overlaps x or w_score in memory");
  }
  parallel_for(u.shape[0] * u.shape[1], [&](int64_t t) {
    const int64_t b = t / u.shape[1], h = t % u.shape[1];
    std::vector<float> row(static_cast<size_t>(u.shape[2]));
    score_rows(x, w_score, slope, b, h, 0, u.shape[2], row.data());
    float* dst = static_cast<float*>(u.data) + b * u.strides[0] + h * u.strides[1];
    for (int64_t j = 0; j < u.shape[2]; ++j) dst[j * u.strides[2]] = row[static_cast<size_t>(j)];
  });
  return Status::success();
}

}  // namespace hattn
