// The dispatch table: every compiled kernel (from the generated manifest) and the rule that picks
// one for a call, or refuses with the reason each kernel could not take it.
#pragma once

#include <vector>

#include "HalideRuntime.h"
#include "hattn/hattn.h"
#include "validate.h"

namespace hattn {

// Signature shared by every dense kernel: (user_context, q, k, v, scale, splits, out, lse).
using DenseKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                              float, int32_t, halide_buffer_t*, halide_buffer_t*);

struct KernelEntry {
  KernelInfo info;
  DenseKernelFn fn;
};

const std::vector<KernelEntry>& kernel_table();

// Lq at or below which the decode kernels are chosen. Measured (AVX-512, 2 threads, H=8, D=128,
// Lk=16K): decode vs prefill kernel 5.1/19.9 ms at Lq=1, 16.0/20.2 at Lq=8, 29.5/20.0 at Lq=16.
constexpr int64_t kDecodeMaxLq = 8;

// Picks the dense kernel for `shape` and `options` (honouring options.kernel), or refuses.
Status choose_dense_kernel(const AttentionShape& shape, const AttentionOptions& options,
                           const KernelEntry** chosen, std::string* reason);

// Key splits for a decode call: enough independent tasks to keep every thread busy, each split at
// least a few key blocks long.
int choose_decode_splits(const AttentionShape& shape, int requested);

}  // namespace hattn
