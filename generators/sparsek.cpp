// The math of SPARSEK attention and of the SparseK operator. See sparsek.h.
#include "sparsek.h"

#include <cfloat>
#include <limits>
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
  const Expr kd = cast<double>(k);
  const Expr zero_d = Internal::make_const(Float(64), 0.0);
  const Expr one_d = Internal::make_const(Float(64), 1.0);
  const Expr inf_d = Internal::make_const(Float(64), std::numeric_limits<double>::infinity());
  // The row in double, -inf past its length (it adds nothing to any sum below, so no pass tests
  // the length). In double, z_j - t rounds by at most 2^-53 |z_j| and the sum by ~n 2^-53 k: the
  // bisection's decisions can be wrong only for t that close to the root (fp32 sums were wrong
  // ~2^29 times farther away).
  st.zd(j, r) = select(j < n, cast<double>(z(j, r)), -inf_d);
  auto gap = [&](const Expr& t) { return st.zd(rj, r) - cast<double>(t); };

  // f(t) = sum_j clip(z_j - t, 0, 1) is non-increasing in t; keep f(lo) >= k > f(hi). The bracket
  // starts at the whole finite float range, as ordered keys: -FLT_MAX .. FLT_MAX. Each step halves
  // the number of floats inside it, so 32 steps leave hi = lo + 1 (adjacent floats): no
  // tolerance to choose, whatever the scores' magnitude.
  // f is summed in double. In fp32 the sum of k - 1 ones and one 1 - 2^-24 rounds to k once k
  // passes a power of two, so the bisection stopped one float above a flat root (f = k on
  // [z_(k+1), z_(k) - 1]) and the finish saw z_(k) as free (issue 21).
  Expr lo = ordered_key(Expr(-FLT_MAX)), hi = ordered_key(Expr(FLT_MAX));
  for (int step = 0; step < 32; ++step) {
    const std::string tag = "sk_b" + std::to_string(step);
    Expr mid = lo + (hi - lo) / u32(2);
    Func f(tag + "_f");
    f(r) = zero_d;
    f(r) += clamp(gap(score_of_key(mid)), zero_d, one_d);
    Func br(tag + "_bracket");
    br(r) = select(f(r) >= kd, Tuple(mid, hi), Tuple(lo, mid));
    st.passes.push_back(f);
    st.passes.push_back(br);
    lo = br(r)[0];
    hi = br(r)[1];
  }
  st.bracket = st.passes.back();

  // The finish: f(lo) >= k > f(hi) for adjacent floats lo < hi (up to the rounding above), so
  // the root lies in [lo, hi) or within that rounding below lo. On the piece holding lo, f is
  // linear, with the free set F = {z_j - 1 < lo < z_j} and the saturated set S = {z_j - 1 >= lo}:
  // tau = (sum_F z + |S| - k) / |F|, in double, capped at hi (a breakpoint z_j - 1 that no float
  // can hold may lie between lo and hi) and rounded to a float. Not raised to lo: when the
  // bisection overshot a root at 0 by a double's rounding (z = [1, -4096], k = 1 left lo =
  // 2^-54), the line of lo's piece still meets k at the root itself. F empty: f is flat at lo,
  // f(lo) = |S| = k (its terms are exact 0s and 1s), and lo is a root.
  // The sets compare z with lo directly (z - 1 is exact in double for |z| < 2^53; strict_float
  // keeps the simplifier from turning z - 1 >= lo into the rounded z - lo >= 1), and F excludes S
  // by construction: an entry counted in both made tau = z_(k) (issue 21).
  const Expr t_lo = score_of_key(st.bracket(r)[0]);
  const Expr t_hi = score_of_key(st.bracket(r)[1]);
  {
    const Expr lo_d = cast<double>(t_lo);
    const Expr in_sat = strict_float(st.zd(rj, r) - one_d >= lo_d);
    const Expr in_free = st.zd(rj, r) > lo_d && !in_sat;
    Func& fin = st.finish;
    fin(r) = Tuple(zero_d, 0, 0);
    fin(r) = Tuple(fin(r)[0] + select(in_free, st.zd(rj, r), zero_d),
                   fin(r)[1] + select(in_free, 1, 0), fin(r)[2] + select(in_sat, 1, 0));
  }
  const Expr free_n = st.finish(r)[1];
  const Expr root =
      (st.finish(r)[0] + cast<double>(st.finish(r)[2]) - kd) / cast<double>(max(free_n, 1));
  const Expr bounded = min(root, cast<double>(t_hi));
  const Expr inf = Internal::make_const(Float(32), std::numeric_limits<float>::infinity());
  // k = 0: +inf (every p = 0); k >= n: -inf (every p = 1). Infinities, not +-FLT_MAX, so that
  // p = clip(z - tau, 0, 1) holds at the returned tau for every finite z, FLT_MAX included.
  st.tau(r) = select(k <= 0, inf, k >= n, -inf, free_n > 0, cast<float>(bounded), t_lo);
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
  st.att = attend_selected(st.score, st.index, in.v, k_eff, k_max, group, d, s, i, h, b,
                           st.value_gate, in.out_type);
  return st;
}

}  // namespace hattn
