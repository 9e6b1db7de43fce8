// The SparseK masks of every prefix of one score sequence, in one sweep (SPARSEK, Lou et al. 2024).
//
// Candidates arrive in position order with query-independent scores u_j. For the prefix seen so
// far, tau is the root of f(t) = sum_j clip(u_j - t, 0, 1) = k, and the mask keeps, among the k
// largest u (ties: lower position), those with u > tau, gate clip(u - tau, 0, 1). Adding a
// candidate can only raise f, so tau never decreases: each candidate moves at most twice, from
// saturated (u - tau >= 1) to free (0 < u - tau < 1) to dead (u <= tau), and never back. Two
// min-heaps (free, saturated) find the next breakpoint, and between breakpoints the root is the
// closed form tau = (sum_free u + |saturated| - k) / |free|: O(log n) amortized per candidate, in
// double precision. The k largest are a bounded min-heap; a candidate that leaves it has k larger
// ones before it and can never return, which is what lets decode evict its key and value.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace hattn {

class SparsekSweep {
 public:
  struct Entry {
    float u;
    int64_t pos;   // candidate position
    int32_t slot;  // where the caller stores it (decode cache), from the evicted entry or fresh
  };

  explicit SparsekSweep(int64_t k);

  // Adds the next candidate. Returns the slot it occupies among the k largest (the evicted
  // entry's, or the next fresh one), or -1 if it is not among them (it never will be).
  int32_t push(float u, int64_t pos);

  double tau() const { return tau_; }  // -inf while at most k candidates were seen
  int64_t k() const { return k_; }
  const std::vector<Entry>& top() const { return top_; }  // heap order, not sorted
  // Scores the mask still needs (free + saturated candidates): the decode state beyond k + w KV.
  int64_t live_scores() const { return static_cast<int64_t>(free_.size() + saturated_.size()); }

  // The selection of the current prefix: writes up to k (index, gate) pairs, index = entry.slot
  // when by_slot else entry.pos; returns the count.
  int32_t select(int32_t* index, float* gate, bool by_slot) const;

 private:
  void settle();

  int64_t k_;
  double tau_;
  double free_sum_ = 0;
  std::priority_queue<double, std::vector<double>, std::greater<double>> free_, saturated_;
  std::vector<Entry> top_;  // min-heap by (u, -pos): the worst of the k largest on top
  int32_t next_slot_ = 0;
};

}  // namespace hattn
