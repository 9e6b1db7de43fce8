// The math of topk attention and of the top-k feed-forward layer. See topk.h.
#include "topk.h"

#include "selected_attention.h"

namespace hattn {

using namespace Halide;

TopkStages topk_attention(const TopkInputs& in) {
  TopkStages st;
  Var &d = st.d, &i = st.i, &h = st.h, &b = st.b, &j = st.j, &s = st.s;
  st.group = in.q_heads / in.kv_heads;
  // Rows past Lq, heads past Hq and keys past Lk (in a schedule's last tile) read the last valid
  // one; their scores are never selected (keys) or never stored (rows, heads).
  Expr hq = clamp(h, 0, in.q_heads - 1);
  Expr hk = hq / st.group;

  Expr query = clamp(i, 0, in.lq - 1);
  Expr key_in = clamp(j, 0, in.lk - 1);
  st.dot(j, i, h, b) = 0.f;
  Expr score = st.dot(j, i, h, b);
  if (in.pair_dot) {
    Var &pr = st.pr, &pi = st.pi;
    st.q_pairs(pr, i, pi, h, b) = in.q_raw(2 * pi + pr, query, hq, b);
    st.rcp = RDom(0, 2, 0, in.head_dim / 2, "rcp");
    st.dot(j, i, h, b) += cast<float>(st.q_pairs(st.rcp.x, i, st.rcp.y, h, b)) *
                          cast<float>(in.k_raw(2 * st.rcp.y + st.rcp.x, key_in, hk, b));
    st.rodd = RDom(in.head_dim / 2 * 2, in.head_dim % 2, "rodd");
    st.dot(j, i, h, b) += in.q(st.rodd, query, hq, b) * in.k(st.rodd, key_in, hk, b);
    score = score * in.scale;  // q stays as stored (scaled in bf16 it would round twice)
  } else {
    st.q_scaled(i, d, h, b) = in.q(d, query, hq, b) * in.scale;
    st.rc = RDom(0, in.head_dim, "rc");
    st.dot(j, i, h, b) += st.q_scaled(i, st.rc, h, b) * in.k(st.rc, key_in, hk, b);
  }

  // Bottom-right causal alignment: key j is visible to row i iff j <= i + (Lk - Lq), Lk the
  // sequence's own. Masked keys get the lowest key, so they sort last and are never among the k
  // (k is clamped to the visible count).
  const KeyVisibility kv = key_visibility(in.key_lengths, in.lk, in.lq, in.causal, i, j, b);
  st.key(j, i, h, b) = masked_key(score, kv.visible);

  Expr k_eff = min(in.topk, kv.n_visible);
  Expr k_max = min(in.topk, in.lk);
  st.sel = select_topk(st.key, {i, h, b}, in.lk, k_eff, "topk");

  st.gathered(s, i, h, b) = score_of_key(st.key(st.sel.index(s, i, h, b), i, h, b));
  st.att =
      attend_selected(st.gathered, st.sel.index, values_within_lengths(in.v, in.key_lengths, in.lk),
                      k_eff, k_max, in.q_heads / in.kv_heads, d, s, i, h, b, Func(), in.out_type);
  return st;
}

TopkFfnStages topk_ffn(const TopkFfnInputs& in) {
  TopkFfnStages st;
  Var &d = st.d, &t = st.t, &f = st.f, &s = st.s;
  Expr token = clamp(t, 0, in.tokens - 1);
  Expr unit = clamp(f, 0, in.d_ff - 1);
  st.x_t(t, d) = in.x(d, token);
  st.dot(f, t) = 0.f;
  if (in.pair_dot) {
    Var &pr = st.pr, &pi = st.pi;
    st.x_pairs(pr, t, pi) = in.x_raw(2 * pi + pr, token);
    st.rcp = RDom(0, 2, 0, in.model_dim / 2, "rcp");
    st.dot(f, t) += cast<float>(st.x_pairs(st.rcp.x, t, st.rcp.y)) *
                    cast<float>(in.w1_raw(2 * st.rcp.y + st.rcp.x, unit));
    st.rodd = RDom(in.model_dim / 2 * 2, in.model_dim % 2, "rodd");
    st.dot(f, t) += st.x_t(t, st.rodd) * in.w1(st.rodd, unit);
  } else {
    st.rc = RDom(0, in.model_dim, "rc");
    st.dot(f, t) += st.x_t(t, st.rc) * in.w1(st.rc, unit);
  }
  st.key(f, t) = ordered_key(st.dot(f, t));
  Expr k_eff = min(in.topk, in.d_ff);
  st.sel = select_topk(st.key, {t}, in.d_ff, k_eff, "ffn");
  // Each taken unit written to its slot (ascending unit order, as sel.index lists them), with
  // its relu(h): one pass over the units instead of a search per slot. Slot k_eff takes the rest.
  st.rf = RDom(0, in.d_ff, "rf");
  st.picked(s, t) = Tuple(0, 0.f);
  st.picked(clamp(st.sel.slot(st.rf, t), 0, k_eff), t) =
      Tuple(st.rf.x, max(score_of_key(st.key(st.rf, t)), 0.f));
  st.rs = RDom(0, k_eff, "rs");
  // Columns past D read the last one (a schedule may compute whole chunks of D); the values as
  // stored, widened in the sum, so a copy of w2 keeps 16-bit weights in 16 bits.
  st.w2(d, f) = in.w2t(min(d, in.model_dim - 1), f);
  st.acc(d, t) = 0.f;
  st.acc(d, t) +=
      st.picked(st.rs, t)[1] * cast<float>(st.w2(d, clamp(st.picked(st.rs, t)[0], 0, in.d_ff - 1)));
  st.y(d, t) = cast(in.out_type, st.acc(d, t));
  return st;
}

}  // namespace hattn
