// loki: low-rank key scoring with top-k attention (Singhania et al. 2024).
//
// The algorithm only; schedules live in schedules/<family>/loki_<family>.cpp. Keys arrive already
// rotated into a per-kv-head orthonormal PCA basis P (columns sorted by explained variance, so
// the leading channels carry most of each key). Per query row:
//   qh   = s * q P                                      (the query in the same basis)
//   a_j  = qh[:r] . kh_j[:r]                            (approximate scores: r channels only,
//                                                        read from k_lead: see LokiInputs)
//   T    = the k_eff largest a_j over visible keys      (select_topk.h; ties by lower index)
//   o    = sum_{j in T} softmax_T(qh . kh_j) v_j        (exact scores: qh . kh_j = s q . k_j)
// Values are not rotated. r = D makes a_j exact (top-k attention); k >= Lk makes it dense.
#pragma once

#include "Halide.h"
#include "select_topk.h"
#include "selected_attention.h"

namespace hattn {

struct LokiInputs {
  // (d, i, h, b), (d, j, hk, b) rotated, (d, j, hk, b), (c, e, hk); q, k, k_lead, v read as fp32
  Halide::Func q, k, v, basis;
  // (c, j, hk, b): the leading channels of k (c < r are read). Either k itself or a narrow copy
  // whose rows are contiguous: on CPUs, reading r of every D channels of k costs about as much as
  // reading whole rows (measured), so Loki's byte savings need the leading channels contiguous.
  Halide::Func k_lead;
  Halide::Expr head_dim, lq, lk;   // D, Lq, Lk
  Halide::Expr q_heads, kv_heads;  // Hq, Hkv
  Halide::Expr scale;
  Halide::Expr rank;  // r in [1, D] (the runtime validates)
  Halide::Expr topk;  // k >= 1
  bool causal = false;
  Halide::Type out_type = Halide::Float(32);  // the output's element type (rounded once, last)
  // Optional (b) -> int32: sequence b's keys in [0, lk] (a batch of paged caches), as
  // TopkInputs::key_lengths. Undefined: every sequence has lk keys.
  Halide::Func key_lengths;
};

struct LokiStages {
  Halide::Var d{"d"}, c{"c"}, e{"e"}, i{"i"}, h{"h"}, b{"b"}, j{"j"}, s{"s"};
  Halide::RDom re, rr, rc;        // over D (rotation); over r (approximate); over D (exact)
  Halide::Func q_t{"q_t"};        // (i, e, h, b)   q, rows first
  Halide::Func q_rot{"q_rot"};    // (i, c, h, b)   s * q P
  Halide::Func approx{"approx"};  // (j, i, h, b)   qh[:r] . kh_j[:r]
  Halide::Func key{"key"};        // (j, i, h, b)   ordered_key(masked approx)
  TopkSelection sel;              // over j, rows (i, h, b)
  Halide::Func exact{"exact"};    // (s, i, h, b)   qh . kh of the s-th selected key
  SelectedAttention att;          // softmax and the V sum over the selection; att.out
};

LokiStages loki_attention(const LokiInputs& in);

}  // namespace hattn
