// The math of SPARSEK attention and of the SparseK operator. See sparsek.h.
#include "sparsek.h"

#include <cfloat>
#include <string>

#include "online_softmax.h"
#include "select_topk.h"

namespace hattn {

using namespace Halide;

namespace {
Expr u32(uint32_t value) { return Internal::make_const(UInt(32), value); }
}  // namespace

SparsekMaskStages sparsek_mask(const Func& z, const Func& len, const Expr& m, const Expr& k) {
  SparsekMaskStages st;
  Var &j = st.j, &r = st.r;
  st.rj = RDom(0, m, "sk_rj");
  const RVar& rj = st.rj.x;
  const Expr n = clamp(len(r), 0, m);
  const Expr kf = cast<float>(k);
  const Expr live = rj < n;

  // f(t) = sum_j clip(z_j - t, 0, 1) is non-increasing in t; keep f(lo) >= k > f(hi). The bracket
  // starts at the whole finite float range, as ordered keys: -FLT_MAX .. FLT_MAX. Each step halves
  // the number of floats inside it, so 32 steps leave hi = lo + 1 (adjacent floats): no
  // tolerance to choose, whatever the scores' magnitude.
  Expr lo = ordered_key(Expr(-FLT_MAX)), hi = ordered_key(Expr(FLT_MAX));
  for (int step = 0; step < 32; ++step) {
    const std::string tag = "sk_b" + std::to_string(step);
    Expr mid = lo + (hi - lo) / u32(2);
    Expr t = score_of_key(mid);
    Func f(tag + "_f");
    f(r) = 0.f;
    f(r) += select(live, clamp(z(rj, r) - t, 0.f, 1.f), 0.f);
    Func br(tag + "_bracket");
    br(r) = select(f(r) >= kf, Tuple(mid, hi), Tuple(lo, mid));
    st.passes.push_back(f);
    st.passes.push_back(br);
    lo = br(r)[0];
    hi = br(r)[1];
  }
  st.bracket = st.passes.back();

  // The exact finish: between breakpoints (z_j and z_j - 1) f is linear, so the sets of the
  // piece holding t give the root in closed form, tau = (sum_F z + |S| - k) / |F|, in double.
  // The bisection's f(t) is an fp32 sum (its error, ~n ulps of k, can leave t a few ulps off the
  // root and outside [lo, hi]), so the closed form runs twice: at t = lo, then at its own result,
  // which is exact once the second evaluation sees the root's own piece. With F empty, f is flat
  // there and any t of the flat piece is a root (p is the same for all of them): t itself.
  auto closed_form = [&](Func fin, const Expr& t) {
    const Expr gap = z(rj, r) - t;
    const Expr in_free = live && gap > 0.f && gap < 1.f;
    const Expr in_sat = live && gap >= 1.f;
    const Expr zero_d = Internal::make_const(Float(64), 0.0);
    fin(r) = Tuple(zero_d, 0, 0);
    fin(r) = Tuple(fin(r)[0] + select(in_free, cast<double>(z(rj, r)), zero_d),
                   fin(r)[1] + select(in_free, 1, 0), fin(r)[2] + select(in_sat, 1, 0));
    const Expr free_n = fin(r)[1];
    const Expr root =
        (fin(r)[0] + cast<double>(fin(r)[2]) - cast<double>(k)) / cast<double>(max(free_n, 1));
    return select(free_n > 0, cast<float>(root), t);
  };
  const Expr t_lo = score_of_key(st.bracket(r)[0]);
  st.first_root(r) = closed_form(st.finish, t_lo);
  const Expr tau2 = closed_form(st.finish2, st.first_root(r));
  // k = 0 has no root inside the scores' range: tau is +FLT_MAX (every p = 0), where the
  // bisection left it. k >= n is all ones (tau = -FLT_MAX): for k = n the bisection's root,
  // min z - 1, would round some z - tau just below 1.
  st.tau(r) = select(kf >= cast<float>(n), -FLT_MAX, select(k == 0, t_lo, tau2));
  st.mask(j, r) = select(j < n, clamp(z(j, r) - st.tau(r), 0.f, 1.f), 0.f);
  return st;
}

SparsekStages sparsek_attention(const SparsekInputs& in) {
  SparsekStages st;
  Var &d = st.d, &i = st.i, &h = st.h, &b = st.b, &s = st.s;
  const Expr group = in.q_heads / in.kv_heads;
  const Expr hk = h / group;

  // Query row i sits at position q_pos0 + i; its window is the n_win newest positions up to and
  // including its own, its candidates the older ones (selected by the runtime's sweep).
  const Expr pos = in.q_pos0 + i;
  const Expr n_win = clamp(min(in.window, pos + 1), 0, in.lk);
  const Expr n_sel = clamp(in.sel_count(i, hk, b), 0, in.sel_slots);
  const Expr k_eff = n_sel + n_win;
  const Expr slot = clamp(s, 0, in.sel_slots - 1);
  const Expr win_pos = pos - n_win + 1 + (s - n_sel);
  const Expr win_key = select(in.ring > 0, win_pos % max(in.ring, 1), win_pos);
  const Expr is_sel = s < n_sel;
  st.index(s, i, h, b) = clamp(select(is_sel, in.sel_index(slot, i, hk, b), win_key), 0, in.lk - 1);
  st.gate(s, i, h, b) = select(is_sel, in.sel_gate(slot, i, hk, b), 1.f);

  st.rc = RDom(0, in.head_dim, "rc");
  st.dot(s, i, h, b) = 0.f;
  st.dot(s, i, h, b) += in.q(st.rc, i, h, b) * in.k(st.rc, st.index(s, i, h, b), hk, b);
  // Gates of selected keys are > 0 (the runtime keeps only z_j > tau); the floor keeps log finite.
  const Expr logit = in.gate_logit != 0;
  st.score(s, i, h, b) =
      st.dot(s, i, h, b) * in.scale + select(logit, log(max(st.gate(s, i, h, b), 1e-30f)), 0.f);
  st.value_gate(s, i, h, b) = select(logit, 1.f, st.gate(s, i, h, b));
  const Expr k_max = in.sel_slots + min(in.window, in.lk);
  st.att =
      attend_selected(st.score, st.index, in.v, k_eff, k_max, group, d, s, i, h, b, st.value_gate);
  return st;
}

}  // namespace hattn
