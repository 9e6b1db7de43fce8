#include "selection_cpu.h"

namespace hattn {

using namespace Halide;

SparseTiles read_sparse_tiles(const ScheduleContext& ctx) {
  const Tunables& t = ctx.tunables;
  return {ctx.target.natural_vector_size<float>(), t.get("qb"), t.get("kb"), t.get("tq"),
          t.get("tk")};
}

LoopLevel parallel_row_chunks(Func out, const Var& d, const Var& i, const Var& h, const Var& b,
                              const SparseTiles& x, LoopLevel* row) {
  Var qc("qc"), ii("ii"), task("task");
  out.split(i, qc, ii, x.qb, TailStrategy::GuardWithIf)
      .fuse(qc, h, task)
      .fuse(task, b, task)
      .parallel(task)
      .vectorize(d, x.vec, TailStrategy::GuardWithIf);
  *row = LoopLevel(out, ii);
  return LoopLevel(out, task);
}

// Constant extents (see the header) keep per-row buffers on the stack and in registers, and no
// vector loop needs a tail: measured 3x on the 32 counting passes, whose counts otherwise go
// through heap memory on every key. bound_extent (align_bounds left the loop's extent to the
// run time) lets the passes unroll their vectors of rows, so the counts stay in registers over
// the keys instead of a chain through the stack per key: the top-k FFN (T = 512, D = 768,
// d_ff = 3072, k = 384, Zen 4, 2 threads) 20.2 -> 17.5 ms.
void compute_rows_in_lanes(Func f, const Var& row, const LoopLevel& at, int vec, int chunk_rows) {
  f.compute_at(at)
      .bound_extent(row, chunk_rows)
      .bound_storage(row, chunk_rows)
      .vectorize(row, vec, TailStrategy::RoundUp);
}

namespace {

// The 32 counting passes and their thresholds, rows in the lanes.
void schedule_passes_rows_in_lanes(TopkSelection& sel, const Var& row, const LoopLevel& at, int vec,
                                   int chunk_rows) {
  for (Func f : sel.passes) {
    compute_rows_in_lanes(f, row, at, vec, chunk_rows);
    if (f.has_update_definition()) {
      f.update().reorder(row, sel.rj.x).vectorize(row, vec, TailStrategy::RoundUp).unroll(row);
    }
  }
}

}  // namespace

void schedule_selection_scatter_rows_in_lanes(TopkSelection& sel, const Var& row,
                                              const LoopLevel& at, int vec, int chunk_rows) {
  schedule_passes_rows_in_lanes(sel, row, at, vec, chunk_rows);
  const Var j = sel.prefix.args()[0];
  compute_rows_in_lanes(sel.prefix, row, at, vec, chunk_rows);
  sel.prefix.reorder_storage(row, j);
  sel.prefix.update().reorder(row, sel.rj.x).vectorize(row, vec, TailStrategy::RoundUp);
}

void schedule_selection_rows_in_lanes(TopkSelection& sel, const Var& row, const LoopLevel& at,
                                      int vec, int chunk_rows) {
  schedule_passes_rows_in_lanes(sel, row, at, vec, chunk_rows);
  // The per-block counts, their scan, the block search and the walk: rows in the lanes too.
  const RVar& rb = sel.rb.x;
  for (Func f : {sel.block_above, sel.block_equal}) {
    Var c = f.args()[0];
    compute_rows_in_lanes(f, row, at, vec, chunk_rows);
    f.reorder_storage(row, c);
    f.update().reorder(row, rb, c).vectorize(row, vec, TailStrategy::RoundUp);
  }
  Var c = sel.scan.args()[0];
  compute_rows_in_lanes(sel.scan, row, at, vec, chunk_rows);
  sel.scan.reorder_storage(row, c);
  sel.scan.update().reorder(row, sel.rscan.x).vectorize(row, vec, TailStrategy::RoundUp);
  Var s = sel.search.args()[0];
  for (Func f : {sel.search, sel.walk}) {
    compute_rows_in_lanes(f, row, at, vec, chunk_rows);
    f.reorder_storage(row, s);
  }
  sel.search.update().reorder(row, sel.steps.x, s).vectorize(row, vec, TailStrategy::RoundUp);
  sel.walk.update().reorder(row, rb, s).vectorize(row, vec, TailStrategy::RoundUp);
}

Func reduce_in_lanes(Func acc, const RVar& r, int lanes, const LoopLevel& at) {
  RVar ro("ro"), ri("ri");
  Var lane("lane");
  Func partial = acc.update().split(r, ro, ri, lanes, TailStrategy::GuardWithIf).rfactor(ri, lane);
  std::vector<Var> storage = {lane};
  for (const Var& v : partial.args()) {
    if (v.name() != lane.name()) storage.push_back(v);
  }
  partial.compute_at(at).reorder_storage(storage).vectorize(lane);
  partial.update().reorder(lane, ro).vectorize(lane);
  acc.update().atomic().vectorize(ri, lanes, TailStrategy::GuardWithIf);
  return partial;
}

void schedule_selection_few_rows(TopkSelection& sel, const LoopLevel& at, int vec) {
  // Counting passes: vec partial counts per row (one per lane), summed once at the end, so the
  // inner loop is a compare and an add per vector, with no horizontal sum per vector.
  auto vector_count = [&](Func f) {
    f.compute_at(at);
    reduce_in_lanes(f, sel.rj.x, vec, at);
  };
  for (Func f : sel.passes) {
    if (f.has_update_definition()) {
      vector_count(f);
    } else {
      f.compute_at(at);
    }
  }
  // Per block: one vector of its keys compared, the lanes added.
  for (Func f : {sel.block_above, sel.block_equal}) {
    f.compute_at(at);
    f.update().atomic().vectorize(sel.rb.x);
  }
  sel.scan.compute_at(at);
  // Slots in the lanes: each lane searches, then walks, its own block.
  Var s = sel.search.args()[0];
  for (Func f : {sel.search, sel.walk}) {
    f.compute_at(at).vectorize(s, vec, TailStrategy::GuardWithIf);
  }
  sel.search.update().reorder(s, sel.steps.x).vectorize(s, vec, TailStrategy::GuardWithIf);
  sel.walk.update().reorder(s, sel.rb.x).vectorize(s, vec, TailStrategy::GuardWithIf);
}

void schedule_selected_rows_in_lanes(SelectedAttention& att, Func score, const Var& s, const Var& i,
                                     const Var& d, const LoopLevel& chunk, const LoopLevel& per_row,
                                     int vec, int chunk_rows, bool fixed_d) {
  for (Func f : {score, att.weights}) {
    compute_rows_in_lanes(f, i, chunk, vec, chunk_rows);
    f.reorder_storage(i, s).reorder(i, s);
  }
  for (Func f : {att.row_max, att.row_sum}) {
    compute_rows_in_lanes(f, i, chunk, vec, chunk_rows);
    f.update().reorder(i, att.rs).vectorize(i, vec, TailStrategy::RoundUp);
  }
  // P V over the selected rows of V, per query row, D in the lanes.
  att.pv.compute_at(per_row).vectorize(d, vec, TailStrategy::GuardWithIf);
  att.pv.update().reorder(d, att.rs).vectorize(d, vec, TailStrategy::GuardWithIf);
  if (fixed_d) {
    att.pv.unroll(d);
    att.pv.update().unroll(d);
  }
}

void schedule_selected_few_rows(SelectedAttention& att, Func score, const Var& s, const Var& d,
                                const LoopLevel& task, const LoopLevel& per_row, int vec,
                                bool fixed_d) {
  for (Func f : {score, att.weights}) {
    f.compute_at(task).vectorize(s, vec, TailStrategy::GuardWithIf);
  }
  for (Func f : {att.row_max, att.row_sum}) f.compute_at(task);
  att.pv.compute_at(per_row).vectorize(d, vec, TailStrategy::GuardWithIf);
  att.pv.update().reorder(d, att.rs).vectorize(d, vec, TailStrategy::GuardWithIf);
  if (fixed_d) {
    att.pv.unroll(d);
    att.pv.update().unroll(d);
  }
}

}  // namespace hattn
