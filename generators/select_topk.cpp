#include "select_topk.h"

namespace hattn {

using namespace Halide;

namespace {
Expr u32(uint32_t value) { return Internal::make_const(UInt(32), value); }
}  // namespace

Expr ordered_key(const Expr& score) {
  Expr bits = reinterpret(UInt(32), score);
  // Negative floats order backwards in their bits: flip them all; positives: set the sign bit.
  return select((bits >> 31) != 0, ~bits, bits | u32(0x80000000u));
}

Expr score_of_key(const Expr& key) {
  Expr bits = select((key >> 31) != 0, key & u32(0x7fffffffu), ~key);
  return reinterpret(Float(32), bits);
}

Expr masked_key(const Expr& score, const Expr& visible) {
  return select(visible, ordered_key(score), u32(0));
}

KeyVisibility key_visibility(const Func& key_lengths, const Expr& lk, const Expr& lq, bool causal,
                             const Expr& i, const Expr& j, const Expr& b) {
  if (!key_lengths.defined()) {
    const Expr offset = lk - lq;
    return {causal ? j <= i + offset : Expr(true), causal ? clamp(i + offset + 1, 0, lk) : lk};
  }
  const Expr len = clamp(key_lengths(b), 0, lk);
  const Expr offset = len - lq;
  return {causal ? j < len && j <= i + offset : j < len,
          causal ? clamp(i + offset + 1, 0, len) : len};
}

TopkSelection select_topk(const Func& key, const std::vector<Var>& rows, const Expr& n,
                          const Expr& k_eff, const std::string& prefix) {
  TopkSelection sel;
  sel.rj = RDom(0, n, prefix + "_rj");
  const RVar& rj = sel.rj.x;
  std::vector<Expr> row_args(rows.begin(), rows.end());
  auto at = [&](const Expr& j) {
    std::vector<Expr> a = {j};
    a.insert(a.end(), row_args.begin(), row_args.end());
    return a;
  };

  // Radix select, one bit per pass. Each pass is its own Func so that a schedule can compute
  // it at the row (or block) level: inlined, the passes would recompute each other.
  Expr t = u32(0);
  for (int bit = 31; bit >= 0; --bit) {
    Func count(prefix + "_count_b" + std::to_string(bit));
    Expr cand = t | u32(uint32_t{1} << bit);
    count(rows) = 0;
    count(rows) += select(key(at(rj)) >= cand, 1, 0);
    Func pass(prefix + "_pass_b" + std::to_string(bit));
    pass(rows) = select(count(row_args) >= k_eff, cand, t);
    sel.passes.push_back(count);
    sel.passes.push_back(pass);
    t = pass(row_args);
  }
  sel.threshold = sel.passes.back();
  Expr thr = sel.threshold(row_args);

  // The s-th selected index is the smallest p with taken(p + 1) > s, where taken(p), the keys
  // selected among [0, p), is gt(p) + min(eq(p), k_eff - gt(n)): every key above the threshold,
  // and the lowest-indexed keys equal to it until k_eff are taken. gt and eq are prefix counts,
  // kept per block of kSelectBlock keys (a sequential scan over n / kSelectBlock blocks: a scan
  // over every key was 18% of a grouped bf16 decode under perf); a binary search over the blocks
  // finds the block holding slot s, and a walk over that block's keys the index.
  const Expr n_blocks = (n + kSelectBlock - 1) / kSelectBlock;
  sel.rb = RDom(0, kSelectBlock, prefix + "_rb");
  const Var c("c");
  std::vector<Var> block_vars = {c};
  block_vars.insert(block_vars.end(), rows.begin(), rows.end());
  auto block_at = [&](const Expr& blk) {
    std::vector<Expr> a = {blk};
    a.insert(a.end(), row_args.begin(), row_args.end());
    return a;
  };
  // Whether key j of a block (keys past n count as neither) lies above, or at, the threshold.
  auto above_at = [&](const Expr& j) {
    return select(j < n && key(at(clamp(j, 0, n - 1))) > thr, 1, 0);
  };
  auto equal_at = [&](const Expr& j) {
    return select(j < n && key(at(clamp(j, 0, n - 1))) == thr, 1, 0);
  };
  sel.block_above = Func(prefix + "_block_above");
  sel.block_above(block_vars) = 0;
  sel.block_above(block_vars) += above_at(c * kSelectBlock + sel.rb.x);
  sel.block_equal = Func(prefix + "_block_equal");
  sel.block_equal(block_vars) = 0;
  sel.block_equal(block_vars) += equal_at(c * kSelectBlock + sel.rb.x);

  // scan(c) = {keys above the threshold, keys equal to it} among blocks [0, c), c in [0, n_blocks].
  sel.rscan = RDom(0, n_blocks, prefix + "_rscan");
  const RVar& rc = sel.rscan.x;
  sel.scan = Func(prefix + "_scan");
  sel.scan(block_vars) = Tuple(0, 0);
  sel.scan(block_at(rc + 1)) = Tuple(sel.scan(block_at(rc))[0] + sel.block_above(block_at(rc)),
                                     sel.scan(block_at(rc))[1] + sel.block_equal(block_at(rc)));
  const Expr need_equal = k_eff - sel.scan(block_at(n_blocks))[0];
  auto taken_before = [&](const Expr& blk) {
    return sel.scan(block_at(blk))[0] + min(sel.scan(block_at(blk))[1], need_equal);
  };

  // The block of slot s: the largest c < n_blocks with taken(c * kSelectBlock) <= s, a branchless
  // binary search (step t tries to advance by 2^(steps - 1 - t)).
  const Expr last_block = max(n_blocks - 1, 0);
  const Expr n_steps = 32 - count_leading_zeros(max(last_block, 1));
  sel.steps = RDom(0, n_steps, prefix + "_steps");
  sel.search = Func(prefix + "_search");
  std::vector<Var> slot_vars = {Var("s")};
  slot_vars.insert(slot_vars.end(), rows.begin(), rows.end());
  std::vector<Expr> slot_args(slot_vars.begin(), slot_vars.end());
  const Expr& slot = slot_vars[0];
  sel.search(slot_vars) = 0;
  const Expr pos = sel.search(slot_args);
  const Expr next = pos + (1 << (n_steps - 1 - sel.steps.x));
  const Expr advance = next <= last_block && taken_before(clamp(next, 0, last_block)) <= slot;
  sel.search(slot_args) = select(advance, next, pos);

  // Within the block: {above, equal, positions p whose taken(p + 1) <= s}, key by key; keys past
  // n are never taken. The index is the block's first key plus that count.
  const Expr blk = clamp(sel.search(slot_args), 0, last_block);  // clamped: bounds inference
  sel.walk = Func(prefix + "_walk");
  sel.walk(slot_vars) = Tuple(sel.scan(block_at(blk))[0], sel.scan(block_at(blk))[1], 0);
  {
    const Expr j = blk * kSelectBlock + sel.rb.x;
    const Expr above = sel.walk(slot_args)[0] + above_at(j);
    const Expr equal = sel.walk(slot_args)[1] + equal_at(j);
    const Expr taken = above + min(equal, need_equal);
    sel.walk(slot_args) = Tuple(above, equal, sel.walk(slot_args)[2] + select(taken <= slot, 1, 0));
  }
  // The scatter form: every key's slot at once, from running counts over all of the row's keys
  // (a consumer that writes each taken key to its slot, instead of a search and a walk per slot,
  // which cost two gathers per step with rows in the lanes). Slot k_eff: not taken.
  sel.prefix = Func(prefix + "_prefix");
  {
    std::vector<Var> key_vars = {Var("j")};
    key_vars.insert(key_vars.end(), rows.begin(), rows.end());
    sel.prefix(key_vars) = Tuple(0, 0);
    sel.prefix(at(rj + 1)) =
        Tuple(sel.prefix(at(rj))[0] + above_at(rj), sel.prefix(at(rj))[1] + equal_at(rj));
    std::vector<Expr> j_args(key_vars.begin(), key_vars.end());
    const Expr& j = j_args[0];
    const Expr quota = k_eff - sel.prefix(at(n))[0];  // keys equal to the threshold to take
    const Expr above = sel.prefix(j_args)[0], equal = sel.prefix(j_args)[1];
    const Expr kj = key(at(clamp(j, 0, n - 1)));
    const Expr taken = kj > thr || (kj == thr && equal < quota);
    sel.slot = Func(prefix + "_slot");
    sel.slot(key_vars) = select(taken, above + min(equal, quota), k_eff);
  }

  sel.index = Func(prefix + "_index");
  sel.index(slot_vars) = clamp(blk * kSelectBlock + sel.walk(slot_args)[2], 0, n - 1);
  return sel;
}

}  // namespace hattn
