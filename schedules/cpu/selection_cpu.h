// CPU schedules (x86 and ARM) of the pieces every sparse variant shares: the top-k selection
// (generators/select_topk.h) and softmax attention over the selected keys
// (generators/selected_attention.h). Two regimes:
//   rows in lanes   prefill-like: a chunk of query rows per task, the rows in the SIMD lanes, so
//                   every pass over the candidates reads whole vectors of a row-major buffer;
//   few rows        decode-like: one or a few rows per task, the candidates in the lanes.
#pragma once

#include "Halide.h"
#include "schedules.h"
#include "select_topk.h"
#include "selected_attention.h"

namespace hattn {

// The tunables every sparse variant's table line has: qb rows per chunk (prefill), kb keys per
// block (decode), tq x tk the score micro-tile; vec is the target's fp32 lanes.
struct SparseTiles {
  int vec, qb, kb, tq, tk;
};
SparseTiles read_sparse_tiles(const ScheduleContext& ctx);

// Prefill tasks: `out` (d, i, h, b) split into chunks of qb rows, one parallel task per (chunk,
// head, batch), D vectorized. Returns the task loop (where a chunk's stages are computed) and
// sets *row to the loop over the chunk's single rows.
Halide::LoopLevel parallel_row_chunks(Halide::Func out, const Halide::Var& d, const Halide::Var& i,
                                      const Halide::Var& h, const Halide::Var& b,
                                      const SparseTiles& x, Halide::LoopLevel* row);

// Computes f at `at` over exactly chunk_rows rows (a multiple of vec), rows in the lanes: a last
// partial chunk is rounded up (algorithms clamp row reads, so the extra rows are harmless and
// never stored), and every buffer has a constant size.
void compute_rows_in_lanes(Halide::Func f, const Halide::Var& row, const Halide::LoopLevel& at,
                           int vec, int chunk_rows);

// A reduction over r computed as `lanes` partial sums (one per SIMD lane, at `at`) and one
// horizontal sum at the end, instead of a horizontal sum per vector. Returns the partials.
Halide::Func reduce_in_lanes(Halide::Func acc, const Halide::RVar& r, int lanes,
                             const Halide::LoopLevel& at);

// The scatter form (TopkSelection::prefix and slot): the counting passes and the prefix counts,
// rows in the lanes, at `at` over chunk_rows rows; the consumer schedules its own scatter.
void schedule_selection_scatter_rows_in_lanes(TopkSelection& sel, const Halide::Var& row,
                                              const Halide::LoopLevel& at, int vec, int chunk_rows);

// chunk_rows: rows per task (a multiple of vec).
void schedule_selection_rows_in_lanes(TopkSelection& sel, const Halide::Var& row,
                                      const Halide::LoopLevel& at, int vec, int chunk_rows);
void schedule_selection_few_rows(TopkSelection& sel, const Halide::LoopLevel& at, int vec);

// `score` is the (s, i, h, b) Func of the selected slots' scores that feeds `att`. `per_row` is
// the loop of `att.out` over single query rows (where the V sum of one row is computed);
// fixed_d unrolls the V sum over a compile-time head dim.
void schedule_selected_rows_in_lanes(SelectedAttention& att, Halide::Func score,
                                     const Halide::Var& s, const Halide::Var& i,
                                     const Halide::Var& d, const Halide::LoopLevel& chunk,
                                     const Halide::LoopLevel& per_row, int vec, int chunk_rows,
                                     bool fixed_d);
void schedule_selected_few_rows(SelectedAttention& att, Halide::Func score, const Halide::Var& s,
                                const Halide::Var& d, const Halide::LoopLevel& task,
                                const Halide::LoopLevel& per_row, int vec, bool fixed_d);

}  // namespace hattn
