// Loki calibration (PCA of sample keys per layer and kv head) and key-cache rotation.
//
// Calibration: per head, mean and covariance of the keys in double (two passes over the keys),
// then LAPACK's symmetric eigensolver. Heads are independent, so the covariances of one layer's
// heads are accumulated as parallel tasks on the kernels' thread pool (parallel_for, sized by
// set_num_threads; each head by one task, so the result does not depend on the thread count); the
// eigensolver runs on the calling thread, because LAPACK may run its own BLAS threads and O(D^3)
// per head is small next to the O(N D^2) covariance.
#include "hattn/loki_prep.h"

#include <lapacke.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <new>
#include <sstream>
#include <vector>

#include "halide_glue.h"
#include "validate.h"

namespace hattn {
namespace {

// What check_tensor leaves open for these host-only functions: it accepts CUDA views and calls
// other dtypes "unsupported"; here both are invalid arguments.
Status check_host_f32(const TensorView& t, const char* name) {
  const std::string n = name;
  if (t.data == nullptr) return invalid(n + " has a null data pointer");
  if (t.dtype != DType::f32) {
    return invalid(n + " has dtype " + to_string(t.dtype) + "; Loki preparation takes f32 only");
  }
  if (t.device != Device::cpu) {
    return invalid(n + " is on device " + to_string(t.device) +
                   "; Loki preparation runs on host (cpu) memory only");
  }
  return Status::success();
}

// An output view: host f32, exactly `shape`, and valid to write.
Status check_output(const TensorView& t, const char* name, const std::vector<int64_t>& shape,
                    const char* const* dims) {
  const int rank = static_cast<int>(shape.size());
  if (t.rank != rank) {
    return invalid(std::string(name) + " must have rank " + std::to_string(rank) + " " +
                   shape_str(shape) + ", got rank " + std::to_string(t.rank));
  }
  Status s = check_host_f32(t, name);
  if (!s.ok()) return s;
  for (int i = 0; i < rank; ++i) {
    if (t.shape[i] != shape[i]) {
      return invalid(std::string(name) + " must have shape " + shape_str(shape) + ", got " +
                     shape_str(t));
    }
  }
  return check_tensor(t, name, rank, dims, true);
}

// Element (layer, head) of a view whose leading dims are [L, Hkv] (rank 4 keys) or [Hkv].
const float* head_ptr(const TensorView& t, bool layered, int64_t layer, int64_t head) {
  const float* p = static_cast<const float*>(t.data);
  return layered ? p + layer * t.strides[0] + head * t.strides[1] : p + head * t.strides[0];
}

// Upper triangle (row-major) of the covariance of n keys of dim d, rows `row_stride` apart;
// returns the largest |key component|.
// Centring: q . mu is the same for every key, so it cannot change a ranking of q . k_j; what ranks
// the keys is their spread around the mean, which the centred covariance describes. Without it
// a large mean would take the first axis and push the informative ones down.
double covariance(const float* keys, int64_t row_stride, int64_t n, int64_t d, double* cov) {
  std::vector<double> mean(d, 0.0), x(d);
  float max_abs = 0.f;
  for (int64_t r = 0; r < n; ++r) {
    const float* k = keys + r * row_stride;
    for (int64_t e = 0; e < d; ++e) {
      mean[e] += k[e];
      max_abs = std::max(max_abs, std::abs(k[e]));
    }
  }
  for (double& m : mean) m /= static_cast<double>(n);
  std::fill(cov, cov + d * d, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    const float* k = keys + r * row_stride;
    for (int64_t e = 0; e < d; ++e) x[e] = k[e] - mean[e];
    for (int64_t i = 0; i < d; ++i) {
      const double xi = x[i];
      double* row = cov + i * d;
      for (int64_t j = i; j < d; ++j) row[j] += xi * x[j];
    }
  }
  const double norm = 1.0 / static_cast<double>(n - 1);
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = i; j < d; ++j) cov[i * d + j] *= norm;
  }
  return max_abs;
}

// Eigendecomposition of one head's covariance (upper triangle, overwritten) into its basis
// [D, D] and variance ratios [D], descending; returns the rank reaching `variance`, or -1 with
// `error` set. `max_abs` is the largest |key component|, which sets the fp32 noise floor.
int decompose(double* cov, int64_t d, double max_abs, double variance, float* basis, float* ratio,
              std::string* error) {
  std::vector<double> w(d);
  const lapack_int n = static_cast<lapack_int>(d);
  const lapack_int rc = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', n, cov, n, w.data());
  if (rc != 0) {
    *error = "LAPACKE_dsyevd failed with info = " + std::to_string(rc);
    return -1;
  }
  // Ascending eigenvalues of a positive semi-definite matrix: negative ones are roundoff.
  double total = 0.0;
  for (double& v : w) total += (v = std::max(v, 0.0));
  if (!(total > 0.0)) {
    *error = "zero variance (all its keys are equal), so there are no principal axes";
    return -1;
  }
  for (int64_t c = 0; c < d; ++c) {
    const int64_t src = d - 1 - c;  // descending order
    // Eigenvectors are defined up to sign: make the largest-magnitude component positive (the
    // first such on ties) so that repeated calibrations agree.
    int64_t big = 0;
    for (int64_t e = 1; e < d; ++e) {
      if (std::abs(cov[e * d + src]) > std::abs(cov[big * d + src])) big = e;
    }
    const double sign = cov[big * d + src] < 0 ? -1.0 : 1.0;
    for (int64_t e = 0; e < d; ++e) basis[e * d + c] = static_cast<float>(sign * cov[e * d + src]);
    ratio[c] = static_cast<float>(w[src] / total);
  }
  // Smallest r reaching the variance. Keys rounded to fp32 carry noise of variance up to about
  // (2^-24 max|k|)^2 / 3 per channel, so even keys spanning r < D dims have D non-zero
  // eigenvalues; those at or below D (FLT_EPSILON max|k|)^2 are that noise and count as zero,
  // so that variance = 1 gives the keys' true rank. (Ratios still include them.)
  const double noise = static_cast<double>(d) * std::pow(FLT_EPSILON * max_abs, 2);
  double signal = 0.0;  // summed in the same order as `cum` below, so variance = 1 is reached
  for (int64_t r = 1; r <= d && w[d - r] > noise; ++r) signal += w[d - r];
  double cum = 0.0;
  for (int64_t r = 1; r <= d; ++r) {
    cum += w[d - r];
    if (cum >= variance * signal) return static_cast<int>(r);
  }
  return static_cast<int>(d);
}

}  // namespace

Status loki_calibrate(const TensorView& keys, const TensorView& basis,
                      const TensorView& variance_ratio, const LokiCalibrateOptions& opt,
                      LokiCalibration* info) {
  if (info != nullptr) *info = LokiCalibration{};
  if (keys.rank != 3 && keys.rank != 4) {
    return invalid("keys must have rank 3 [Hkv, N, D] or 4 [L, Hkv, N, D], got rank " +
                   std::to_string(keys.rank));
  }
  Status s = check_host_f32(keys, "keys");
  if (!s.ok()) return s;
  const bool layered = keys.rank == 4;
  const int h_dim = layered ? 1 : 0;  // index of Hkv in keys' shape
  const int64_t layers = layered ? keys.shape[0] : 1, heads = keys.shape[h_dim];
  const int64_t n = keys.shape[h_dim + 1], d = keys.shape[h_dim + 2];
  if (n < 2) {
    return invalid("keys need N >= 2 samples per head for a covariance, got N = " +
                   std::to_string(n) + " (keys " + shape_str(keys) + ")");
  }
  if (d < 1) return invalid("keys head dim D must be >= 1, got D = " + std::to_string(d));
  static const char* const kKeys4[] = {"L", "Hkv", "N", "D"};
  static const char* const kBasis4[] = {"L", "Hkv", "D", "D"};
  static const char* const kRatio3[] = {"L", "Hkv", "D"};
  const int skip = layered ? 0 : 1;  // rank-3 views drop the L of these names
  s = check_tensor(keys, "keys", keys.rank, kKeys4 + skip, false);
  if (!s.ok()) return s;
  if (!(opt.variance > 0.0 && opt.variance <= 1.0)) {
    return invalid("LokiCalibrateOptions::variance must be in (0, 1], got " +
                   std::to_string(opt.variance));
  }
  std::vector<int64_t> basis_shape = {heads, d, d}, ratio_shape = {heads, d};
  if (layered) {
    basis_shape.insert(basis_shape.begin(), layers);
    ratio_shape.insert(ratio_shape.begin(), layers);
  }
  s = check_output(basis, "basis", basis_shape, kBasis4 + skip);
  if (!s.ok()) return s;
  s = check_output(variance_ratio, "variance_ratio", ratio_shape, kRatio3 + skip);
  if (!s.ok()) return s;
  if (tensors_overlap(basis, keys)) return invalid("basis overlaps keys in memory");
  if (tensors_overlap(variance_ratio, keys)) {
    return invalid("variance_ratio overlaps keys in memory");
  }
  if (tensors_overlap(basis, variance_ratio)) {
    return invalid("basis and variance_ratio overlap in memory");
  }
  s = check_finite(keys, "keys");
  if (!s.ok()) return invalid(s.message);  // always checked here: an argument error

  // Results go to scratch first so that a failing head leaves the outputs untouched.
  const int64_t items = layers * heads;
  std::vector<float> p, ratio;
  std::vector<int> ranks;
  std::vector<double> cov, max_abs;
  try {
    p.resize(items * d * d);
    ratio.resize(items * d);
    ranks.resize(items);
    cov.resize(heads * d * d);
    max_abs.resize(heads);
  } catch (const std::bad_alloc&) {
    return invalid("out of memory for the calibration's scratch (" +
                   std::to_string(items * d * d * 4 + heads * d * d * 8) + " bytes)");
  }
  const int64_t row_stride = keys.strides[h_dim + 1];
  for (int64_t l = 0; l < layers; ++l) {
    parallel_for(heads, [&](int64_t h) {
      max_abs[h] =
          covariance(head_ptr(keys, layered, l, h), row_stride, n, d, cov.data() + h * d * d);
    });
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t item = l * heads + h;
      std::string error;
      ranks[item] = decompose(cov.data() + h * d * d, d, max_abs[h], opt.variance,
                              p.data() + item * d * d, ratio.data() + item * d, &error);
      if (ranks[item] < 0) {
        return invalid("keys of " + (layered ? "layer " + std::to_string(l) + " " : "") + "head " +
                       std::to_string(h) + ": " + error);
      }
    }
  }

  const int b_row = basis.rank - 2;  // stride index of basis rows (component e)
  const int r_dim = variance_ratio.rank - 1;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t item = l * heads + h;
      float* b = const_cast<float*>(head_ptr(basis, layered, l, h));
      float* v = const_cast<float*>(head_ptr(variance_ratio, layered, l, h));
      for (int64_t e = 0; e < d; ++e) {
        std::copy_n(p.data() + (item * d + e) * d, d, b + e * basis.strides[b_row]);
      }
      for (int64_t c = 0; c < d; ++c) v[c * variance_ratio.strides[r_dim]] = ratio[item * d + c];
    }
  }
  if (info != nullptr) {
    info->layers = layers;
    info->kv_heads = heads;
    info->head_dim = d;
    info->max_rank = *std::max_element(ranks.begin(), ranks.end());
    info->ranks = std::move(ranks);
  }
  return Status::success();
}

// Plain loops rather than cblas_sgemm: rotation runs once per cache, offline, and the loops take
// any strides and accumulate in double (the rotated keys then carry only fp32's final rounding)
// without another link dependency. Each (batch, head) is one task on the thread pool.
Status loki_rotate(const TensorView& keys, const TensorView& basis, const TensorView& out) {
  static const char* const kKeys[] = {"B", "Hkv", "L", "D"};
  static const char* const kBasis[] = {"Hkv", "D", "D"};
  const struct {
    const TensorView* t;
    const char* name;
    int rank;
    const char* const* dims;
  } args[] = {{&keys, "keys", 4, kKeys}, {&basis, "basis", 3, kBasis}, {&out, "out", 4, kKeys}};
  for (const auto& a : args) {
    if (a.t->rank != a.rank) {
      return invalid(std::string(a.name) + " must have rank " + std::to_string(a.rank) +
                     (a.rank == 4 ? " [B, Hkv, L, D]" : " [Hkv, D, D]") + ", got rank " +
                     std::to_string(a.t->rank));
    }
    Status s = check_host_f32(*a.t, a.name);
    if (!s.ok()) return s;
    s = check_tensor(*a.t, a.name, a.rank, a.dims, a.t == &out);
    if (!s.ok()) return s;
  }
  if (basis.shape[1] != basis.shape[2]) {
    return invalid("basis must be square per head [Hkv, D, D], got " + shape_str(basis));
  }
  if (basis.shape[0] != keys.shape[1] || basis.shape[1] != keys.shape[3]) {
    return invalid("basis must be [Hkv, D, D] = [" + std::to_string(keys.shape[1]) + ", " +
                   std::to_string(keys.shape[3]) + ", " + std::to_string(keys.shape[3]) +
                   "] for keys " + shape_str(keys) + ", got " + shape_str(basis));
  }
  for (int i = 0; i < 4; ++i) {
    if (out.shape[i] != keys.shape[i]) {
      return invalid("out must have keys' shape " + shape_str(keys) + ", got " + shape_str(out));
    }
  }
  if (tensors_overlap(out, keys)) {
    return invalid("out overlaps keys in memory; rotate out of place");
  }
  if (tensors_overlap(out, basis)) return invalid("out overlaps basis in memory");

  const int64_t heads = keys.shape[1], len = keys.shape[2], d = keys.shape[3];
  parallel_for(keys.shape[0] * heads, [&](int64_t task) {
    const int64_t b = task / heads, h = task % heads;
    const float* k =
        static_cast<const float*>(keys.data) + b * keys.strides[0] + h * keys.strides[1];
    float* o = static_cast<float*>(out.data) + b * out.strides[0] + h * out.strides[1];
    const float* ph = static_cast<const float*>(basis.data) + h * basis.strides[0];
    std::vector<double> acc(d);
    for (int64_t j = 0; j < len; ++j) {
      const float* kj = k + j * keys.strides[2];
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t e = 0; e < d; ++e) {  // acc += k[e] * P[e, :], rows of P are contiguous
        const double ke = kj[e];
        const float* pe = ph + e * basis.strides[1];
        for (int64_t c = 0; c < d; ++c) acc[c] += ke * pe[c];
      }
      float* oj = o + j * out.strides[2];
      for (int64_t c = 0; c < d; ++c) oj[c] = static_cast<float>(acc[c]);
    }
  });
  return Status::success();
}

}  // namespace hattn
