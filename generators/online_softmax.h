// Online-softmax pieces: the masked score, the exp it needs, and the rule that folds a block's (or
// a split's) partial softmax state into a running one by rescaling, so the rescaling exists once.
#pragma once

#include "Halide.h"

namespace hattn {

// Scores of masked-out keys. Finite on purpose: an additive finite mask keeps bounds inference
// from shrinking producers (see the Halide notes) and keeps max() free of -inf - -inf = NaN.
constexpr float kMaskedScore = -1e30f;

// exp(x) for x <= 0, exactly 0 below the range where fast_exp is valid (it returns NaN for very
// negative arguments), so masked keys get weight 0 exactly.
inline Halide::Expr exp_nonpositive(const Halide::Expr& x) {
  return Halide::select(x < -87.f, 0.f, Halide::fast_exp(Halide::max(x, -87.f)));
}

// The online softmax's state for a row: m = the max score so far, l = sum exp(s - m) and
// acc = sum exp(s - m) v over the keys so far. A fold into it (one more block of keys, or one more
// split's partial state) rescales both sides to the new max m' = max(m, m_part):
//   l' = l * exp(m - m') + l_part * exp(m_part - m'),  acc' likewise.
// The factors are per row (one exp each per row and fold); only the sums are per column.

// exp(m - m_new) for m <= m_new: the factor that moves a sum taken against max m to m_new.
inline Halide::Expr rescale_factor(const Halide::Expr& m, const Halide::Expr& m_new) {
  return exp_nonpositive(m - m_new);
}

// One column of a fold: the running sum and the part's, each times its factor.
inline Halide::Expr fold_sums(const Halide::Expr& sum, const Halide::Expr& sum_factor,
                              const Halide::Expr& part, const Halide::Expr& part_factor) {
  return sum * sum_factor + part * part_factor;
}

}  // namespace hattn
