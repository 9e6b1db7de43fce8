// The math of EL-attention and of the linear layer. See el.h for the steps and the row layout.
#include "el.h"

#include <limits>

namespace hattn {

using namespace Halide;

ElStages el_attention(const ElInputs& in) {
  ElStages st;
  Var &m = st.m, &o = st.o, &oo = st.oo, &h = st.h, &n = st.n, &j = st.j, &w = st.w, &b = st.b,
      &t = st.t, &r = st.r;
  const Expr dh = in.model_dim / in.heads;
  const Expr per_sample = in.beam * in.tokens;  // x rows of one sample

  // 2. Expand each query head into model space: qt_h[m] = sum_d Wk[h*Dh + d][m] q_h[d].
  // Indices past the last row or key read the last valid one (their results are never used),
  // so a schedule may compute whole tiles at any edge.
  const Expr rows = in.x_rows * in.tokens;  // query rows of the whole batch
  const Expr core_rows = per_sample * in.heads;
  Expr n_in = min(n, rows - 1);
  st.q_rows(o, n) = in.q(o, n_in % in.tokens, n_in / in.tokens);
  st.rd = RDom(0, dh, "rd");
  Expr qrow = h * dh + st.rd;
  st.qt(m, h, n) = 0.f;
  st.qt(m, h, n) += in.wk(m, qrow) * st.q_rows(qrow, n);

  // 3. Scores of core row w of sample b against every memory row.
  st.rm = RDom(0, in.model_dim, "rm");
  st.scores(j, w, b) = 0.f;
  Expr w_in = min(w, core_rows - 1);
  Expr j_in = min(j, in.memory_len - 1);
  st.scores(j, w, b) +=
      in.hs(st.rm, j_in, b) * st.qt(st.rm, w_in % in.heads, b * per_sample + w_in / in.heads);

  // 4. Softmax over the visible keys. Sample b's memory is its first len_b rows, and the causal
  // mask is aligned to them: key j is visible to token t iff j < len_b and j <= t + (len_b - T).
  Expr token_of_w = (w_in / in.heads) % in.tokens;
  Expr len = in.lengths(b);
  Expr visible = j < len && (!in.causal || j <= token_of_w + (len - in.tokens));
  const Expr neg_inf = Expr(-std::numeric_limits<float>::infinity());
  st.masked(j, w, b) = select(visible, st.scores(j, w, b), neg_inf);
  st.rj = RDom(0, in.memory_len, "rj");
  st.row_max(w, b) = neg_inf;
  st.row_max(w, b) = max(st.row_max(w, b), st.masked(st.rj, w, b));
  // A row with no visible key has max -inf; its weights are all 0 (and its output is 0 below).
  st.probs(j, w, b) = select(visible, exp(st.masked(j, w, b) - st.row_max(w, b)), 0.f);
  st.row_sum(w, b) = 0.f;
  st.row_sum(w, b) += st.probs(st.rj, w, b);

  // 5. Unnormalised r_h = sum_j p_hj Hs_j, in model space.
  // The model dim clamped too, as a boundary condition (`likely`: loop partitioning keeps the
  // clamp out of every tile but the last), so model-dim tiles need not divide Dm.
  Expr m_in = min(likely(m), in.model_dim - 1);
  st.mixed(m, w, b) = 0.f;
  st.mixed(m, w, b) += st.probs(st.rj, w, b) * in.hs(m_in, st.rj, b);
  // NaN for a row that saw no key (0 / 0); such rows are replaced by zeros in `out`.
  st.context(m, w, b) = st.mixed(m, w, b) / st.row_sum(w, b);

  // 6. Back to head space: (Wv_h r_h)[o] = sum_m Wv[h*Dh + o][m] r_h[m].
  Expr sample_of_n = n_in / per_sample;
  Expr w_of_n = (n_in % per_sample) * in.heads + h;
  Expr vrow = min(h * dh + o, in.model_dim - 1);
  st.rm2 = RDom(0, in.model_dim, "rm2");
  st.head_out(o, h, n) = 0.f;
  st.head_out(o, h, n) += in.wv(st.rm2, vrow) * st.context(st.rm2, w_of_n, sample_of_n);

  // Add bv; a row that saw no key outputs zeros (the shared convention), as standard MHA's
  // attention output would be before its output projection.
  Expr xrow = r * in.tokens + t;
  Expr len_out = in.lengths(r / in.beam);
  Expr any_visible = len_out > 0 && (!in.causal || t + (len_out - in.tokens) >= 0);
  st.out(oo, t, r) = select(any_visible, st.head_out(oo % dh, oo / dh, xrow) + in.bv(oo), 0.f);
  return st;
}

LinearStages linear_layer(const LinearInputs& in) {
  LinearStages st;
  st.ri = RDom(0, in.in_dim, "ri");
  // Rows and outputs past the ends read the last valid ones (see el_attention).
  Expr n_in = min(st.n, in.rows - 1);
  Expr o_in = min(st.o, in.out_dim - 1);
  st.dot(st.o, st.n) = 0.f;
  st.dot(st.o, st.n) += in.x(st.ri, n_in) * in.w(st.ri, o_in);
  st.y(st.o, st.n) = in.scale * (st.dot(st.o, st.n) + in.bias(st.o));
  return st;
}

}  // namespace hattn
