// CPU schedules (x86 and ARM) for topk attention and the top-k feed-forward layer.
//
// Prefill and the FFN work on chunks of C = qb rows (queries or tokens) per parallel task. A
// chunk's scores (as ordered keys) are one C x n buffer, computed by the same register-blocked
// micro-kernel as dense attention with the rows in the SIMD lanes; the 32 counting passes of the
// radix select, the prefix scan and the scatter then stream that buffer with the rows still in
// the lanes (C x n x 4 bytes: sized to stay in L2). Softmax and the V product touch only the k
// selected keys per row, vectorized along D.
//
// Decode (a few query rows, Lk large) has one task per (kv head, batch), covering the query heads
// of its group: the q . k products put D in the lanes (as dense decode does) and read each block
// of keys once for the whole group; the counting passes vectorize along the keys.
#include "cpu_common.h"
#include "schedules.h"
#include "selection_cpu.h"

namespace hattn {

using namespace Halide;

namespace {

// The stages of pair products (TopkInputs::pair_dot, TopkFfnInputs::pair_dot): the rows staged
// in pairs, the (member, pair) reduction, an odd D's last column. rcp undefined: no pairs.
struct PairStages {
  Func pairs;
  Var pr;
  RDom rcp, rodd;
};

// A chunk's scores `key` (rows in the lanes, then keys `cols`) from `dot`, its reduction over
// `rc`: the shared register-blocked micro-kernel, or with pair products its pair form over the
// rows staged in pairs at `chunk` (one vdpbf16ps per row vector and pair), plus the last column.
void chunk_scores(const Func& key, Func dot, const PairStages& p, const RDom& rc, const Var& rows,
                  const Var& cols, const LoopLevel& chunk, const SparseTiles& x) {
  if (!p.rcp.defined()) {
    register_block(key, dot, rc, rows, cols, x.vec, x.tq, x.tk, TailStrategy::RoundUp);
    return;
  }
  Func(p.pairs).compute_at(chunk).vectorize(p.pr).vectorize(rows, x.vec);
  pair_register_block(key, dot, p.rcp.x, p.rcp.y, rows, cols, x.vec, x.tq, x.tk,
                      TailStrategy::RoundUp);
  dot.update(1).reorder(rows, cols, p.rodd).vectorize(rows, x.vec).unroll(cols);
}

void schedule_topk_prefill(TopkStages& st, const ScheduleContext& ctx) {
  const SparseTiles x = read_sparse_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  LoopLevel per_row;
  const LoopLevel chunk = parallel_row_chunks(st.att.out, st.d, st.i, st.h, st.b, x, &per_row);

  // Keys of the chunk: rows innermost in storage so every later pass reads whole vectors.
  st.key.compute_at(chunk).reorder_storage(st.i, st.j);
  if (!st.rcp.defined()) {
    st.q_scaled.compute_at(chunk).vectorize(st.i, x.vec, TailStrategy::GuardWithIf);
  }
  chunk_scores(st.key, st.dot, {st.q_pairs, st.pr, st.rcp, st.rodd}, st.rc, st.i, st.j, chunk, x);

  schedule_selection_rows_in_lanes(st.sel, st.i, chunk, x.vec, x.qb);
  schedule_selected_rows_in_lanes(st.att, st.gathered, st.s, st.i, st.d, chunk, per_row, x.vec,
                                  x.qb, fixed_d);
}

void schedule_topk_decode(TopkStages& st, const ScheduleContext& ctx) {
  const SparseTiles x = read_sparse_tiles(ctx);
  const bool fixed_d = ctx.head_dim > 0;
  Var task("task"), jo("jo"), ji("ji"), hk("hk"), g("g");
  // One task per (kv head, batch): the group's query heads (g) share each block of keys, so a
  // kv head's K is read once for all of them (grouped-query attention; MHA is the group of one).
  st.att.out.split(st.h, hk, g, st.group, TailStrategy::GuardWithIf)
      .fuse(hk, st.b, task)
      .parallel(task)
      .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  const LoopLevel per_group(st.att.out, task);

  // D innermost: the q . k below reads q along D as whole vectors. Stored rows first, with a
  // run-time row count, each q vector was 16 scalar inserts (the hottest instructions of the
  // grouped decode under perf).
  st.q_scaled.compute_at(per_group)
      .reorder_storage(st.d, st.i)
      .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  // q . k with D in the lanes: tq vectors of partial sums per key, one horizontal sum per key;
  // each block of kb keys is scored for every row of every head of the group before the next.
  // The keys (scores as ordered integers) in vectors: scalar, their loop was 8% of the bf16
  // grouped decode (perf).
  st.key.compute_at(per_group)
      .split(st.j, jo, ji, x.kb, TailStrategy::GuardWithIf)
      .reorder(ji, st.i, st.h, jo)
      .vectorize(ji, x.vec, TailStrategy::GuardWithIf);
  if (ctx.tunables.get_or("kt", 0) != 0) {
    // A register tile of tk keys x tg query heads of the group (dense decode's tile): tk x tg
    // independent chains of vector partial sums, each K vector loaded once for the tile's heads
    // and each q vector once for its keys. A group of heads not a multiple of tg (MHA) runs 1-head
    // tiles. With D's loop unrolled, faster than kt = 0 in fp32 too (avx512.table).
    Func dot_keys = st.dot.in(st.key);
    dot_keys.compute_at(st.key, jo);
    const int tg = ctx.tunables.get_or("tg", 1);
    group_dot_tiles(dot_keys, st.dot, st.rc.x, st.j, st.h, {st.i}, x.vec, x.tk, tg,
                    st.group % tg == 0, fixed_d);
  } else {
    const int lanes = fixed_d ? std::min(x.vec * x.tq, ctx.head_dim) : x.vec;
    lane_partial_dot(st.dot, st.rc.x, st.j, st.i, st.j, LoopLevel(st.key, jo), lanes, x.tk,
                     TailStrategy::GuardWithIf, fixed_d);
  }

  // The keys' scores are computed once per group for all its rows; the selection runs per row,
  // so its buffers have constant sizes (stack and registers, not heap).
  const LoopLevel per_row(st.att.out, st.i);
  schedule_selection_few_rows(st.sel, per_row, x.vec);
  schedule_selected_few_rows(st.att, st.gathered, st.s, st.d, per_row, per_row, x.vec, fixed_d);
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
  const SparseTiles x = read_sparse_tiles(ctx);
  // Two parallel loops over chunks of tokens. The first computes each chunk's h = x W1^T and
  // its selection, and stores every token's picked units and values (T x k, `picked`); the
  // second sums each token's picked rows of W2^T. In one loop, every chunk streamed all of W1
  // and then gathered from W2, and the two matrices evicted each other from the L3 at every
  // chunk. Zen 4, 2 threads, T = 512, k = d_ff / 8, alternating runs, medians of 3 (fp32):
  // T5-base (D = 768, d_ff = 3072) 31.1 -> 29.3 ms, D = 1024, d_ff = 16384 389 -> 288 ms.
  Var pc("pc"), pt("pt");
  st.picked.compute_root()
      .split(st.t, pc, pt, x.qb, TailStrategy::GuardWithIf)
      .reorder(st.s, pt, pc)
      .parallel(pc);
  // The scatter (TopkSelection::slot): units outer, the chunk's tokens in the lanes, each lane
  // storing its own slot. It replaced a binary search and a walk per slot (k of them per token,
  // two gathers per step with tokens in the lanes): 21.6 -> 20.2 ms at T5-base (alternating runs,
  // medians of 3).
  st.picked.update()
      .split(st.t, pc, pt, x.qb, TailStrategy::GuardWithIf)
      .reorder(pt, st.rf, pc)
      .parallel(pc)
      .vectorize(pt, x.vec, TailStrategy::GuardWithIf);
  const LoopLevel select_chunk(st.picked, pc);
  st.x_t.compute_at(select_chunk).vectorize(st.t, x.vec, TailStrategy::GuardWithIf);
  st.key.compute_at(select_chunk).reorder_storage(st.t, st.f);
  chunk_scores(st.key, st.dot, {st.x_pairs, st.pr, st.rcp, st.rodd}, st.rc, st.t, st.f,
               select_chunk, x);
  schedule_selection_scatter_rows_in_lanes(st.sel, st.t, select_chunk, x.vec, x.qb);

  // The W2 sum, in tasks of gt tokens. With gd > 0 a task walks D in chunks of gd values: it
  // copies the chunk's slice of W2^T (d_ff x gd values, contiguous: W2's own rows, d_ff apart,
  // would fall into a quarter of the L2's sets at D = 768) and then sums every token's picked
  // rows of the slice with the gd values in registers. Each row of W2 is read from memory once
  // per task and then from the slice for every token that picked it; before, each token read its
  // k whole rows from memory (or the L3). Zen 4, 2 threads, T = 512, k = d_ff / 8, fp32,
  // alternating runs (ms): D = 768, d_ff = 3072 25.3 -> 21.1 (gt = 256, gd = 64; gd = 32 21.8,
  // 128 22.0, 256 22.0); D = 1024, d_ff = 16384 281 -> 171. Without the copy the same chunks ran
  // 260 ms at d_ff = 16384; with gd's sums in memory instead of registers, slower than before
  // (29-30 ms at D = 768: each token's sums were a chain through the store buffer). 16-bit
  // weights are copied as stored and widened in the sum: bf16, d_ff = 16384, 168 -> 159 ms
  // against slices widened to fp32 (medians of 3 alternating runs).
  const int gt = ctx.tunables.get_or("gt", x.qb);
  const int gd = ctx.tunables.get_or("gd", 0);
  if (gt < 1 || gd < 0 || gd % x.vec != 0) {
    throw std::runtime_error(
        ctx.tunables.source() + ": topk_ffn needs gt >= 1 tokens per task and gd a multiple of " +
        std::to_string(x.vec) + " (the vector width, or 0), got " + ctx.tunables.str());
  }
  Var tc("tc"), ti("ti"), dc("dc"), di("di");
  if (gd > 0) {
    st.y.split(st.t, tc, ti, gt, TailStrategy::GuardWithIf)
        .split(st.d, dc, di, gd, TailStrategy::GuardWithIf)
        .reorder(di, ti, dc, tc)
        .parallel(tc)
        .vectorize(di, x.vec, TailStrategy::GuardWithIf);
    st.w2.compute_at(st.y, dc).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
    // A whole chunk even at D's end (w2 clamps d), so the sums have a constant size.
    st.acc.compute_at(st.y, ti)
        .bound_extent(st.d, gd)
        .store_in(MemoryType::Register)
        .vectorize(st.d, x.vec)
        .unroll(st.d);
    st.acc.update().reorder(st.d, st.rs).vectorize(st.d, x.vec).unroll(st.d);
  } else {  // each token's k whole rows of W2^T, D vectorized
    st.y.split(st.t, tc, ti, gt, TailStrategy::GuardWithIf)
        .parallel(tc)
        .vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
    st.acc.compute_at(st.y, tc).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
    st.acc.update().reorder(st.d, st.rs, st.t).vectorize(st.d, x.vec, TailStrategy::GuardWithIf);
  }
}

}  // namespace hattn
