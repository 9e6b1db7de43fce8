// CPU schedules (x86 and ARM) for SPARSEK attention and the SparseK operator.
//
// Attention: one parallel task per chunk of qb query rows of one (head, batch); per row, its k + w
// slots (selected keys, then the window) each score one whole key row (D in the SIMD lanes: a
// compile-time D is a single wide vector reduction, as in loki decode), then softmax over the
// slots and the gated V sum (D in the lanes). Rows gather different keys, so rows in the lanes
// would make every load a gather; whole key rows are contiguous.
//
// Operator: one task per qb rows; each of the 32 bisection passes sums clip(z - t, 0, 1) over the
// row into tk vectors of double partial sums; the closed-form finish and the mask follow per row.
#include "cpu_common.h"
#include "schedules.h"
#include "selection_cpu.h"
#include "sparsek.h"

namespace hattn {

using namespace Halide;

void schedule_sparsek_cpu(SparsekStages& st, const ScheduleContext& ctx) {
  const SparseTiles x = read_sparse_tiles(ctx);
  LoopLevel per_row;
  parallel_row_chunks(st.att.out, st.d, st.i, st.h, st.b, x, &per_row);
  st.index.compute_at(per_row).vectorize(st.s, x.vec, TailStrategy::GuardWithIf);
  st.value_gate.compute_at(per_row).vectorize(st.s, x.vec, TailStrategy::GuardWithIf);
  st.dot.compute_at(per_row);
  if (ctx.head_dim > 0 && ctx.head_dim % x.vec == 0 && ctx.head_dim <= 256) {
    st.dot.update().atomic().vectorize(st.rc.x, ctx.head_dim);
  } else {
    reduce_in_lanes(st.dot, st.rc.x, x.vec, per_row);
  }
  schedule_selected_few_rows(st.att, st.score, st.s, st.d, per_row, per_row, x.vec,
                             ctx.head_dim > 0);
}

void schedule_sparsek_mask_cpu(SparsekMaskStages& st, const ScheduleContext& ctx) {
  const int vec = ctx.target.natural_vector_size<float>();
  // qb rows per parallel task; tk vectors of partial sums per pass: one vector makes every pass
  // a chain of dependent adds (its latency, not the loads, is the bound), tk of them are
  // independent chains. The passes sum in double: a vector holds half as many lanes.
  const int rows_per_task = ctx.tunables.get("qb");
  const int vec_d = ctx.target.natural_vector_size<double>();
  const int partials = ctx.tunables.get("tk") * vec_d;
  const Var task("task"), row("row");
  st.tau.compute_root()
      .split(st.r, task, row, rows_per_task, TailStrategy::GuardWithIf)
      .parallel(task);
  const LoopLevel per_row(st.tau, row);
  // The row converted once (m doubles), not in each of the 33 passes that read it.
  st.zd.compute_at(per_row).vectorize(st.j, vec_d, TailStrategy::GuardWithIf);
  for (Func f : st.passes) {
    f.compute_at(per_row);
    if (f.has_update_definition()) reduce_in_lanes(f, st.rj.x, partials, per_row);
  }
  // The closed-form pass sums doubles and counts (a Tuple): in lanes as well.
  st.finish.compute_at(per_row);
  reduce_in_lanes(st.finish, st.rj.x, vec_d, per_row);
  st.mask.split(st.r, task, row, rows_per_task, TailStrategy::GuardWithIf)
      .parallel(task)
      .vectorize(st.j, vec, TailStrategy::GuardWithIf);
}

}  // namespace hattn
