// Softmax attention over a per-row selection of keys: the tail shared by every sparse variant
// (topk, loki, later sparsek). Given, per query row (i, h, b), the scores of its k_max selected
// slots (only the first k_eff live) and the key index of each slot, it builds
//   o_i = sum_{s < k_eff} softmax_s(score_s) g_s v[index_s]
// (g_s = value_gate(s, i, h, b) when given, else 1) with zeros for a row that selected nothing
// (k_eff = 0), cast last to `out_type` (the variant's dtype; the softmax and the sums stay fp32).
// The algorithm only; schedules decide where each stage lives.
#pragma once

#include "Halide.h"

namespace hattn {

struct SelectedAttention {
  Halide::RDom rs;                  // over the k_max slots
  Halide::Func row_max{"row_max"};  // (i, h, b)
  Halide::Func weights{"weights"};  // (s, i, h, b)   exp(score - max), 0 past k_eff
  Halide::Func row_sum{"row_sum"};  // (i, h, b)
  Halide::Func pv{"pv"};            // (d, i, h, b)   sum_s weights * v[index]
  Halide::Func out{"out"};          // (d, i, h, b)
};

// score, index: Funcs (s, i, h, b); v: (d, j, hk, b) with hk = h / group; n_keys bounds index.
SelectedAttention attend_selected(const Halide::Func& score, const Halide::Func& index,
                                  const Halide::Func& v, const Halide::Expr& k_eff,
                                  const Halide::Expr& k_max, const Halide::Expr& group,
                                  const Halide::Var& d, const Halide::Var& s, const Halide::Var& i,
                                  const Halide::Var& h, const Halide::Var& b,
                                  const Halide::Func& value_gate = Halide::Func(),
                                  const Halide::Type& out_type = Halide::Float(32));

// v (d, j, hk, b) with the keys past each sequence's length (key_lengths(b), clamped to [0, lk])
// read as 0; v itself where key_lengths is undefined. A dead slot's weight is 0, but its key may
// lie past a paged sequence's length, in memory that holds anything (NaN included), and
// 0 x NaN is NaN.
Halide::Func values_within_lengths(const Halide::Func& v, const Halide::Func& key_lengths,
                                   const Halide::Expr& lk);

}  // namespace hattn
