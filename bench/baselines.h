// Baselines measured in the same run as hattn: what a user would otherwise write.
#pragma once

#include <cstdint>
#include <vector>

namespace hattn_bench {

struct Shape {
  int64_t batch = 1, heads = 8, lq = 2048, lk = 2048, head_dim = 64;
  bool causal = false;
  int64_t kv_heads = 0;  // K and V heads (grouped-query attention); 0: as many as `heads`
  int64_t kv() const { return kv_heads > 0 ? kv_heads : heads; }
};

// Unfused attention on OpenBLAS: per head and per block of 256 queries, S = scale Q K^T (sgemm),
// row softmax, O = P V (sgemm). Causal blocks multiply only the visible key prefix.
// heads_parallel: `threads` workers take whole heads with single-threaded BLAS (the strong
// variant); otherwise heads run one after another with `threads`-thread BLAS.
void openblas_attention(const Shape& s, const float* q, const float* k, const float* v, float* out,
                        int threads, bool heads_parallel);

// Decode (few queries, long keys) on OpenBLAS: per head, s = scale K q (sgemv), softmax,
// o = V^T p (sgemv). `threads` workers take whole heads with single-threaded BLAS.
void openblas_decode(const Shape& s, const float* q, const float* k, const float* v, float* out,
                     int threads);

// C[M, N] = A[M, K] B[N, K]^T with `threads` BLAS threads (the Q K^T shape).
void openblas_sgemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                       int threads);

// C[M, N] = A[M, K] B[K, N] with `threads` BLAS threads (the P V shape).
void openblas_sgemm_nn(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c,
                       int threads);

// Sums `n` floats with `threads` threads (a pure read of memory); returns the sum.
double array_read(const float* data, int64_t n, int threads);
// The same read in runs of `run` floats taken in `order` (run indices; each thread takes its own
// share of the order in turn): the rate a paged cache's pages can be read at by a plain loop,
// which falls with the run's length.
double runs_read(const float* data, int64_t run, const std::vector<int64_t>& order, int threads);

// out[t] = sum over s < k of weight[t * k + s] * rows[index[t * k + s]] (rows of row_len floats):
// the top-k FFN's second half (each token sums its k selected rows of W2^T) as a plain
// vectorized loop, `threads` threads over the tokens: the rate at which this machine delivers a
// selection's rows to a kernel that reads each token's rows for that token alone. prefetch > 0:
// software-prefetches the row that many slots ahead (every cache line of it).
void rows_gather_sum(const float* rows, int64_t row_len, const int32_t* index, const float* weight,
                     int64_t tokens, int64_t k, float* out, int threads, int prefetch = 0);

// The machine's fp32 FMA peak, measured: `threads` threads each run `rounds` rounds of 12
// independent chains of 16-float fused multiply-adds (enough chains to cover the FMA latency on
// every x86 and ARM core hattn targets; compiled for this CPU's widest vectors). Returns the
// floating-point operations done; `sink` receives a value that depends on all of them.
double fma_peak(int threads, int64_t rounds, float* sink);

}  // namespace hattn_bench
