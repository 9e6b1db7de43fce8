#include "variants.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>

// The element loops of the table's own bookkeeping (copies, the SparseK operator's patterned
// rows and invariants): without coverage instrumentation in the fuzz build (clang), where their
// traced comparisons would cost more than they steer the fuzzer.
#if defined(__clang__)
#define HATTN_HARNESS_LOOP __attribute__((no_sanitize("coverage")))
#else
#define HATTN_HARNESS_LOOP
#endif

namespace hattn_test {
namespace {

using hattn::Status;
using hattn::TensorView;

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();

std::vector<std::vector<int64_t>> attention_shapes(const Dims& s) {
  const std::vector<int64_t> q = {s.batch, s.q_heads, s.lq, s.head_dim};
  const std::vector<int64_t> kv = {s.batch, s.kv_heads, s.lk, s.head_dim};
  return {q, kv, kv, q};
}

// The host tensor seen with `rank` dimensions: its leading (unit) dimensions dropped, so that a
// [1, rows, cols] host tensor is a matrix and [1, 1, n] a vector.
TensorView view_with_rank(const HostTensor& t, int rank) {
  if (rank == t.rank()) return t.view();
  const size_t drop = static_cast<size_t>(t.rank() - rank);
  std::vector<int64_t> shape(t.shape().begin() + static_cast<std::ptrdiff_t>(drop),
                             t.shape().end());
  std::vector<int64_t> strides(t.strides().begin() + static_cast<std::ptrdiff_t>(drop),
                               t.strides().end());
  return TensorView::strided(t.data(), shape, strides);
}

// A dense row-major copy of any view's elements (empty for rank 0: an absent tensor).
HATTN_HARNESS_LOOP std::vector<float> dense_copy(const TensorView& t) {
  if (t.rank == 0) return {};
  int64_t n = 1;
  for (int i = 0; i < t.rank; ++i) n *= t.shape[i];
  std::vector<float> d(static_cast<size_t>(n));
  int64_t idx[4] = {0, 0, 0, 0};
  for (int64_t e = 0; e < n; ++e) {
    int64_t off = 0;
    for (int i = 0; i < t.rank; ++i) off += idx[i] * t.strides[i];
    d[static_cast<size_t>(e)] = static_cast<const float*>(t.data)[off];
    for (int i = t.rank - 1; i >= 0 && ++idx[i] == t.shape[i]; --i) idx[i] = 0;
  }
  return d;
}

const float* floats(const TensorView& t) { return static_cast<const float*>(t.data); }

// Rows of a [B * beam, T, ...] result: row = r * T + t.
int64_t el_sample_of_row(int64_t row, const AttnShape& s) { return row / s.lq; }

int64_t el_dm(const Dims& s) { return s.model_dim > 0 ? s.model_dim : el_model_dim(s); }

double scale_of(const Knobs& k, int64_t d) {
  return k.has_scale ? k.scale : 1.0 / std::sqrt(static_cast<double>(d));
}

// Strides of the rank-4 views q, k and v.
AttnStrides strides_of(const TensorView& q, const TensorView& k, const TensorView& v) {
  AttnStrides s;
  for (size_t i = 0; i < 4; ++i) {
    s.q[i] = q.strides[i];
    s.k[i] = k.strides[i];
    s.v[i] = v.strides[i];
  }
  return s;
}

// Attention rows are (b, h, i) in row-major order. A key or value reaches every row of its batch
// and kv head, masked or not: the kernels process key blocks whole and zero masked keys by
// arithmetic (weight 0, score -inf), which a NaN or infinity survives (measured: a NaN in a key
// that a causal row cannot see makes that row NaN, in dense, topk and loki).
bool attention_reads(int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape& s,
                     bool /*causal*/) {
  const int64_t i = row % s.lq, h = (row / s.lq) % s.q_heads, b = row / (s.lq * s.q_heads);
  const int64_t kv_head = h / (s.q_heads / s.kv_heads);
  switch (role) {
    case 0:  // q
      return idx[0] == b && idx[1] == h && idx[2] == i;
    case 1:  // k (k_rot)
    case 2:  // v
      return idx[0] == b && idx[1] == kv_head;
    default:  // Loki's basis: the kv head's
      return idx[0] == kv_head;
  }
}

// The knobs every variant's options share (hattn::CallOptions, hattn::ScaledOptions).
void set_common(const Knobs& k, hattn::CallOptions* o) {
  o->kernel = k.kernel;
  o->check_finite = k.check_finite;
}
void set_common(const Knobs& k, hattn::ScaledOptions* o) {
  set_common(k, static_cast<hattn::CallOptions*>(o));
  o->has_scale = k.has_scale;
  o->scale = k.scale;
}

// The call's k and v [B, Hkv, Lk, D] as a paged cache of one page per sequence (page b holds
// sequence b's Lk tokens, any strides), for the paged entries.
struct OnePagePerSequence {
  std::vector<int32_t> table, lengths;
  hattn::PagedKvCache cache;
  OnePagePerSequence(const TensorView& q, const TensorView& k, const TensorView& v) {
    const int64_t batch = q.shape[0];
    table.resize(static_cast<size_t>(std::max<int64_t>(batch, 0)));
    for (size_t b = 0; b < table.size(); ++b) {
      table[b] = static_cast<int32_t>(b);
    }
    lengths.assign(table.size(), static_cast<int32_t>(k.shape[2]));
    cache.k_pages = k;
    cache.v_pages = v;
    cache.page_table = table.data();
    cache.pages_per_seq = 1;
    cache.lengths = lengths.data();
    cache.batch = batch;
  }
};

// A Loki call's options from the knobs; t[5], when given, is k_lead.
hattn::LokiOptions loki_options(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::LokiOptions o;
  o.rank = k.rank;
  o.rank_fraction = k.rank_fraction;
  o.k = k.k;
  o.k_fraction = k.k_fraction;
  o.causal = k.causal;
  set_common(k, &o);
  o.check_basis = k.check_basis;
  if (t.size() > 5) {
    o.k_lead = &t[5];
  }
  return o;
}

hattn::AttentionOptions dense_options(const std::vector<TensorView>& t, const Knobs& k) {
  hattn::AttentionOptions o;
  o.causal = k.causal;
  set_common(k, &o);
  o.decode_splits = k.decode_splits;
  if (t.size() > 4) o.lse = &t[4];  // the optional lse output
  return o;
}

Knobs with_k(int64_t k) {
  Knobs o;
  o.k = k;
  return o;
}

// A random orthonormal basis per kv head: Gram-Schmidt (twice) of Gaussian columns in double.
void fill_orthonormal(HostTensor* basis, TestRng& rng) {
  const int64_t heads = basis->shape()[0], d = basis->shape()[1];
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<double> p(static_cast<size_t>(d * d));
    for (double& x : p) x = rng.normal();
    for (int64_t c = 0; c < d; ++c) {
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t prev = 0; prev < c; ++prev) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e)
            dot += p[static_cast<size_t>(e * d + c)] * p[static_cast<size_t>(e * d + prev)];
          for (int64_t e = 0; e < d; ++e)
            p[static_cast<size_t>(e * d + c)] -= dot * p[static_cast<size_t>(e * d + prev)];
        }
      }
      double norm = 0;
      for (int64_t e = 0; e < d; ++e)
        norm += p[static_cast<size_t>(e * d + c)] * p[static_cast<size_t>(e * d + c)];
      norm = std::sqrt(norm);
      for (int64_t e = 0; e < d; ++e) p[static_cast<size_t>(e * d + c)] /= norm;
    }
    for (int64_t f = 0; f < d * d; ++f)
      basis->at_flat(h * d * d + f) = static_cast<float>(p[static_cast<size_t>(f)]);
  }
}

// --- the SparseK operator (sparsek_mask): its own draws and its invariants ----------------------

// sparsek_mask: z and p [rows = B Lq, m], tau [rows]. m is Lk times 1, 2 or 4 (the query group
// and the beam): widths up to 132, several vectors of partial sums, from sizes drawn already.
int64_t mask_rows(const Dims& s) { return s.batch * s.lq; }
int64_t mask_width(const Dims& s) { return s.lk * (s.q_heads / s.kv_heads) * s.beam; }

std::string g9(double x) {  // round-trips a float
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", x);
  return b;
}

// What a row of z holds.
enum MaskRowKind { kNoiseRow, kBoundaryRow, kIntegerRow, kPowerRow };

// A row of m integers on a grid, or of signed powers of two and their float neighbours.
HATTN_HARNESS_LOOP std::vector<float> pattern_row(int kind, int64_t m, SplitMix64& rng,
                                                  std::string* what) {
  std::vector<float> v(static_cast<size_t>(m));
  if (kind == kIntegerRow) {
    const float steps[] = {1.f, 2.f, 0.5f, 3.f}, bases[] = {0.f, 0.5f, -7.f, 1024.f};
    const float step = steps[rng.below(4)], base = bases[rng.below(4)];
    for (float& x : v) x = base + step * static_cast<float>(rng.below(2 * m + 1) - m);
    *what = "integers " + g9(base) + " + " + g9(step) + " * [-m, m]";
    return v;
  }
  for (float& x : v) {
    x = std::ldexp(1.f, static_cast<int>(rng.below(17)) - 4);
    const int64_t c = rng.below(8);
    if (c == 0) x = std::nextafter(x, 0.f);
    if (c == 1) x = std::nextafter(x, 1e30f);
    if (rng.below(4) == 0) x = -x;
  }
  *what = "powers of two and their neighbours";
  return v;
}

// Row r of a rank-2 view gets v's values, as many as fit.
HATTN_HARNESS_LOOP void write_row(const TensorView& z, int64_t r, const std::vector<float>& v) {
  if (r >= z.shape[0]) return;
  for (int64_t j = 0; j < std::min<int64_t>(static_cast<int64_t>(v.size()), z.shape[1]); ++j) {
    static_cast<float*>(z.data)[r * z.strides[0] + j * z.strides[1]] = v[static_cast<size_t>(j)];
  }
}

// The operator's own draws: k (around the width m); what each row of z holds: the noise as filled,
// a row of boundary_rows (integer-spaced values, flat roots with the k-th largest just above a
// power of two, all-0/1 solutions, ties, coinciding breakpoints, subnormal and huge magnitudes;
// row r takes the (first + r)-th, and the call's k is mostly the first one's own), integers on a
// grid, or signed powers of two and their float neighbours: one kind for every row or one per
// row; and the lengths: none, valid ones (a boundary row's own length), or invalid ones (a wrong
// count, an entry outside [0, m]) that the call must refuse.
void mask_prepare(Draws& f, const Dims& s, const std::vector<TensorView>& t,
                  const std::vector<bool>& writable, Knobs* k) {
  const int64_t rows = mask_rows(s), m = mask_width(s);
  k->k = f.pick({0, 1, 2, 3, 5, 9, 17, m / 2, m - 1, m, m + 1, -1, kI64Min, kI64Max,
                 (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 2});
  const int64_t mode = f.in_range(0, 7);  // 0-2 noise, 3-4 boundary, 5 integers, 6 powers,
                                          // 7 a kind per row
  const uint64_t seed = f.any_u64();
  const bool own_k = f.in_range(0, 3) != 0;
  SplitMix64 rng{seed};
  std::vector<BoundaryRow> boundary;
  size_t first = 0;
  if (mode >= 3 && mode != 5 && mode != 6) {
    boundary = boundary_rows(seed, m);
    first = static_cast<size_t>(f.in_range(0, static_cast<int64_t>(boundary.size()) - 1));
  }
  const TensorView& z = t[0];
  const bool write = writable[0] && z.rank == 2;
  k->row_kind.assign(static_cast<size_t>(rows), "uniform noise");
  std::vector<int64_t> own_len(static_cast<size_t>(rows), -1);  // -1: none of its own
  for (int64_t r = 0; r < rows; ++r) {
    int64_t kind = mode < 3    ? kNoiseRow
                   : mode < 5  ? kBoundaryRow
                   : mode == 5 ? kIntegerRow
                               : kPowerRow;
    if (mode == 7) kind = f.in_range(kNoiseRow, kPowerRow);
    std::string& what = k->row_kind[static_cast<size_t>(r)];
    std::vector<float> v;
    if (kind == kNoiseRow) continue;
    if (kind == kBoundaryRow) {
      const size_t i = (first + static_cast<size_t>(r)) % boundary.size();
      v = boundary[i].z;
      what = boundary[i].kind + " (boundary_rows(" + std::to_string(seed) + ", " +
             std::to_string(m) + ")[" + std::to_string(i) + "]";
      if (static_cast<int64_t>(v.size()) > m) {
        v.resize(static_cast<size_t>(m));
        what += ", cut to m";
      }
      what += ")";
      own_len[static_cast<size_t>(r)] = static_cast<int64_t>(v.size());
      if (r == 0 && own_k) k->k = boundary[i].k;
    } else {
      v = pattern_row(static_cast<int>(kind), m, rng, &what);
    }
    if (write) write_row(z, r, v);
  }
  const int64_t lengths = f.in_range(0, 7);  // 0-1 none, 2-3 valid, 4-6 a row's own (else
                                             // valid), 7 invalid
  k->has_lengths = lengths >= 2;
  if (!k->has_lengths) return;
  k->lengths.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t& n = k->lengths[static_cast<size_t>(r)];
    n = own_len[static_cast<size_t>(r)];
    if (n >= 0 && lengths >= 4) continue;
    switch (f.in_range(0, 4)) {
      case 0:
        n = 0;
        break;
      case 1:
        n = 1;
        break;
      case 2:
        n = m - 1;
        break;
      case 3:
        n = m;
        break;
      default:
        n = f.in_range(0, m);
        break;
    }
  }
  if (lengths == 7) {
    switch (f.in_range(0, 2)) {
      case 0:
        k->lengths.pop_back();
        break;
      case 1:
        k->lengths.push_back(0);
        break;
      default:
        k->lengths[static_cast<size_t>(
            f.in_range(0, static_cast<int64_t>(k->lengths.size()) - 1))] =
            f.pick({-1, m + 1, kI64Max, kI64Min, int64_t{1} << 31, int64_t{1} << 32});
        break;
    }
  }
}

// What a checked row of the mask was (or that the call's values went unchecked), as coverage
// the fuzzer can see: mask_verify is not instrumented, and the kernel (generated code) never is,
// so without this an input reaching a flat root or k >= n would look like any other.
enum MaskReached { kUnchecked, kEmptyRow, kZeroK, kAllOnes, kFlatRoot, kFreeRoot };
volatile int mask_sink;  // a distinct store per case: distinct edges
__attribute__((noinline)) void mask_reached(MaskReached what) {
  switch (what) {
    case kUnchecked:
      mask_sink = 0;
      break;
    case kEmptyRow:
      mask_sink = 1;
      break;
    case kZeroK:
      mask_sink = 2;
      break;
    case kAllOnes:
      mask_sink = 3;
      break;
    case kFlatRoot:
      mask_sink = 4;
      break;
    case kFreeRoot:
      mask_sink = 5;
      break;
  }
}

// The operator's invariants, per row of length n: p = 0 past n, and for finite inputs
// check_sparsek_row, the oracle tests/test_sparsek.cpp uses (p in [0, 1], p == clamp(z - tau, 0,
// 1) in float exactly, tau = +-inf for k = 0 and k >= n, tau and sum p against the sort-based
// float64 roots with the tolerances stated in tests/reference.h).
HATTN_HARNESS_LOOP std::string mask_verify(const std::vector<TensorView>& t, const Knobs& k,
                                           bool finite) {
  const TensorView &z = t[0], &p = t[1], &tau = t[2];
  const int64_t rows = z.shape[0], m = z.shape[1];
  if (z.rank != 2 || p.rank != 2 || tau.rank != 1 || p.shape[0] != rows || p.shape[1] != m ||
      tau.shape[0] != rows) {
    return "accepted mismatched shapes: z " + z.describe() + ", p " + p.describe() + ", tau " +
           tau.describe();
  }
  if (k.k < 0) return "accepted k = " + std::to_string(k.k);
  if (k.has_lengths) {
    if (static_cast<int64_t>(k.lengths.size()) != rows) {
      return "accepted " + std::to_string(k.lengths.size()) + " lengths for " +
             std::to_string(rows) + " rows";
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = k.lengths[static_cast<size_t>(r)];
      if (n < 0 || n > m) {
        return "accepted lengths[" + std::to_string(r) + "] = " + std::to_string(n) +
               " outside [0, " + std::to_string(m) + "]";
      }
    }
  }
  if (!finite) {
    mask_reached(kUnchecked);
    return "";
  }
  const std::vector<float> zf = dense_copy(z), pf = dense_copy(p);
  const float* td = static_cast<const float*>(tau.data);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = k.has_lengths ? k.lengths[static_cast<size_t>(r)] : m;
    const float* zr = zf.data() + r * m;
    const float* pr = pf.data() + r * m;
    const float tr = td[r * tau.strides[0]];
    const std::string kind = static_cast<size_t>(r) < k.row_kind.size()
                                 ? k.row_kind[static_cast<size_t>(r)]
                                 : std::string("?");
    auto wrong = [&](const std::string& what) {
      std::string msg = "row " + std::to_string(r) + " (" + kind + ") n=" + std::to_string(n) +
                        " k=" + std::to_string(k.k) + " tau=" + g9(tr) + ": " + what +
                        "; z[0:n] = [";
      for (int64_t j = 0; j < n; ++j) msg += g9(zr[j]) + (j + 1 < n ? ", " : "");
      return msg + "]";
    };
    for (int64_t j = n; j < m; ++j) {
      if (!(pr[j] == 0.f)) return wrong("p[" + std::to_string(j) + "] = " + g9(pr[j]) + " past n");
    }
    if (n == 0) mask_reached(kEmptyRow);
    SparsekRootKind reached{};
    const std::string why = check_sparsek_row(zr, pr, n, k.k, tr, &reached);
    switch (reached) {
      case SparsekRootKind::zero_k:
        mask_reached(kZeroK);
        break;
      case SparsekRootKind::all_ones:
        mask_reached(kAllOnes);
        break;
      case SparsekRootKind::flat:
        mask_reached(kFlatRoot);
        break;
      case SparsekRootKind::free:
        mask_reached(kFreeRoot);
        break;
    }
    if (!why.empty()) return wrong(why);
  }
  return "";
}

std::vector<Variant> build() {
  std::vector<Variant> v;

  Variant dense;
  dense.name = "dense";
  dense.roles = {"q", "k", "v", "out"};
  dense.written = {false, false, false, true};
  dense.result = 3;
  dense.shapes = attention_shapes;
  dense.optional = {{"lse", true, [](const Dims& s) {
                       return std::vector<int64_t>{s.batch, s.q_heads, s.lq};
                     }}};
  dense.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    return hattn::attention(t[0], t[1], t[2], t[3], dense_options(t, k), d);
  };
  dense.plan = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    return hattn::plan_attention(t[0], t[1], t[2], t[3], dense_options(t, k), d);
  };
  dense.reference = [](const CallTensors& t, const Dims& s, const Knobs& k,
                       std::vector<double>* out, std::vector<double>* gap) {
    reference_attention(floats(t[0]), floats(t[1]), floats(t[2]), s, strides_of(t[0], t[1], t[2]),
                        k.causal, scale_of(k, s.head_dim), out, nullptr);
    gap->clear();
  };
  dense.reads = attention_reads;
  dense.knob_cases = [](const AttnShape&) {
    std::vector<KnobCase> c;
    Knobs o;
    o.decode_splits = 1;
    c.push_back({"decode_splits=1", o, true, ""});
    o.decode_splits = std::numeric_limits<int>::max();
    c.push_back({"decode_splits=INT_MAX", o, true, ""});
    o.decode_splits = -1;
    c.push_back({"decode_splits=-1", o, false, "decode_splits must be >= 0"});
    o.decode_splits = std::numeric_limits<int>::min();
    c.push_back({"decode_splits=INT_MIN", o, false, "decode_splits must be >= 0"});
    o = Knobs{};
    o.has_scale = true;
    o.scale = 1e-30f;
    c.push_back({"scale=1e-30", o, true, ""});
    o.scale = 0.f;
    c.push_back({"scale=0", o, false, "scale must be finite and > 0"});
    o.scale = std::numeric_limits<float>::quiet_NaN();
    c.push_back({"scale=NaN", o, false, "scale must be finite and > 0"});
    return c;
  };
  v.push_back(dense);

  // paged_attention over the call's k and v taken as a cache of one page per sequence (page b
  // holds sequence b's Lk tokens): every dense check applies, through the batch kernel (Lq <= 8)
  // or the gathered prefill.
  Variant paged = dense;
  paged.name = "dense_paged";
  paged.plan = nullptr;
  paged.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    OnePagePerSequence c(t[0], t[1], t[2]);
    return hattn::paged_attention(t[0], c.cache, t[3], dense_options(t, k), d);
  };
  v.push_back(paged);

  Variant topk = dense;
  topk.name = "topk";
  topk.optional.clear();
  topk.plan = nullptr;
  topk.defaults = with_k(5);
  topk.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::TopkOptions o;
    o.k = k.k;
    o.causal = k.causal;
    set_common(k, &o);
    return hattn::topk_attention(t[0], t[1], t[2], t[3], o, d);
  };
  topk.reference = [](const CallTensors& t, const Dims& s, const Knobs& k, std::vector<double>* out,
                      std::vector<double>* gap) {
    reference_topk_attention(floats(t[0]), floats(t[1]), floats(t[2]), s,
                             strides_of(t[0], t[1], t[2]), k.causal, scale_of(k, s.head_dim), k.k,
                             out, gap);
  };
  topk.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    for (int64_t k : {int64_t{1}, s.lk - 1, s.lk, s.lk + 1, kI64Max}) {
      if (k >= 1) c.push_back({"k=" + std::to_string(k), with_k(k), true, ""});
    }
    for (int64_t k : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"k=" + std::to_string(k), with_k(k), false, "must be >= 1"});
    }
    return c;
  };
  v.push_back(topk);

  // paged_topk_attention over the one-page-per-sequence cache, as dense_paged: the paged decode
  // kernel (Lq <= 8) or the gathered prefill; every topk check applies.
  Variant topk_paged = topk;
  topk_paged.name = "topk_paged";
  topk_paged.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::TopkOptions o;
    o.k = k.k;
    o.causal = k.causal;
    set_common(k, &o);
    OnePagePerSequence c(t[0], t[1], t[2]);
    return hattn::paged_topk_attention(t[0], c.cache, t[3], o, d);
  };
  v.push_back(topk_paged);

  Variant ffn;
  ffn.name = "topk_ffn";
  ffn.roles = {"x", "w1", "w2t", "y"};
  ffn.written = {false, false, false, true};
  ffn.result = 3;
  ffn.has_causal = false;
  ffn.defaults = with_k(6);
  ffn.shapes = [](const Dims& s) {
    const std::vector<int64_t> x = {1, s.lq, s.head_dim}, w = {1, s.lk, s.head_dim};
    return std::vector<std::vector<int64_t>>{x, w, w, x};
  };
  ffn.view_ranks = {2, 2, 2, 2};
  ffn.shared = {false, true, true, false};
  // Weights scaled as a trained layer's (and as test_topk's): pre-activations and outputs of
  // order 1, so that fp32 accumulation stays within the comparison's tolerance.
  ffn.stddev = [](size_t role, const Dims& s) {
    return role == 0 ? 1.f : 1.f / std::sqrt(static_cast<float>(role == 1 ? s.head_dim : s.lk));
  };
  ffn.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::TopkFfnOptions o;
    o.k = k.k;
    set_common(k, &o);
    return hattn::topk_ffn(t[0], t[1], t[2], t[3], o, d);
  };
  ffn.reference = [](const CallTensors& t, const Dims& s, const Knobs& k, std::vector<double>* out,
                     std::vector<double>* gap) {
    std::vector<float> x = dense_copy(t[0]), w1 = dense_copy(t[1]), w2t = dense_copy(t[2]);
    reference_topk_ffn(x.data(), w1.data(), w2t.data(), s.lq, s.head_dim, s.lk, k.k, out, gap);
  };
  ffn.reads = [](int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape&, bool) {
    return role == 0 ? idx[1] == row : true;  // every token reads all of w1 (and w2t's kept rows)
  };
  ffn.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    for (int64_t k : {int64_t{1}, s.lk, s.lk + 1, kI64Max}) {
      c.push_back({"k=" + std::to_string(k), with_k(k), true, ""});
    }
    for (int64_t k : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"k=" + std::to_string(k), with_k(k), false, "must be >= 1"});
    }
    return c;
  };
  v.push_back(ffn);

  Variant loki = dense;
  loki.name = "loki";
  loki.plan = nullptr;
  // LokiOptions::k_lead [B, Hkv, Lk, lead]: k_rot's leading channels, stored on their own (the
  // fuzz target fills it with other values: the selection may differ, so no reference then).
  loki.optional = {{"k_lead", false, [](const Dims& s) {
                      return std::vector<int64_t>{s.batch, s.kv_heads, s.lk, s.lead};
                    }}};
  loki.roles = {"q", "k_rot", "v", "basis", "out"};
  loki.written = {false, false, false, false, true};
  loki.result = 4;
  loki.defaults.rank = 0;
  loki.defaults.rank_fraction = 0.5;
  loki.defaults.k = 5;
  loki.shapes = [](const Dims& s) {
    std::vector<std::vector<int64_t>> a = attention_shapes(s);
    a.insert(a.begin() + 3, std::vector<int64_t>{s.kv_heads, s.head_dim, s.head_dim});
    return a;
  };
  loki.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    return hattn::loki_attention(t[0], t[1], t[2], t[3], t[4], loki_options(t, k), d);
  };
  loki.reference = [](const CallTensors& t, const Dims& s, const Knobs& k, std::vector<double>* out,
                      std::vector<double>* gap) {
    // None with k_lead (its channels may differ from k_rot's leading ones).
    out->clear();
    gap->clear();
    if (t.size() > 5) return;
    // r and k resolved from fractions exactly as LokiOptions documents.
    const int64_t rank =
        k.rank != 0 ? k.rank
                    : std::max<int64_t>(1, std::llround(k.rank_fraction * double(s.head_dim)));
    const int64_t kept =
        k.k != 0 ? k.k : std::max<int64_t>(1, std::llround(k.k_fraction * double(s.lk)));
    std::vector<float> basis = dense_copy(t[3]);
    reference_loki_attention(floats(t[0]), floats(t[1]), floats(t[2]), basis.data(), s,
                             strides_of(t[0], t[1], t[2]), k.causal, scale_of(k, s.head_dim), rank,
                             kept, out, gap);
  };
  loki.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    auto rk = [](int64_t rank, int64_t k) {
      Knobs o;
      o.rank = rank;
      o.k = k;
      return o;
    };
    const std::string outside = "outside [1, D=" + std::to_string(s.head_dim) + "]";
    c.push_back({"r=1", rk(1, 4), true, ""});
    c.push_back({"r=D", rk(s.head_dim, 4), true, ""});
    c.push_back({"r=D,k=Lk+1", rk(s.head_dim, s.lk + 1), true, ""});
    c.push_back({"k=INT64_MAX", rk(2, kI64Max), true, ""});
    c.push_back({"r=D+1", rk(s.head_dim + 1, 4), false, outside});
    c.push_back({"r=-1", rk(-1, 4), false, outside});
    c.push_back({"r=INT64_MAX", rk(kI64Max, 4), false, outside});
    c.push_back({"r=0 without fraction", rk(0, 4), false, "rank_fraction in (0, 1]"});
    c.push_back({"k=0 without fraction", rk(2, 0), false, "must be >= 1"});
    c.push_back({"k=INT64_MIN", rk(2, kI64Min), false, "must be >= 1"});
    for (double f : {1e-9, 1.0}) {
      Knobs o = rk(0, 4);
      o.rank_fraction = f;
      c.push_back({"rank_fraction=" + std::to_string(f), o, true, ""});
    }
    for (double f : {1.5, -0.5, std::nan(""), HUGE_VAL}) {
      Knobs o = rk(0, 4);
      o.rank_fraction = f;
      c.push_back({"rank_fraction=" + std::to_string(f), o, false, "rank_fraction in (0, 1]"});
    }
    for (double f : {1e-300, 1.0}) {
      Knobs o = rk(2, 0);
      o.k_fraction = f;
      c.push_back({"k_fraction=" + std::to_string(f), o, true, ""});
    }
    for (double f : {1.01, -1.0, std::nan(""), HUGE_VAL}) {
      Knobs o = rk(2, 0);
      o.k_fraction = f;
      c.push_back({"k_fraction=" + std::to_string(f), o, false, "k_fraction must be in (0, 1]"});
    }
    Knobs both = rk(2, 4);
    both.rank_fraction = 0.5;
    c.push_back({"rank and rank_fraction", both, false, "not both"});
    both = rk(2, 4);
    both.k_fraction = 0.5;
    c.push_back({"k and k_fraction", both, false, "not both"});
    return c;
  };
  v.push_back(loki);

  // paged_loki_attention over the one-page-per-sequence cache (k_lead [B, Hkv, Lk, R] is then its
  // [P, Hkv, S, R] pages), as dense_paged; every loki check applies.
  Variant loki_paged = loki;
  loki_paged.name = "loki_paged";
  loki_paged.roles = {"q", "k_pages", "v_pages", "basis", "out"};  // as its messages name them
  loki_paged.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    OnePagePerSequence c(t[0], t[1], t[2]);
    return hattn::paged_loki_attention(t[0], c.cache, t[3], t[4], loki_options(t, k), d);
  };
  v.push_back(loki_paged);

  Variant el;
  el.name = "el";
  el.roles = {"x", "memory", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "y"};
  el.written.assign(11, false);
  el.written[10] = true;
  el.result = 10;
  el.view_ranks = {3, 3, 2, 1, 2, 1, 2, 1, 2, 1, 3};
  el.shared = {false, false, true, true, true, true, true, true, true, true, false};
  el.may_be_absent = {false, false, false, true, false, true, false, true, false, true, false};
  el.masked_rows_zero = false;  // a row that sees no memory row is bo (y = 0 Wo^T + bo)
  el.defaults.heads = 2;
  el.shapes = [](const Dims& s) {
    const int64_t dm = el_dm(s);
    const std::vector<int64_t> x = {s.batch * s.beam, s.lq, dm}, mem = {s.batch, s.lk, dm};
    const std::vector<int64_t> w = {1, dm, dm}, b = {1, 1, dm};
    return std::vector<std::vector<int64_t>>{x, mem, w, b, w, b, w, b, w, b, x};
  };
  // Weights as a trained layer's (1/sqrt(Dm)): projections of order 1.
  el.stddev = [](size_t role, const Dims& s) {
    if (role < 2) return 1.f;
    return role % 2 == 0 ? 1.f / std::sqrt(static_cast<float>(el_dm(s))) : 0.5f;
  };
  el.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::MhaWeights w{t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
    hattn::ElOptions o;
    o.heads = k.heads;
    o.beam = k.beam;
    o.causal = k.causal;
    set_common(k, &o);
    return hattn::el_attention(t[0], t[1], w, t[10], o, d);
  };
  el.reference = [](const CallTensors& t, const Dims& s, const Knobs& k, std::vector<double>* out,
                    std::vector<double>* gap) {
    const int64_t dm = el_dm(s);
    MhaHostWeights w;
    w.dm = dm;
    // An absent (rank-0) bias copies as empty: zero.
    std::vector<float>* parts[8] = {&w.wq, &w.bq, &w.wk, &w.bk, &w.wv, &w.bv, &w.wo, &w.bo};
    for (size_t i = 0; i < 8; ++i) *parts[i] = dense_copy(t[i + 2]);
    const std::vector<float> x = dense_copy(t[0]), mem = dense_copy(t[1]);
    std::vector<float> y(x.size());
    const double scale = k.has_scale ? k.scale : 1.0 / std::sqrt(static_cast<double>(dm / k.heads));
    reference_mha(x.data(), mem.data(), w, s.batch * s.beam, s.lq, s.lk, k.heads, k.beam, k.causal,
                  nullptr, scale, y.data());
    out->assign(y.begin(), y.end());
    gap->clear();
  };
  el.reads = [](int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape& s, bool) {
    if (role == 0) return idx[0] * s.lq + idx[1] == row;       // x: its own token
    if (role == 1) return idx[0] == el_sample_of_row(row, s);  // memory: its sample's rows
    return true;                                               // weights and biases: every row
  };
  el.knob_cases = [](const AttnShape& s) {
    const int64_t dm = el_model_dim(s);
    std::vector<KnobCase> c;
    auto hb = [](int64_t heads, int64_t beam) {
      Knobs o;
      o.heads = heads;
      o.beam = beam;
      return o;
    };
    for (int64_t h : {int64_t{1}, dm / 16, dm}) {
      c.push_back({"heads=" + std::to_string(h), hb(h, 1), true, ""});
    }
    for (int64_t h : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"heads=" + std::to_string(h), hb(h, 1), false, "heads must be >= 1"});
    }
    for (int64_t h : {int64_t{3}, dm + 1, kI64Max}) {
      c.push_back({"heads=" + std::to_string(h), hb(h, 1), false,
                   "not divisible by heads=" + std::to_string(h)});
    }
    for (int64_t b : {int64_t{0}, int64_t{-1}, kI64Min}) {
      c.push_back({"beam=" + std::to_string(b), hb(2, b), false, "beam must be >= 1"});
    }
    for (int64_t b : {s.batch + 1, kI64Max}) {
      c.push_back({"beam=" + std::to_string(b), hb(2, b), false,
                   "not divisible by beam=" + std::to_string(b)});
    }
    Knobs o = hb(2, 1);
    o.has_scale = true;
    o.scale = 1e-30f;
    c.push_back({"scale=1e-30", o, true, ""});
    o.scale = 0.f;
    c.push_back({"scale=0", o, false, "scale must be positive and finite"});
    o.scale = std::numeric_limits<float>::infinity();
    c.push_back({"scale=inf", o, false, "scale must be positive and finite"});
    return c;
  };
  v.push_back(el);

  Variant sk = dense;
  sk.name = "sparsek";
  sk.optional.clear();
  sk.plan = nullptr;
  sk.roles = {"q", "k", "v", "x", "w_score", "out"};
  sk.written = {false, false, false, false, false, true};
  sk.result = 5;
  sk.view_ranks = {4, 4, 4, 3, 2, 4};
  sk.defaults = Knobs{};
  sk.defaults.k = 3;
  sk.defaults.window = 2;
  sk.defaults.slope = 0.05f;
  // x [B, Lk, Dm] with Dm = D; w_score [Hkv, Dm] as [1, Hkv, Dm].
  sk.shapes = [](const Dims& s) {
    std::vector<std::vector<int64_t>> a = attention_shapes(s);
    a.insert(a.begin() + 3, {s.batch, s.lk, s.head_dim});
    a.insert(a.begin() + 4, {1, s.kv_heads, s.head_dim});
    return a;
  };
  sk.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    hattn::SparsekOptions o;
    o.k = k.k;
    o.window = k.window;
    o.slope = k.slope;
    o.gate = k.logit ? hattn::SparsekGate::logit : hattn::SparsekGate::value;
    set_common(k, &o);
    return hattn::sparsek_attention(t[0], t[1], t[2], t[3], t[4], t[5], o, d);
  };
  // Always causal (the knob is ignored, by the call and here).
  sk.reference = [](const CallTensors& t, const Dims& s, const Knobs& k, std::vector<double>* out,
                    std::vector<double>* gap) {
    const std::vector<float> q = dense_copy(t[0]), key = dense_copy(t[1]), val = dense_copy(t[2]);
    const std::vector<float> x = dense_copy(t[3]), w = dense_copy(t[4]);
    std::vector<float> u;
    reference_sparsek_scores(x.data(), w.data(), s.batch, s.kv_heads, s.lk, s.head_dim, k.slope,
                             &u);
    reference_sparsek_attention(q.data(), key.data(), val.data(), u.data(), s, k.k, k.window,
                                k.logit, scale_of(k, s.head_dim), out, gap);
  };
  sk.reads = [](int role, const std::vector<int64_t>& idx, int64_t row, const AttnShape& s,
                bool causal) {
    const int64_t b = row / (s.lq * s.q_heads);
    const int64_t kv_head = ((row / s.lq) % s.q_heads) / (s.q_heads / s.kv_heads);
    if (role == 3) return idx[0] == b;        // x: the scores of every kv head of its batch
    if (role == 4) return idx[1] == kv_head;  // w_score: its kv head's scores
    return attention_reads(role, idx, row, s, causal);
  };
  sk.knob_cases = [](const AttnShape& s) {
    std::vector<KnobCase> c;
    auto kw = [](int64_t k, int64_t w) {
      Knobs o;
      o.k = k;
      o.window = w;
      return o;
    };
    const int64_t below30 = std::numeric_limits<int32_t>::max() / 2;
    for (int64_t k : {int64_t{0}, int64_t{1}, s.lk, s.lk + 1, below30}) {
      c.push_back({"k=" + std::to_string(k), kw(k, 2), true, ""});
    }
    for (int64_t w : {int64_t{0}, int64_t{1}, s.lk, s.lk + 1, below30}) {
      c.push_back({"w=" + std::to_string(w), kw(3, w), true, ""});
    }
    c.push_back({"k=0,w=0", kw(0, 0), true, ""});  // sees nothing: zeros
    for (int64_t k : {int64_t{-1}, kI64Min}) {
      c.push_back({"k=" + std::to_string(k), kw(k, 2), false, "budget k must be >= 0"});
    }
    for (int64_t w : {int64_t{-1}, kI64Min}) {
      c.push_back({"w=" + std::to_string(w), kw(3, w), false, "window w must be >= 0"});
    }
    c.push_back({"k=2^30", kw(below30 + 1, 2), false, "below 2^30"});
    c.push_back({"w=INT64_MAX", kw(3, kI64Max), false, "below 2^30"});
    Knobs o = kw(3, 2);
    o.logit = true;
    c.push_back({"gate=logit", o, true, ""});
    o.logit = false;
    o.slope = 1e6f;
    c.push_back({"slope=1e6", o, true, ""});
    o.slope = std::numeric_limits<float>::quiet_NaN();
    c.push_back({"slope=NaN", o, false, "slope must be finite"});
    o.slope = -std::numeric_limits<float>::infinity();
    c.push_back({"slope=-inf", o, false, "slope must be finite"});
    o.slope = 0.f;
    o.has_scale = true;
    o.scale = 0.f;
    c.push_back({"scale=0", o, false, "scale must be finite and > 0"});
    return c;
  };
  v.push_back(sk);

  // The SparseK operator alone, on rows of z: fuzz_only (test_sparsek covers it with its own
  // oracle); its result is checked by its invariants, its inputs drawn on the selection's
  // boundaries by its prepare.
  Variant mask;
  mask.name = "sparsek_mask";
  mask.roles = {"z", "p", "tau"};
  mask.written = {false, true, true};
  mask.result = 1;
  mask.view_ranks = {2, 2, 1};
  mask.has_causal = false;
  mask.fuzz_only = true;
  mask.shapes = [](const Dims& s) {
    const std::vector<int64_t> z = {1, mask_rows(s), mask_width(s)}, tau = {1, 1, mask_rows(s)};
    return std::vector<std::vector<int64_t>>{z, z, tau};
  };
  mask.call = [](const std::vector<TensorView>& t, const Knobs& k, hattn::Dispatch* d) {
    return hattn::sparsek_mask(t[0], k.has_lengths ? &k.lengths : nullptr, k.k, t[1], t[2], d);
  };
  mask.prepare = mask_prepare;
  mask.verify = mask_verify;
  v.push_back(mask);
  return v;
}

}  // namespace

int64_t el_model_dim(const AttnShape& s) {
  const int64_t width = std::max<int64_t>(64, s.q_heads * s.head_dim);
  return (width + 15) / 16 * 16;
}

CallTensors::CallTensors(const std::vector<HostTensor>& t) {
  for (const HostTensor& h : t) v.push_back(h.view());
}

const std::vector<Variant>& variant_table() {
  static const std::vector<Variant> v = build();
  return v;
}

const std::vector<Variant>& all_variants() {
  static const std::vector<Variant> v = [] {
    std::vector<Variant> tested;
    for (const Variant& e : variant_table()) {
      if (!e.fuzz_only) tested.push_back(e);
    }
    return tested;
  }();
  return v;
}

const Variant& variant_named(const std::string& name) {
  for (const Variant& v : variant_table()) {
    if (v.name == name) return v;
  }
  std::cerr << "variants: no variant named " << name << "\n";
  std::abort();
}

std::vector<std::vector<int64_t>> view_shapes(const Variant& v, const Dims& s) {
  std::vector<std::vector<int64_t>> shapes = v.shapes(s);
  for (size_t i = 0; i < shapes.size() && !v.view_ranks.empty(); ++i) {
    std::vector<int64_t>& shape = shapes[i];
    shape.erase(shape.begin(), shape.end() - v.view_ranks[i]);
  }
  return shapes;
}

std::vector<HostTensor> make_tensors(const Variant& v, const AttnShape& s, TestRng& rng,
                                     Layout layout) {
  std::vector<std::vector<int64_t>> shapes = v.shapes(s);
  std::vector<HostTensor> t;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const bool basis = v.roles[i] == "basis";
    t.emplace_back(shapes[i], basis ? Layout::kContiguous : layout);
    if (basis) {
      fill_orthonormal(&t.back(), rng);
    } else if (v.written[i]) {
      t.back().poison();
    } else {
      t.back().fill_normal(rng, v.stddev ? v.stddev(i, s) : 1.f);
    }
    t.back().snapshot();
  }
  return t;
}

std::vector<TensorView> views_of(const Variant& v, const std::vector<HostTensor>& t) {
  std::vector<TensorView> views;
  for (size_t i = 0; i < t.size(); ++i) {
    views.push_back(v.view_ranks.empty() ? t[i].view() : view_with_rank(t[i], v.view_ranks[i]));
  }
  return views;
}

std::vector<float> run_result(const Variant& v, std::vector<HostTensor>* t, const Knobs& k,
                              std::string* error) {
  for (size_t i = 0; i < t->size(); ++i) {
    if (v.written[i]) (*t)[i].poison();
  }
  hattn::Dispatch d;
  Status s = v.call(views_of(v, *t), k, &d);
  if (!s.ok()) {
    *error = v.name + ": " + hattn::to_string(s.code) + ": " + s.message;
    return {};
  }
  error->clear();
  return (*t)[static_cast<size_t>(v.result)].to_dense();
}

std::string run_and_compare(const Variant& v, std::vector<HostTensor>* t, const AttnShape& s,
                            const Knobs& k, hattn::Dispatch* d) {
  for (size_t i = 0; i < t->size(); ++i) {
    if (v.written[i]) {
      (*t)[i].poison();
      (*t)[i].snapshot();
    }
  }
  hattn::Dispatch local;
  hattn::Dispatch* chosen = d ? d : &local;
  Status st = v.call(views_of(v, *t), k, chosen);
  if (!st.ok()) return v.name + " refused: " + hattn::to_string(st.code) + ": " + st.message;
  std::string problems;
  for (size_t i = 0; i < t->size(); ++i) {
    const std::string changed = (*t)[i].changed_since_snapshot(v.written[i]);
    if (!changed.empty()) {
      problems +=
          "\n  " + v.roles[i] + (v.written[i] ? " padding written: " : " modified: ") + changed;
    }
  }
  if (!v.reference) {  // an operator checked by its invariants
    const std::string wrong = v.verify(views_of(v, *t), k, true);
    if (!wrong.empty()) problems += "\n  " + wrong;
  } else {
    std::vector<double> ref, gap;
    v.reference(*t, s, k, &ref, &gap);
    const HostTensor& out = (*t)[static_cast<size_t>(v.result)];
    int left_out = 0;
    problems += compare_rows(out, ref, gap.empty() ? nullptr : &gap, out.shape().back(), &left_out);
  }
  if (!problems.empty()) return v.name + " (kernel " + chosen->kernel + "):" + problems;
  return "";
}

}  // namespace hattn_test
