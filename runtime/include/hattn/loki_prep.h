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

// One layer's basis [Hkv, D, D] out of a per-layer basis [L, Hkv, D, D] as loki_calibrate writes
// it (a view into the same memory, for loki_attention and loki_rotate). A basis of rank other
// than 4, or a layer outside [0, L), is refused naming the range; *layer_basis is set only on
// success.
Status loki_basis_layer(const TensorView& basis, int64_t layer, TensorView* layer_basis);

// How much of some keys' variance each head's leading axes hold: for keys not used to calibrate
// the basis (held-out keys, or a model's keys at run time), the figure that says whether a rank r
// is safe. keys [Hkv, N, D] or [L, Hkv, N, D] (N >= 2), basis [Hkv, D, D] or [L, Hkv, D, D] (one
// basis per key head), share [Hkv, D] or [L, Hkv, D] (written, fp32):
//   share[..., c] = sum_{c' <= c} sum_j ((k_j - m) . P_c')^2 / sum_j |k_j - m|^2,
// m the mean of the head's N keys, accumulated in double; non-decreasing in c, 1 at c = D - 1
// for an orthonormal basis. Centred, because a constant added to every key shifts a query row's
// approximate scores by one constant and leaves its top-k unchanged: only the centred variance
// decides Loki's selection. A head whose keys are
// all equal (zero variance) is refused, naming it; share is written only on success. This needs
// no LAPACK and is part of libhattn.
Status loki_captured_variance(const TensorView& keys, const TensorView& basis,
                              const TensorView& share);

}  // namespace hattn
