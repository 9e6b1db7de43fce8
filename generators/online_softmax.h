// Online-softmax pieces shared by every variant: the running state (m, l, acc) and the rule that
// merges two partial states by rescaling. Used for key blocks, for split-K partials and (later)
// for the sparse variants, so the rescaling exists once.
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

// A partial softmax state over some set of keys: m = max score, l = sum exp(s - m),
// acc = sum exp(s - m) v. Merging two states rescales both to the larger max; only one exp is
// needed because one of the two factors is exactly 1.
struct SoftmaxState {
  Halide::Expr m, l, acc;
};

inline SoftmaxState merge_states(const SoftmaxState& a, const SoftmaxState& b) {
  using Halide::select;
  Halide::Expr b_larger = b.m > a.m;
  Halide::Expr e = exp_nonpositive(-Halide::abs(a.m - b.m));
  Halide::Expr scale_a = select(b_larger, e, 1.f);
  Halide::Expr scale_b = select(b_larger, 1.f, e);
  return {Halide::max(a.m, b.m), a.l * scale_a + b.l * scale_b, a.acc * scale_a + b.acc * scale_b};
}

inline Halide::Tuple initial_state() { return Halide::Tuple(kMaskedScore, 0.f, 0.f); }

}  // namespace hattn
