// What `hattn fidelity activations` measures, per query row and per head, written once: the exact
// attention of a row (its softmax and the rank of each key by exact score, in double), the keys a
// variant's rule selects (top-k of any score, ties to the lower index as hattn's kernels break
// them), how much of the exact top-k and of the softmax mass a selection keeps, and how far an
// output is from the dense one.
#pragma once

#include <cstdint>
#include <vector>

#include "hattn/hattn.h"

namespace hattn_cli {

// One query row over its `visible` keys (rows `key_stride` floats apart, D = d), in double.
struct ExactRow {
  std::vector<double> p;      // softmax(scale q . k_j), j < visible
  std::vector<int32_t> rank;  // 0 for the highest exact score; ties ranked by the lower index
};
ExactRow exact_row(const float* q, const float* k, int64_t key_stride, int64_t visible, int64_t d,
                   double scale);

// The indices of the `k` highest scores (k clamped to the count), ties to the lower index.
std::vector<int32_t> top_indices(const std::vector<double>& score, int64_t k);

// The selection rules, as the kernels apply them (the scores recomputed here in double):
// Loki: the k highest approximate scores qh[:r] . k_rot_j[:r] over the visible keys, qh = q P
// (the query in the basis, D values), k clamped to `visible`.
std::vector<int32_t> loki_selection(const std::vector<double>& qh, const float* k_rot,
                                    int64_t key_stride, int64_t visible, int64_t r, int64_t k);
// SPARSEK for the query at key position `position` (bottom-right aligned): its window
// (position - w, position] and the keys j <= position - w that SparseK(u_0..position-w, k) keeps
// (hattn::sparsek_mask), truncated to the k largest u. `u` holds the kv head's key scores.
// Returns the mask call's status.
hattn::Status sparsek_selection(const float* u, int64_t position, int64_t k, int64_t w,
                                std::vector<int32_t>* selected);

// A selection S of a row's keys (distinct indices < visible):
//   recall = |{j in S : rank j < |S|}| / |S|: the share of the exact top-|S| keys that S holds;
//   mass   = sum over S of the exact softmax: the attention weight the kept keys carry.
struct SelectionStats {
  double recall = 0, mass = 0;
};
SelectionStats selection_stats(const ExactRow& row, const std::vector<int32_t>& selected);

// Output error of one head's `rows` rows (D = d, contiguous) against the dense rows `ref`.
struct ErrorSums {
  double diff2 = 0, ref2 = 0;  // sums of squares, for ||o - ref||_F / ||ref||_F
  double worst_row = 0;        // max over rows of ||o_i - ref_i|| / ||ref_i|| (absolute if 0)
  void add(const float* out, const float* ref, int64_t rows, int64_t d);
  double relative() const;
};

}  // namespace hattn_cli
