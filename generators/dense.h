// dense: exact softmax attention, FlashAttention-style blocked online softmax.
//
// This file is the algorithm only: it defines the stages and never says how they run. Schedules
// live in schedules/<family>/dense_<family>.cpp and take the DenseStages built here.
//
// Layout: inputs are Halide buffers q(d, i, h, b), k(d, j, hk, b), v(d, j, hk, b) (innermost
// first; D contiguous). Queries are grouped in blocks of `query_block` rows and keys in blocks
// of `key_block`; each (query block, head, batch) keeps a running state (m, l, acc) per row and
// folds in one key block at a time, so memory is linear in sequence length. The blocking is part
// of the algorithm (it fixes the order of floating-point reassociation) but the result is the
// same for any block size up to rounding.
//
// With `split_keys`, the key blocks are divided among `splits` independent partial states that
// a final stage merges by rescaling (split-K, for decode: one query must still use every core).
//
// With `pack_groups` (grouped-query attention read once), the stages' head index h is the kv head
// and one query block holds every query row of its group: row r = g * Lq + i stands for query i of
// query head h * (Hq / Hkv) + g. Each K and V block is then loaded once for all the group's heads
// (MHA is the group of one). The block's row count, Lq x group, is a run-time value
// (`DenseStages::block_rows`), so this is for decode's few rows; `out` and `lse` keep their
// (d, i, h, b) and (i, h, b) layouts over the query heads.
#pragma once

#include "Halide.h"

namespace hattn {

// Packed decode on a cache shorter than a key block computes its keys rounded up to this many
// (whole vectors), not the whole block: a call on a 16-key cache computed 256 keys per kv head,
// ~65% of its 60-85 us (perf, Zen 4).
constexpr int kShortCacheGranule = 16;

struct DenseBlocking {
  int query_block = 32;  // rows of queries per block (a multiple of the vector width)
  int key_block = 256;   // keys per block
  // Unpacked blocks only: calls whose K and V of one kv head hold at least `long_kv_mib` MiB use
  // blocks of `long_query_block` rows instead (0: never). A query block streams its head's whole
  // K and V; past the L3 they come from memory, and taller blocks read fewer bytes per FLOP.
  // `DenseStages::long_rows` says which block a call takes; a schedule specializes on it.
  int long_query_block = 0;
  int long_kv_mib = 0;
};

struct DenseInputs {
  Halide::Func q, k, v;  // (d, i, h, b), fp32 values (16-bit inputs widened on load)
  // pair_qk / pair_pv: q.k / P.V written as sums of products of bf16 pairs accumulated in fp32
  // (the shape of AVX512-BF16's vdpbf16ps), on q, k and v as stored (bf16). pair_qk stages q in
  // pairs along D (the head dim must be even and compiled in); pair_pv stages the block's V in
  // pairs of keys and rounds the probabilities to bf16 before P.V.
  Halide::Func q_raw, k_raw, v_raw;
  bool pair_qk = false;
  bool pair_pv = false;
  Halide::Type out_type = Halide::Float(32);  // the output's element type (rounded once, last)
  bool bf16_bits = false;  // out rounded to bf16 by bit operations (bf16_casts_as_bits: CUDA)
  Halide::Expr head_dim;   // D
  Halide::Expr lq, lk;     // query and key lengths (lk: the most keys)
  // Optional (b) -> int32: the keys of sequence b when sequences differ in length (a batch of
  // paged or ragged caches), each in [0, lk]; key blocks past a sequence's length are skipped
  // (the loop bounds shrink) and its causal alignment is its own. Undefined: every sequence
  // has lk keys.
  Halide::Func key_lengths;
  Halide::Expr q_heads, kv_heads;  // Hq, Hkv
  Halide::Expr scale;              // softmax scale
  Halide::Expr splits;             // number of key splits (split_keys only)
  bool causal = false;
  bool split_keys = false;
  bool pack_groups = false;  // one block per kv head holding all its query heads' rows (above)
};

struct DenseStages {
  // Pure variables, shared by the stages so a schedule can name them.
  Halide::Var d{"d"}, i{"i"}, h{"h"}, b{"b"};      // output dims
  Halide::Var ii{"ii"}, jj{"jj"};                  // query row / key within a block
  Halide::Var qblk{"qblk"}, kblk{"kblk"}, s{"s"};  // query block, key block, key split
  Halide::Var r{"r"};                              // a block's index within its split
  Halide::RDom rc, rj, rk, rs;                     // over D, keys in a block, blocks, splits
  Halide::RDom rm;                                 // over a split's blocks up to r
  Halide::Var pr{"pr"}, pi{"pi"};                  // pair products: member of a pair, pair index
  Halide::RDom rcp, rjp;    // pair_qk: (member, pair) over D; pair_pv: over a block's keys
  Halide::Expr block_rows;  // rows in a query block: query_block, or Lq x group when packed
  // DenseBlocking::long_query_block: true where the call's blocks are long_query_block rows (then
  // block_rows is a select on it); undefined when the blocking has no long blocks.
  Halide::Expr long_rows;
  // Packed: the keys a block's loops cover, min(key_block, Lk rounded up to kShortCacheGranule),
  // and `whole_blocks` (Lk >= key_block), under which that is the constant key_block: a
  // schedule specializes on it so the long-cache loops keep their constant extents.
  Halide::Expr block_keys, whole_blocks;
  bool ragged = false;  // DenseInputs::key_lengths: each sequence's loop stops at its length

  // Below, h is the query head, or the kv head when packed.
  Halide::Func q_scaled{"q_scaled"};  // (ii, c, qblk, h, b)       scale * q, queries innermost
  Halide::Func q_pairs{"q_pairs"};    // pair_qk: (pr, ii, pi, qblk, h, b)  q[2 pi + pr] (bf16)
  Halide::Func p_pairs{"p_pairs"};    // pair_pv: (pr, ii, pi, kblk, qblk, h, b) probs (bf16)
  Halide::Func v_pairs{"v_pairs"};    // pair_pv: (pr, d, pi, kblk, h, b)  v of key 2 pi + pr
  Halide::Func dot{"dot"};            // (ii, jj, kblk, qblk, h, b) q . k, the reduction over D
  Halide::Func scores{"scores"};  // (ii, jj, kblk, qblk, h, b) dot, masked (pure wrapper of dot)
  Halide::Func block_max{"block_max"};  // (ii, kblk, qblk, h, b)
  Halide::Func probs{"probs"};          // (ii, jj, kblk, qblk, h, b) exp(score - block max)
  Halide::Func block_sum{"block_sum"};  // (ii, kblk, qblk, h, b)
  Halide::Func pv{"pv"};                // (ii, d, kblk, qblk, h, b)  sum_j probs * v
  // The running state per row, folded over key blocks (online_softmax.h): columns d in [0, D)
  // hold acc, column D the sum l, column D + 1 the max m. The per-row factors come from the block
  // maxima (run_max, rescale), so a fold costs one exp per row, not one per column.
  Halide::Func split_block_max{"split_block_max"};  // (ii, r, [s,] qblk, h, b) its block r's
  Halide::Func run_max{"run_max"};  // (ii, r, [s,] qblk, h, b) max over the split's blocks <= r
  Halide::Func rescale{"rescale"};  // (ii, r, [s,] qblk, h, b) Tuple {running, block} factors
  Halide::Func state{"state"};      // (ii, d, [s,] qblk, h, b) the state after the split's blocks
  // split_keys only: the splits' sums weighted by exp(their max - the max over splits), summed.
  Halide::Func split_max{"split_max"};        // (ii, qblk, h, b)   the final max
  Halide::Func split_weight{"split_weight"};  // (ii, s, qblk, h, b)
  Halide::Func merged{"merged"};              // (ii, d, qblk, h, b) the final sums, d in [0, D]
  Halide::Func out{"out"};                    // (d, i, h, b)
  Halide::Func lse{"lse"};                    // (i, h, b)
};

DenseStages dense_attention(const DenseInputs& in, const DenseBlocking& blocking);

}  // namespace hattn
