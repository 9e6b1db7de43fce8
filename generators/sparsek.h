// sparsek: SPARSEK attention (Lou et al. 2024). The algorithm only; schedules live in
// schedules/cpu/sparsek_cpu.cpp.
//
// Two pipelines:
//   sparsek_mask   the SparseK operator on rows of scores: p = clip(z - tau, 0, 1) with tau the
//                  root of sum_j clip(z_j - tau, 0, 1) = k over the row's first len entries.
//                  Exact: a bisection on the ordered 32-bit keys of the fp32 candidates for tau
//                  (32 halvings of the whole float range leave two adjacent floats, like the
//                  radix select of select_topk.h; f summed in double), then the closed form on
//                  the free set F = {j : 0 < z_j - t < 1}: tau = (sum_F z + |S| - k) / |F| with
//                  S = {z_j - t >= 1}, rounded to the nearer float. k = 0: tau = +inf, p = 0;
//                  k >= len: tau = -inf, p = 1.
//   sparsek        attention of each query row over its window (the w newest visible keys, gate
//                  1) and its selected older keys (indices and gates given: see below), softmax
//                  over the union, the gate multiplying the values (or, gate_logit, adding
//                  log g to the score):  o_i = sum_{j in S_i} softmax_S(s q_i . k_j) g_ij v_j.
//
// Why the selection is an input of the attention pipeline: u_j is query-independent, so the
// masks of successive prefixes are one sweep (tau only grows; each key enters and leaves each
// class once: O(L log L) per head, runtime/src/sparsek_sweep.cpp), while a per-row operator call
// would cost O(L) per query. The sweep's tau for a prefix is what sparsek_mask computes for that
// prefix as a row (tested against each other and against a double-precision bisection).
#pragma once

#include <vector>

#include "Halide.h"
#include "selected_attention.h"

namespace hattn {

struct SparsekMaskStages {
  Halide::Var j{"j"}, r{"r"};
  Halide::RDom rj;                   // over the m columns
  Halide::Func zd{"zd"};             // (j, r) z in double, -inf past the row's length
  std::vector<Halide::Func> passes;  // bisection: (f(t) double sum, bracket) per step, 32 steps
  Halide::Func bracket;              // (r) Tuple {lo key, hi key} after the last step
  Halide::Func finish{"finish"};     // (r) Tuple {sum_F z, |F|, |S|} at t = lo (double sums)
  Halide::Func tau{"tau"};           // (r)
  Halide::Func mask{"mask"};         // (j, r)
};

// z: (j, r) fp32 scores; len: (r) the valid columns of each row (clamped to [0, m]); k >= 0.
SparsekMaskStages sparsek_mask(const Halide::Func& z, const Halide::Func& len,
                               const Halide::Expr& m, const Halide::Expr& k);

struct SparsekInputs {
  Halide::Func q, k, v;  // (d, i, h, b), (d, j, hk, b), (d, j, hk, b): fp32 values (16-bit widened)
  Halide::Type out_type = Halide::Float(32);  // the output's element type (rounded once, last)
  Halide::Func sel_index;                     // (s, i, hk, b) int32: key index of selected slot s
  Halide::Func sel_gate;                      // (s, i, hk, b) fp32 gate in (0, 1]
  Halide::Func sel_count;                     // (i, hk, b) int32: live selected slots of the row
  Halide::Expr head_dim, lk, sel_slots;       // D, Lk (keys in k and v), slots in sel_index
  Halide::Expr q_heads, kv_heads;
  Halide::Expr scale;
  Halide::Expr window;  // w >= 0
  Halide::Expr q_pos0;  // absolute position of query row 0 (prefill: Lk - Lq)
  // 0: window keys are stored at their positions; r > 0: in a ring of r slots (position p at
  // slot p % r), as the bounded decode cache keeps them.
  Halide::Expr ring;
  Halide::Expr gate_logit;  // nonzero: add log g to the score instead of scaling the value
};

struct SparsekStages {
  Halide::Var d{"d"}, i{"i"}, h{"h"}, b{"b"}, s{"s"};
  Halide::RDom rc;              // over D
  Halide::Func index{"index"};  // (s, i, h, b) key of slot s: selected first, then the window
  Halide::Func gate{"gate"};    // (s, i, h, b)
  Halide::Func dot{"dot"};      // (s, i, h, b) q_i . k_index
  Halide::Func score{"score"};  // (s, i, h, b) s * dot (+ log g in logit mode)
  Halide::Func value_gate{"value_gate"};  // (s, i, h, b) g in value mode, 1 in logit mode
  SelectedAttention att;
};

SparsekStages sparsek_attention(const SparsekInputs& in);

}  // namespace hattn
