// Checks of a Loki basis, part of libhattn (no LAPACK): loki_check_basis (is each head's basis
// orthonormal? the Loki attention call checks it before relying on qh . kh = q . k) and
// loki_captured_variance (how much of some keys' variance its leading axes hold).
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

Status loki_basis_layer(const TensorView& basis, int64_t layer, TensorView* layer_basis) {
  if (layer_basis == nullptr) return invalid("layer_basis is null");
  if (basis.rank != 4) {
    return invalid("a per-layer basis must have rank 4 [L, Hkv, D, D], got rank " +
                   std::to_string(basis.rank) + " " + shape_str(basis));
  }
  static const char* const kDims[] = {"L", "Hkv", "D", "D"};
  Status s = check_tensor(basis, "basis", 4, kDims, false);
  if (!s.ok()) return s;
  if (layer < 0 || layer >= basis.shape[0]) {
    return invalid("layer " + std::to_string(layer) + " is outside [0, " +
                   std::to_string(basis.shape[0] - 1) + "] of the basis " + shape_str(basis));
  }
  TensorView v = basis;
  v.rank = 3;
  for (int i = 0; i < 3; ++i) {
    v.shape[i] = basis.shape[i + 1];
    v.strides[i] = basis.strides[i + 1];
  }
  v.data = static_cast<char*>(basis.data) +
           layer * basis.strides[0] * static_cast<int64_t>(element_size(basis.dtype));
  *layer_basis = v;
  return Status::success();
}

namespace {

// One head: keys [n, d] rows `key_stride` apart, basis [d, d] rows `basis_stride` apart, share [d].
// Returns the keys' total centred variance (0: all equal; NaN or inf: non-finite keys); share
// is written only when it is finite and > 0.
double head_share(const float* k, int64_t key_stride, int64_t n, const float* p,
                  int64_t basis_stride, int64_t d, float* share) {
  std::vector<double> mean(d, 0.0), centred(d), axis(d, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t e = 0; e < d; ++e) mean[e] += k[j * key_stride + e];
  }
  for (double& m : mean) m /= static_cast<double>(n);
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t e = 0; e < d; ++e) {
      centred[e] = k[j * key_stride + e] - mean[e];
      total += centred[e] * centred[e];
    }
    for (int64_t c = 0; c < d; ++c) {
      double x = 0.0;
      for (int64_t e = 0; e < d; ++e) x += centred[e] * p[e * basis_stride + c];
      axis[c] += x * x;
    }
  }
  if (!(total > 0.0 && std::isfinite(total))) return total;
  double cum = 0.0;
  for (int64_t c = 0; c < d; ++c) {
    cum += axis[c];
    share[c] = static_cast<float>(cum / total);
  }
  return total;
}

}  // namespace

Status loki_captured_variance(const TensorView& keys, const TensorView& basis,
                              const TensorView& share) {
  if (keys.rank != 3 && keys.rank != 4) {
    return invalid("keys must have rank 3 [Hkv, N, D] or 4 [L, Hkv, N, D], got rank " +
                   std::to_string(keys.rank));
  }
  const bool layered = keys.rank == 4;
  static const char* const kKeyDims[] = {"L", "Hkv", "N", "D"};
  static const char* const kBasisDims[] = {"L", "Hkv", "D", "D"};
  static const char* const kShareDims[] = {"L", "Hkv", "D"};
  const int off = layered ? 0 : 1;
  for (const TensorView* t : {&keys, &basis, &share}) {
    if (t->device != Device::cpu && t->data != nullptr) {
      return invalid(std::string(t == &keys    ? "keys"
                                 : t == &basis ? "basis"
                                               : "share") +
                     " is on device " + to_string(t->device) + "; this call reads host memory");
    }
  }
  Status s = check_tensor(keys, "keys", keys.rank, kKeyDims + off, false);
  if (s.ok()) s = check_tensor(basis, "basis", keys.rank, kBasisDims + off, false);
  if (s.ok()) s = check_tensor(share, "share", keys.rank - 1, kShareDims + off, true);
  if (!s.ok()) return s;
  const int r = keys.rank;
  const int64_t layers = layered ? keys.shape[0] : 1, heads = keys.shape[r - 3],
                n = keys.shape[r - 2], d = keys.shape[r - 1];
  const std::vector<int64_t> want_basis =
      layered ? std::vector<int64_t>{layers, heads, d, d} : std::vector<int64_t>{heads, d, d};
  if (std::vector<int64_t>(basis.shape, basis.shape + r) != want_basis) {
    return invalid("basis " + shape_str(basis) + " does not match keys " + shape_str(keys) +
                   ": it must be " + shape_str(want_basis));
  }
  std::vector<int64_t> want_share = want_basis;
  want_share.pop_back();
  if (std::vector<int64_t>(share.shape, share.shape + r - 1) != want_share) {
    return invalid("share " + shape_str(share) + " must be " + shape_str(want_share));
  }
  if (n < 2) return invalid("keys need N >= 2 samples per head, got " + shape_str(keys));
  if (tensors_overlap(share, keys) || tensors_overlap(share, basis)) {
    return invalid("share overlaps keys or basis");
  }
  std::vector<float> result(static_cast<size_t>(layers * heads * d));
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t ko = (layered ? l * keys.strides[0] : 0) + h * keys.strides[r - 3];
      const int64_t bo = (layered ? l * basis.strides[0] : 0) + h * basis.strides[r - 3];
      const double total =
          head_share(static_cast<const float*>(keys.data) + ko, keys.strides[r - 2], n,
                     static_cast<const float*>(basis.data) + bo, basis.strides[r - 2], d,
                     &result[static_cast<size_t>((l * heads + h) * d)]);
      if (!(total > 0.0 && std::isfinite(total))) {
        return invalid(std::string("keys of ") +
                       (layered ? "layer " + std::to_string(l) + " " : "") + "head " +
                       std::to_string(h) +
                       (total == 0.0 ? " are all equal: they have no variance to share"
                                     : " hold a non-finite value (NaN or inf)"));
      }
      const float last = result[static_cast<size_t>((l * heads + h) * d + d - 1)];
      if (!std::isfinite(last)) {
        return invalid(std::string("basis of ") +
                       (layered ? "layer " + std::to_string(l) + " " : "") + "head " +
                       std::to_string(h) + " holds a non-finite value (NaN or inf)");
      }
    }
  }
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      float* out = static_cast<float*>(share.data) + (layered ? l * share.strides[0] : 0) +
                   h * share.strides[r - 3];
      std::copy_n(&result[static_cast<size_t>((l * heads + h) * d)], d, out);
    }
  }
  return Status::success();
}

}  // namespace hattn
