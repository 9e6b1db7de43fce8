// What the paged entry points share (runtime/src/paged.cpp): the validation of a call over a
// batch of paged caches and views of one sequence of a batched tensor. paged_attention is there;
// paged_topk_attention (topk.cpp) and paged_loki_attention (loki.cpp) use the same checks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dispatch.h"
#include "halide_glue.h"
#include "hattn/hattn.h"
#include "validate.h"

namespace hattn {

// "sequence b", for messages.
std::string seq(int64_t b);

// The pages a sequence of `tokens` tokens uses.
int64_t pages_for(int64_t tokens, int64_t page);

// q and out [B, Hq, Lq, D] of one dtype on the CPU, against the cache (its views, page table and
// lengths, every page index a length reaches), lse and the options; fills `shape` (lk: the most
// tokens any sequence holds).
Status check_paged_call(const TensorView& q, const PagedKvCache& cache, const TensorView& out,
                        const AttentionOptions& options, AttentionShape* shape);

// Sequence b's first lengths[b] rows of `pages` ([P, Hkv, S, C]: the cache's k_pages or v_pages, or
// Loki's leading channels) gathered into `scratch` as a contiguous [1, Hkv, lengths[b], C] view.
TensorView gather_pages(const PagedKvCache& c, const TensorView& pages, int64_t b,
                        std::vector<char>* scratch);

// The paged kernel of a selecting variant (topk_paged, loki_paged) for a validated call, or why
// the call gathers instead ("Lq > 8", no paged kernel for its head dim, a contiguous kernel
// forced): *gather_why empty when *kernel takes it. A forced paged kernel that cannot take the
// call is refused, not gathered.
template <typename Fn>
Status choose_paged_kernel(const AttentionShape& shape, bool causal, const std::string& forced,
                           Kernel<Fn>* kernel, std::string* reason, std::string* gather_why) {
  gather_why->clear();
  if (shape.lq > kDecodeMaxLq) {
    *gather_why = "Lq > " + std::to_string(kDecodeMaxLq);
    return Status::success();
  }
  const std::string variant = VariantOf<Fn>::name;
  Status s = choose_kernel(attention_request(shape, causal, forced), kernel, reason);
  if (s.ok() || s.code != StatusCode::unsupported || forced.rfind(variant, 0) == 0) return s;
  *gather_why = "no " + variant + " kernel takes the call";
  return Status::success();
}

// The gathered form of a paged call: per sequence of at least one token, each of `pages`
// gathered (gather_pages, in order), then `call` (the contiguous variant) with its q and out
// rows; *chosen's reason says why and what ran. The sequences of 0 tokens are written as zeros
// after every call ran, so a refusal (the same for every sequence: validation came first)
// precedes any write.
using GatheredCall =
    std::function<Status(const TensorView& q_b, const std::vector<TensorView>& gathered,
                         const TensorView& out_b, Dispatch* chosen)>;
Status run_gathered(const TensorView& q, const PagedKvCache& c,
                    const std::vector<const TensorView*>& pages, const TensorView& out,
                    const std::string& why, Dispatch* chosen, const GatheredCall& call);

// The paged form: per sequence, `call` with its q and out rows, its page-table row cut to the
// pages its length reaches ([1, pages]) and its length ([1]) as buffers, so that a kernel scores
// its own keys, not the longest sequence's; a sequence of 0 tokens is written as zeros.
using PerSequenceCall =
    std::function<Status(HalideBuffer& q_b, HalideBuffer& table, HalideBuffer& length,
                         HalideBuffer& out_b, int64_t len)>;
Status run_per_sequence(const TensorView& q, const PagedKvCache& c, const TensorView& out,
                        const PerSequenceCall& call);

// A selecting variant's options as check_paged_call reads them (its scale, mask, forced kernel
// and finite check; no lse).
inline AttentionOptions paged_options(const ScaledOptions& options, bool causal) {
  AttentionOptions o;
  static_cast<ScaledOptions&>(o) = options;
  o.causal = causal;
  return o;
}

// NaN or infinity in q or in any cached token a sequence's length reaches.
Status check_finite_paged(const TensorView& q, const PagedKvCache& c);

// Rows [0, rows) of every head of `out` [1, H, rows, D] set to zero (the output of rows that see
// no key; 0 is all-zero bits in every dtype), and lse [1, H, rows] to -inf.
void write_empty(const TensorView& out, const TensorView* lse);

// A view of t shifted by `offset` elements with a new shape and strides.
TensorView subview(const TensorView& t, int64_t offset, std::vector<int64_t> shape,
                   std::vector<int64_t> strides);

// Sequence b's rows [1, ...] (q, out, lse) of a batched view.
TensorView sequence_of(const TensorView& t, int64_t b);

}  // namespace hattn
