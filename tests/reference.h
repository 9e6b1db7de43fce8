// The oracle for every dense-attention test: plain softmax attention in double precision.
//
// It deliberately shares no code with the library: it reads raw float pointers with explicit
// strides, computes every score in double, takes a max over the visible keys, sums exponentials
// (two passes), and writes a dense double result. Slow and obvious on purpose.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace hattn_test {

// Sizes of one attention call: q [B, Hq, Lq, D], k and v [B, Hkv, Lk, D].
struct AttnShape {
  int64_t batch = 1;
  int64_t q_heads = 1;
  int64_t kv_heads = 1;
  int64_t lq = 1;
  int64_t lk = 1;
  int64_t head_dim = 64;
};

// Element strides (outermost first: B, H, L, D) of q, k and v.
struct AttnStrides {
  std::array<int64_t, 4> q{};
  std::array<int64_t, 4> k{};
  std::array<int64_t, 4> v{};
};

// Row-major strides of a dense [B, H, L, D] tensor.
std::array<int64_t, 4> dense_strides(int64_t b, int64_t h, int64_t l, int64_t d);
// The strides of q, k and v of `s`, each a dense tensor.
AttnStrides dense_strides(const AttnShape& s);

// out = softmax(scale * q k^T, over visible keys) v for every (batch, query head, query row).
//   * query head h reads kv head h / (Hq / Hkv);
//   * causal: key j is visible to query i iff j <= i + (Lk - Lq) (bottom-right alignment);
//   * a row with no visible key gets zeros in `out` and -inf in `lse`.
// `out` is resized to B*Hq*Lq*D (dense, row-major) and `lse` (if not null) to B*Hq*Lq, holding
// max_j s_j + log(sum_j exp(s_j - max)).
void reference_attention(const float* q, const float* k, const float* v, const AttnShape& shape,
                         const AttnStrides& strides, bool causal, double scale,
                         std::vector<double>* out, std::vector<double>* lse);

// Rows whose `gap` (below) is smaller than this (in scaled-score units) may select differently in
// fp32 and in double: the sparse variants' tests and the autotuner's runner leave them out.
constexpr double kMinGap = 1e-5;

// Top-k attention in double precision: per row, the visible keys sorted by (score descending,
// index ascending), the first min(k, visible) kept, softmax and the V sum over those only.
// `gap` (if not null) gets, per row, the distance between the last kept and the first dropped
// score (+inf when nothing is dropped): rows with a tiny gap can legitimately select differently
// in fp32, and tests leave them out (and count them).
void reference_topk_attention(const float* q, const float* k, const float* v,
                              const AttnShape& shape, const AttnStrides& strides, bool causal,
                              double scale, int64_t topk, std::vector<double>* out,
                              std::vector<double>* gap);

// The top-k ReLU FFN in double: h = x W1^T per token, keep the k largest h (ties: lower index),
// y = sum relu(h_t) W2^T[t]. x [T, D], w1 [d_ff, D], w2t [d_ff, D], all dense row-major.
void reference_topk_ffn(const float* x, const float* w1, const float* w2t, int64_t tokens,
                        int64_t dim, int64_t d_ff, int64_t topk, std::vector<double>* y,
                        std::vector<double>* gap);

// Loki attention in double: qh = q P (P = basis[h / group], [D, D] row-major, dense), approximate
// scores scale * qh[:r] . kh_j[:r] on the rotated keys k_rot, the min(k, visible) largest kept
// (score descending, index ascending), softmax of the exact scores scale * qh . kh_j over those,
// V sum. `gap` as in reference_topk_attention, on the approximate scores.
void reference_loki_attention(const float* q, const float* k_rot, const float* v,
                              const float* basis, const AttnShape& shape,
                              const AttnStrides& strides, bool causal, double scale, int64_t rank,
                              int64_t topk, std::vector<double>* out, std::vector<double>* gap);

}  // namespace hattn_test

namespace hattn_test {

// One attention layer's weights on the host: W [Dm out, Dm in] row-major (y = x W^T + b).
struct MhaHostWeights {
  int64_t dm = 0;
  std::vector<float> wq, bq, wk, bk, wv, bv, wo, bo;
};

// Standard multi-head attention in double, independent of hattn: x [rows, T, Dm] with rows =
// B * beam, memory [B, N, Dm]; per head q = s (x Wq^T + bq), k_j = Wk Hs_j + bk, v_j likewise,
// softmax over visible j (j < len_b, and j <= t + len_b - T when causal), a head that sees no key
// outputs 0; y = concat(o_h) Wo^T + bo. lengths may be null (all N).
void reference_mha(const float* x, const float* memory, const MhaHostWeights& w, int64_t rows,
                   int64_t tokens, int64_t mem_len, int64_t heads, int64_t beam, bool causal,
                   const int32_t* lengths, double scale, float* y);

// The linear layer in double: y[n, o] = scale * (sum_i x[n, i] w[o, i] + bias[o]) for one row
// x [in] of the input, w [out, in] row-major; y resized to out.
void reference_linear_row(const float* x, const float* w, const float* bias, int64_t in_dim,
                          int64_t out_dim, double scale, std::vector<double>* y);

// --- SPARSEK (Lou et al. 2024) ---------------------------------------------------------------

// The roots of f(t) = sum_j clip(z_j - t, 0, 1) = k over z[0, n): the SparseK projection of the
// row onto {0 <= p <= 1, sum p = k} is p = clip(z - t, 0, 1) for every t in [lo, hi]. One point
// when some entry is free at the root (0 < z_j - t < 1); an interval when f is flat there (every
// p is 0 or 1). k <= 0: [max z, +inf); k >= n: (-inf, min z - 1] (n = 0: the whole line).
// Computed without a bisection: the 2n breakpoints (z_j - 1, z_j) sorted, then a sweep over the
// pieces between them, each linear with the free set F and saturated set S known, until the piece
// whose line reaches k: t = (sum_F z + |S| - k) / |F|, in long double.
struct SparsekRoots {
  double lo, hi;
  int64_t free_count;  // |F| at the root (0: f flat there)
};
SparsekRoots reference_sparsek_roots(const std::vector<double>& z, int64_t n, int64_t k);

// One root of the above (the midpoint of a flat interval, or its finite end). k >= n: -inf (all
// ones); k <= 0: +inf (all zeros).
double reference_sparsek_tau(const std::vector<double>& z, int64_t n, int64_t k);

// The SparseK operator's answer for one row of length n (z, p and the returned tau) against
// reference_sparsek_roots: "" when right, else what is wrong. The tests and the fuzz target share
// it. Stated tolerances, with u the float spacing at the root and zmax = max(1, |z_j|):
//   * p = clip(z - tau, 0, 1) exactly as fp32 arithmetic gives it at the returned tau, in [0, 1];
//   * k <= 0: tau = +inf; k >= n: tau = -inf;
//   * tau within the root interval widened by u + n 2^-52 zmax (the bisection sums f in double);
//   * a flat root (every p 0 or 1) gives sum p = k exactly; otherwise |sum p - k| <= n (u + 2^-23)
//     (tau rounded to a float moves each free p by at most u; each p's subtraction rounds by at
//     most 2^-24). Where u >= 1/2 (|root| >= 2^23) floats are too sparse for any float tau to give
//     sum p = k (two ties at FLT_MAX with k = 1 need tau = FLT_MAX - 0.5): there the sum bound is
//     n (u + 2^-23), vacuous by construction, and only tau's position and p's formula bind.
enum class SparsekRootKind { zero_k, all_ones, flat, free };
std::string check_sparsek_row(const float* z, const float* p, int64_t n, int64_t k, float tau,
                              SparsekRootKind* kind = nullptr);

// splitmix64: a small deterministic generator, so that the same seed gives the same rows in the
// tests and in the fuzz target.
struct SplitMix64 {
  uint64_t state;
  uint64_t next();
  int64_t below(int64_t n);  // uniform in [0, n), n >= 1
  double uniform();          // [0, 1)
};

// Rows built to sit on the boundaries of selections that work on float values and their bit
// patterns (the SparseK operator's bisection over ordered keys, topk's radix select, the sweep):
// integer-spaced values (no fractional entry at the root), the k-th largest just above a power of
// two below k, all-0/1 solutions, ties (at the k-th place too), breakpoints that coincide
// (z_i = z_j - 1), tiny (subnormal) and huge (up to +-FLT_MAX) magnitudes, rows of length 1.
// Each row comes with the k to ask for (k = 0, 1, n - 1, n, n + 3 and in between appear).
struct BoundaryRow {
  std::string kind;
  std::vector<float> z;
  int64_t k;
};
// `seed` drives the random parts (the caller prints it); max_len bounds each row's length.
std::vector<BoundaryRow> boundary_rows(uint64_t seed, int64_t max_len);

// The reference of a top-k selection: the min(k, m) largest of values[0, m), ties by the lower
// index (a stable sort of the indices by value, descending; -0 and +0 compare equal, as
// scores). Returned in ascending index order.
std::vector<int64_t> stable_sort_topk(const std::vector<double>& values, int64_t m, int64_t k);

// A softmax scale that feeds a row z through attention unchanged in order: scale = 2^e, e <= 0
// the largest with 2^e (max z - min z) <= 64, so that no selected weight falls below exp(-64)
// (fast_exp is cut to 0 below -87, and out = w / sum stays a normal float), and every 2^e z_j
// exact in fp32 (no rounding into the subnormals), so that order and ties are z's own. false,
// with the reason, when no such scale exists. Every boundary row scales exactly, the +-FLT_MAX
// ones too (to +-32, with 1 at 2^-123, still normal).
bool exact_boundary_scale(const std::vector<float>& z, float* scale, std::string* why);

// The scoring network in double, rounded to float: u[b, h, j] = w_score[h] . x[b, j] + slope * j.
// x [B, L, Dm] and w_score [Hkv, Dm] dense row-major; u resized to B * Hkv * L.
void reference_sparsek_scores(const float* x, const float* w_score, int64_t batch, int64_t kv_heads,
                              int64_t len, int64_t dm, double slope, std::vector<float>* u);

// SPARSEK attention in double over dense row-major q [B, Hq, Lq, D], k and v [B, Hkv, Lk, D] and
// scores u [B, Hkv, Lk]: query i at p_i = i + Lk - Lq sees its window (p_i - w, p_i] with gate 1
// and, of the keys j <= p_i - w, the min(k, candidates) largest u (ties: lower j) with gate
// min(1, u_j - tau) where positive; softmax over those (gate multiplying the value, or log gate
// added to the score when `logit`). A row that sees nothing is zero. `gap` per row: the smallest
// distance of a selection decision to its boundary (|u - tau|, k-th vs (k+1)-th u).
void reference_sparsek_attention(const float* q, const float* k, const float* v, const float* u,
                                 const AttnShape& shape, int64_t budget, int64_t window, bool logit,
                                 double scale, std::vector<double>* out, std::vector<double>* gap);

}  // namespace hattn_test
