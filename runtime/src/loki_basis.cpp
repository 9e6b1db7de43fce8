// loki_check_basis: is each head's Loki basis orthonormal? Part of libhattn (no LAPACK), because
// the Loki attention call checks its basis before relying on qh . kh = q . k.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "hattn/loki_prep.h"
#include "validate.h"

namespace hattn {
namespace {

// max |P^T P - I| over one head's [d, d] basis (rows `row_stride` apart), in double. NaN
// entries give NaN.
double orthonormality_error(const float* p, int64_t row_stride, int64_t d) {
  std::vector<double> col_i(d);
  double worst = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t e = 0; e < d; ++e) col_i[e] = p[e * row_stride + i];
    for (int64_t j = i; j < d; ++j) {
      double dot = 0.0;
      for (int64_t e = 0; e < d; ++e) dot += col_i[e] * p[e * row_stride + j];
      const double dev = std::abs(dot - (i == j ? 1.0 : 0.0));
      if (std::isnan(dev)) return dev;
      worst = std::max(worst, dev);
    }
  }
  return worst;
}

std::string sci(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", v);
  return text;
}

}  // namespace

Status loki_check_basis(const TensorView& basis, double tolerance, std::string* worst) {
  if (worst != nullptr) worst->clear();
  if (basis.rank != 3 && basis.rank != 4) {
    return invalid("basis must have rank 3 [Hkv, D, D] or 4 [L, Hkv, D, D], got rank " +
                   std::to_string(basis.rank));
  }
  if (basis.data == nullptr) return invalid("basis has a null data pointer");
  if (basis.dtype != DType::f32) {
    return invalid(std::string("basis has dtype ") + to_string(basis.dtype) + "; it must be f32");
  }
  if (basis.device != Device::cpu) {
    return invalid(std::string("basis is on device ") + to_string(basis.device) +
                   "; the check reads host (cpu) memory only");
  }
  static const char* const kDims[] = {"L", "Hkv", "D", "D"};
  const bool layered = basis.rank == 4;
  Status s = check_tensor(basis, "basis", basis.rank, kDims + (layered ? 0 : 1), false);
  if (!s.ok()) return s;
  const int64_t d = basis.shape[basis.rank - 1];
  if (basis.shape[basis.rank - 2] != d) {
    return invalid("basis must be square per head (..., D, D), got " + basis.describe());
  }
  if (!(tolerance >= 0.0 && std::isfinite(tolerance))) {
    return invalid("tolerance must be finite and >= 0, got " + sci(tolerance));
  }

  const int64_t layers = layered ? basis.shape[0] : 1, heads = basis.shape[layered ? 1 : 0];
  double worst_dev = -1.0;
  int64_t worst_l = 0, worst_h = 0;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* p =
          static_cast<const float*>(basis.data) +
          (layered ? l * basis.strides[0] + h * basis.strides[1] : h * basis.strides[0]);
      double dev = orthonormality_error(p, basis.strides[basis.rank - 2], d);
      if (std::isnan(dev)) dev = INFINITY;  // NaN is the worst deviation of all
      if (dev > worst_dev) {
        worst_dev = dev;
        worst_l = l;
        worst_h = h;
      }
    }
  }
  std::string where = layered ? "layer " + std::to_string(worst_l) + " " : "";
  where += "head " + std::to_string(worst_h) + ": max |P^T P - I| = " + sci(worst_dev);
  if (worst != nullptr) *worst = where;
  if (!(worst_dev <= tolerance)) {
    return invalid("basis is not orthonormal: " + where + " exceeds the tolerance " +
                   sci(tolerance) + (std::isinf(worst_dev) ? " (non-finite entries)" : ""));
  }
  return Status::success();
}

}  // namespace hattn
