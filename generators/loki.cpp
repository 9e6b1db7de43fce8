// The math of Loki attention. See loki.h.
#include "loki.h"

namespace hattn {

using namespace Halide;

LokiStages loki_attention(const LokiInputs& in) {
  LokiStages st;
  Var &c = st.c, &e = st.e, &i = st.i, &h = st.h, &b = st.b, &j = st.j, &s = st.s;
  const Expr group = in.q_heads / in.kv_heads;
  const Expr hk = h / group;

  // Rows past Lq and keys past Lk (in a schedule's last tile) read the last valid one; their
  // scores are never selected (keys) or never stored (rows).
  st.q_t(i, e, h, b) = in.q(e, clamp(i, 0, in.lq - 1), h, b);
  st.re = RDom(0, in.head_dim, "re");
  st.q_rot(i, c, h, b) = 0.f;
  st.q_rot(i, c, h, b) += st.q_t(i, st.re, h, b) * in.basis(c, st.re, hk);
  st.q_rot(i, c, h, b) = st.q_rot(i, c, h, b) * in.scale;

  auto key_at = [&](const Expr& ch, const Expr& jj) {
    return in.k(ch, clamp(jj, 0, in.lk - 1), hk, b);
  };
  st.rr = RDom(0, in.rank, "rr");
  st.approx(j, i, h, b) = 0.f;
  st.approx(j, i, h, b) +=
      st.q_rot(i, st.rr, h, b) * in.k_lead(st.rr, clamp(j, 0, in.lk - 1), hk, b);

  // Bottom-right causal alignment, as everywhere: key j is visible to row i iff
  // j <= i + (Lk - Lq), Lk the sequence's own. Masked keys get the lowest key and k is clamped to
  // the visible count, so they are never selected.
  const KeyVisibility kv = key_visibility(in.key_lengths, in.lk, in.lq, in.causal, i, j, b);
  st.key(j, i, h, b) = masked_key(st.approx(j, i, h, b), kv.visible);
  const Expr k_eff = min(in.topk, kv.n_visible);
  st.sel = select_topk(st.key, {i, h, b}, in.lk, k_eff, "loki");

  st.rc = RDom(0, in.head_dim, "rc");
  st.exact(s, i, h, b) = 0.f;
  st.exact(s, i, h, b) += st.q_rot(i, st.rc, h, b) * key_at(st.rc, st.sel.index(s, i, h, b));
  st.att =
      attend_selected(st.exact, st.sel.index, values_within_lengths(in.v, in.key_lengths, in.lk),
                      k_eff, min(in.topk, in.lk), group, st.d, s, i, h, b, Func(), in.out_type);
  return st;
}

}  // namespace hattn
