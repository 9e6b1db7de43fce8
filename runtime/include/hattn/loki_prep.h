// Loki's offline preparation (Singhania et al. 2024): a PCA basis of sample keys per (layer, kv
// head), and the rotation of a key cache into that basis.
//
// loki_calibrate and loki_rotate live in the separate library hattn_loki_prep, which is built
// only where LAPACKE is found (the eigensolver) so that libhattn itself never needs LAPACK.
// loki_check_basis needs no LAPACK and is part of libhattn: the Loki attention call checks its
// basis with it.
//
// All three take fp32 host tensors (TensorView, any strides with the last one 1), return a Status
// and never abort or throw; every refusal is StatusCode::invalid_argument naming the argument.
#pragma once

#include <string>
#include <vector>

#include "hattn/hattn.h"

namespace hattn {

struct LokiCalibrateOptions {
  // The explained-variance fraction that LokiCalibration::ranks reports the rank for, in (0, 1].
  double variance = 0.9;
};

struct LokiCalibration {
  int64_t layers = 0;  // 1 for rank-3 keys
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  // Per (layer, head), layer-major: the smallest r whose first r variance ratios sum to at least
  // LokiCalibrateOptions::variance. Components at the level of the keys' fp32 rounding
  // (eigenvalue <= D (FLT_EPSILON max|k|)^2) count as zero, so that variance = 1 gives the rank
  // of the keys rather than D through roundoff.
  std::vector<int> ranks;
  int max_rank = 0;  // the largest entry of ranks
};

// PCA of sample keys per (layer, kv head).
//   keys            [Hkv, N, D] or [L, Hkv, N, D], N >= 2 samples per head, all finite
//   basis           [Hkv, D, D] or [L, Hkv, D, D] (written): basis[..., e, c] is component e of
//                   principal axis c, so a rotated key is kh = k P (kh[c] = sum_e k[e] P[e][c]).
//                   Columns are orthonormal, sorted by explained variance (descending), with
//                   their largest-magnitude component positive (so the result is deterministic).
//   variance_ratio  [Hkv, D] or [L, Hkv, D] (written): eigenvalue / sum of eigenvalues, sorted
//                   descending, summing to 1.
//   info            optional: the rank reaching opt.variance per (layer, head).
// Keys are mean-centred per head before the covariance (see loki_prep.cpp for why). The
// outputs are written only when the call succeeds; a head whose keys are all equal is refused.
Status loki_calibrate(const TensorView& keys, const TensorView& basis,
                      const TensorView& variance_ratio, const LokiCalibrateOptions& opt = {},
                      LokiCalibration* info = nullptr);

// out = keys P per kv head: keys and out [B, Hkv, L, D], basis [Hkv, D, D] as loki_calibrate
// writes it (one layer's). out must not overlap keys or basis.
Status loki_rotate(const TensorView& keys, const TensorView& basis, const TensorView& out);

// Checks that each head's basis is orthonormal: max |P^T P - I| <= tolerance (computed in
// double). basis [Hkv, D, D] or [L, Hkv, D, D]. `worst` (when given) receives the head with the
// largest deviation and that deviation, e.g. "layer 1 head 3: max |P^T P - I| = 2.4e-07", on
// success and on refusal alike. A basis beyond the tolerance (or holding NaN) is refused with
// invalid_argument naming that head.
Status loki_check_basis(const TensorView& basis, double tolerance, std::string* worst = nullptr);

}  // namespace hattn
