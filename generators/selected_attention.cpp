#include "selected_attention.h"

#include <cfloat>

#include "online_softmax.h"

namespace hattn {

using namespace Halide;

SelectedAttention attend_selected(const Func& score, const Func& index, const Func& v,
                                  const Expr& k_eff, const Expr& k_max, const Expr& group,
                                  const Var& d, const Var& s, const Var& i, const Var& h,
                                  const Var& b, const Func& value_gate, const Type& out_type) {
  SelectedAttention a;
  a.rs = RDom(0, max(k_max, 1), "rs");
  const Expr live = a.rs < k_eff;
  // The max over the live slots, from -FLT_MAX: from kMaskedScore (-1e30) it stayed -1e30 over
  // scores below it, every weight underflowed to 0 and the row came out 0 / 0.
  const Expr lowest = Expr(-FLT_MAX);
  a.row_max(i, h, b) = lowest;
  a.row_max(i, h, b) = max(a.row_max(i, h, b), select(live, score(a.rs, i, h, b), lowest));
  a.weights(s, i, h, b) =
      select(s < k_eff, exp_nonpositive(score(s, i, h, b) - a.row_max(i, h, b)), 0.f);
  a.row_sum(i, h, b) = 0.f;
  a.row_sum(i, h, b) += a.weights(a.rs, i, h, b);
  a.pv(d, i, h, b) = 0.f;
  Expr w = a.weights(a.rs, i, h, b);
  if (value_gate.defined()) w = w * value_gate(a.rs, i, h, b);  // sparsek's gates
  a.pv(d, i, h, b) += w * v(d, index(a.rs, i, h, b), h / group, b);
  // A row with no visible key outputs zeros (k_eff = 0, row_sum = 0).
  a.out(d, i, h, b) = cast(out_type, select(k_eff > 0, a.pv(d, i, h, b) / a.row_sum(i, h, b), 0.f));
  return a;
}

Func values_within_lengths(const Func& v, const Func& key_lengths, const Expr& lk) {
  if (!key_lengths.defined()) {
    return v;
  }
  Var d("d"), j("j"), hk("hk"), b("b");
  Func live("v_within_length");
  live(d, j, hk, b) = select(j < clamp(key_lengths(b), 0, lk), v(d, j, hk, b), 0.f);
  return live;
}

}  // namespace hattn
