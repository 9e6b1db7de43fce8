// What the paged entry points share (runtime/src/paged.cpp): the validation of a call over a
// batch of paged caches and views of one sequence of a batched tensor. paged_attention is there;
// paged_topk_attention (topk.cpp) and paged_loki_attention (loki.cpp) use the same checks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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

// Prefill over pages (Lq above the decode threshold) for the selecting variants: per sequence of
// at least one token, each of `pages` gathered (gather_pages, in order), then `call` with its
// q and out rows; the sequences of 0 tokens are written as zeros after every call ran, so a
// refusal (the same for every sequence: validation came first) precedes any write.
using GatheredCall =
    std::function<Status(int64_t b, const TensorView& q_b, const std::vector<TensorView>& gathered,
                         const TensorView& out_b)>;
Status run_gathered(const TensorView& q, const PagedKvCache& c,
                    const std::vector<const TensorView*>& pages, const TensorView& out,
                    const GatheredCall& call);

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
