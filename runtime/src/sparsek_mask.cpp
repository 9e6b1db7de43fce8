// hattn::sparsek_mask: the SparseK operator on rows, one call of the sparsek_mask kernel.
#include <algorithm>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "halide_glue.h"
#include "sparsek_internal.h"

namespace hattn {

Status sparsek_mask(const TensorView& z, const std::vector<int64_t>* lengths, int64_t k,
                    const TensorView& p, const TensorView& tau, Dispatch* chosen) {
  static const char* const kZ[2] = {"rows", "m"};
  static const char* const kT[1] = {"rows"};
  if (k < 0) return invalid("sparsek budget k must be >= 0, got " + std::to_string(k));
  Status s = check_tensor(z, "z", 2, kZ, false);
  if (s.ok()) s = check_tensor(p, "p", 2, kZ, true);
  if (s.ok()) s = check_tensor(tau, "tau", 1, kT, true);
  for (const auto& [t, name] : {std::pair{&z, "z"}, {&p, "p"}, {&tau, "tau"}}) {
    if (s.ok()) s = check_sparsek_host(*t, name);
  }
  if (!s.ok()) return s;
  const int64_t rows = z.shape[0], m = z.shape[1];
  if (p.shape[0] != rows || p.shape[1] != m) {
    return invalid("p must have z's shape " + shape_str(z) + ", got " + shape_str(p));
  }
  if (tau.shape[0] != rows) {
    return invalid("tau must be [rows] = [" + std::to_string(rows) + "], got " + shape_str(tau));
  }
  if (tensors_overlap(p, z) || tensors_overlap(tau, z) || tensors_overlap(p, tau)) {
    return invalid("p, tau and z must not overlap in memory");
  }
  std::vector<int32_t> len(static_cast<size_t>(rows), static_cast<int32_t>(m));
  if (lengths != nullptr) {
    if (static_cast<int64_t>(lengths->size()) != rows) {
      return invalid("lengths has " + std::to_string(lengths->size()) + " entries for " +
                     std::to_string(rows) + " rows");
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = (*lengths)[static_cast<size_t>(r)];
      if (n < 0 || n > m) {
        return invalid("lengths[" + std::to_string(r) + "] = " + std::to_string(n) +
                       " is outside [0, m=" + std::to_string(m) + "]");
      }
      len[static_cast<size_t>(r)] = static_cast<int32_t>(n);
    }
  }
  Kernel<hattn_sparsek_mask_fn> kernel;  // one kernel per family: rows and m are run-time sizes
  std::string reason;
  s = choose_kernel(KernelRequest{}, &kernel, &reason);
  if (!s.ok()) return s;
  if (chosen != nullptr) *chosen = Dispatch{kernel.name(), "k=" + std::to_string(k), 1};
  HalideBuffer zb(z), pb(p), tb(tau), lb(len.data(), {rows});
  return kernel.call(
      zb, lb, static_cast<int32_t>(std::min<int64_t>(k, std::numeric_limits<int32_t>::max())), pb,
      tb);
}

}  // namespace hattn
