// CPU schedules (x86 and ARM) for Loki attention.
//
// Decode (a few query rows, Lk large: where Loki pays) has one task per (head, batch). The
// approximate scores stream only the first r channels of each rotated key (with r * 4 bytes a
// cache line or two, the rest of the row is never fetched), r in the SIMD lanes with one
// horizontal sum per key; then per query row the selection, the exact scores of the k selected
// keys (whole rows, D in the lanes) and the V sum over the same k rows.
//
// Prefill (full-sequence evaluation) follows topk's layout: chunks of qb rows per task, rows in
// the SIMD lanes, the approximate scores from the shared register-blocked micro-kernel.
#include "cpu_common.h"
#include "schedules.h"
#include "selection_cpu.h"

namespace hattn {

using namespace Halide;

namespace {

void schedule_loki_prefill(LokiStages& st, const ScheduleContext& ctx) {
  const SparseTiles x = read_sparse_tiles(ctx);
  LoopLevel per_row;
  const LoopLevel chunk = parallel_row_chunks(st.att.out, st.d, st.i, st.h, st.b, x, &per_row);

  compute_rows_in_lanes(st.q_t, st.i, chunk, x.vec, x.qb);
  compute_rows_in_lanes(st.q_rot, st.i, chunk, x.vec, x.qb);
  for (int u = 0; u < 2; ++u) st.q_rot.update(u).vectorize(st.i, x.vec, TailStrategy::RoundUp);
  st.key.compute_at(chunk).reorder_storage(st.i, st.j);
  register_block(st.key, st.approx, st.rr, st.i, st.j, x.vec, x.tq, x.tk, TailStrategy::RoundUp);

  schedule_selection_rows_in_lanes(st.sel, st.i, chunk, x.vec, x.qb);
  schedule_selected_rows_in_lanes(st.att, st.exact, st.s, st.i, st.d, chunk, per_row, x.vec, x.qb,
                                  ctx.head_dim > 0);
  // Exact scores of the selected keys: rows in the lanes, each lane gathering its own key.
  st.exact.update().reorder(st.i, st.rc, st.s).vectorize(st.i, x.vec, TailStrategy::RoundUp);
}

void schedule_loki_decode(LokiStages& st, const ScheduleContext& ctx) {
  const SparseTiles x = read_sparse_tiles(ctx);
  Var task("task"), jo("jo"), ji("ji");
  st.att.out.fuse(st.h, st.b, task)
      .parallel(task)
      .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  const LoopLevel per_head(st.att.out, task);
  const LoopLevel per_row(st.att.out, st.i);

  st.q_t.compute_at(per_head);
  // The rotated query with its channels contiguous: the score passes read it in vectors of c.
  st.q_rot.compute_at(per_head)
      .reorder_storage(st.c, st.i)
      .vectorize(st.c, x.vec, TailStrategy::GuardWithIf);
  for (int u = 0; u < 2; ++u) {
    st.q_rot.update(u).vectorize(st.c, x.vec, TailStrategy::GuardWithIf);
  }
  // Approximate scores for every row of the head in one pass over the keys, a block of kb keys
  // at a time.
  st.key.compute_at(per_head)
      .split(st.j, jo, ji, x.kb, TailStrategy::GuardWithIf)
      .reorder(ji, st.i, jo)
      .vectorize(ji, x.vec, TailStrategy::GuardWithIf);
  st.approx.compute_at(st.key, jo);
  st.approx.update().atomic().vectorize(st.rr.x, x.vec, TailStrategy::GuardWithIf);

  schedule_selection_few_rows(st.sel, per_row, x.vec);
  schedule_selected_few_rows(st.att, st.exact, st.s, st.d, per_row, per_row, x.vec,
                             ctx.head_dim > 0);
  // Exact scores: one whole key row per slot. A compile-time D is a single wide vector reduction
  // (LLVM adds its vectors, then one horizontal sum): measured 6.1 -> 4.4 ms at k = Lk/8 (H=4,
  // Lk=32K, one thread). A generic D uses per-lane partial sums instead.
  if (ctx.head_dim > 0 && ctx.head_dim % x.vec == 0 && ctx.head_dim <= 256) {
    st.exact.update().atomic().vectorize(st.rc.x, ctx.head_dim);
  } else {
    reduce_in_lanes(st.exact, st.rc.x, x.vec, per_row);
  }
}

}  // namespace

void schedule_loki_cpu(LokiStages& st, const ScheduleContext& ctx) {
  if (ctx.decode) {
    schedule_loki_decode(st, ctx);
  } else {
    schedule_loki_prefill(st, ctx);
  }
}

}  // namespace hattn
