// CPU schedules (x86 and ARM) for topk attention and the top-k feed-forward layer.
//
// Prefill and the FFN work on chunks of C = qb rows (queries or tokens) per parallel task. A
// chunk's scores (as ordered keys) are one C x n buffer, computed by the same register-blocked
// micro-kernel as dense attention with the rows in the SIMD lanes; the 32 counting passes of the
// radix select, the prefix scan and the scatter then stream that buffer with the rows still in
// the lanes (C x n x 4 bytes: sized to stay in L2). Softmax and the V product touch only the k
// selected keys per row, vectorized along D.
//
// Decode (a few query rows, Lk large) has one task per (head, batch): the q . k products put
// D in the lanes (as dense decode does), and the counting passes vectorize along the keys.
#include "cpu_common.h"
#include "schedules.h"

namespace hattn {

using namespace Halide;

namespace {

struct TopkTiles {
  int vec, qb, kb, tq, tk;
};

TopkTiles read_topk_tiles(const ScheduleContext& ctx) {
  const Tunables& t = ctx.tunables;
  return {ctx.target.natural_vector_size<float>(), t.get("qb"), t.get("kb"), t.get("tq"),
          t.get("tk")};
}

// The selection stages, computed per chunk with the rows (`row`) in the lanes.
void schedule_selection_rows_in_lanes(TopkSelection& sel, const Var& row, const LoopLevel& at,
                                      int vec) {
  const RVar& rj = sel.rj.x;
  for (Func f : sel.passes) {
    f.compute_at(at).vectorize(row, vec, TailStrategy::GuardWithIf);
    if (f.has_update_definition()) {
      f.update().reorder(row, rj).vectorize(row, vec, TailStrategy::GuardWithIf);
    }
  }
  sel.above.compute_at(at).vectorize(row, vec, TailStrategy::GuardWithIf);
  sel.above.update().reorder(row, rj).vectorize(row, vec, TailStrategy::GuardWithIf);
  Var j = sel.scan.args()[0];
  sel.scan.compute_at(at).reorder_storage(row, j).vectorize(row, vec, TailStrategy::GuardWithIf);
  sel.scan.update().reorder(row, rj).vectorize(row, vec, TailStrategy::GuardWithIf);
  sel.index.compute_at(at);
  sel.index.update().reorder(row, rj);
}

// The selection stages for a few rows: counting passes vectorized along the candidates.
void schedule_selection_few_rows(TopkSelection& sel, const LoopLevel& at, int vec) {
  const RVar& rj = sel.rj.x;
  for (Func f : sel.passes) {
    f.compute_at(at);
    if (f.has_update_definition()) f.update().atomic().vectorize(rj, vec);
  }
  sel.above.compute_at(at);
  sel.above.update().atomic().vectorize(rj, vec);
  sel.scan.compute_at(at);
  sel.index.compute_at(at);
}

void schedule_topk_prefill(TopkStages& st, const ScheduleContext& ctx) {
  const TopkTiles x = read_topk_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  Var qc("qc"), ii("ii"), task("task");
  st.out.split(st.i, qc, ii, x.qb, TailStrategy::GuardWithIf)
      .fuse(qc, st.h, task)
      .fuse(task, st.b, task)
      .parallel(task)
      .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  const LoopLevel chunk(st.out, task);

  st.q_scaled.compute_at(chunk).vectorize(st.i, x.vec, TailStrategy::GuardWithIf);
  // Keys of the chunk: rows innermost in storage so every later pass reads whole vectors.
  st.key.compute_at(chunk).reorder_storage(st.i, st.j);
  register_block(st.key, st.dot, st.rc, st.i, st.j, x.vec, x.tq, x.tk, TailStrategy::RoundUp);

  schedule_selection_rows_in_lanes(st.sel, st.i, chunk, x.vec);

  for (Func f : {st.gathered, st.weights}) {
    f.compute_at(chunk)
        .reorder_storage(st.i, st.s)
        .reorder(st.i, st.s)
        .vectorize(st.i, x.vec, TailStrategy::GuardWithIf);
  }
  for (Func f : {st.row_max, st.row_sum}) {
    f.compute_at(chunk).vectorize(st.i, x.vec, TailStrategy::GuardWithIf);
    f.update().reorder(st.i, st.rs).vectorize(st.i, x.vec, TailStrategy::GuardWithIf);
  }
  // P V over the selected rows of V, per query row, D in the lanes.
  st.pv.compute_at(st.out, ii).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  st.pv.update().reorder(st.d, st.rs).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  if (fixed_d) {
    st.pv.unroll(st.d);
    st.pv.update().unroll(st.d);
  }
}

void schedule_topk_decode(TopkStages& st, const ScheduleContext& ctx) {
  const TopkTiles x = read_topk_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  Var task("task"), lane("lane"), jo("jo"), ji("ji");
  RVar rco("rco"), rci("rci");
  st.out.fuse(st.h, st.b, task).parallel(task).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  const LoopLevel per_head(st.out, task);

  st.q_scaled.compute_at(per_head);
  // q . k with D in the lanes: tq vectors of partial sums per key, one horizontal sum per key.
  st.key.compute_at(per_head)
      .split(st.j, jo, ji, x.kb, TailStrategy::GuardWithIf)
      .reorder(ji, st.i, jo);
  st.dot.compute_at(st.key, jo);
  const int lanes = fixed_d ? std::min(x.vec * x.tq, ctx.head_dim) : x.vec;
  Func dot_lanes =
      st.dot.update().split(st.rc, rco, rci, lanes, TailStrategy::GuardWithIf).rfactor(rci, lane);
  dot_lanes.compute_at(st.key, jo).reorder_storage(lane, st.j, st.i).vectorize(lane);
  dot_lanes.update()
      .reorder(lane, rco, st.j, st.i)
      .vectorize(lane)
      .unroll(st.j, x.tk, TailStrategy::GuardWithIf);
  st.dot.update().atomic().vectorize(rci);

  schedule_selection_few_rows(st.sel, per_head, x.vec);

  for (Func f : {st.gathered, st.weights}) f.compute_at(per_head);
  for (Func f : {st.row_max, st.row_sum}) f.compute_at(per_head);
  st.pv.compute_at(st.out, st.i).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  st.pv.update().reorder(st.d, st.rs).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  if (fixed_d) {
    st.pv.unroll(st.d);
    st.pv.update().unroll(st.d);
  }
}

}  // namespace

void schedule_topk_cpu(TopkStages& st, const ScheduleContext& ctx) {
  if (ctx.decode) {
    schedule_topk_decode(st, ctx);
  } else {
    schedule_topk_prefill(st, ctx);
  }
}

void schedule_topk_ffn_cpu(TopkFfnStages& st, const ScheduleContext& ctx) {
  const TopkTiles x = read_topk_tiles(ctx);
  Var tc("tc"), ti("ti");
  st.y.split(st.t, tc, ti, x.qb, TailStrategy::GuardWithIf)
      .parallel(tc)
      .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  st.y.update()
      .split(st.t, tc, ti, x.qb, TailStrategy::GuardWithIf)
      .reorder(st.d, st.rs, ti, tc)
      .parallel(tc)
      .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  const LoopLevel chunk(st.y, tc);
  st.x_t.compute_at(chunk).vectorize(st.t, x.vec, TailStrategy::GuardWithIf);
  st.key.compute_at(chunk).reorder_storage(st.t, st.f);
  register_block(st.key, st.dot, st.rc, st.t, st.f, x.vec, x.tq, x.tk, TailStrategy::RoundUp);
  schedule_selection_rows_in_lanes(st.sel, st.t, chunk, x.vec);
  st.gathered.compute_at(chunk)
      .reorder_storage(st.t, st.s)
      .reorder(st.t, st.s)
      .vectorize(st.t, x.vec, TailStrategy::GuardWithIf);
}

}  // namespace hattn
