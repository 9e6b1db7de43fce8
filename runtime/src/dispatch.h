// The dispatch table: every compiled kernel (from the generated manifest) and the rule that picks
// one for a call, or refuses with the reason each kernel could not take it.
#pragma once

#include <vector>

#include "HalideRuntime.h"
#include "hattn/hattn.h"
#include "hattn/kernel_registry.h"
#include "validate.h"

namespace hattn {

// The generated kernels' signatures, one per variant: hattn/kernel_registry.h declares them (the
// registration source checks every kernel against them when it compiles).
using DenseKernelFn = hattn_dense_fn;
using TopkKernelFn = hattn_topk_fn;
using TopkFfnKernelFn = hattn_topk_ffn_fn;
using LokiKernelFn = hattn_loki_fn;
using ElKernelFn = hattn_el_fn;
using LinearKernelFn = hattn_linear_fn;
using SparsekKernelFn = hattn_sparsek_fn;
using SparsekMaskKernelFn = hattn_sparsek_mask_fn;

struct KernelEntry {
  using AnyFn = void (*)();
  KernelInfo info;
  AnyFn fn;  // cast back to the variant's signature (above) before calling
  // Non-empty when the kernel's argument names (Halide's metadata) differ from its variant's
  // HATTN_ARGS_<variant>: the kernel is never called, and refusals quote this.
  std::string signature_problem;
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

// "" when `metadata`'s arguments are named `expected` (comma-separated) in that order (Halide's
// uniquifying suffixes such as "out$5" ignored), else what differs.
std::string signature_mismatch(const halide_filter_metadata_t* metadata, const char* expected);

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
