// CUDA schedules for dense attention (PTX for sm_80; the FMA units, Halide emits no MMA).
//
// Prefill: one thread block per (query block, head, batch). The block keeps the running state of
// its qb query rows in shared memory and walks the key blocks serially; inside each key block
// every stage is a thread loop over the block's rows (threads.y) and keys or head-dim slices
// (threads.x), separated by barriers:
//   scores  (ii, jj)  each thread a strip of `tk` keys, q from shared memory, dot in registers;
//   max/sum (ii)      one thread per row over the block's keys (qb rows, short loops);
//   P V     (ii, d)   each thread a contiguous slice of `td` head-dim columns, accumulated in
//                     registers over the block's keys, folded into the state it owns.
// Shared memory per block: qb x (D + 2) (state) + qb x D (q) + 2 x qb x kb (scores, probs); the
// block maxima of the walk (qb per key block) in global memory.
//
// Decode: a thread block per (split, query row, head, batch) (split-K); the partial states
// are merged by a second kernel. The dot products split D into 4-wide vector lanes so K is read
// with 16-byte loads, and the block max and sum run as 32 parallel partials.
#include <stdexcept>

#include "schedules.h"

namespace hattn {

using namespace Halide;

namespace {

struct CudaTiles {
  int qb, kb, tk, td;
};

CudaTiles read_cuda_tiles(const ScheduleContext& ctx) {
  const Tunables& t = ctx.tunables;
  return CudaTiles{t.get("qb"), t.get("kb"), t.get("tk"), t.get("td")};
}

// Splits `d` so that thread `dt` owns the contiguous columns [dt * td, dt * td + td): P V then
// reads V rows as short vectors, and every stage touching d for a row uses the same slices.
void split_d(Stage s, const Var& d, const Var& dt, const Var& di, int td, bool fixed_d) {
  s.split(d, dt, di, td, fixed_d ? TailStrategy::RoundUp : TailStrategy::GuardWithIf);
}

// The per-row factors of each fold (DenseStages::run_max, rescale), once per block and row, with
// the blocks' maxima (split_block_max) kept for the walk over key blocks (`walk`, one thread
// block's) so that Halide's sliding window computes each block's max once. They are in global
// memory: a walk holds a max per row and block, which grows with the keys and would outgrow shared
// memory on long sequences. Rows on threads (`row_threads`) or, for decode's one row, on one
// thread.
void row_factors_cuda(DenseStages& st, const LoopLevel& walk, bool row_threads) {
  st.split_block_max.compute_at(st.state, st.rk).store_at(walk).store_in(MemoryType::Heap);
  for (Func f : {st.run_max, st.rescale}) {
    f.compute_at(st.state, st.rk);
  }
  if (row_threads) {
    for (Func f : {st.split_block_max, st.run_max, st.rescale}) {
      f.gpu_threads(st.ii);
    }
    st.run_max.update().gpu_threads(st.ii);
  }
}

void schedule_prefill_cuda(DenseStages& st, const ScheduleContext& ctx) {
  const CudaTiles x = read_cuda_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  Var dt("dt"), di("di"), jt("jt"), js("js");
  if (st.long_rows.defined()) {
    throw std::runtime_error(ctx.tunables.source() +
                             ": lqb (taller query blocks for long keys) is a CPU tunable; the " +
                             "CUDA schedule's blocks are compile-time, got " + ctx.tunables.str());
  }

  // The final states, one thread block per (query block, head, batch); out and lse read them.
  Func final_state = st.state.in();
  final_state.compute_root();
  split_d(final_state, st.d, dt, di, x.td, fixed_d);
  final_state.reorder(di, dt, st.ii, st.qblk, st.h, st.b)
      .gpu_blocks(st.qblk, st.h, st.b)
      .gpu_threads(dt, st.ii);

  // The running state lives in shared memory for the whole walk over key blocks.
  st.state.compute_at(final_state, st.qblk).bound(st.ii, 0, x.qb);
  split_d(st.state, st.d, dt, di, x.td, fixed_d);
  st.state.reorder(di, dt, st.ii).gpu_threads(dt, st.ii);
  split_d(st.state.update(), st.d, dt, di, x.td, fixed_d);
  st.state.update().reorder(di, dt, st.ii, st.rk).gpu_threads(dt, st.ii);

  st.q_scaled.compute_at(final_state, st.qblk);
  split_d(st.q_scaled, st.d, dt, di, x.td, fixed_d);
  st.q_scaled.reorder(di, dt, st.ii).gpu_threads(dt, st.ii);

  // Scores: a strip of tk keys per thread; its dot products accumulate in registers.
  st.scores.compute_at(st.state, st.rk)
      .split(st.jj, jt, js, x.tk)
      .reorder(js, jt, st.ii)
      .gpu_threads(jt, st.ii)
      .unroll(js);
  st.dot.compute_at(st.scores, jt).unroll(st.jj);
  st.dot.update().reorder(st.jj, st.rc).unroll(st.jj);

  st.block_max.compute_at(st.state, st.rk).gpu_threads(st.ii);
  st.block_max.update().gpu_threads(st.ii);
  row_factors_cuda(st, LoopLevel(final_state, st.qblk), true);
  st.probs.compute_at(st.state, st.rk)
      .split(st.jj, jt, js, x.tk)
      .reorder(js, jt, st.ii)
      .gpu_threads(jt, st.ii)
      .unroll(js);
  st.block_sum.compute_at(st.state, st.rk).gpu_threads(st.ii);
  st.block_sum.update().gpu_threads(st.ii);

  // P V per thread: its td columns of its row, in registers, consumed by its own state update.
  st.pv.compute_at(st.state, dt).bound_extent(st.d, x.td).unroll(st.d);
  st.pv.update().reorder(st.d, st.rj).unroll(st.d);

  // out and lse: plain elementwise kernels over the final states.
  Var dx("dx"), dy("dy"), ix("ix"), iy("iy");
  st.out.gpu_tile(st.d, st.i, dx, ix, 32, 8, TailStrategy::GuardWithIf);
  st.lse.gpu_tile(st.i, st.h, ix, iy, 64, 1, TailStrategy::GuardWithIf);
}

void schedule_decode_cuda(DenseStages& st, const ScheduleContext& ctx) {
  const CudaTiles x = read_cuda_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  Var dt("dt"), di("di"), jt("jt"), js("js"), blk("blk"), lane("lane"), part("part");
  RVar rco("rco"), rci("rci"), ro("ro"), ri("ri");
  Var dx("dx"), ix("ix"), iy("iy");

  // Partial states: a thread block per (split, query block, head, batch).
  st.state.compute_root();
  split_d(st.state, st.d, dt, di, x.td, fixed_d);
  st.state.reorder(di, dt, st.ii, st.s, st.qblk, st.h, st.b)
      .fuse(st.s, st.qblk, blk)
      .gpu_blocks(blk, st.h, st.b)
      .gpu_threads(dt);
  Stage update = st.state.update();
  split_d(update, st.d, dt, di, x.td, fixed_d);
  update.reorder(di, dt, st.ii, st.rk, st.s, st.qblk, st.h, st.b)
      .fuse(st.s, st.qblk, blk)
      .gpu_blocks(blk, st.h, st.b)
      .gpu_threads(dt);

  st.q_scaled.compute_at(st.state, blk);
  split_d(st.q_scaled, st.d, dt, di, x.td, fixed_d);
  st.q_scaled.reorder(di, dt, st.ii).gpu_threads(dt);

  // q . k: four lanes of D per key (16-byte loads of K), tk keys per thread.
  st.scores.compute_at(st.state, st.rk)
      .split(st.jj, jt, js, x.tk)
      .reorder(js, st.ii, jt)
      .gpu_threads(jt)
      .unroll(js);
  st.dot.compute_at(st.scores, jt);
  Func dot_lanes =
      st.dot.update().split(st.rc, rco, rci, 4, TailStrategy::GuardWithIf).rfactor(rci, lane);
  dot_lanes.compute_at(st.scores, jt).vectorize(lane).unroll(st.jj);
  dot_lanes.update().reorder(lane, st.jj, rco).vectorize(lane).unroll(st.jj);

  // Block max and sum: 32 parallel partials, then one short serial pass.
  for (Func f : {st.block_max, st.block_sum}) {
    f.compute_at(st.state, st.rk);
    Func partial = f.update().split(st.rj, ro, ri, 32, TailStrategy::GuardWithIf).rfactor(ri, part);
    partial.compute_at(st.state, st.rk).gpu_threads(part);
    partial.update().reorder(part, ro, st.ii).gpu_threads(part);
  }
  row_factors_cuda(st, LoopLevel(st.state, blk), false);
  st.probs.compute_at(st.state, st.rk)
      .split(st.jj, jt, js, x.tk)
      .reorder(js, st.ii, jt)
      .gpu_threads(jt)
      .unroll(js);

  st.pv.compute_at(st.state, dt).bound_extent(st.d, x.td).unroll(st.d);
  st.pv.update().reorder(st.d, st.rj).unroll(st.d);

  // Merge the splits: one thread per (row, column), the splits' weights per block of columns.
  st.split_max.compute_root().gpu_tile(st.ii, st.h, dx, ix, 32, 1, TailStrategy::GuardWithIf);
  st.split_max.update().gpu_tile(st.ii, st.h, dx, ix, 32, 1, TailStrategy::GuardWithIf);
  st.split_weight.compute_at(st.merged, dt);
  st.merged.compute_root().gpu_tile(st.d, st.ii, dt, di, 32, 1, TailStrategy::GuardWithIf);
  st.merged.update().gpu_tile(st.d, st.ii, dt, di, 32, 1, TailStrategy::GuardWithIf);
  st.out.gpu_tile(st.d, st.i, dx, ix, 32, 1, TailStrategy::GuardWithIf);
  st.lse.gpu_tile(st.i, st.h, ix, iy, 32, 1, TailStrategy::GuardWithIf);
}

}  // namespace

void schedule_dense_cuda(DenseStages& st, const ScheduleContext& ctx) {
  if (ctx.decode) {
    schedule_decode_cuda(st, ctx);
  } else {
    schedule_prefill_cuda(st, ctx);
  }
}

}  // namespace hattn
