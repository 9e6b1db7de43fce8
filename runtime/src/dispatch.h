// The dispatch table: every compiled kernel (from the generated manifest) and the rule that picks
// one for a call, or refuses with the reason each kernel could not take it.
#pragma once

#include <vector>

#include "HalideRuntime.h"
#include "hattn/hattn.h"
#include "validate.h"

namespace hattn {

// Signatures of the generated kernels, per variant (user_context first):
//   dense:    (q, k, v, scale, splits, out, lse)
//   topk:     (q, k, v, scale, k, out)
//   topk_ffn: (x, w1, w2t, k, y)
//   loki:     (q, k_rot, k_lead, v, basis, scale, rank, k, out)
using DenseKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                              float, int32_t, halide_buffer_t*, halide_buffer_t*);
using TopkKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                             float, int32_t, halide_buffer_t*);
using LokiKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                             halide_buffer_t*, halide_buffer_t*, float, int32_t, int32_t,
                             halide_buffer_t*);
// el:     (q, hs, wk, wv, bv, lengths, heads, beam, causal, out)
// linear: (x, w, bias, scale, y)
using ElKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                           halide_buffer_t*, halide_buffer_t*, halide_buffer_t*, int32_t, int32_t,
                           bool, halide_buffer_t*);
using LinearKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                               float, halide_buffer_t*);
//   sparsek:  (q, k, v, sel_index, sel_gate, sel_count, scale, window, q_pos0, ring, gate_logit,
//              out);  sparsek_mask: (z, len, k, mask, tau)
using SparsekKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                                halide_buffer_t*, halide_buffer_t*, halide_buffer_t*, float,
                                int32_t, int32_t, int32_t, int32_t, halide_buffer_t*);
using SparsekMaskKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, int32_t,
                                    halide_buffer_t*, halide_buffer_t*);
using TopkFfnKernelFn = int (*)(const void*, halide_buffer_t*, halide_buffer_t*, halide_buffer_t*,
                                int32_t, halide_buffer_t*);

struct KernelEntry {
  using AnyFn = void (*)();
  KernelInfo info;
  AnyFn fn;  // cast back to the variant's signature (above) before calling
  template <typename Fn>
  Fn as() const {
    return reinterpret_cast<Fn>(fn);
  }
};

// What a call asks of a kernel.
struct KernelRequest {
  std::string variant;  // "dense", "topk", "topk_ffn"
  bool causal = false;
  bool lse = false;        // the caller wants the log-sum-exp
  std::string forced;      // a kernel name the caller forced ("" = choose)
  bool has_phases = true;  // prefill and decode kernels, chosen by Lq
};

// Picks a kernel of request.variant for `shape`, or refuses saying why each kernel could not.
Status choose_kernel(const KernelRequest& request, const AttentionShape& shape,
                     const KernelEntry** chosen, std::string* reason);

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
