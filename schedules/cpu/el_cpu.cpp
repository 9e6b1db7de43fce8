// CPU schedules (x86 and ARM) for EL-attention and the linear layer; tiles from each ISA's table.
//
// EL's cost is four products. Two run once over the whole batch, parallel over heads, so each
// head's slice of Wk / Wv (Dh x Dm) stays in L2 while every query row passes through it:
//   qt = Wk_h^T q_h        model dim in the lanes, q broadcast (outer-product tiles);
//   head_out = Wv_h r_h    a dot product over Dm (dot_block: lanes along the reduction).
// The attention core runs per task = (sample, block of qb core rows): scores against every memory
// row (dot_block), the row softmax, and r = P Hs (outer-product tiles, model dim in the lanes).
// All rows of a task read the same Hs, which is what makes EL a GEMM rather than a GEMV.
#include <algorithm>

#include "cpu_common.h"
#include "schedules.h"

namespace hattn {

using namespace Halide;

namespace {

struct ElTiles {
  int vec, qb, kb, tj, tw, tv, tc, to, tn;
};

ElTiles read_el_tiles(const ScheduleContext& ctx) {
  const Tunables& t = ctx.tunables;
  return ElTiles{ctx.target.natural_vector_size<float>(),
                 t.get("qb"),
                 t.get("kb"),
                 t.get("tj"),
                 t.get("tw"),
                 t.get("tv"),
                 t.get("tc"),
                 t.get("to"),
                 t.get("tn")};
}

}  // namespace

void schedule_el_cpu(ElStages& st, const ScheduleContext& ctx) {
  const ElTiles x = read_el_tiles(ctx);

  // Queries with (t, r) flattened, and their expansion into model space, once per call.
  st.q_rows.compute_root().vectorize(st.o, x.vec, TailStrategy::GuardWithIf);
  Func qt = st.qt.in();
  qt.compute_root();
  register_block(qt, st.qt, st.rd, st.m, st.n, x.vec, x.tv, x.tc, TailStrategy::RoundUp);
  // Heads outermost: one head's Wk slice is reused by every row before the next is read.
  const Var ro("ro"), co("co"), ao("ao"), bo("bo");
  qt.reorder(ro, co, st.h).parallel(st.h);

  // The core, one task per (sample, qb rows): r_h normalised in `context`, stored for all rows.
  Var wo("wo"), task("task");
  st.context.compute_root()
      .split(st.w, wo, st.w, x.qb, TailStrategy::RoundUp)
      .fuse(wo, st.b, task)
      .parallel(task)
      .vectorize(st.m, x.vec);
  const LoopLevel per_task(st.context, task);
  // r = P Hs reads Hs row by row. A tile of the model dim accumulated over all N keys would walk
  // down Hs with a 4 KB stride (one cache line per row, measured 3.5x slower than the score
  // product); instead keys are blocked (kb rows of Hs) and every model-dim tile of the block is
  // accumulated in registers (`part`) and then added to the task's accumulator in L1 (`mixed`).
  st.mixed.compute_at(per_task).vectorize(st.m, x.vec);
  RVar rjo("rjo"), rji("rji");
  Var blk("blk"), mo("mo"), mi("mi"), wco("wco"), wci("wci");
  Func part =
      st.mixed.update().split(st.rj, rjo, rji, x.kb, TailStrategy::GuardWithIf).rfactor(rjo, blk);
  st.mixed.update()
      .split(st.m, mo, mi, x.vec * x.tv)
      .split(st.w, wco, wci, x.tc, TailStrategy::RoundUp)
      .reorder(mi, wci, mo, wco, rjo)
      .vectorize(mi, x.vec)
      .unroll(mi)
      .unroll(wci);
  part.compute_at(st.mixed, mo)
      .bound_extent(st.m, x.vec * x.tv)
      .bound_extent(st.w, x.tc)
      .reorder_storage(st.m, st.w, blk)
      .vectorize(st.m, x.vec)
      .unroll(st.m)
      .unroll(st.w);
  part.update().reorder(st.m, st.w, rji).vectorize(st.m, x.vec).unroll(st.m).unroll(st.w);

  st.masked.compute_at(per_task);
  dot_block(st.masked, st.scores, st.rm, st.j, st.w, x.vec, x.tj, x.tw, TailStrategy::RoundUp,
            TailStrategy::RoundUp, 0, false);
  st.probs.compute_at(per_task).vectorize(st.j, x.vec, TailStrategy::RoundUp);
  for (Func f : {st.row_max, st.row_sum}) {
    f.compute_at(per_task);
    f.update().atomic().vectorize(st.rj, x.vec);
  }

  // Back to head space, parallel over heads; then bv and the no-key rows.
  Func head_out = st.head_out.in();
  head_out.compute_root();
  dot_block(head_out, st.head_out, st.rm2, st.o, st.n, x.vec, x.to, x.tn, TailStrategy::RoundUp,
            TailStrategy::RoundUp, 0, false);
  head_out.reorder(ao, bo, st.h).parallel(st.h);
  st.out.vectorize(st.oo, x.vec, TailStrategy::GuardWithIf);
}

void schedule_linear_cpu(LinearStages& st, const ScheduleContext& ctx) {
  const int vec = ctx.target.natural_vector_size<float>();
  const Tunables& t = ctx.tunables;
  struct {
    int vec, qb, to, tn;
  } x{vec, t.get("qb"), t.get("to"), t.get("tn")};
  // Chunks of `qb` outputs per task: that many rows of W (qb x in floats) stay in L2 while every
  // input row passes through them in to x tn dot-product tiles.
  const Var chunk = dot_block(st.y, st.dot, st.ri, st.o, st.n, x.vec, x.to, x.tn,
                              TailStrategy::GuardWithIf, TailStrategy::GuardWithIf, x.qb, false);
  st.y.parallel(chunk);
}

}  // namespace hattn
