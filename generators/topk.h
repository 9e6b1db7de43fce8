// topk: top-k attention and the top-k feed-forward layer (Gupta et al. 2021).
//
// The algorithm only; schedules live in schedules/<family>/topk_<family>.cpp. Each query row
// scores every visible key, keeps the k largest (select_topk.h: no sort, ties by lower index,
// k clamped to the visible count), and runs softmax and the V product over those k only:
//   o_i = sum_{j in T_i} softmax_{T_i}(s q_i . k_j) v_j.
// The math has no query chunks: every row is independent, so the schedule's chunk size (how many
// rows share one score buffer, O(C * Lk) memory) cannot change a result.
//
// topk_ffn reads a ReLU feed-forward layer y = relu(x W1^T) W2^T as attention with keys W1
// [d_ff, D] and values W2^T [d_ff, D], no scale and no softmax: per token the k largest entries
// of h = x W1^T are kept, ReLU'd, and y = sum_{t in top-k} relu(h_t) W2^T[t].
#pragma once

#include "Halide.h"
#include "select_topk.h"
#include "selected_attention.h"

namespace hattn {

struct TopkInputs {
  Halide::Func q, k, v;  // (d, i, h, b), (d, j, hk, b), (d, j, hk, b), read as fp32
  // pair_dot (prefill): q . k written as sums of products of bf16 pairs along D accumulated in
  // fp32 (the shape of AVX512-BF16's vdpbf16ps) on q and k as stored (bf16), the scale applied
  // to the fp32 score; an odd D's last column is added alone.
  Halide::Func q_raw, k_raw;  // (d, i, h, b), (d, j, hk, b) as stored
  bool pair_dot = false;
  Halide::Type out_type = Halide::Float(32);  // the output's element type (rounded once, last)
  Halide::Expr head_dim, lq, lk;              // D, Lq, Lk
  Halide::Expr q_heads, kv_heads;             // Hq, Hkv
  Halide::Expr scale;
  Halide::Expr topk;  // k >= 1 (the runtime validates)
  bool causal = false;
  // Optional (b) -> int32: the keys of sequence b when sequences differ in length (a batch of
  // paged caches), each in [0, lk]; keys past it are masked and the causal alignment is its own.
  // Undefined: every sequence has lk keys.
  Halide::Func key_lengths;
};

struct TopkStages {
  Halide::Var d{"d"}, i{"i"}, h{"h"}, b{"b"}, j{"j"}, s{"s"};
  Halide::Expr group;                 // Hq / Hkv: query heads per kv head
  Halide::Var pr{"pr"}, pi{"pi"};     // pair_dot: member of a pair, pair index
  Halide::RDom rc;                    // over D
  Halide::RDom rcp, rodd;             // pair_dot: (member, pair) over D; D's last column if odd
  Halide::Func q_scaled{"q_scaled"};  // (i, d, h, b)      scale * q, queries first
  Halide::Func q_pairs{"q_pairs"};    // pair_dot: (pr, i, pi, h, b)  q[2 pi + pr] (bf16)
  Halide::Func dot{"dot"};            // (j, i, h, b)      q . k, the reduction over D
  Halide::Func key{"key"};            // (j, i, h, b)      ordered_key(masked score)
  TopkSelection sel;                  // over j, rows (i, h, b)
  Halide::Func gathered{"gathered"};  // (s, i, h, b)      score of the s-th selected key
  SelectedAttention att;              // softmax and the V sum over the selection; att.out
};

TopkStages topk_attention(const TopkInputs& in);

struct TopkFfnInputs {
  Halide::Func x, w1;  // (d, t), (d, f): fp32 values (16-bit inputs widened)
  Halide::Func w2t;    // (d, f) as stored: the sum widens it where it reads it
  // pair_dot: h = x W1^T written as sums of products of bf16 pairs along D accumulated in fp32
  // (the shape of AVX512-BF16's vdpbf16ps) on x and w1 as stored (bf16); an odd D's last column
  // is added alone.
  Halide::Func x_raw, w1_raw;  // (d, t), (d, f) as stored
  bool pair_dot = false;
  Halide::Type out_type = Halide::Float(32);   // y's element type (rounded once, last)
  Halide::Expr model_dim, d_ff, tokens, topk;  // D, d_ff, T, k >= 1
};

struct TopkFfnStages {
  Halide::Var d{"d"}, t{"t"}, f{"f"}, s{"s"};
  Halide::Var pr{"pr"}, pi{"pi"};  // pair_dot: member of a pair, pair index
  Halide::RDom rc, rs;
  Halide::RDom rcp, rodd;           // pair_dot: (member, pair) over D; D's last column if odd
  Halide::Func x_t{"x_t"};          // (t, d)  tokens first
  Halide::Func x_pairs{"x_pairs"};  // pair_dot: (pr, t, pi)  x[2 pi + pr] (bf16), tokens inside
  Halide::Func dot{"dot"};          // (f, t)  h = x . w1[f]
  Halide::Func key{"key"};          // (f, t)
  TopkSelection sel;                // over f, rows (t)
  Halide::RDom rf;                  // over the d_ff units (the scatter into picked)
  Halide::Func picked{"picked"};    // (s, t)  Tuple {s-th selected unit, its relu(h)}
  Halide::Func w2{"w2"};            // (d, f)  w2t as stored (a schedule may copy it)
  Halide::Func acc{"acc"};          // (d, t)  sum over s of relu(h) w2t[unit], fp32
  Halide::Func y{"y"};              // (d, t)  acc in out_type
};

TopkFfnStages topk_ffn(const TopkFfnInputs& in);

}  // namespace hattn
