#include "sparsek_sweep.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace hattn {

namespace {
// Heap order for the k largest: `a` is "greater" (nearer the top: worse) than `b` when it has the
// smaller score, or the same score and the later position (ties go to the lower position).
bool worse(const SparsekSweep::Entry& a, const SparsekSweep::Entry& b) {
  return a.u < b.u || (a.u == b.u && a.pos > b.pos);
}
bool heap_less(const SparsekSweep::Entry& a, const SparsekSweep::Entry& b) { return worse(b, a); }
}  // namespace

SparsekSweep::SparsekSweep(int64_t k) : k_(k), tau_(-std::numeric_limits<double>::infinity()) {
  // Grown as keys arrive beyond this: k may be far larger than any sequence (up to 2^30).
  top_.reserve(static_cast<size_t>(std::clamp<int64_t>(k, 0, 4096)));
}

int32_t SparsekSweep::push(float u, int64_t pos) {
  const double z = u;
  if (z - tau_ >= 1) {
    saturated_.push(z);
  } else if (z - tau_ > 0) {
    free_.push(z);
    free_sum_ += z;
  }
  settle();

  if (k_ <= 0) return -1;
  Entry e{u, pos, 0};
  if (static_cast<int64_t>(top_.size()) < k_) {
    e.slot = next_slot_++;
    top_.push_back(e);
    std::push_heap(top_.begin(), top_.end(), heap_less);
    return e.slot;
  }
  if (!worse(top_.front(), e)) return -1;
  std::pop_heap(top_.begin(), top_.end(), heap_less);
  e.slot = top_.back().slot;
  top_.back() = e;
  std::push_heap(top_.begin(), top_.end(), heap_less);
  return e.slot;
}

void SparsekSweep::settle() {
  const double k = static_cast<double>(k_);
  for (;;) {
    // The next breakpoint above tau: a free score dying (t = u) or a saturated one becoming free
    // (t = u - 1).
    double next = std::numeric_limits<double>::infinity();
    bool from_free = false;
    if (!free_.empty()) {
      next = free_.top();
      from_free = true;
    }
    if (!saturated_.empty() && saturated_.top() - 1 < next) {
      next = saturated_.top() - 1;
      from_free = false;
    }
    const double n_free = static_cast<double>(free_.size());
    const double n_sat = static_cast<double>(saturated_.size());
    if (n_free > 0) {
      const double root = (free_sum_ + n_sat - k) / n_free;
      if (root <= tau_) return;  // f(tau) <= k already
      if (root <= next) {
        tau_ = root;
        return;
      }
    } else if (n_sat <= k) {
      return;
    }
    tau_ = next;
    if (from_free) {
      free_sum_ -= free_.top();
      free_.pop();
    } else {
      const double z = saturated_.top();
      saturated_.pop();
      // From |z| >= 2^53 on, z - 1 rounds to z: at tau = z - 1 the entry is already dead (its
      // free interval holds no double). Kept as free, it made f(tau) look like k with a +1 that
      // the closed form's sum had rounded away, and tau stopped short (issue 21).
      if (z - tau_ > 0) {
        free_.push(z);
        free_sum_ += z;
      }
    }
    // Recomputing the free sum when the set empties drops the rounding it accumulated.
    if (free_.empty()) free_sum_ = 0;
  }
}

int32_t SparsekSweep::select(int32_t* index, float* gate, bool by_slot) const {
  int32_t n = 0;
  for (const Entry& e : top_) {
    const double g = std::min(1.0, static_cast<double>(e.u) - tau_);
    if (!(g > 0)) continue;
    index[n] = by_slot ? e.slot : static_cast<int32_t>(e.pos);
    gate[n] = static_cast<float>(g);
    ++n;
  }
  return n;
}

}  // namespace hattn
