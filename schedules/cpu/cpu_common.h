// Schedule building blocks shared by the CPU schedules of every variant (x86 and ARM).
#pragma once

#include <algorithm>
#include <functional>
#include <vector>

#include "Halide.h"

namespace hattn {

// The tiling both register micro-kernels below share: `wrapper` (the pure consumer of
// reduction `acc`) in tiles of (tile_vecs*vec) rows x tile_cols columns, `acc` computed per tile
// with rows innermost in its storage too, so each of its vectors is one register.
inline void tile_accumulator(Halide::Func wrapper, Halide::Func acc, const Halide::Var& rows,
                             const Halide::Var& cols, int vec, int tile_vecs, int tile_cols,
                             Halide::TailStrategy col_tail) {
  Halide::Var ro("ro"), ri("ri"), co("co"), ci("ci");
  wrapper.split(rows, ro, ri, vec * tile_vecs)
      .split(cols, co, ci, tile_cols, col_tail)
      .reorder(ri, ci, ro, co)
      .vectorize(ri, vec)
      .unroll(ri)
      .unroll(ci);
  acc.compute_at(wrapper, ro)
      .reorder_storage(rows, cols)
      .vectorize(rows, vec)
      .unroll(rows)
      .unroll(cols);
}

// Micro-kernel: `acc` (a reduction over `r`) computed per (tile_rows*vec) x tile_cols tile of
// its pure consumer `wrapper`, with every accumulator in a register. `rows` is vectorized (the
// lanes), `cols` unrolled.
inline void register_block(Halide::Func wrapper, Halide::Func acc, const Halide::RVar& r,
                           const Halide::Var& rows, const Halide::Var& cols, int vec, int tile_vecs,
                           int tile_cols, Halide::TailStrategy col_tail) {
  tile_accumulator(wrapper, acc, rows, cols, vec, tile_vecs, tile_cols, col_tail);
  acc.update().reorder(rows, cols, r).vectorize(rows, vec).unroll(rows).unroll(cols);
}

// The same micro-kernel for a reduction over pairs (DenseInputs::pair_qk, pair_pv): `acc(rows,
// cols) += f32(x(member, rows, pair)) * f32(y(member, cols, pair))` with 16-bit x and y. The pair's
// member is the innermost vectorized loop, inside the rows' lanes, so each step of `pair` is one
// 2-to-1 widening dot product per vector of rows (AVX512-BF16's vdpbf16ps; measured 2.0x the
// fp32 FMA tile's rate on Zen 4) with the y pair broadcast as one 32-bit value. With the member
// outside the lanes Halide falls back to widening each half and two FMAs.
inline void pair_register_block(Halide::Func wrapper, Halide::Func acc, const Halide::RVar& member,
                                const Halide::RVar& pair, const Halide::Var& rows,
                                const Halide::Var& cols, int vec, int tile_vecs, int tile_cols,
                                Halide::TailStrategy col_tail) {
  tile_accumulator(wrapper, acc, rows, cols, vec, tile_vecs, tile_cols, col_tail);
  Halide::Var rt("rt"), rv("rv");
  acc.update()
      .split(rows, rt, rv, vec)
      .reorder(member, rv, rt, cols, pair)
      .atomic()
      .vectorize(member)
      .vectorize(rv)
      .unroll(rt)
      .unroll(cols);
}

// The accumulators of a dot-product tile computed at `wrapper`'s loop `at`: ta x tb vectors of
// partial sums along r (its vec lanes, rfactored) in registers, the lanes added once per tile.
// tb = 0: the wrapper's own tiles (RoundUp) give b its constant extent, which may differ between
// its specializations. unroll_r (r's extent compiled in) unrolls the loop over r's vectors too:
// decode's 16-bit q.k tiles gained ~10% (Zen 4, D = 128, Lk = 32K, medians of 5-7 alternating
// runs: bf16 GQA dense 8.31 -> 7.39 ms, topk 8.45 -> 7.37 with 1-key tiles).
inline void dot_accumulators(const Halide::Func& wrapper, const Halide::Var& at, Halide::Func acc,
                             const Halide::RVar& r, const Halide::Var& a, const Halide::Var& b,
                             int vec, int ta, int tb, bool unroll_r) {
  Halide::Var lane("lane");
  Halide::RVar ro("ro"), ri("ri");
  Halide::Func part =
      acc.update().split(r, ro, ri, vec, Halide::TailStrategy::GuardWithIf).rfactor(ri, lane);
  part.compute_at(wrapper, at).bound_extent(a, ta);
  acc.compute_at(wrapper, at).bound_extent(a, ta);
  if (tb > 0) {
    part.bound_extent(b, tb);
    acc.bound_extent(b, tb);
  }
  part.reorder_storage(lane, a, b).vectorize(lane).unroll(a).unroll(b);
  part.update().reorder(lane, a, b, ro).vectorize(lane).unroll(a).unroll(b);
  if (unroll_r) {
    part.update().unroll(ro);
  }
  acc.unroll(a).unroll(b);
  acc.update().reorder(ri, a, b).atomic().vectorize(ri).unroll(a).unroll(b);
}

// Decode's q . k with D in the lanes: `dot` (a sum over r, per key and row) computed at `at` as
// `lanes`-wide vectors of partial sums (rfactored), each (key, row) one chain over D, the lanes
// added once per (key, row). Loops: `inner` inside `outer`, tk of `keys` (one of the two)
// unrolled. With D compiled in (`fixed_d`) the loop over D's vectors is unrolled as well: as a
// loop of one FMA with its compare and branch, topk decode streamed K at ~24 GB/s against ~30
// unrolled (Zen 4, fp32, Hq = Hkv = 32, D = 128, Lk = 32K: 22.3 -> 17.7 ms, medians of 5
// alternating runs); dense decode, which also streams V, gained 0-4%. Returns the partial sums.
inline Halide::Func lane_partial_dot(Halide::Func dot, const Halide::RVar& r,
                                     const Halide::Var& inner, const Halide::Var& outer,
                                     const Halide::Var& keys, const Halide::LoopLevel& at,
                                     int lanes, int tk, Halide::TailStrategy key_tail,
                                     bool fixed_d) {
  Halide::RVar ro("ro"), ri("ri");
  Halide::Var lane("lane");
  dot.compute_at(at);
  Halide::Func part =
      dot.update().split(r, ro, ri, lanes, Halide::TailStrategy::GuardWithIf).rfactor(ri, lane);
  part.compute_at(at).reorder_storage(lane, inner, outer).vectorize(lane);
  part.update().reorder(lane, ro, inner, outer).vectorize(lane).unroll(keys, tk, key_tail);
  if (fixed_d) {
    part.update().unroll(ro);
  }
  dot.update().atomic().vectorize(ri);
  return part;
}

// Dot-product micro-kernel, for `acc(a, b) = sum_r x(r, a) * y(r, b)` where r is contiguous in
// both operands (so neither can be broadcast along a or b without a transpose). The reduction is
// split into `vec` lanes and rfactored: every (a, b) of a ta x tb tile of `wrapper` keeps one
// vector of partial sums in a register over the whole reduction, and the lanes are added once per
// tile. The tile's extents are fixed (bound_extent), so the algorithm must clamp its indices at
// the edges; `wrapper`'s own tails follow a_tail and b_tail.
// With a_chunk > 0, the tiles along a are grouped a_chunk at a time into an outermost loop
// `chunk` (returned) that the caller may parallelise: each chunk's operand rows along a stay in
// L2 while every b passes through them.
inline Halide::Var dot_block(Halide::Func wrapper, Halide::Func acc, const Halide::RVar& r,
                             const Halide::Var& a, const Halide::Var& b, int vec, int ta, int tb,
                             Halide::TailStrategy a_tail, Halide::TailStrategy b_tail, int a_chunk,
                             bool unroll_r) {
  Halide::Var ao("ao"), ai("ai"), bo("bo"), bi("bi"), chunk("chunk");
  wrapper.split(a, ao, ai, ta, a_tail).split(b, bo, bi, tb, b_tail).reorder(ai, bi, ao, bo);
  if (a_chunk > 0) {
    wrapper.split(ao, chunk, ao, a_chunk, Halide::TailStrategy::GuardWithIf)
        .reorder(ai, bi, ao, bo, chunk);
  }
  wrapper.unroll(ai).unroll(bi);
  dot_accumulators(wrapper, ao, acc, r, a, b, vec, ta, tb, unroll_r);
  return chunk;
}

// Decode computes a kv group's rows together in register tiles of `rows` rows: `loops(stage, rows)`
// splits a stage's rows into such tiles (RoundUp: each tile's extent is constant) where
// `tiles_fit` holds, and into tiles of one row otherwise. Dense decode's packed rows are clamped by
// the algorithm, so there tiles fit any group of at least `rows` rows and the rows past its last
// are computed and dropped; a smaller group (MHA: one row per kv head) gets 1-row tiles, so no tile
// computes rows it drops (MHA with 2-row P.V tiles computed each product twice).
inline void row_tiles(Halide::Func f, const Halide::Expr& tiles_fit, int rows,
                      const std::function<void(Halide::Stage, int)>& loops) {
  rows = std::max(1, rows);
  if (rows > 1) loops(f.specialize(tiles_fit), rows);
  loops(f, 1);
}

// q . k of tk keys (jj) x `rows` rows (ii) of the kv group in registers (row_tiles), each (key,
// row) one vector of partial sums over D (dot_accumulators), the lanes added once per tile.
// `outer`: the wrapper's other dims looped outside the tile (topk's query rows, whose tile rows
// are the group's heads), so a tile holds only its own rows.
inline void group_dot_tiles(const Halide::Func& wrapper, const Halide::Func& dot,
                            const Halide::RVar& rc, const Halide::Var& jj, const Halide::Var& ii,
                            const std::vector<Halide::Var>& outer, int vec, int tk, int rows,
                            const Halide::Expr& tiles_fit, bool fixed_d) {
  Halide::Var ko("ko"), ki("ki"), io("io"), iin("iin");
  row_tiles(wrapper, tiles_fit, rows, [&](Halide::Stage s, int r) {
    std::vector<Halide::VarOrRVar> order = {ki, iin, ko, io};
    order.insert(order.end(), outer.begin(), outer.end());
    s.split(jj, ko, ki, tk, Halide::TailStrategy::RoundUp)
        .split(ii, io, iin, r, Halide::TailStrategy::RoundUp)
        .reorder(order)
        .unroll(ki)
        .unroll(iin);
  });
  dot_accumulators(wrapper, ko, dot, rc, jj, ii, vec, tk, 0, fixed_d);
}

}  // namespace hattn
