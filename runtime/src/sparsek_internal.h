// What the SPARSEK entry points share (sparsek_scoring.cpp, sparsek_attention.cpp,
// sparsek_decoder.cpp): option and scoring checks, the scoring network's rows, the selections
// of every query row and the call into the attention kernel. Not a public header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dispatch.h"
#include "hattn/hattn.h"
#include "validate.h"

namespace hattn {

// k, window and slope of a call (k and w >= 0 and below 2^30, slope finite).
Status check_sparsek_options(const SparsekOptions& o);
// Refuses a view that is not in host memory: sparsek has CPU kernels only.
Status check_sparsek_host(const TensorView& t, const char* name);
// x [B, L, Dm] and w_score [Hkv, Dm] against the call's B, Lk and Hkv.
Status check_scoring(const TensorView& x, const TensorView& w_score, int64_t batch, int64_t lk,
                     int64_t kv_heads);

// u for positions [j0, j0 + n) of batch b, kv head h: w . x_j + slope * j (float accumulation in
// an order the compiler can vectorize; the decoder scores one token the same way).
void score_rows(const TensorView& x, const TensorView& w, float slope, int64_t b, int64_t h,
                int64_t j0, int64_t n, float* u);
float score_one(const float* w, const float* x, int64_t model_dim, float slope, int64_t position);

// Selections of every query row: index / gate [B, Hkv, rows, slots], count [B, Hkv, rows].
struct Selections {
  int64_t slots = 1;
  std::vector<int32_t> index, count;
  std::vector<float> gate;
};

using SparsekKernel = Kernel<hattn_sparsek_fn>;

// The sparsek kernel for an attention call of `shape` (causal, per head dim), or a refusal.
Status choose_sparsek(const SparsekOptions& o, const AttentionShape& shape, SparsekKernel* kernel,
                      std::string* reason);

// Where the kernel's keys are: a whole sequence (q_pos0 = Lk - Lq, no ring), or the decoder's
// bounded cache (the window's ring of w slots first, then the selected keys).
struct SparsekKeys {
  int64_t q_pos0 = 0;  // position of query row 0
  int64_t ring = 0;    // 0: keys are positions; w: the first w slots are a ring
};

// Runs the kernel over q [B, Hq, Lq, D] and k, v (shape: the call's B, Hkv, Lq and D) with the
// selections of every row.
Status run_sparsek_kernel(const SparsekKernel& kernel, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& out, Selections& sel,
                          const AttentionShape& shape, const SparsekOptions& o,
                          const SparsekKeys& keys);

}  // namespace hattn
