// The selection primitive shared by topk, loki and sparsek: per row, the k largest of n scores
// with their indices, ties broken by the lower index, k clamped to what the row can offer.
//
// No sort. Scores are mapped to order-preserving 32-bit unsigned keys, and the k-th largest key
// is found by a radix select one bit at a time, most significant first: bit b is kept in the
// threshold iff at least k keys are >= (threshold | bit). After 32 counting passes the threshold
// is exactly the k-th largest key (integers: no tolerance, no iteration count to tune). Every key
// above the threshold is taken and, among keys equal to it, the lowest-indexed ones until k are;
// prefix counts per block of keys, a binary search over the blocks and a walk over one block find
// the s-th taken index (ascending) for each of the k slots.
//
// The primitive is layout-agnostic: keys are a Func key(j, rows...) with the candidate index
// first; the schedule decides where each stage is computed and how it is stored.
#pragma once

#include <vector>

#include "Halide.h"

namespace hattn {

// Order-preserving bijection between fp32 and uint32 (for non-NaN values): a < b iff
// ordered_key(a) < ordered_key(b). score_of_key inverts it.
Halide::Expr ordered_key(const Halide::Expr& score);
Halide::Expr score_of_key(const Halide::Expr& key);

// The key of a candidate that may be masked out (causal): ordered_key(score) where visible, else
// 0, which lies below the key of every non-NaN float, so masked candidates sort last whatever the
// scores. (An additive -1e30 mask let a masked key at score 5 - 1e30 outrank visible scores below
// -1e30.) Callers clamp k to the visible count, so a masked candidate is never selected.
Halide::Expr masked_key(const Halide::Expr& score, const Halide::Expr& visible);

// Which keys row i of sequence b may select: j < the sequence's keys (key_lengths(b), clamped to
// [0, lk]; all lk when key_lengths is undefined) and, causal, j <= i + (its keys - lq)
// (bottom-right alignment); n_visible counts them (what k is clamped to).
struct KeyVisibility {
  Halide::Expr visible, n_visible;
};
KeyVisibility key_visibility(const Halide::Func& key_lengths, const Halide::Expr& lk,
                             const Halide::Expr& lq, bool causal, const Halide::Expr& i,
                             const Halide::Expr& j, const Halide::Expr& b);

// Keys per block of the selection's prefix counts (select_topk.cpp).
constexpr int kSelectBlock = 16;

struct TopkSelection {
  std::vector<Halide::Func> passes;  // (rows...) threshold after each bit, MSB first (32)
  Halide::Func threshold;            // (rows...) the k-th largest key (== passes.back())
  Halide::Func block_above;          // (c, rows...) keys above the threshold in block c
  Halide::Func block_equal;          // (c, rows...) keys equal to the threshold in block c
  Halide::Func scan;                 // (c, rows...) Tuple {above, equal} over blocks [0, c)
  Halide::Func search;               // (s, rows...) the block holding slot s (binary search)
  Halide::Func walk;   // (s, rows...) Tuple {above, equal, index in block}: its keys one by one
  Halide::Func index;  // (s, rows...) s-th selected index in ascending order, s < k_eff(rows)
  // The same selection as a scatter: prefix(j, rows...) = Tuple {keys above the threshold, keys
  // equal to it} among [0, j) (a scan over every key, j in [0, n]); slot(j, rows...) = the slot s
  // with index(s) == j, or k_eff where key j is not taken. It costs a pass over all n keys per
  // row, the search and walk a few steps per slot: the top-k FFN (k = d_ff / 8) uses it; topk
  // prefill (k = 32 of 8192 keys, rows in the lanes) measured 745 -> 918-960 ms with it.
  Halide::Func prefix, slot;
  Halide::RDom rj;     // over [0, n): the candidates (counting passes)
  Halide::RDom rb;     // over a block's kSelectBlock keys (block counts, walk)
  Halide::RDom rscan;  // over the blocks (scan)
  Halide::RDom steps;  // the binary search's steps, ceil(log2(blocks))
};

// key: uint32 Func (j, rows...) for j in [0, n); k_eff: Expr over `rows` (0 <= k_eff <= n), the
// count to select per row. index(s, rows) is defined for every s; only s < k_eff is meaningful.
TopkSelection select_topk(const Halide::Func& key, const std::vector<Halide::Var>& rows,
                          const Halide::Expr& n, const Halide::Expr& k_eff,
                          const std::string& prefix);

}  // namespace hattn
