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
  int vec, qb, tj, tw, tv, tc, to, tn;
};

ElTiles read_el_tiles(const ScheduleContext& ctx) {
  const Tunables& t = ctx.tunables;
  return ElTiles{ctx.target.natural_vector_size<float>(),
                 t.get("qb"),
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
  Var wo("wo"), wt("wt"), task("task"), mo("mo"), mi("mi"), wco("wco"), wci("wci");
  st.context.compute_root()
      .split(st.w, wo, wt, x.qb, TailStrategy::RoundUp)
      .split(st.m, mo, mi, x.vec * x.tv)
      .split(wt, wco, wci, x.tc, TailStrategy::RoundUp)
      .reorder(mi, wci, mo, wco, wo, st.b)
      .vectorize(mi, x.vec)
      .unroll(mi)
      .unroll(wci)
      .fuse(wo, st.b, task)
      .parallel(task);
  const LoopLevel per_task(st.context, task);
  st.mixed.compute_at(st.context, mo)
      .reorder_storage(st.m, st.w)
      .vectorize(st.m, x.vec)
      .unroll(st.m)
      .unroll(st.w);
  st.mixed.update().reorder(st.m, st.w, st.rj).vectorize(st.m, x.vec).unroll(st.m).unroll(st.w);

  st.masked.compute_at(per_task);
  dot_block(st.masked, st.scores, st.rm, st.j, st.w, x.vec, x.tj, x.tw, TailStrategy::RoundUp,
            TailStrategy::RoundUp, 0);
  st.probs.compute_at(per_task).vectorize(st.j, x.vec, TailStrategy::RoundUp);
  for (Func f : {st.row_max, st.row_sum}) {
    f.compute_at(per_task);
    f.update().atomic().vectorize(st.rj, x.vec);
  }

  // Back to head space, parallel over heads; then bv and the no-key rows.
  Func head_out = st.head_out.in();
  head_out.compute_root();
  dot_block(head_out, st.head_out, st.rm2, st.o, st.n, x.vec, x.to, x.tn, TailStrategy::RoundUp,
            TailStrategy::RoundUp, 0);
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
                              TailStrategy::GuardWithIf, TailStrategy::GuardWithIf, x.qb);
  st.y.parallel(chunk);
}

}  // namespace hattn
