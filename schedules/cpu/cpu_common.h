// Schedule building blocks shared by the CPU schedules of every variant (x86 and ARM).
#pragma once

#include "Halide.h"

namespace hattn {

// Micro-kernel: `acc` (a reduction over `r`) computed per (tile_rows*vec) x tile_cols tile of
// its pure consumer `wrapper`, with every accumulator in a register. `rows` is vectorized (the
// lanes), `cols` unrolled.
inline void register_block(Halide::Func wrapper, Halide::Func acc, const Halide::RVar& r,
                           const Halide::Var& rows, const Halide::Var& cols, int vec, int tile_vecs,
                           int tile_cols, Halide::TailStrategy col_tail) {
  Halide::Var ro("ro"), ri("ri"), co("co"), ci("ci");
  wrapper.split(rows, ro, ri, vec * tile_vecs)
      .split(cols, co, ci, tile_cols, col_tail)
      .reorder(ri, ci, ro, co)
      .vectorize(ri, vec)
      .unroll(ri)
      .unroll(ci);
  // Rows innermost in the accumulator's storage too, so each of its vectors is one register.
  acc.compute_at(wrapper, ro)
      .reorder_storage(rows, cols)
      .vectorize(rows, vec)
      .unroll(rows)
      .unroll(cols);
  acc.update().reorder(rows, cols, r).vectorize(rows, vec).unroll(rows).unroll(cols);
}

}  // namespace hattn
