// CPU schedules for dense attention: the x86 builds (AVX-512, AVX2+FMA, SSE4.1) and the ARM
// build (NEON) of the same algorithm. One schedule serves both families because what differs
// between them is only vector width and register count, and those enter as the tunables of each
// ISA's table (schedules/x86/*.table, schedules/arm/*.table): tile shapes, not loop structure.
//
// Prefill puts queries in the SIMD lanes: scores(ii, jj) and pv(ii, d) vectorize along ii, so
// max, sum and both products need no horizontal reductions and K/V are read untransposed (one
// broadcast per key element). Both products are register-blocked micro-kernels: an accumulator
// Func computed per tile of its pure wrapper, vectorized and fully unrolled.
//
// Decode has one (or a few) query rows: it streams K and V once, splits the key blocks across
// threads (split-K) and merges the partial states at the end. Its query block holds every row
// of a kv group (Lq x Hq/Hkv rows), so grouped-query heads share one pass over their K and V.
#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "schedules.h"

namespace hattn {

using namespace Halide;

namespace {

struct Tiles {
  int vec, qb, kb, tq, tk, td;
};

// Decode has no qb: its query block is the kv group's rows (DenseInputs::pack_groups).
Tiles read_tiles(const ScheduleContext& ctx) {
  const Tunables& t = ctx.tunables;
  Tiles x{ctx.target.natural_vector_size<float>(),
          ctx.decode ? 0 : t.get("qb"),
          t.get("kb"),
          t.get("tq"),
          t.get("tk"),
          t.get("td")};
  return x;
}

// The per-row factors of each fold (DenseStages::run_max, rescale), computed once per block and
// row. The blocks' maxima (split_block_max) are stored for the whole walk over key blocks (`walk`):
// run_max reads every block's so far, and Halide's sliding window then computes each block's max
// once, in its own iteration. Rows in `lanes` lanes (1: scalar).
void schedule_row_factors(DenseStages& st, const LoopLevel& walk, int lanes) {
  st.split_block_max.compute_at(st.state, st.rk).store_at(walk);
  st.run_max.compute_at(st.state, st.rk).bound_extent(st.r, 2);
  st.rescale.compute_at(st.state, st.rk).bound_extent(st.r, 1);
  // Allocated once per walk (run_max's size is a run-time value: a heap allocation per block
  // otherwise); a ragged batch's bounds there would read its lengths.
  if (!st.ragged) {
    for (Func f : {st.run_max, st.rescale}) {
      f.hoist_storage(walk);
    }
  }
  if (lanes > 1) {
    for (Func f : {st.split_block_max, st.run_max, st.rescale}) {
      f.vectorize(st.ii, lanes);
    }
    st.run_max.update().vectorize(st.ii, lanes);
  }
}

void schedule_prefill(DenseStages& st, const ScheduleContext& ctx) {
  const Tiles x = read_tiles(ctx);
  // A query block is whole micro-tiles of tq vectors: otherwise the tiles round the block up
  // past its rows and the kernel reads q before row 0 (Halide error -4 on every call; measured
  // with qb=8 on AVX-512). Refused here, at build time, with the line that asked for it.
  // The same for the long-key blocks (lqb, from lmb MiB of K and V per kv head;
  // DenseBlocking::long_query_block).
  const int lqb = ctx.tunables.get_or("lqb", 0);
  auto whole_tiles = [&](int rows) { return rows > 0 && x.tq > 0 && rows % (x.tq * x.vec) == 0; };
  if (!whole_tiles(x.qb) || (lqb != 0 && !whole_tiles(lqb))) {
    throw std::runtime_error(
        ctx.tunables.source() + ": dense prefill needs qb (and lqb, if given) multiples of tq x " +
        std::to_string(x.vec) + " (the vector width), got " + ctx.tunables.str());
  }
  const bool fixed_d = ctx.head_dim > 0;
  const TailStrategy d_tail = fixed_d ? TailStrategy::ShiftInwards : TailStrategy::GuardWithIf;
  // DenseInputs::pair_qk / pair_pv: the generator asks for both in prefill.
  const bool pairs = st.rcp.defined() && st.rjp.defined();
  if (st.rcp.defined() != st.rjp.defined()) {
    throw std::runtime_error("dense prefill: bf16 pair products for q.k and P.V go together");
  }
  Var qo("qo"), qi("qi"), task("task");

  // One task per (query block, head, batch); the running state lives in a small per-task buffer
  // (L1/L2). With lse, its final value is copied to a root buffer (3x the output, linear in L)
  // that `out` and `lse` read: two outputs cannot share an inner loop without compute_with, whose
  // bounds here recompute every block per task. Without lse, `out` is written inside the task.
  LoopLevel per_task;
  Func final_state = st.state;
  if (ctx.with_lse) {
    final_state = st.state.in();
    final_state.compute_root()
        .fuse(st.qblk, st.h, task)
        .fuse(task, st.b, task)
        .parallel(task)
        .vectorize(st.ii, x.vec);
    per_task = LoopLevel(final_state, task);
  } else {
    per_task = LoopLevel(st.out, task);
  }
  st.state.compute_at(per_task).bound(st.ii, 0, st.block_rows).vectorize(st.ii, x.vec);
  st.state.update().reorder(st.ii, st.d, st.rk).vectorize(st.ii, x.vec);
  schedule_row_factors(st, per_task, x.vec);
  if (pairs) {
    // Pairs staged member-innermost: one dense 2 x vec-lane vector per (row vector, pair).
    st.q_pairs.compute_at(per_task).vectorize(st.pr).vectorize(st.ii, x.vec);
  } else {
    st.q_scaled.compute_at(per_task).vectorize(st.ii, x.vec);
  }

  // The state keeps queries innermost, the output D: a copy of the block's final state with D
  // innermost transposes it, vec x vec tiles vectorized in both dimensions (dense loads and
  // shuffles), and `out` then reads each row's D as dense vectors. (Transposed in `out` itself,
  // the tile read its rows at i % qb for a vector of i, which Halide gathered lane by lane: ~3% of
  // a causal prefill at L = 2048, D = 128, Zen 4.)
  Var dt("dt"), di("di"), qt("qt"), qv("qv");
  st.out.split(st.i, qo, qi, st.block_rows, TailStrategy::GuardWithIf)
      .fuse(qo, st.h, task)
      .fuse(task, st.b, task)
      .parallel(task);
  if (fixed_d) {
    Func rows = final_state.in(st.out);
    rows.compute_at(st.out, task)
        .reorder_storage(st.d, st.ii)
        .split(st.d, dt, di, x.vec, TailStrategy::GuardWithIf)
        .split(st.ii, qt, qv, x.vec)
        .reorder(di, qv, dt, qt)
        .vectorize(di)
        .vectorize(qv);
    st.out.vectorize(st.d, x.vec);
  } else {
    st.out.vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  }

  // Scores: qb x kb tile per key block, queries in lanes.
  st.scores.compute_at(st.state, st.rk);
  if (pairs) {
    pair_register_block(st.scores, st.dot, st.rcp.x, st.rcp.y, st.ii, st.jj, x.vec, x.tq, x.tk,
                        TailStrategy::ShiftInwards);
  } else {
    register_block(st.scores, st.dot, st.rc, st.ii, st.jj, x.vec, x.tq, x.tk,
                   TailStrategy::ShiftInwards);
  }

  // Row max and row sum over the block: a single accumulator per row vector is a latency-bound
  // chain, so each is split into 4 interleaved partials merged at the end.
  for (Func f : {st.block_max, st.block_sum}) {
    f.compute_at(st.state, st.rk).vectorize(st.ii, x.vec);
    RVar ro("ro"), ri("ri");
    Var part("part");
    Func partial = f.update().split(st.rj, ro, ri, 4).rfactor(ri, part);
    partial.compute_at(st.state, st.rk).bound_extent(st.kblk, 1);
    partial.vectorize(st.ii, x.vec).unroll(part);
    partial.update().reorder(st.ii, part, ro).vectorize(st.ii, x.vec).unroll(part);
    f.update().reorder(st.ii, ri).vectorize(st.ii, x.vec).unroll(ri);
  }
  st.probs.compute_at(st.state, st.rk).vectorize(st.ii, x.vec);

  // P V: qb x D per key block, accumulated in registers over the block's keys.
  Func pv_tile = st.pv.in(st.state);
  pv_tile.compute_at(st.state, st.rk);
  std::vector<Func> per_block = {st.scores, st.probs, st.block_sum, pv_tile};
  if (pairs) {
    // The block's probabilities in bf16 pairs (rows in lanes) and its V in pairs of keys (D in
    // lanes): the operands of the pair micro-kernel, staged once per block.
    st.p_pairs.compute_at(st.state, st.rk).vectorize(st.pr).vectorize(st.ii, x.vec);
    // V's pair member unrolled, not in the lanes: each member is then one dense row load (keys
    // are clamped at Lk, which in the lanes would make every vector a 16-bit gather).
    st.v_pairs.compute_at(st.state, st.rk)
        .reorder(st.pr, st.d)
        .vectorize(st.d, x.vec, d_tail)
        .unroll(st.pr);
    pair_register_block(pv_tile, st.pv, st.rjp.x, st.rjp.y, st.ii, st.d, x.vec, x.tq, x.td, d_tail);
    per_block.push_back(st.p_pairs);
    per_block.push_back(st.v_pairs);
  } else {
    register_block(pv_tile, st.pv, st.rj, st.ii, st.d, x.vec, x.tq, x.td, d_tail);
  }

  // The per-block buffers are allocated once per task, not once per key block (they exceed the
  // stack limit, and heap traffic per block cost ~6% at L=512), each for one block: computed at
  // the block loop, they hold one block, but bounds that follow the sliding window over the
  // block maxima (schedule_row_factors) would size them for every block.
  for (Func f : per_block) f.hoist_storage(per_task);
  for (Func f : {st.scores, st.probs}) f.bound_extent(st.kblk, 1);
  if (pairs) st.p_pairs.bound_extent(st.kblk, 1);

  // Long-key calls (lqb) run their own copy of the task loops, in which the block's rows are the
  // constant lqb again (specialized last: a specialization takes the schedule given before it).
  if (st.long_rows.defined()) {
    st.out.specialize(st.long_rows);
    if (ctx.with_lse) {
      final_state.specialize(st.long_rows);
    }
  }
}

void schedule_decode(DenseStages& st, const ScheduleContext& ctx) {
  const Tiles x = read_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  // Updates may not shift tails inwards; with a compiled-in D the split is exact anyway.
  const TailStrategy d_tail = fixed_d ? TailStrategy::RoundUp : TailStrategy::GuardWithIf;
  Var task("task");
  if (st.rcp.defined() || st.rjp.defined()) {
    throw std::runtime_error("dense decode widens 16-bit K and V: it has no bf16 pair schedule");
  }

  // Vectors run along D or along the block's keys, so every per-row buffer stores those
  // innermost: with the rows of a kv group innermost (the algorithm's order) each vector is a
  // strided gather (measured 1.8x slower at Hq = Hkv = 32, Lk = 32K).
  for (Func f : {st.state, st.merged}) f.reorder_storage(st.d, st.ii);
  st.q_scaled.reorder_storage(st.d, st.ii);
  for (Func f : {st.dot, st.scores, st.probs}) f.reorder_storage(st.jj, st.ii);

  // The partial states of all splits, computed in parallel; the merge is cheap.
  st.state.compute_root().bound(st.ii, 0, st.block_rows).vectorize(st.d, x.vec, d_tail);
  st.state.update()
      .reorder(st.d, st.ii, st.rk)
      .vectorize(st.d, x.vec, d_tail)
      .fuse(st.s, st.qblk, task)
      .fuse(task, st.h, task)
      .fuse(task, st.b, task)
      .parallel(task);
  st.state.fuse(st.s, st.qblk, task).fuse(task, st.h, task).fuse(task, st.b, task).parallel(task);
  // A cache of at least a whole block gets the block loops of constant extent (the long caches
  // decode spends its time on); a shorter one loops over its own keys (st.block_keys).
  if (st.whole_blocks.defined()) st.state.update().specialize(st.whole_blocks);
  schedule_row_factors(st, LoopLevel(st.state, task), 1);

  // q . k. kt = 1 (16-bit K, widened): a tile of tk keys x tg rows of the kv group (row_tiles),
  // each (key, row) with one vector of partial sums in a register over D, the lanes added once
  // per key and row: tk x tg independent chains, each K vector loaded and widened once for the
  // tile's rows (one chain per key was latency-bound; tg = 4 against 1: avx512.table).
  // fp32: lanes along D, tq vectors of independent chains per key (the tile measured slower for
  // fp32: MHA Lk = 32K 42 ms against 37-38, GQA no faster; its stream, not the chain, bounds it).
  // bf16 K is widened here too, not multiplied in vdpbf16ps pairs with q (Zen 4, Hq = 32,
  // D = 128, Lk = 32K, 1-row tiles, medians of 3, two runs: MHA 15.9-16.0 ms widened against
  // 20.3-20.5 in pairs, GQA Hkv = 8 7.3-8.1 against 7.5-8.2).
  st.scores.compute_at(st.state, st.rk).vectorize(st.jj, x.vec);
  st.q_scaled.compute_at(st.state, task).vectorize(st.d, x.vec, d_tail);
  const bool key_tile = ctx.tunables.get_or("kt", 0) != 0;
  Func dot_keys = st.dot, dot_lanes;
  if (key_tile) {
    dot_keys = st.dot.in(st.scores);
    dot_keys.compute_at(st.state, st.rk);
    const int tg = ctx.tunables.get_or("tg", 1);
    group_dot_tiles(dot_keys, st.dot, st.rc[0], st.jj, st.ii, {}, x.vec, x.tk, tg,
                    st.block_rows >= tg, fixed_d);
  } else {
    const int lanes = fixed_d ? std::min(x.vec * x.tq, ctx.head_dim) : x.vec;
    dot_lanes = lane_partial_dot(st.dot, st.rc.x, st.ii, st.jj, st.jj, LoopLevel(st.state, st.rk),
                                 lanes, x.tk, TailStrategy::Auto, fixed_d);
  }

  // Block max and sum: vector partials, one horizontal step per block.
  st.block_max.compute_at(st.state, st.rk);
  st.block_max.update().atomic().vectorize(st.rj, x.vec);
  st.probs.compute_at(st.state, st.rk).vectorize(st.jj, x.vec);
  st.block_sum.compute_at(st.state, st.rk);
  st.block_sum.update().atomic().vectorize(st.rj, x.vec);

  // P V: D in lanes. With D compiled in, a tile of tr rows x td vectors of D keeps its
  // accumulators in registers over the block's keys, each V vector loaded (and widened) once per
  // tile, so a kv group's rows share it; a block of fewer rows runs one row at a time
  // (row_tiles). tr = 1 (the default) is one row at a time. (Rows inside the tile with the
  // accumulators of a run-time number of rows in memory measured 1.7x slower at Lk = 32K.) A
  // generic D accumulates in L1 with guarded vectors.
  if (fixed_d) {
    const int width = x.vec * std::max(1, std::min(x.td, ctx.head_dim / x.vec));
    Func pv_tile = st.pv.in(st.state);
    pv_tile.compute_at(st.state, st.rk).reorder_storage(st.d, st.ii);
    Var dco("dco"), dci("dci"), io("io"), iin("iin");
    const int tr = ctx.tunables.get_or("tr", 1);
    row_tiles(pv_tile, st.block_rows >= tr, tr, [&](Stage s, int rows) {
      s.split(st.ii, io, iin, rows, TailStrategy::RoundUp)
          .split(st.d, dco, dci, width)
          .reorder(dci, iin, dco, io)
          .vectorize(dci, x.vec)
          .unroll(dci)
          .unroll(iin);
    });
    st.pv.compute_at(pv_tile, dco)
        .reorder_storage(st.d, st.ii)
        .vectorize(st.d, x.vec)
        .unroll(st.d)
        .unroll(st.ii);
    st.pv.update().reorder(st.d, st.ii, st.rj).vectorize(st.d, x.vec).unroll(st.d).unroll(st.ii);
  } else {
    st.pv.compute_at(st.state, st.rk)
        .reorder_storage(st.d, st.ii)
        .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
    st.pv.update().reorder(st.d, st.ii, st.rj).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  }

  // The per-block buffers allocated once per task; those holding a block's scores for one block
  // (bounds that follow the sliding window in schedule_row_factors would size them for every
  // block of the split). (block_sum, a value per row, is left as it was: bounded too, causal decode
  // required every block of the split from it.)
  std::vector<Func> score_blocks = {dot_keys, st.scores, st.probs};
  if (!key_tile) {
    score_blocks.push_back(dot_lanes);
  }
  for (Func f : score_blocks) {
    f.bound_extent(st.kblk, 1);
  }
  if (!st.ragged) {
    score_blocks.push_back(st.block_sum);
    for (Func f : score_blocks) {
      f.hoist_storage(st.state, task);
    }
  }

  st.split_max.compute_root();
  st.split_weight.compute_root();
  st.merged.compute_root().vectorize(st.d, x.vec, d_tail);
  st.merged.update().reorder(st.d, st.ii, st.rs).vectorize(st.d, x.vec, d_tail);
  st.out.vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  st.lse.compute_root();
}

}  // namespace

void schedule_dense_cpu(DenseStages& st, const ScheduleContext& ctx) {
  if (ctx.decode) {
    schedule_decode(st, ctx);
  } else {
    schedule_prefill(st, ctx);
  }
}

}  // namespace hattn
