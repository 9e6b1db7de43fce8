// The math of dense attention. See dense.h for the layout and the blocking.
#include "dense.h"

#include <limits>
#include <stdexcept>
#include <string>

#include "dtype_casts.h"
#include "online_softmax.h"

namespace hattn {

using namespace Halide;

DenseStages dense_attention(const DenseInputs& in, const DenseBlocking& blocking) {
  DenseStages st;
  const int kb = blocking.key_block;
  Var &d = st.d, &i = st.i, &h = st.h, &b = st.b;
  Var &ii = st.ii, &jj = st.jj, &qblk = st.qblk, &kblk = st.kblk, &s = st.s;

  Expr group = in.q_heads / in.kv_heads;
  // This sequence's keys (lk for all, or its own length), and the most key blocks of any.
  const bool ragged = in.key_lengths.defined();
  st.ragged = ragged;
  // (Clamped so that Halide can bound the blocks and keys a data-dependent length reaches.)
  Expr lk = ragged ? clamp(in.key_lengths(b), 0, in.lk) : in.lk;
  Expr num_key_blocks = (lk + kb - 1) / kb;
  Expr max_key_blocks = (in.lk + kb - 1) / kb;
  // Bottom-right causal alignment: key j is visible to query row i iff j <= i + (Lk - Lq).
  Expr causal_offset = lk - in.lq;

  // A block's row ii stands for query `query` of query head `q_head`, reading kv head `hk`.
  // Unpacked: rows past Lq (in the last query block) read the last valid row and are discarded.
  // Packed: one block per kv head, row = g * Lq + i, every row valid.
  // `mask_query` is the row the causal mask compares with (unclamped when unpacked: rows past Lq
  // are discarded anyway, and the min would cost an instruction per score vector in prefill).
  // `last_query` is the block's last query row, for skipping causal key blocks.
  Expr qb, query, mask_query, last_query, q_head, hk;
  if (in.pack_groups) {
    qb = in.lq * group;
    // A schedule may round the block's rows up to whole tiles: rows past the block read its
    // last row, and their results are discarded.
    Expr row = min(ii, qb - 1);
    query = row % in.lq;
    mask_query = query;
    last_query = in.lq - 1;
    q_head = h * group + row / in.lq;
    hk = h;
  } else {
    qb = blocking.query_block;
    if (blocking.long_query_block > 0) {
      if (blocking.long_kv_mib <= 0) {
        throw std::invalid_argument(
            "dense: long query blocks (tunable lqb) need the MiB of K and V per kv head from "
            "which they apply (lmb)");
      }
      // K and V bytes of one kv head, as stored (16-bit caches reach the threshold at 2x the keys).
      Expr kv_bytes = cast<int64_t>(in.lk) * in.head_dim * (2 * in.k_raw.type().bytes());
      st.long_rows = kv_bytes >= cast<int64_t>(blocking.long_kv_mib) * (1 << 20);
      qb = select(st.long_rows, blocking.long_query_block, blocking.query_block);
    }
    mask_query = qblk * qb + ii;
    query = min(mask_query, in.lq - 1);
    last_query = qblk * qb + (qb - 1);
    q_head = h;
    hk = h / group;
  }
  st.block_rows = qb;

  // Keys past Lk (in the last key block) read the last valid key and are masked.
  Expr key = kblk * kb + jj;
  Expr key_in = clamp(key, 0, lk - 1);

  Var &pr = st.pr, &pi = st.pi;
  st.dot(ii, jj, kblk, qblk, h, b) = 0.f;
  Expr scaled_dot = st.dot(ii, jj, kblk, qblk, h, b);
  if (in.pair_qk) {
    const auto d_const = as_const_int(in.head_dim);
    if (!d_const || *d_const % 2 != 0) {
      throw std::invalid_argument("dense: q.k in bf16 pairs needs an even, compiled-in head dim");
    }
    // The scale multiplies the fp32 score: q stays as stored (scaling it in bf16 would round it
    // a second time).
    st.q_pairs(pr, ii, pi, qblk, h, b) = in.q_raw(2 * pi + pr, query, q_head, b);
    st.rcp = RDom(0, 2, 0, in.head_dim / 2, "rcp");
    Expr c = 2 * st.rcp.y + st.rcp.x;
    st.dot(ii, jj, kblk, qblk, h, b) +=
        cast<float>(st.q_pairs(st.rcp.x, ii, st.rcp.y, qblk, h, b)) *
        cast<float>(in.k_raw(c, key_in, hk, b));
    scaled_dot = scaled_dot * in.scale;
  } else {
    st.q_scaled(ii, d, qblk, h, b) = in.q(d, query, q_head, b) * in.scale;
    st.rc = RDom(0, in.head_dim, "rc");
    st.dot(ii, jj, kblk, qblk, h, b) +=
        st.q_scaled(ii, st.rc, qblk, h, b) * in.k(st.rc, key_in, hk, b);
  }

  Expr visible = key < lk;
  if (in.causal) visible = visible && key <= mask_query + causal_offset;
  st.scores(ii, jj, kblk, qblk, h, b) = scaled_dot + select(visible, 0.f, kMaskedScore);

  // Packed (decode): a block's loops stop at the cache's keys (rounded up to whole vectors) when
  // it holds fewer than a block; the keys past Lk they still cover read the last key, masked.
  st.block_keys = kb;
  if (in.pack_groups) {
    const Expr rounded = (in.lk + (kShortCacheGranule - 1)) / kShortCacheGranule;
    st.block_keys = min(kb, rounded * kShortCacheGranule);
    st.whole_blocks = in.lk >= kb;
  }
  st.rj = RDom(0, st.block_keys, "rj");
  st.block_max(ii, kblk, qblk, h, b) = kMaskedScore;
  st.block_max(ii, kblk, qblk, h, b) =
      max(st.block_max(ii, kblk, qblk, h, b), st.scores(ii, st.rj, kblk, qblk, h, b));

  st.probs(ii, jj, kblk, qblk, h, b) =
      exp_nonpositive(st.scores(ii, jj, kblk, qblk, h, b) - st.block_max(ii, kblk, qblk, h, b));

  st.block_sum(ii, kblk, qblk, h, b) = 0.f;
  st.block_sum(ii, kblk, qblk, h, b) += st.probs(ii, st.rj, kblk, qblk, h, b);

  st.pv(ii, d, kblk, qblk, h, b) = 0.f;
  // V's column, clamped: the state reads P.V at its columns [0, D) only, but a schedule whose
  // P.V tiles are whole (CUDA's td columns a thread) computes them past D - 1 where a tile
  // overhangs the state's two extra columns.
  Expr d_in = min(d, in.head_dim - 1);
  if (in.pair_pv) {
    if (kb % 2 != 0) {
      throw std::invalid_argument("dense: P.V in bf16 pairs needs an even key block, got " +
                                  std::to_string(kb));
    }
    // Keys past Lk read the last key: their probabilities are exactly 0, in bf16 too.
    const Type t = in.q_raw.type();
    st.p_pairs(pr, ii, pi, kblk, qblk, h, b) = cast(t, st.probs(ii, 2 * pi + pr, kblk, qblk, h, b));
    st.v_pairs(pr, d, pi, kblk, h, b) = in.v_raw(d_in, min(kblk * kb + 2 * pi + pr, lk - 1), hk, b);
    st.rjp = RDom(0, 2, 0, kb / 2, "rjp");
    st.pv(ii, d, kblk, qblk, h, b) +=
        cast<float>(st.p_pairs(st.rjp.x, ii, st.rjp.y, kblk, qblk, h, b)) *
        cast<float>(st.v_pairs(st.rjp.x, d, st.rjp.y, kblk, h, b));
  } else {
    Expr key_rj = min(kblk * kb + st.rj, lk - 1);
    st.pv(ii, d, kblk, qblk, h, b) +=
        st.probs(ii, st.rj, kblk, qblk, h, b) * in.v(d_in, key_rj, hk, b);
  }

  // Fold key blocks into the running state. With split_keys, split s owns blocks
  // [s * per_split, (s + 1) * per_split).
  // Ragged: splits are cut for the longest sequence (the most blocks), and each sequence's loop
  // stops at its own length (a predicate on b that Halide turns into the loop's bound), so a short
  // sequence fills its first splits only. (Cutting each sequence's own splits makes a block's
  // index depend on loaded data, and Halide then sizes each task's buffers for every block.)
  Expr split_blocks = ragged ? max_key_blocks : num_key_blocks;
  Expr per_split = in.split_keys ? (split_blocks + in.splits - 1) / in.splits : split_blocks;
  st.rk = RDom(0, per_split, "rk");
  Var& r = st.r;
  // A split's first block, for the split index the stage at hand calls s.
  Expr first = in.split_keys ? s * per_split : Expr(0);
  Expr blk = first + st.rk;
  Expr live = blk < num_key_blocks;
  // Causal: skip key blocks that start after the last visible key of the query block's last row.
  // The condition depends only on block indices, so the loop bound itself shrinks.
  // (Its bound is opaque to Halide (memoize_tag returns its argument): solved for the query block,
  // it made the per-row factors' bounds in the query block move with the block loop, and Halide
  // then recomputed every block's max at every block instead of sliding over them; see run_max.)
  if (in.causal) {
    live = live && blk * kb <= memoize_tag(last_query + causal_offset);
  }
  st.rk.where(live);

  // Per-split functions take the split after the block (or the row) index; unsplit ones do not.
  // `head` holds Vars (a definition's left side) or Exprs (a call).
  auto split_args = [&](auto head) {
    if (in.split_keys) {
      head.push_back(s);
    }
    head.insert(head.end(), {qblk, h, b});
    return head;
  };
  auto with_split_vars = [&](std::vector<Var> head) { return split_args(std::move(head)); };
  auto with_split = [&](std::vector<Expr> head) { return split_args(std::move(head)); };

  // The running max after the split's block r: a plain max over the blocks before it (live
  // blocks are a prefix of every split, so they are all computed), which a schedule keeps cheap by
  // storing split_block_max outside the block loop: Halide's sliding window then computes each
  // block's max once. (split_block_max indexes blocks within their split, so its bounds along the
  // block loop hold no product of run-time values, which Halide cannot prove monotonic.)
  // r = -1 is the empty prefix.
  st.split_block_max(with_split_vars({ii, r})) = st.block_max(ii, first + r, qblk, h, b);
  st.rm = RDom(0, per_split, "rm");
  st.rm.where(st.rm <= r);
  st.run_max(with_split_vars({ii, r})) = kMaskedScore;
  st.run_max(with_split_vars({ii, r})) =
      max(st.run_max(with_split_vars({ii, r})), st.split_block_max(with_split({ii, st.rm})));
  // The two per-row factors of a fold, computed once per row and block: the running sums scale
  // from the previous max to the new one, the block's from its own max to the new one.
  {
    Expr m_new = st.run_max(with_split({ii, r}));
    Expr m_old = st.run_max(with_split({ii, r - 1}));
    st.rescale(with_split_vars({ii, r})) =
        Tuple(rescale_factor(m_old, m_new),
              rescale_factor(st.split_block_max(with_split({ii, r})), m_new));
  }

  // The state: columns [0, D) the weighted sums of V, column D the sum of weights, column D + 1
  // the max (see dense.h). Only the sums are scaled per column; exps and maxima are per row.
  Expr sum_col = in.head_dim, max_col = in.head_dim + 1;
  std::vector<Var> state_vars = with_split_vars({ii, d});
  std::vector<Expr> state_at(state_vars.begin(), state_vars.end());
  st.state(state_vars) = select(d == max_col, kMaskedScore, 0.f);
  {
    Expr running = st.rescale(with_split({ii, st.rk}))[0];
    Expr block = st.rescale(with_split({ii, st.rk}))[1];
    Expr cur = st.state(state_at);
    Expr block_part =
        select(d < sum_col, st.pv(ii, d_in, blk, qblk, h, b), st.block_sum(ii, blk, qblk, h, b));
    st.state(state_at) = select(d <= sum_col, fold_sums(cur, running, block_part, block),
                                st.run_max(with_split({ii, st.rk})));
  }

  // The final state's sums (columns [0, D]) and its max, per row.
  Func final_state = st.state;
  if (in.split_keys) {
    // Splits hold partial states over disjoint keys: each is weighted by exp(its max - the max
    // over all splits), the same rescaling as a fold.
    st.rs = RDom(0, in.splits, "rs");
    st.split_max(ii, qblk, h, b) = kMaskedScore;
    st.split_max(ii, qblk, h, b) =
        max(st.split_max(ii, qblk, h, b), st.state(ii, max_col, st.rs, qblk, h, b));
    st.split_weight(ii, s, qblk, h, b) =
        rescale_factor(st.state(ii, max_col, s, qblk, h, b), st.split_max(ii, qblk, h, b));
    st.merged(ii, d, qblk, h, b) = 0.f;
    st.merged(ii, d, qblk, h, b) +=
        st.state(ii, d, st.rs, qblk, h, b) * st.split_weight(ii, st.rs, qblk, h, b);
    final_state = st.merged;
  }
  // A row sees at least one key iff Lk > 0 and (non-causal or i + offset >= 0); rows that see none
  // output zeros and lse = -inf.
  Expr any_visible = lk > 0;
  if (in.causal) any_visible = any_visible && i + causal_offset >= 0;
  // Where output row i of query head h sits in the final state: its sums at column c, its max.
  Expr row = in.pack_groups ? (h % group) * in.lq + i : i % qb;
  Expr row_blk = in.pack_groups ? Expr(0) : i / qb;
  Expr head = in.pack_groups ? h / group : h;
  Expr fl = final_state(row, sum_col, row_blk, head, b);
  Expr fm = in.split_keys ? st.split_max(row, row_blk, head, b)
                          : st.state(row, max_col, row_blk, head, b);
  st.out(d, i, h, b) = narrow_from_f32(
      in.out_type, select(any_visible, final_state(row, d, row_blk, head, b) / fl, 0.f),
      in.bf16_bits);
  st.lse(i, h, b) =
      select(any_visible, fm + log(fl), Expr(-std::numeric_limits<float>::infinity()));
  return st;
}

}  // namespace hattn
