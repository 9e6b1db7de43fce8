// hattn: attention kernels generated ahead of time by Halide, behind a small dispatching runtime.
//
// This header is the whole public API. It includes no Halide header: the generated kernels are
// linked as plain objects and users never see LLVM or Halide's compiler.
//
// Conventions (see README.md):
//   * Tensors are row-major [B, H, L, D] with D contiguous (stride 1); the other strides are free.
//   * Query head h reads key/value head h / (Hq / Hkv)  (GQA; MQA when Hkv == 1).
//   * Causal masks are aligned bottom-right: key j is visible to query i iff j <= i + (Lk - Lq).
//   * A query row with no visible key outputs zeros (and log-sum-exp -inf).
//   * Data pointers must be aligned to the element (4 bytes, 2 for bf16/f16); a view may hold at
//   most 2^31-1
//     elements with element offsets up to 2^31-1 (the kernels index with 32 bits). Both are
//     checked: anything else is refused before the call reads or writes memory.
//   * Every entry point returns a Status; none aborts or throws (README "Guarantees").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace hattn {

enum class DType { f32, f16, bf16 };
enum class Device { cpu, cuda };

const char* to_string(DType t);
const char* to_string(Device d);

// fp32 to a 16-bit dtype (bf16 or f16), rounded to nearest even (f16 overflows to infinity), and
// back (exact), for callers that stage 16-bit tensors from fp32 data.
uint16_t to_16bit(DType dtype, float x);
float from_16bit(DType dtype, uint16_t bits);

// A non-owning view of a strided tensor. Shapes and strides are in elements, outermost first
// (shape[0] is B for a [B, H, L, D] tensor).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int rank = 0;
  int64_t shape[4] = {0, 0, 0, 0};
  int64_t strides[4] = {0, 0, 0, 0};

  // A dense row-major view of the given shape (rank = shape.size(), at most 4).
  static TensorView contiguous(float* data, std::vector<int64_t> shape);
  static TensorView contiguous(const float* data, std::vector<int64_t> shape);
  // A view with explicit strides (in elements).
  static TensorView strided(float* data, std::vector<int64_t> shape, std::vector<int64_t> strides);
  static TensorView strided(const float* data, std::vector<int64_t> shape,
                            std::vector<int64_t> strides);
  // The same over elements of `dtype` (bf16, f16: 16-bit words; shapes and strides in elements).
  static TensorView contiguous(void* data, DType dtype, std::vector<int64_t> shape);
  static TensorView contiguous(const void* data, DType dtype, std::vector<int64_t> shape);
  static TensorView strided(void* data, DType dtype, std::vector<int64_t> shape,
                            std::vector<int64_t> strides);

  int64_t numel() const;
  std::string describe() const;  // "f32 cpu [1, 8, 2048, 64] strides [..]"
};

enum class StatusCode {
  ok = 0,
  invalid_argument,  // shapes, strides, dtype, null pointers, options out of range
  unsupported,       // valid call that no compiled kernel can take (says why per kernel)
  non_finite_input,  // only when AttentionOptions::check_finite is set
  kernel_error,      // the generated kernel reported an error (message is Halide's)
  no_device,         // a device tensor was passed and no such device is usable
};

struct Status {
  StatusCode code = StatusCode::ok;
  std::string message;
  bool ok() const { return code == StatusCode::ok; }
  static Status success() { return {}; }
};

const char* to_string(StatusCode c);

// What the options of every call share.
struct CallOptions {
  // Force a kernel by name (as printed by list_kernels()); the call is refused with the reason if
  // that kernel cannot take it. Empty: the dispatcher chooses.
  std::string kernel;
  // Scan the call's inputs for NaN/Inf before running and refuse with non_finite_input if any is
  // found. Off by default because it reads the inputs once more; without it, non-finite inputs
  // give non-finite outputs but never a crash.
  bool check_finite = false;
};

// ... and those of every call with a softmax scale.
struct ScaledOptions : CallOptions {
  // Softmax scale; a value <= 0 or NaN is refused. has_scale = false means 1/sqrt(D) (el:
  // 1/sqrt(Dm / heads)).
  bool has_scale = false;
  float scale = 0.f;
};

struct AttentionOptions : ScaledOptions {
  bool causal = false;
  // Optional log-sum-exp output, fp32 [B, Hq, Lq] (any strides, innermost stride 1):
  // lse = max_j s_ij + log(sum_j exp(s_ij - max)) over visible keys, -inf where none is visible.
  const TensorView* lse = nullptr;
  // Decode only: number of key splits processed in parallel (0 = chosen from the shape).
  int decode_splits = 0;
  // CUDA tensors only: the CUcontext and CUstream to run in. Null context: the context current on
  // the calling thread, else device 0's primary context (the CUDA runtime's and PyTorch's). Null
  // stream: the legacy default stream. The call is asynchronous on that stream, like a CUDA
  // library call: synchronize before reading `out` from the host.
  void* cuda_context = nullptr;
  void* cuda_stream = nullptr;
};

// What the dispatcher chose for a call (filled on success and on kernel errors).
struct Dispatch {
  std::string kernel;  // e.g. "dense_prefill_causal_d64_f32_x86" (the name is the key)
  std::string reason;  // why this kernel, e.g. "Lq=2048 > decode threshold 8; D=64 specialized"
  int decode_splits = 0;
};

// out = softmax(scale * q k^T [masked]) v, per (batch, query head).
// q [B, Hq, Lq, D], k and v [B, Hkv, Lk, D], out [B, Hq, Lq, D], all of one dtype: fp32, or on
// CPUs bf16 or f16 (products accumulate in fp32, the softmax state and lse are fp32, out is
// rounded to the dtype once, last); in CPU decode (Lq <= 8) also an fp32 q and out over a bf16
// or f16 k and v (nothing rounded but the cache itself); all on the CPU or all in
// CUDA device memory (TensorView::device; then lse too). CUDA calls need a build with CUDA
// kernels and a usable device, else they return StatusCode::no_device saying which is missing.
// Thread-safe: may be called from several threads at once.
Status attention(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const AttentionOptions& options = {},
                 Dispatch* chosen = nullptr);

// Which kernel attention() would run for these arguments, or a refusal that says for each
// compiled kernel why it cannot take the call. Validates exactly as attention() does.
Status plan_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const AttentionOptions& options, Dispatch* chosen);

// --- batches as an inference engine holds them: paged KV caches, packed (ragged) sequences ---

// The KV caches of a batch of sequences in fixed-size pages, shared by every sequence's pages.
// k_pages and v_pages are [P, Hkv, S, D] views (S = the page size in tokens, D innermost; the
// other strides are free, so a cache stored [P, S, Hkv, D] passes the shape [P, Hkv, S, D] with
// its head and slot strides swapped). Sequence b holds lengths[b] tokens; its token t lives in
// page page_table[b * pages_per_seq + t / S], slot t % S. Pages past a sequence's length are
// not read, so their table entries may hold anything. CPU tensors, the dtype of the call.
struct PagedKvCache {
  TensorView k_pages, v_pages;
  const int32_t* page_table = nullptr;  // [batch, pages_per_seq], row-major
  int64_t pages_per_seq = 0;            // the table's row length, >= 1
  const int32_t* lengths = nullptr;  // [batch] tokens per sequence, 0 <= lengths[b] <= the table's
  int64_t batch = 0;                 // sequences (q's B)
};

// attention() of q [B, Hq, Lq, D] (each sequence's Lq newest tokens, whose K and V are already in
// the cache) over each sequence's cached tokens: sequence b's out equals attention() over the
// first lengths[b] tokens of its pages gathered into [1, Hkv, lengths[b], D], causal aligned
// bottom-right per sequence. out [B, Hq, Lq, D]; options as attention() (lse [B, Hq, Lq]).
// Lq <= decode_threshold() runs one kernel over the whole batch, reading the pages in place (GQA:
// each kv head's pages are read once for its query heads); longer Lq (chunked prefill) gathers
// each sequence's keys and runs attention()'s prefill kernel. Refuses a page index out of range,
// a length beyond the pages given, heads that do not match, naming the sequence and the index;
// a refused call writes nothing.
Status paged_attention(const TensorView& q, const PagedKvCache& cache, const TensorView& out,
                       const AttentionOptions& options = {}, Dispatch* chosen = nullptr);

// Writes T new tokens' keys and values, k and v [B, Hkv, T, D] (the cache's dtype), into each
// sequence's pages at positions lengths[b] .. lengths[b] + T - 1 (the page table must already
// hold those pages). lengths is not changed: the caller advances it by T after the call.
Status paged_append(const TensorView& k, const TensorView& v, const PagedKvCache& cache);

// Sequences of different lengths packed along the tokens (FlashAttention's varlen layout):
// q [Tq, Hq, D], k and v [Tk, Hkv, D], out [Tq, Hq, D]; sequence b's queries are rows
// q_offsets[b] .. q_offsets[b + 1] - 1 and its keys rows k_offsets[b] .. k_offsets[b + 1] - 1
// (batch + 1 non-decreasing offsets each, from 0 to Tq and to Tk). Each sequence is attention()
// of its rows (causal aligned bottom-right per sequence); lse, when given, is [1, Hq, Tq].
// options.kernel forces the kernel of every sequence; `chosen` reports the last sequence's.
Status ragged_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const int32_t* q_offsets, const int32_t* k_offsets,
                        int64_t batch, const AttentionOptions& options = {},
                        Dispatch* chosen = nullptr);

// --- topk: top-k attention and the top-k feed-forward layer (Gupta et al. 2021) ---------------

struct TopkOptions : ScaledOptions {
  int64_t k = 0;  // keys kept per query row, >= 1; clamped to the row's visible key count
  bool causal = false;
};

// out_i = sum over the k highest-scoring visible keys j of softmax(scale * q_i . k_j) v_j, with
// ties broken by the lower key index. Same tensors and conventions as attention() (CPU; fp32,
// bf16 or f16, with fp32 scores, selection and softmax).
// Memory is O(rows per chunk * Lk + Lq * k), never Lq x Lk. k >= the visible count is exact
// dense attention. Dispatch::reason says when k was clamped.
Status topk_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TopkOptions& options,
                      Dispatch* chosen = nullptr);

// topk_attention() of q [B, Hq, Lq, D] over each sequence's cached tokens in pages (PagedKvCache,
// as paged_attention): sequence b's out equals topk_attention() over the first lengths[b] tokens
// of its pages gathered into [1, Hkv, lengths[b], D], causal aligned bottom-right per sequence, k
// clamped to its length (a sequence of 0 tokens outputs zeros). Lq <= decode_threshold() at a
// head dim with a paged kernel (hattn's build: 64 and 128): one decode kernel per sequence reads
// its pages in place (GQA: each kv head's pages once for its query heads); otherwise each
// sequence's pages are gathered for topk_attention(). Refusals as paged_attention; a refused
// call writes nothing.
Status paged_topk_attention(const TensorView& q, const PagedKvCache& cache, const TensorView& out,
                            const TopkOptions& options, Dispatch* chosen = nullptr);

struct TopkFfnOptions : CallOptions {
  int64_t k = 0;  // hidden units kept per token, >= 1; clamped to d_ff
};

// The ReLU feed-forward layer y = relu(x W1^T) W2^T keeping, per token, only the k largest
// pre-activations of x W1^T. x [T, D], w1 [d_ff, D], w2t [d_ff, D] = W2^T (W2 being [D, d_ff]:
// store it transposed once, so the k selected rows are contiguous), y [T, D]. k >= d_ff is the
// dense FFN.
Status topk_ffn(const TensorView& x, const TensorView& w1, const TensorView& w2t,
                const TensorView& y, const TopkFfnOptions& options, Dispatch* chosen = nullptr);

// --- loki: low-rank key scoring with top-k attention (Singhania et al. 2024) ------------------

struct LokiOptions : ScaledOptions {
  // r: channels of the rotated keys used for the approximate scores, in [1, D]. 0: use
  // rank_fraction (d_f), r = max(1, round(d_f * D)).
  int64_t rank = 0;
  double rank_fraction = 0;
  // k: keys kept per query row, >= 1 (clamped to the row's visible count). 0: use k_fraction
  // (k_f), k = max(1, round(k_f * Lk)).
  int64_t k = 0;
  double k_fraction = 0;
  bool causal = false;
  // Check that every head's basis is orthonormal (max |P^T P - I| <= basis_tolerance) before
  // running: the exact scores rely on qh . kh = q . k. It costs O(Hkv D^3) per call (about 1 ms
  // at Hkv=8, D=128): check once with loki_check_basis (hattn/loki_prep.h) when the basis is
  // loaded and turn this off in a decode loop.
  bool check_basis = true;
  double basis_tolerance = 1e-4;
  // Optional [B, Hkv, Lk, R] (R >= r, innermost stride 1): the first R channels of k_rot stored
  // with each key's channels contiguous and rows R apart, read by the approximate scores
  // instead of k_rot. Keep it next to the cache when decode speed matters: on CPUs, reading r
  // of every D channels of k_rot costs nearly as much as reading whole rows (measured: 128K
  // keys, D=128: r=16 strided 3.3 ms, whole rows 4.2 ms), so without it Loki saves few bytes.
  // It must hold the same values as k_rot's leading channels (not checked): different values
  // change which keys are selected, not the exact softmax over them.
  const TensorView* k_lead = nullptr;
};

// Loki decode (and full-sequence, for evaluation): q [B, Hq, Lq, D] as usual (not rotated),
// k_rot [B, Hkv, Lk, D] the key cache rotated into the per-kv-head PCA basis (k P, see
// loki_rotate), v [B, Hkv, Lk, D] not rotated, basis [Hkv, D, D] with basis[h][e][c] component
// e of principal axis c (as loki_calibrate writes it), out [B, Hq, Lq, D]. Per row: approximate
// scores over the first r rotated channels, the k largest kept (ties by the lower index),
// softmax of the exact scores over those and their V sum. k >= Lk is exact dense attention for
// any r; r = D is exact top-k attention. Dispatch::reason reports r and k as used. q, k_rot,
// k_lead, v and out in fp32, bf16 or f16 (the basis fp32 always).
Status loki_attention(const TensorView& q, const TensorView& k_rot, const TensorView& v,
                      const TensorView& basis, const TensorView& out, const LokiOptions& options,
                      Dispatch* chosen = nullptr);

// loki_attention() over paged caches (PagedKvCache, as paged_attention): cache.k_pages holds the
// rotated keys, cache.v_pages the values; options.k_lead, when given, is the leading-channel copy
// in the same pool's pages and slots, [P, Hkv, S, R] (r <= R <= D, innermost stride 1). Sequence
// b's out equals loki_attention() over its first lengths[b] tokens gathered, with k (or
// k_fraction x lengths[b]) clamped to its length; a sequence of 0 tokens outputs zeros.
// Lq <= decode_threshold() at a head dim with a paged kernel (hattn's build: 128): one decode
// kernel per sequence reads its pages in place; otherwise each sequence's pages are gathered for
// loki_attention(). check_finite covers q, the keys and values a length reaches and the basis.
Status paged_loki_attention(const TensorView& q, const PagedKvCache& cache, const TensorView& basis,
                            const TensorView& out, const LokiOptions& options,
                            Dispatch* chosen = nullptr);

// A Loki count given as a fraction of n, as LokiOptions resolves rank_fraction (n = D) and
// k_fraction (n = Lk): max(1, round(fraction * n)). For tools that report what a call will use.
int64_t loki_count(double fraction, int64_t n);

// --- el: EL-attention (Yan et al. 2021) and the standard multi-head path it replaces ---------
// One attention layer's weights in PyTorch's nn.MultiheadAttention convention: y = x W^T + b with
// every W [Dm out, Dm in] (rank 2, innermost stride 1) and every b [Dm] (rank 1). A bias given as
// a default-constructed view (rank 0) is zero. fp32, CPU.
struct MhaWeights {
  TensorView wq, bq, wk, bk, wv, bv, wo, bo;
};

struct ElOptions : ScaledOptions {  // check_finite scans x, memory and the weights
  int64_t heads = 0;                // H >= 1 with Dm % H == 0; Dh = Dm / H
  int64_t beam = 1;  // x holds B * beam rows (sample b's beams are rows b*beam .. b*beam+beam-1)
  // Decoder self-attention form: token t of a query block of T tokens sees memory rows
  // j <= t + (len_b - T) (aligned bottom-right, as attention()'s causal mask).
  bool causal = false;
  // Optional [B] visible memory rows per sample, each in [0, N] (key padding): sample b's memory
  // is its first len_b rows. Null: every sample sees all N. A sample with len_b = 0 (or a causal
  // row that sees nothing) gets a zero attention output, so its y rows are bo.
  const int32_t* key_lengths = nullptr;
};

// Multi-head attention of queries x [B * beam, T, Dm] over a memory [B, N, Dm] that all beams of
// a sample share (an encoder output, or a decoder layer's cached inputs), computed the EL way:
// each query head is expanded into model space (Wk_h^T q_h) and attends over the memory itself;
// Wv is applied after the softmax. No per-head K/V cache exists and the memory is read once for
// all heads and beams. y [B * beam, T, Dm]. Equals standard MHA (mha_attention) up to fp32
// rounding; not valid with rotary embeddings. Dm >= 64 and a multiple of 16 (the kernels' tiles).
Status el_attention(const TensorView& x, const TensorView& memory, const MhaWeights& weights,
                    const TensorView& y, const ElOptions& options, Dispatch* chosen = nullptr);

// The standard path, built from hattn's linear layer and attention(): the cache a standard
// decoder holds, k_cache = memory Wk^T + bk and v_cache = memory Wv^T + bv, each [Bc, N, Dm]
// (heads side by side: [Bc, N, H, Dh], what attention() reads with head stride Dh). Bc = B.
// Dm must be a multiple of 16 here too.
Status mha_project_memory(const TensorView& memory, const MhaWeights& weights,
                          const TensorView& k_cache, const TensorView& v_cache);
// Standard MHA over such a cache: q projection, attention() per head, output projection.
// The cache batch Bc is B * beam (one cache per beam, as beam search keeps it) or B (shared by a
// sample's beams; non-causal, or beam = 1). options as for el_attention (kernel: an attention()
// kernel name).
Status mha_attention_cached(const TensorView& x, const TensorView& k_cache,
                            const TensorView& v_cache, const MhaWeights& weights,
                            const TensorView& y, const ElOptions& options);
// Standard MHA without a cache: projects the memory on every call, then as above.
Status mha_attention(const TensorView& x, const TensorView& memory, const MhaWeights& weights,
                     const TensorView& y, const ElOptions& options);

// --- sparsek: SPARSEK attention (Lou et al. 2024) ----------------------------------------

enum class SparsekGate {
  value,  // the gate multiplies the value: o = sum softmax_S(s q.k) g v  (the default)
  logit,  // log g is added to the score instead
};

struct SparsekOptions : ScaledOptions {  // check_finite also scans x, w_score / u
  int64_t k = 0;       // budget: keys selected per query among those older than the window, >= 0
  int64_t window = 0;  // w >= 0: the w newest visible keys (the query's own included), gate 1
  float slope = 0.f;   // delta in u_j = w_score . x_j + delta * j (finite)
  SparsekGate gate = SparsekGate::value;
};

// The scoring network: u[b, h, j] = w_score[h] . x[b, j] + slope * j. x [B, L, Dm], w_score
// [Hkv, Dm], u [B, Hkv, L] (fp32 CPU, innermost stride 1).
Status sparsek_scores(const TensorView& x, const TensorView& w_score, float slope,
                      const TensorView& u);

// The SparseK operator on rows: p = clip(z - tau, 0, 1), tau the root of sum_j p_j = k over the
// first lengths[r] entries of row r (all m when lengths is null); p = 0 past a row's length.
// z and p [rows, m], tau [rows] (rank 1). Exact: a bisection down to adjacent floats (f summed in
// double), then the closed form on the free set, rounded to the nearer float; p = clip(z - tau,
// 0, 1) in fp32 at the returned tau, and a root where every p is 0 or 1 gives sum p = k exactly.
// k = 0 gives p = 0 (tau = +inf), k >= length all ones (tau = -inf). Where |tau| >= 2^23 floats
// are 1 or more apart and no float tau need give sum p = k (ties at FLT_MAX): tau is the float
// nearest the root there. Cost O(34 m) per row.
Status sparsek_mask(const TensorView& z, const std::vector<int64_t>* lengths, int64_t k,
                    const TensorView& p, const TensorView& tau, Dispatch* chosen = nullptr);

// SPARSEK attention, causal (bottom-right aligned): query i at position p_i = i + Lk - Lq attends
// to its window (p_i - w, p_i] (gate 1) and to the keys j <= p_i - w selected by
// m_i = SparseK(u_{0..p_i-w}, k) truncated to the k largest u (ties: lower j), gate m_ij; softmax
// over that union. The selection is per kv head, shared by its query heads. q [B, Hq, Lq, D],
// k and v [B, Hkv, Lk, D], x [B, Lk, Dm], w_score [Hkv, Dm], out [B, Hq, Lq, D]. Cost
// O(Lq (k + w) D) plus an O(Lk log Lk) sweep per kv head for the masks of every prefix, and
// O(Lq k) memory for the selections. k >= Lk with w = 0 is dense causal attention; k = 0 is
// sliding-window attention.
Status sparsek_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& x, const TensorView& w_score, const TensorView& out,
                         const SparsekOptions& options, Dispatch* chosen = nullptr);
// The same with the scores given: u [B, Hkv, Lk] (as sparsek_scores writes them).
Status sparsek_attention_scored(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& u, const TensorView& out,
                                const SparsekOptions& options, Dispatch* chosen = nullptr);

// Token-by-token SPARSEK decode with a bounded cache: per kv head it keeps the window's w KV pairs
// (a ring) and the k selected older ones, at most k + w, plus the scores the mask still needs
// (those above tau: 4 bytes each). A key that leaves the k largest never returns (u does not
// depend on the query), so evicting it is exact: step t's output equals sparsek_attention's row
// t over the whole sequence.
class SparsekDecoder {
 public:
  SparsekDecoder();
  ~SparsekDecoder();
  SparsekDecoder(const SparsekDecoder&) = delete;
  SparsekDecoder& operator=(const SparsekDecoder&) = delete;

  // An empty cache for these sizes; w_score [Hkv, Dm] is copied. Refuses bad sizes or options.
  // dtype: the cache's, and that of every step's q, k, v and out (f32, bf16 or f16); w_score
  // and x may have any of them (the scores are fp32).
  Status reset(int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
               const TensorView& w_score, const SparsekOptions& options, DType dtype = DType::f32);
  // One token at position position(): q [B, Hq, 1, D], its key and value [B, Hkv, 1, D], its
  // layer input x [B, 1, Dm]; writes out [B, Hq, 1, D].
  Status step(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& x,
              const TensorView& out, Dispatch* chosen = nullptr);
  // Tokens whose outputs are not needed (a prompt already processed by sparsek_attention): k, v
  // [B, Hkv, T, D] and x [B, T, Dm] enter the cache as T steps would, without attention.
  Status append(const TensorView& k, const TensorView& v, const TensorView& x);
  int64_t position() const;      // tokens seen
  int64_t cached_pairs() const;  // most KV pairs held by one kv head (<= k + w)
  int64_t mask_scores() const;   // most scores one kv head keeps for tau

  struct State;  // defined in runtime/src/sparsek_decoder.cpp

 private:
  std::unique_ptr<State> state_;
};

struct KernelInfo {
  std::string name;     // the configuration key: variant_phase_mask_dN_dtype_target
  std::string variant;  // "dense"
  std::string phase;    // "prefill" | "decode"
  bool causal = false;
  int head_dim = 0;    // 0: any head dim
  std::string dtype;   // "f32"
  std::string family;  // schedule family: "x86", "arm" or "cuda"
  std::string target;  // the Halide targets it was compiled for, best first, comma-separated
  bool lse = false;    // also returns the log-sum-exp (needed when AttentionOptions::lse is set)
};

// The build of a multi-target kernel that runs on this machine (one entry of KernelInfo::target,
// picked by CPU features as Halide's wrapper picks it), or "" if this CPU can run none of them.
std::string selected_build(const KernelInfo& kernel);

// Caps the CPU builds that later calls may run, process-wide: "native" (the best build this CPU
// supports: the default), on x86 "avx512" (no AVX512-BF16 builds), "avx2" (AVX2+FMA) or "sse41",
// on aarch64 "neon" (no FP16 builds). A build above the cap is passed over as if the CPU lacked
// its features, so the next one runs (selected_build() reports it). For timings comparable across
// machines, comparing builds on one machine, or avoiding AVX-512 clock penalties. The CLI's
// `--isa` and hattn_bench's HATTN_BENCH_ISA set it. Refuses an unknown level or one of the other
// family (invalid_argument, cap unchanged). Set it while no kernel runs.
Status limit_isa(const std::string& level);
std::string isa_limit();  // the current cap, "native" by default

// Whether CUDA tensors can be used now: the library holds CUDA kernels, the driver loads and
// reports a device. If not, `reason` (when given) says which of these is missing.
bool cuda_available(std::string* reason = nullptr);

// Every kernel compiled into this library.
const std::vector<KernelInfo>& list_kernels();

// Number of worker threads the kernels use (Halide's thread pool), process-wide. 0 = the default
// (HL_NUM_THREADS or the core count). May be called at any time; later calls use the new count.
// Automatic decode splits (decode_splits = 0) are chosen from it.
void set_num_threads(int n);

// Working memory: the most bytes of scratch the kernels held at once (all threads, since the
// last reset), e.g. to check that a call's memory is linear in sequence length.
size_t scratch_peak_bytes();
void reset_scratch_peak();

// Decode kernels are chosen when Lq <= this threshold (measured; see bench/).
int decode_threshold();

// hattn's version, "MAJOR.MINOR.PATCH": the CMake package's (find_package(hattn 0.1)) and
// `hattn --version`'s. Within a 0.MINOR series this header and hattn_add_kernels() stay
// compatible; see README.md, "Use hattn in your project".
const char* version();

}  // namespace hattn
