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

  sel.above = Func(prefix + "_above");
  sel.above(rows) = 0;
  sel.above(rows) += select(key(at(rj)) > thr, 1, 0);
  Expr need_equal = k_eff - sel.above(row_args);

  // scan(j) = {keys taken among [0, j), keys equal to the threshold among [0, j)}.
  sel.scan = Func(prefix + "_scan");
  sel.scan(at(Var("j"))) = Tuple(0, 0);
  Expr kj = key(at(rj));
  Expr taken = sel.scan(at(rj))[0], equal = sel.scan(at(rj))[1];
  Expr is_equal = kj == thr;
  Expr take = kj > thr || (is_equal && equal < need_equal);
  sel.scan(at(rj + 1)) = Tuple(taken + select(take, 1, 0), equal + select(is_equal, 1, 0));

  // The s-th selected index is the j where the taken count steps from s to s + 1, i.e. the
  // largest p with taken(p) <= s: a branchless binary search over the scan per slot (log2 n
  // steps for each of the k slots, instead of a scatter over all n candidates). Step t tries to
  // advance by 2^(steps - 1 - t). Slots at or past k_eff land on n - 1 and are never read live.
  Expr n_steps = 32 - count_leading_zeros(max(n, 1));
  sel.steps = RDom(0, n_steps, prefix + "_steps");
  sel.search = Func(prefix + "_search");
  std::vector<Var> slot_vars = {Var("s")};
  slot_vars.insert(slot_vars.end(), rows.begin(), rows.end());
  std::vector<Expr> slot_args(slot_vars.begin(), slot_vars.end());
  sel.search(slot_vars) = 0;
  Expr pos = sel.search(slot_args);
  Expr next = pos + (1 << (n_steps - 1 - sel.steps.x));
  Expr advance = next <= n && sel.scan(at(clamp(next, 0, n)))[0] <= slot_vars[0];
  sel.search(slot_args) = select(advance, next, pos);
  sel.index = Func(prefix + "_index");
  sel.index(slot_vars) = clamp(sel.search(slot_args), 0, n - 1);
  return sel;
}

}  // namespace hattn
