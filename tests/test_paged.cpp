// Paged KV caches and packed (ragged) batches: paged_attention, paged_append, ragged_attention.
// Every output is compared with the double-precision reference (reference.h) run on each
// sequence's own keys, gathered here from its pages by plain indexing; inputs are random (printed
// seeds), page tables shuffled, and the entries past a sequence's pages hold garbage page indices.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "reference.h"
#include "test_support.h"

namespace hattn_test {
namespace {

using hattn::DType;
using hattn::StatusCode;
using hattn::TensorView;

// Storage of one dtype with the fp32 values it holds (16-bit: the rounded values).
struct Store {
  DType dtype = DType::f32;
  std::vector<float> f32;
  std::vector<uint16_t> bits;
  std::vector<float> values;

  Store(DType t, int64_t n) : dtype(t), values(static_cast<size_t>(n)) {
    if (t == DType::f32) {
      f32.assign(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
    } else {
      bits.assign(static_cast<size_t>(n), 0x7fc1);  // NaN in both 16-bit formats
    }
  }
  void set(int64_t i, float x) {
    if (dtype == DType::f32) {
      f32[static_cast<size_t>(i)] = x;
      values[static_cast<size_t>(i)] = x;
    } else {
      bits[static_cast<size_t>(i)] = ref_to_16bit(dtype, x);
      values[static_cast<size_t>(i)] = ref_from_16bit(dtype, bits[static_cast<size_t>(i)]);
    }
  }
  float get(int64_t i) const {
    return dtype == DType::f32 ? f32[static_cast<size_t>(i)]
                               : ref_from_16bit(dtype, bits[static_cast<size_t>(i)]);
  }
  void* data() {
    return dtype == DType::f32 ? static_cast<void*>(f32.data()) : static_cast<void*>(bits.data());
  }
  TensorView view(std::vector<int64_t> shape, std::vector<int64_t> strides) {
    return TensorView::strided(data(), dtype, std::move(shape), std::move(strides));
  }
  std::vector<char> bytes() const {
    const char* p = dtype == DType::f32 ? reinterpret_cast<const char*>(f32.data())
                                        : reinterpret_cast<const char*>(bits.data());
    const size_t n = dtype == DType::f32 ? f32.size() * 4 : bits.size() * 2;
    return std::vector<char>(p, p + n);
  }
};

// A batch's paged cache: pages of S tokens, in the layout [P, Hkv, S, D] (head-major) or
// [P, S, Hkv, D] (token-major, passed with its strides swapped).
struct PagedBatch {
  int64_t batch, kv_heads, page, dim, pages_per_seq, num_pages;
  bool token_major;
  Store k, v;
  std::vector<int32_t> table, lengths;

  PagedBatch(DType t, int64_t b, int64_t hkv, int64_t s, int64_t d, int64_t pps, int64_t pages,
             bool tm)
      : batch(b),
        kv_heads(hkv),
        page(s),
        dim(d),
        pages_per_seq(pps),
        num_pages(pages),
        token_major(tm),
        k(t, pages * hkv * s * d),
        v(t, pages * hkv * s * d),
        table(static_cast<size_t>(b * pps)),
        lengths(static_cast<size_t>(b), 0) {}

  std::vector<int64_t> strides() const {
    if (token_major) return {page * kv_heads * dim, dim, kv_heads * dim, 1};
    return {kv_heads * page * dim, page * dim, dim, 1};
  }
  int64_t offset(int64_t b, int64_t t, int64_t h) const {
    const int64_t id = table[static_cast<size_t>(b * pages_per_seq + t / page)];
    const std::vector<int64_t> st = strides();
    return id * st[0] + h * st[1] + (t % page) * st[2];
  }
  hattn::PagedKvCache cache() {
    hattn::PagedKvCache c;
    c.k_pages = k.view({num_pages, kv_heads, page, dim}, strides());
    c.v_pages = v.view({num_pages, kv_heads, page, dim}, strides());
    c.page_table = table.data();
    c.pages_per_seq = pages_per_seq;
    c.lengths = lengths.data();
    c.batch = batch;
    return c;
  }
  // Sequence b's first len tokens gathered as [1, Hkv, len, D] fp32 (the reference's input).
  std::vector<float> gather(const Store& s, int64_t b, int64_t len) const {
    std::vector<float> out(static_cast<size_t>(kv_heads * len * dim));
    for (int64_t h = 0; h < kv_heads; ++h) {
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t x = 0; x < dim; ++x) {
          out[static_cast<size_t>((h * len + t) * dim + x)] = s.get(offset(b, t, h) + x);
        }
      }
    }
    return out;
  }
};

// Pages handed out in a shuffled order, every unused table entry a garbage index.
void assign_pages(PagedBatch* p, TestRng& rng) {
  std::vector<int32_t> ids(static_cast<size_t>(p->num_pages));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng.engine());
  size_t next = 0;
  for (int64_t b = 0; b < p->batch; ++b) {
    const int64_t used = (p->lengths[static_cast<size_t>(b)] + p->page - 1) / p->page;
    for (int64_t i = 0; i < p->pages_per_seq; ++i) {
      p->table[static_cast<size_t>(b * p->pages_per_seq + i)] =
          i < used ? ids.at(next++) : (i % 2 ? -12345 : 1 << 30);
    }
  }
}

// Fills every cached token of every sequence with normal values.
void fill_tokens(PagedBatch* p, TestRng& rng) {
  for (int64_t b = 0; b < p->batch; ++b) {
    for (int64_t t = 0; t < p->lengths[static_cast<size_t>(b)]; ++t) {
      for (int64_t h = 0; h < p->kv_heads; ++h) {
        for (int64_t x = 0; x < p->dim; ++x) {
          p->k.set(p->offset(b, t, h) + x, rng.normal());
          p->v.set(p->offset(b, t, h) + x, rng.normal());
        }
      }
    }
  }
}

// The tolerance of one output element of `dtype` (fp32: test_support's default).
double tolerance(DType t, double ref, double ref_abs) {
  if (t == DType::f32) return 1e-5 + 1e-4 * std::fabs(ref);
  return sixteen_bit_tolerance(t, ref, ref_abs);
}

// out [B, Hq, Lq, D] and lse [B, Hq, Lq] of a paged call against the reference on each
// sequence's gathered keys. "" when every element is within tolerance.
std::string check_paged(const PagedBatch& p, const Store& q, const Store& out,
                        const std::vector<float>& lse, int64_t q_heads, int64_t lq, bool causal) {
  const int64_t d = p.dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = p.lengths[static_cast<size_t>(b)];
    const size_t q0 = static_cast<size_t>(b * q_heads * lq * d);
    std::vector<float> qb(q.values.begin() + static_cast<std::ptrdiff_t>(q0),
                          q.values.begin() + static_cast<std::ptrdiff_t>(q0 + q_heads * lq * d));
    std::vector<double> ref(static_cast<size_t>(q_heads * lq * d), 0.0),
        ref_lse(static_cast<size_t>(q_heads * lq), -std::numeric_limits<double>::infinity()),
        ref_abs = ref, unused;
    if (len > 0) {
      const std::vector<float> kb = p.gather(p.k, b, len), vb = p.gather(p.v, b, len);
      std::vector<float> vabs(vb.size());
      for (size_t i = 0; i < vb.size(); ++i) vabs[i] = std::fabs(vb[i]);
      const AttnShape s{1, q_heads, p.kv_heads, lq, len, d};
      const AttnStrides st = dense_strides(s);
      reference_attention(qb.data(), kb.data(), vb.data(), s, st, causal, scale, &ref, &ref_lse);
      reference_attention(qb.data(), kb.data(), vabs.data(), s, st, causal, scale, &ref_abs,
                          &unused);
    }
    for (size_t i = 0; i < ref.size(); ++i) {
      const double got = out.get(static_cast<int64_t>(q0 + i));
      if (!(std::fabs(got - ref[i]) <= tolerance(out.dtype, ref[i], ref_abs[i]))) {
        return "sequence " + std::to_string(b) + " (length " + std::to_string(len) + ") out[" +
               std::to_string(i) + "] = " + std::to_string(got) + ", reference " +
               std::to_string(ref[i]);
      }
    }
    for (size_t r = 0; r < ref_lse.size(); ++r) {
      const float got = lse[static_cast<size_t>(b * q_heads * lq) + r];
      const bool ok = std::isinf(ref_lse[r])
                          ? (std::isinf(got) && got < 0)
                          : std::fabs(got - ref_lse[r]) <= 1e-5 * (1 + std::fabs(ref_lse[r]));
      if (!ok) {
        return "sequence " + std::to_string(b) + " lse[" + std::to_string(r) +
               "] = " + std::to_string(got) + ", reference " + std::to_string(ref_lse[r]);
      }
    }
  }
  return "";
}

struct PagedShape {
  const char* name;
  int64_t q_heads, kv_heads, lq, dim, page;
  std::vector<int32_t> lengths;
};

// Decode (Lq <= 8: the batch kernel) and chunked prefill (Lq > 8: gathered per sequence) over
// paged caches in every dtype, both page layouts, causal or not, automatic and forced splits.
// Lengths cover an empty sequence, one token, a page exactly, a length below Lq (causal rows that
// see nothing) and several key blocks.
TEST(Paged, MatchesGatheredReference) {
  const PagedShape shapes[] = {
      {"gqa_d128_page16", 8, 2, 1, 128, 16, {700, 0, 1, 16, 333}},
      {"mha_d64_lq3_page24", 2, 2, 3, 64, 24, {2, 48, 517, 5}},
      {"mqa_d80_page16", 4, 1, 2, 80, 16, {40, 1, 300}},
      {"prefill_d64_page32", 4, 2, 12, 64, 32, {200, 7, 0, 64}},
  };
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (const PagedShape& sh : shapes) {
      for (int form = 0; form < 8; ++form) {
        const bool causal = form & 1, token_major = form & 2, forced_splits = form & 4;
        const std::string name = std::string(hattn::to_string(t)) + "_" + sh.name +
                                 (causal ? "_causal" : "") + (token_major ? "_nhd" : "_hnd") +
                                 (forced_splits ? "_splits3" : "");
        SCOPED_TRACE(name);
        TestRng rng(name);
        SCOPED_TRACE(rng.description());
        const int64_t batch = static_cast<int64_t>(sh.lengths.size());
        const int32_t longest = *std::max_element(sh.lengths.begin(), sh.lengths.end());
        const int64_t pps = (longest + sh.page - 1) / sh.page + 1;  // one spare entry per row
        PagedBatch p(t, batch, sh.kv_heads, sh.page, sh.dim, pps, batch * pps + 3, token_major);
        p.lengths = sh.lengths;
        assign_pages(&p, rng);
        fill_tokens(&p, rng);
        const int64_t nq = batch * sh.q_heads * sh.lq * sh.dim;
        Store q(t, nq), out(t, nq);
        for (int64_t i = 0; i < nq; ++i) q.set(i, rng.normal());
        std::vector<float> lse(static_cast<size_t>(batch * sh.q_heads * sh.lq),
                               std::numeric_limits<float>::quiet_NaN());
        const std::vector<char> k_before = p.k.bytes(), v_before = p.v.bytes();
        const std::vector<int64_t> qs = {batch, sh.q_heads, sh.lq, sh.dim};
        const std::vector<int64_t> qst = {sh.q_heads * sh.lq * sh.dim, sh.lq * sh.dim, sh.dim, 1};
        const TensorView lse_view = TensorView::contiguous(lse.data(), {batch, sh.q_heads, sh.lq});
        hattn::AttentionOptions o;
        o.causal = causal;
        o.lse = &lse_view;
        o.decode_splits = forced_splits ? 3 : 0;
        hattn::Dispatch d;
        const hattn::Status st =
            hattn::paged_attention(q.view(qs, qst), p.cache(), out.view(qs, qst), o, &d);
        ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
        if (sh.lq <= hattn::decode_threshold()) {
          EXPECT_EQ(d.kernel.rfind("dense_paged_decode", 0), 0u) << d.kernel;
        } else {
          EXPECT_NE(d.reason.find("gathered"), std::string::npos) << d.reason;
        }
        EXPECT_NE(d.kernel.find(std::string("_") + hattn::to_string(t) + "_"), std::string::npos);
        const std::string m = check_paged(p, q, out, lse, sh.q_heads, sh.lq, causal);
        EXPECT_TRUE(m.empty()) << m << " (kernel " << d.kernel << ")";
        EXPECT_TRUE(p.k.bytes() == k_before && p.v.bytes() == v_before) << "the cache was written";
      }
    }
  }
}

// Every paged kernel of this program runs on some call: the specialized head dims, the generic
// one, both masks and dtypes.
TEST(Paged, EveryKernelRuns) {
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.variant != "dense_paged") continue;
    SCOPED_TRACE(k.name);
    const DType t = k.dtype == "bf16" ? DType::bf16 : k.dtype == "f16" ? DType::f16 : DType::f32;
    const int64_t dim = k.head_dim ? k.head_dim : 48;
    TestRng rng(k.name);
    SCOPED_TRACE(rng.description());
    PagedBatch p(t, 3, 2, 16, dim, 20, 64, false);
    p.lengths = {300, 17, 3};
    assign_pages(&p, rng);
    fill_tokens(&p, rng);
    const int64_t lq = 2, nq = 3 * 4 * lq * dim;
    Store q(t, nq), out(t, nq);
    for (int64_t i = 0; i < nq; ++i) q.set(i, rng.normal());
    std::vector<float> lse(3 * 4 * lq, std::numeric_limits<float>::quiet_NaN());
    const TensorView lse_view = TensorView::contiguous(lse.data(), {3, 4, lq});
    hattn::AttentionOptions o;
    o.causal = k.causal;
    o.kernel = k.name;
    o.lse = &lse_view;
    const std::vector<int64_t> qs = {3, 4, lq, dim}, qst = {4 * lq * dim, lq * dim, dim, 1};
    const hattn::Status st =
        hattn::paged_attention(q.view(qs, qst), p.cache(), out.view(qs, qst), o);
    ASSERT_TRUE(st.ok()) << st.message;
    const std::string m = check_paged(p, q, out, lse, 4, lq, k.causal);
    EXPECT_TRUE(m.empty()) << m;
  }
}

// A serving loop: 8 sequences with prompts of different lengths enter their paged caches
// (paged_append of the whole prompt), then decode token by token; each step appends one token per
// active sequence (a batch whose members change as sequences finish, pages handed out from a
// shuffled pool as they fill) and decodes it. Every step's output equals the same row of one causal
// pass over the whole sequence (the reference; and hattn's own causal prefill).
TEST(Paged, ServingLoopEqualsOneCausalPass) {
  for (DType t : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(hattn::to_string(t));
    TestRng rng(std::string("serving_") + hattn::to_string(t));
    SCOPED_TRACE(rng.description());
    const int64_t nseq = 8, hq = 8, hkv = 2, dim = 64, page = 16;
    const std::vector<int64_t> prompt = {1, 5, 16, 17, 40, 3, 64, 9};
    const std::vector<int64_t> total = {30, 21, 16, 50, 41, 35, 70, 25};
    const int64_t pps = 5, num_pages = 48;
    // The whole sequences' q, k, v [1, H, L, D] (values rounded to the dtype).
    std::vector<Store> qs, ks, vs;
    for (int64_t b = 0; b < nseq; ++b) {
      qs.emplace_back(t, hq * total[b] * dim);
      ks.emplace_back(t, hkv * total[b] * dim);
      vs.emplace_back(t, hkv * total[b] * dim);
      for (Store* s : {&qs[b], &ks[b], &vs[b]}) {
        for (size_t i = 0; i < s->values.size(); ++i) s->set(static_cast<int64_t>(i), rng.normal());
      }
    }
    PagedBatch pool(t, nseq, hkv, page, dim, pps, num_pages, true);
    std::vector<int32_t> free_pages(static_cast<size_t>(num_pages));
    std::iota(free_pages.begin(), free_pages.end(), 0);
    std::shuffle(free_pages.begin(), free_pages.end(), rng.engine());
    std::fill(pool.table.begin(), pool.table.end(), -1);
    // Pages for sequence b up to `tokens` tokens.
    auto reserve = [&](int64_t b, int64_t tokens) {
      for (int64_t i = 0; i < (tokens + page - 1) / page; ++i) {
        int32_t& e = pool.table[static_cast<size_t>(b * pps + i)];
        if (e < 0) {
          e = free_pages.back();
          free_pages.pop_back();
        }
      }
    };
    // The token rows [t0, t0 + n) of a [1, H, L, D] store as a [1, H, n, D] view.
    auto rows = [&](Store& s, int64_t heads, int64_t len, int64_t t0, int64_t n) {
      char* base =
          static_cast<char*>(s.data()) + t0 * dim * static_cast<int64_t>(t == DType::f32 ? 4 : 2);
      return TensorView::strided(base, t, {1, heads, n, dim},
                                 {heads * len * dim, len * dim, dim, 1});
    };
    // A cache view over some sequences (the active ones): their own rows of table and lengths.
    auto sub_cache = [&](const std::vector<int64_t>& members, std::vector<int32_t>* table,
                         std::vector<int32_t>* lengths) {
      table->clear();
      lengths->clear();
      for (int64_t b : members) {
        table->insert(table->end(), pool.table.begin() + b * pps,
                      pool.table.begin() + (b + 1) * pps);
        lengths->push_back(pool.lengths[static_cast<size_t>(b)]);
      }
      hattn::PagedKvCache c = pool.cache();
      c.page_table = table->data();
      c.lengths = lengths->data();
      c.batch = static_cast<int64_t>(members.size());
      return c;
    };
    std::vector<int32_t> table, lengths;
    for (int64_t b = 0; b < nseq; ++b) {  // prompts, one sequence per append
      reserve(b, prompt[b]);
      const hattn::PagedKvCache c = sub_cache({b}, &table, &lengths);
      const hattn::Status st = hattn::paged_append(rows(ks[b], hkv, total[b], 0, prompt[b]),
                                                   rows(vs[b], hkv, total[b], 0, prompt[b]), c);
      ASSERT_TRUE(st.ok()) << st.message;
      pool.lengths[static_cast<size_t>(b)] = static_cast<int32_t>(prompt[b]);
    }
    // Decoded rows: out_rows[b][(pos - prompt) * Hq * D ...] for positions prompt .. total - 1.
    std::vector<std::vector<float>> decoded(static_cast<size_t>(nseq));
    for (int step = 0;; ++step) {
      std::vector<int64_t> active;
      for (int64_t b = 0; b < nseq; ++b) {
        if (pool.lengths[static_cast<size_t>(b)] < total[b]) active.push_back(b);
      }
      if (active.empty()) break;
      const int64_t n = static_cast<int64_t>(active.size());
      // This step's new tokens gathered as [n, H, 1, D].
      Store q(t, n * hq * dim), k(t, n * hkv * dim), v(t, n * hkv * dim), out(t, n * hq * dim);
      for (int64_t a = 0; a < n; ++a) {
        const int64_t b = active[static_cast<size_t>(a)],
                      pos = pool.lengths[static_cast<size_t>(b)];
        reserve(b, pos + 1);
        for (int64_t h = 0; h < hq; ++h) {
          for (int64_t x = 0; x < dim; ++x) {
            q.set((a * hq + h) * dim + x,
                  qs[b].values[static_cast<size_t>((h * total[b] + pos) * dim + x)]);
          }
        }
        for (int64_t h = 0; h < hkv; ++h) {
          for (int64_t x = 0; x < dim; ++x) {
            const size_t at = static_cast<size_t>((h * total[b] + pos) * dim + x);
            k.set((a * hkv + h) * dim + x, ks[b].values[at]);
            v.set((a * hkv + h) * dim + x, vs[b].values[at]);
          }
        }
      }
      hattn::PagedKvCache c = sub_cache(active, &table, &lengths);
      hattn::Status st = hattn::paged_append(k.view({n, hkv, 1, dim}, {hkv * dim, dim, dim, 1}),
                                             v.view({n, hkv, 1, dim}, {hkv * dim, dim, dim, 1}), c);
      ASSERT_TRUE(st.ok()) << "step " << step << ": " << st.message;
      for (int64_t a = 0; a < n; ++a) {
        ++lengths[static_cast<size_t>(a)];
        ++pool.lengths[static_cast<size_t>(active[static_cast<size_t>(a)])];
      }
      st = hattn::paged_attention(q.view({n, hq, 1, dim}, {hq * dim, dim, dim, 1}), c,
                                  out.view({n, hq, 1, dim}, {hq * dim, dim, dim, 1}));
      ASSERT_TRUE(st.ok()) << "step " << step << ": " << st.message;
      for (int64_t a = 0; a < n; ++a) {
        auto& dst = decoded[static_cast<size_t>(active[static_cast<size_t>(a)])];
        for (int64_t i = 0; i < hq * dim; ++i) dst.push_back(out.get(a * hq * dim + i));
      }
    }
    for (int64_t b = 0; b < nseq; ++b) {
      SCOPED_TRACE("sequence " + std::to_string(b));
      const AttnShape s{1, hq, hkv, total[b], total[b], dim};
      const AttnStrides st = dense_strides(s);
      std::vector<double> ref, ref_abs, unused;
      const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
      reference_attention(qs[b].values.data(), ks[b].values.data(), vs[b].values.data(), s, st,
                          true, scale, &ref, &unused);
      std::vector<float> vabs(vs[b].values.size());
      for (size_t i = 0; i < vabs.size(); ++i) vabs[i] = std::fabs(vs[b].values[i]);
      reference_attention(qs[b].values.data(), ks[b].values.data(), vabs.data(), s, st, true, scale,
                          &ref_abs, &unused);
      // hattn's own causal pass over the whole sequence.
      Store whole(t, hq * total[b] * dim);
      const std::vector<int64_t> shape = {1, hq, total[b], dim};
      const hattn::Status pass =
          hattn::attention(qs[b].view(shape, {0, total[b] * dim, dim, 1}),
                           ks[b].view({1, hkv, total[b], dim}, {0, total[b] * dim, dim, 1}),
                           vs[b].view({1, hkv, total[b], dim}, {0, total[b] * dim, dim, 1}),
                           whole.view(shape, {hq * total[b] * dim, total[b] * dim, dim, 1}), [] {
                             hattn::AttentionOptions o;
                             o.causal = true;
                             return o;
                           }());
      ASSERT_TRUE(pass.ok()) << pass.message;
      const auto& got = decoded[static_cast<size_t>(b)];
      ASSERT_EQ(static_cast<int64_t>(got.size()), (total[b] - prompt[b]) * hq * dim);
      int bad = 0;
      for (int64_t pos = prompt[b]; pos < total[b] && bad < 3; ++pos) {
        for (int64_t h = 0; h < hq; ++h) {
          for (int64_t x = 0; x < dim; ++x) {
            const size_t r = static_cast<size_t>((h * total[b] + pos) * dim + x);
            const double g = got[static_cast<size_t>(((pos - prompt[b]) * hq + h) * dim + x)];
            const double tol = tolerance(t, ref[r], ref_abs[r]);
            if (!(std::fabs(g - ref[r]) <= tol) ||
                !(std::fabs(whole.get(static_cast<int64_t>(r)) - ref[r]) <= tol)) {
              ADD_FAILURE() << "position " << pos << " head " << h << " channel " << x
                            << ": decoded " << g << ", causal pass "
                            << whole.get(static_cast<int64_t>(r)) << ", reference " << ref[r];
              ++bad;
            }
          }
        }
      }
    }
  }
}

// Packed sequences (FlashAttention's varlen layout) against the reference per sequence: empty
// query and key ranges, decode-length and prefill-length sequences in one call, causal or not.
TEST(Ragged, MatchesPerSequenceReference) {
  for (DType t : {DType::f32, DType::bf16}) {
    for (int causal = 0; causal < 2; ++causal) {
      const std::string name = std::string(hattn::to_string(t)) + (causal ? "_causal" : "");
      SCOPED_TRACE(name);
      TestRng rng("ragged_" + name);
      SCOPED_TRACE(rng.description());
      const int64_t hq = 4, hkv = 2, dim = 64;
      const std::vector<int32_t> lq = {5, 0, 1, 40, 3, 17}, lk = {5, 9, 300, 40, 0, 60};
      std::vector<int32_t> qo = {0}, ko = {0};
      for (size_t b = 0; b < lq.size(); ++b) {
        qo.push_back(qo.back() + lq[b]);
        ko.push_back(ko.back() + lk[b]);
      }
      const int64_t tq = qo.back(), tk = ko.back();
      Store q(t, tq * hq * dim), k(t, tk * hkv * dim), v(t, tk * hkv * dim), out(t, tq * hq * dim);
      for (Store* s : {&q, &k, &v}) {
        for (size_t i = 0; i < s->values.size(); ++i) s->set(static_cast<int64_t>(i), rng.normal());
      }
      std::vector<float> lse(static_cast<size_t>(hq * tq), std::numeric_limits<float>::quiet_NaN());
      const TensorView lse_view = TensorView::contiguous(lse.data(), {1, hq, tq});
      hattn::AttentionOptions o;
      o.causal = causal;
      o.lse = &lse_view;
      const hattn::Status st = hattn::ragged_attention(
          q.view({tq, hq, dim}, {hq * dim, dim, 1}), k.view({tk, hkv, dim}, {hkv * dim, dim, 1}),
          v.view({tk, hkv, dim}, {hkv * dim, dim, 1}), out.view({tq, hq, dim}, {hq * dim, dim, 1}),
          qo.data(), ko.data(), static_cast<int64_t>(lq.size()), o);
      ASSERT_TRUE(st.ok()) << st.message;
      const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
      for (size_t b = 0; b < lq.size(); ++b) {
        if (lq[b] == 0) continue;
        // Sequence b as [1, H, L, D] views of the packed arrays' values.
        const AttnShape s{1, hq, hkv, lq[b], std::max<int64_t>(lk[b], 1), dim};
        const AttnStrides strides{
            {0, dim, hq * dim, 1}, {0, dim, hkv * dim, 1}, {0, dim, hkv * dim, 1}};
        std::vector<double> ref(static_cast<size_t>(hq * lq[b] * dim), 0.0), ref_lse, ref_abs,
            unused;
        ref_lse.assign(static_cast<size_t>(hq * lq[b]), -std::numeric_limits<double>::infinity());
        ref_abs = ref;
        if (lk[b] > 0) {
          std::vector<float> vabs(v.values.size());
          for (size_t i = 0; i < vabs.size(); ++i) vabs[i] = std::fabs(v.values[i]);
          const float* qp = q.values.data() + qo[b] * hq * dim;
          const size_t k0 = static_cast<size_t>(ko[b] * hkv * dim);
          reference_attention(qp, k.values.data() + k0, v.values.data() + k0, s, strides, causal,
                              scale, &ref, &ref_lse);
          reference_attention(qp, k.values.data() + k0, vabs.data() + k0, s, strides, causal, scale,
                              &ref_abs, &unused);
        }
        for (int64_t h = 0; h < hq; ++h) {
          for (int64_t i = 0; i < lq[b]; ++i) {
            const size_t r = static_cast<size_t>(h * lq[b] + i);
            const float got_lse = lse[static_cast<size_t>(h * tq + qo[b] + i)];
            if (std::isinf(ref_lse[r])) {
              EXPECT_TRUE(std::isinf(got_lse) && got_lse < 0) << "sequence " << b;
            } else {
              EXPECT_NEAR(got_lse, ref_lse[r], 1e-5 * (1 + std::fabs(ref_lse[r])))
                  << "sequence " << b;
            }
            for (int64_t x = 0; x < dim; ++x) {
              const double g = out.get(((qo[b] + i) * hq + h) * dim + x);
              const double want = ref[r * static_cast<size_t>(dim) + static_cast<size_t>(x)];
              ASSERT_LE(std::fabs(g - want),
                        tolerance(t, want,
                                  ref_abs[r * static_cast<size_t>(dim) + static_cast<size_t>(x)]))
                  << "sequence " << b << " head " << h << " row " << i << " channel " << x;
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// paged_topk_attention and paged_loki_attention: decode over the same paged batches. Each
// sequence's out is compared with the float64 reference of the variant on its gathered keys
// (rows whose selection gap is below kMinGap left out, as in test_topk and test_loki) and, bit for
// bit, with the contiguous call (topk_attention, loki_attention) on the gathered cache forced to
// the same generic-D kernel's contiguous twin: the page table must change where keys are read,
// nothing else.

// A signed permutation per kv head: orthonormal exactly in fp32, and not the identity, so the
// query's rotation matters.
std::vector<float> permutation_bases(int64_t heads, int64_t d, TestRng& rng) {
  std::vector<float> basis(static_cast<size_t>(heads * d * d), 0.f);
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<int64_t> perm(static_cast<size_t>(d));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng.engine());
    for (int64_t e = 0; e < d; ++e) {
      const float sign = rng.uniform(0.f, 1.f) < 0.5f ? -1.f : 1.f;
      basis[static_cast<size_t>((h * d + e) * d + perm[static_cast<size_t>(e)])] = sign;
    }
  }
  return basis;
}

uint32_t float_bits(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// Store values as a contiguous tensor of the store's dtype (exact: they came from it).
Store restore(DType t, const std::vector<float>& values) {
  Store s(t, static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) {
    s.set(static_cast<int64_t>(i), values[i]);
  }
  return s;
}

// Whether this program has a paged decode kernel of `variant` for head dim d (else the call
// gathers).
bool has_paged_kernel(const std::string& variant, int64_t d) {
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.variant == variant && (k.head_dim == d || k.head_dim == 0)) {
      return true;
    }
  }
  return false;
}

TEST(PagedSelected, TopkAndLokiMatchGatheredReference) {
  const int64_t hq = 8, hkv = 2, page = 16, topk = 9, rank = 20;
  const std::vector<int32_t> lengths = {300, 0, 1, 16, 77, 5};
  std::set<std::string> used;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (int form = 0; form < 48; ++form) {
      const bool causal = form & 1, loki = form & 2, lead = form & 4, prefill = form & 8;
      // The specialized head dims (paged kernels in hattn's build) and one without (gathered).
      const int64_t dim = (form >> 4) == 0 ? 128 : (form >> 4) == 1 ? 64 : 80;
      if (lead && !loki) {
        continue;
      }
      // Decode (the paged kernels) and prefill against the cache (gathered, then the contiguous
      // call).
      const int64_t lq = prefill ? 12 : causal ? 3 : 1;
      const bool paged_kernel =
          !prefill && has_paged_kernel(loki ? "loki_paged" : "topk_paged", dim);
      const std::string name = std::string(hattn::to_string(t)) + (loki ? "_loki" : "_topk") +
                               (lead ? "_lead" : "") + (causal ? "_causal" : "") + "_lq" +
                               std::to_string(lq) + "_d" + std::to_string(dim);
      SCOPED_TRACE(name);
      TestRng rng(name);
      SCOPED_TRACE(rng.description());
      const int64_t batch = static_cast<int64_t>(lengths.size());
      const int64_t pps = 300 / page + 2;
      PagedBatch p(t, batch, hkv, page, dim, pps, batch * pps + 3, form & 1);
      p.lengths = lengths;
      assign_pages(&p, rng);
      fill_tokens(&p, rng);
      // The leading-channel copy: [P, Hkv, S, R] of k_pages' first R channels, slot for slot.
      const int64_t lead_r = rank + 3;
      Store lead_store(t, p.num_pages * hkv * page * lead_r);
      for (int64_t pg = 0; pg < p.num_pages; ++pg) {
        for (int64_t h = 0; h < hkv; ++h) {
          for (int64_t sl = 0; sl < page; ++sl) {
            const std::vector<int64_t> st = p.strides();
            for (int64_t c = 0; c < lead_r; ++c) {
              lead_store.set(((pg * hkv + h) * page + sl) * lead_r + c,
                             p.k.get(pg * st[0] + h * st[1] + sl * st[2] + c));
            }
          }
        }
      }
      const TensorView lead_view = lead_store.view({p.num_pages, hkv, page, lead_r},
                                                   {hkv * page * lead_r, page * lead_r, lead_r, 1});
      const std::vector<float> basis = permutation_bases(hkv, dim, rng);
      const TensorView basis_view = TensorView::contiguous(basis.data(), {hkv, dim, dim});
      const int64_t nq = batch * hq * lq * dim;
      Store q(t, nq), out(t, nq);
      for (int64_t i = 0; i < nq; ++i) {
        q.set(i, rng.normal());
      }
      const std::vector<char> k_before = p.k.bytes(), v_before = p.v.bytes();
      const std::vector<int64_t> qs = {batch, hq, lq, dim};
      const std::vector<int64_t> qst = {hq * lq * dim, lq * dim, dim, 1};
      hattn::Dispatch d;
      hattn::Status st;
      hattn::TopkOptions to;
      to.k = topk;
      to.causal = causal;
      hattn::LokiOptions lo;
      lo.k = topk;
      lo.rank = rank;
      lo.causal = causal;
      lo.k_lead = lead ? &lead_view : nullptr;
      if (loki) {
        st = hattn::paged_loki_attention(q.view(qs, qst), p.cache(), basis_view, out.view(qs, qst),
                                         lo, &d);
      } else {
        st = hattn::paged_topk_attention(q.view(qs, qst), p.cache(), out.view(qs, qst), to, &d);
      }
      ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
      used.insert(d.kernel);
      const std::string kind = std::string(loki ? "loki" : "topk") + (paged_kernel ? "_paged_decode"
                                                                      : prefill    ? "_prefill"
                                                                                   : "_decode");
      EXPECT_EQ(d.kernel.rfind(kind, 0), 0u) << d.kernel;
      EXPECT_EQ(d.reason.find("gathered") == std::string::npos, paged_kernel) << d.reason;
      EXPECT_TRUE(p.k.bytes() == k_before && p.v.bytes() == v_before) << "the cache was written";

      for (int64_t b = 0; b < batch; ++b) {
        const int64_t len = p.lengths[static_cast<size_t>(b)];
        SCOPED_TRACE("sequence " + std::to_string(b) + ", length " + std::to_string(len));
        const size_t q0 = static_cast<size_t>(b * hq * lq * dim),
                     n = static_cast<size_t>(hq * lq * dim);
        if (len == 0) {
          for (size_t i = 0; i < n; ++i) {
            ASSERT_EQ(out.get(static_cast<int64_t>(q0 + i)), 0.f) << "an empty sequence outputs 0";
          }
          continue;
        }
        const std::vector<float> qb(q.values.begin() + static_cast<std::ptrdiff_t>(q0),
                                    q.values.begin() + static_cast<std::ptrdiff_t>(q0 + n));
        const std::vector<float> kb = p.gather(p.k, b, len), vb = p.gather(p.v, b, len);
        // The float64 reference, rows with a near-tie at the k-th key left out.
        const AttnShape a{1, hq, hkv, lq, len, dim};
        const AttnStrides strides = dense_strides(a);
        const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
        std::vector<double> ref, gap;
        if (loki) {
          reference_loki_attention(qb.data(), kb.data(), vb.data(), basis.data(), a, strides,
                                   causal, scale, rank, topk, &ref, &gap);
        } else {
          reference_topk_attention(qb.data(), kb.data(), vb.data(), a, strides, causal, scale, topk,
                                   &ref, &gap);
        }
        int bad = 0;
        for (size_t i = 0; i < n && bad < 3; ++i) {
          if (gap[i / static_cast<size_t>(dim)] < kMinGap) {
            continue;
          }
          const double got = out.get(static_cast<int64_t>(q0 + i));
          const double tol = t == DType::f32 ? 1e-5 + 1e-4 * std::fabs(ref[i])
                                             : sixteen_bit_output_tolerance(t, ref[i]);
          if (!(std::fabs(got - ref[i]) <= tol)) {
            ADD_FAILURE() << "out[" << i << "] = " << got << ", reference " << ref[i];
            ++bad;
          }
        }
        // The contiguous call on the gathered cache, forced to the generic-D kernel: bit for bit.
        Store qc = restore(t, qb), kc = restore(t, kb), vc = restore(t, vb),
              oc(t, static_cast<int64_t>(n));
        const std::vector<int64_t> cs = {1, hq, lq, dim}, cst = {hq * lq * dim, lq * dim, dim, 1};
        const std::vector<int64_t> ks = {1, hkv, len, dim},
                                   kst = {hkv * len * dim, len * dim, dim, 1};
        // The paged kernel's contiguous twin (its head dim's decode kernel); gathered: the
        // contiguous call's own choice, which the gathered call made too.
        const std::string twin = !paged_kernel ? std::string()
                                               : std::string(loki ? "loki" : "topk") + "_decode_" +
                                                     (causal ? "causal" : "noncausal") + "_d" +
                                                     std::to_string(dim) + "_" +
                                                     hattn::to_string(t) + "_" + cpu_family();
        hattn::Status sc;
        if (loki) {
          std::vector<float> lead_c;
          for (int64_t i = 0; i < hkv * len; ++i) {
            for (int64_t c = 0; c < lead_r; ++c) {
              lead_c.push_back(kb[static_cast<size_t>(i * dim + c)]);
            }
          }
          Store lc = restore(t, lead_c);
          const TensorView lcv =
              lc.view({1, hkv, len, lead_r}, {hkv * len * lead_r, len * lead_r, lead_r, 1});
          hattn::LokiOptions o = lo;
          o.kernel = twin;
          o.k_lead = lead ? &lcv : nullptr;
          sc = hattn::loki_attention(qc.view(cs, cst), kc.view(ks, kst), vc.view(ks, kst),
                                     basis_view, oc.view(cs, cst), o);
        } else {
          hattn::TopkOptions o = to;
          o.kernel = twin;
          sc = hattn::topk_attention(qc.view(cs, cst), kc.view(ks, kst), vc.view(ks, kst),
                                     oc.view(cs, cst), o);
        }
        ASSERT_TRUE(sc.ok()) << twin << ": " << sc.message;
        for (size_t i = 0; i < n; ++i) {
          const float got = out.get(static_cast<int64_t>(q0 + i)),
                      want = oc.get(static_cast<int64_t>(i));
          if (float_bits(got) != float_bits(want)) {
            ADD_FAILURE() << "out[" << i << "] = " << got << ", the contiguous " << twin
                          << " wrote " << want;
            break;
          }
        }
      }
    }
  }
  // Every paged top-k and Loki kernel ran on some call above.
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.variant == "topk_paged" || k.variant == "loki_paged") {
      EXPECT_EQ(used.count(k.name), 1u) << k.name << " never ran";
    }
  }
}

// The paged selecting calls refuse what paged_attention refuses (their checks are its) and what
// their contiguous forms refuse, writing nothing.
TEST(PagedSelected, Refusals) {
  TestRng rng("paged_selected_refusals");
  SCOPED_TRACE(rng.description());
  const int64_t hq = 4, hkv = 2, dim = 64, page = 16;
  PagedBatch p(DType::f32, 2, hkv, page, dim, 4, 10, false);
  p.lengths = {20, 40};
  assign_pages(&p, rng);
  fill_tokens(&p, rng);
  const std::vector<float> basis = permutation_bases(hkv, dim, rng);
  const TensorView basis_view = TensorView::contiguous(basis.data(), {hkv, dim, dim});
  auto run = [&](int64_t lq,
                 const std::function<void(hattn::PagedKvCache*, hattn::TopkOptions*,
                                          hattn::LokiOptions*)>& edit,
                 bool loki) {
    Store q(DType::f32, 2 * hq * lq * dim), out(DType::f32, 2 * hq * lq * dim);
    for (int64_t i = 0; i < 2 * hq * lq * dim; ++i) {
      q.set(i, rng.normal());
    }
    const std::vector<char> before = out.bytes();
    hattn::PagedKvCache c = p.cache();
    hattn::TopkOptions to;
    to.k = 4;
    hattn::LokiOptions lo;
    lo.k = 4;
    lo.rank = 8;
    edit(&c, &to, &lo);
    const std::vector<int64_t> qs = {2, hq, lq, dim}, qst = {hq * lq * dim, lq * dim, dim, 1};
    hattn::Status st =
        loki ? hattn::paged_loki_attention(q.view(qs, qst), c, basis_view, out.view(qs, qst), lo)
             : hattn::paged_topk_attention(q.view(qs, qst), c, out.view(qs, qst), to);
    EXPECT_TRUE(st.ok() || out.bytes() == before) << "a refused call wrote out";
    return st;
  };
  auto none = [](hattn::PagedKvCache*, hattn::TopkOptions*, hattn::LokiOptions*) {};
  for (bool loki : {false, true}) {
    SCOPED_TRACE(loki ? "loki" : "topk");
    hattn::Status st = run(9, none, loki);  // prefill against the cache: gathered, accepted
    EXPECT_TRUE(st.ok()) << st.message;
    st = run(
        1,
        [](hattn::PagedKvCache* c, hattn::TopkOptions*, hattn::LokiOptions*) {
          const_cast<int32_t*>(c->page_table)[4 + 2] = 10;  // sequence 1's third page
        },
        loki);
    EXPECT_EQ(st.code, StatusCode::invalid_argument);
    EXPECT_NE(st.message.find("sequence 1: page_table[1][2] = 10 is out of range"),
              std::string::npos)
        << st.message;
    assign_pages(&p, rng);  // undo
  }
  hattn::Status st = run(
      1, [](hattn::PagedKvCache*, hattn::TopkOptions* o, hattn::LokiOptions*) { o->k = 0; }, false);
  EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
  Store wrong_lead(DType::f32, 10 * hkv * page * 4);
  const TensorView wl = wrong_lead.view({10, hkv, page, 4}, {hkv * page * 4, page * 4, 4, 1});
  st = run(
      1, [&](hattn::PagedKvCache*, hattn::TopkOptions*, hattn::LokiOptions* o) { o->k_lead = &wl; },
      true);
  EXPECT_EQ(st.code, StatusCode::invalid_argument);
  EXPECT_NE(st.message.find("k_lead holds R=4 channels; it needs r=8"), std::string::npos)
      << st.message;
}

// Every malformed batch is refused with invalid_argument, a message naming the sequence and the
// index, and nothing written.
TEST(Paged, RefusalsNameTheSequenceAndWriteNothing) {
  TestRng rng("refusals");
  SCOPED_TRACE(rng.description());
  const int64_t hq = 4, hkv = 2, dim = 64, page = 16;
  PagedBatch base(DType::f32, 3, hkv, page, dim, 4, 12, false);
  base.lengths = {20, 5, 40};
  assign_pages(&base, rng);
  fill_tokens(&base, rng);
  Store q(DType::f32, 3 * hq * dim);
  for (int64_t i = 0; i < 3 * hq * dim; ++i) q.set(i, rng.normal());
  struct Bad {
    const char* what;
    std::function<void(PagedBatch*)> edit;
    const char* expect;
  };
  const std::vector<Bad> cases = {
      {"page index out of range", [](PagedBatch* p) { p->table[2 * 4 + 1] = 12; },
       "sequence 2: page_table[2][1] = 12 is out of range"},
      {"negative page index", [](PagedBatch* p) { p->table[0] = -1; },
       "sequence 0: page_table[0][0] = -1"},
      {"length beyond the pages", [](PagedBatch* p) { p->lengths[1] = 65; },
       "sequence 1: lengths[1] = 65 exceeds its pages"},
      {"negative length", [](PagedBatch* p) { p->lengths[2] = -3; }, "sequence 2: lengths[2] = -3"},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(c.what);
    PagedBatch p = base;
    c.edit(&p);
    Store out(DType::f32, 3 * hq * dim);
    const hattn::Status st =
        hattn::paged_attention(q.view({3, hq, 1, dim}, {hq * dim, dim, dim, 1}), p.cache(),
                               out.view({3, hq, 1, dim}, {hq * dim, dim, dim, 1}));
    EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
    EXPECT_NE(st.message.find(c.expect), std::string::npos) << st.message;
    for (float x : out.f32) ASSERT_TRUE(std::isnan(x)) << "a refused call wrote out";
    // paged_append refuses the same cache, and writes no page.
    Store k1(DType::f32, 3 * hkv * dim);
    for (int64_t i = 0; i < 3 * hkv * dim; ++i) k1.set(i, 1.f);
    const std::vector<char> before = p.k.bytes();
    const hattn::Status sa =
        hattn::paged_append(k1.view({3, hkv, 1, dim}, {hkv * dim, dim, dim, 1}),
                            k1.view({3, hkv, 1, dim}, {hkv * dim, dim, dim, 1}), p.cache());
    EXPECT_EQ(sa.code, StatusCode::invalid_argument) << sa.message;
    EXPECT_TRUE(p.k.bytes() == before) << "a refused append wrote the cache";
  }
  {  // Query heads that are not a multiple of the cache's kv heads.
    PagedBatch p = base;
    Store q3(DType::f32, 3 * 3 * dim), out(DType::f32, 3 * 3 * dim);
    for (int64_t i = 0; i < 9 * dim; ++i) q3.set(i, 0.5f);
    const hattn::Status st =
        hattn::paged_attention(q3.view({3, 3, 1, dim}, {3 * dim, dim, dim, 1}), p.cache(),
                               out.view({3, 3, 1, dim}, {3 * dim, dim, dim, 1}));
    EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
    EXPECT_NE(st.message.find("multiple of the cache's key/value heads"), std::string::npos);
  }
  {  // Two sequences appending into one page.
    PagedBatch p = base;
    p.lengths = {20, 5, 40};
    p.table[1 * 4 + 0] = p.table[0 * 4 + 1];  // sequence 1's page 0 is sequence 0's page 1
    Store k1(DType::f32, 3 * hkv * dim);
    for (int64_t i = 0; i < 3 * hkv * dim; ++i) k1.set(i, 1.f);
    const std::vector<char> before = p.k.bytes();
    const hattn::Status st =
        hattn::paged_append(k1.view({3, hkv, 1, dim}, {hkv * dim, dim, dim, 1}),
                            k1.view({3, hkv, 1, dim}, {hkv * dim, dim, dim, 1}), p.cache());
    EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
    EXPECT_NE(st.message.find("sequence 1 would write page"), std::string::npos) << st.message;
    EXPECT_TRUE(p.k.bytes() == before);
  }
  {  // Ragged offsets that decrease, and a last offset that is not the packed length.
    Store qq(DType::f32, 10 * hq * dim), kk(DType::f32, 10 * hkv * dim),
        out(DType::f32, 10 * hq * dim);
    for (Store* s : {&qq, &kk}) {
      for (size_t i = 0; i < s->values.size(); ++i) s->set(static_cast<int64_t>(i), 0.25f);
    }
    const std::vector<int32_t> decreasing = {0, 6, 4, 10}, short_end = {0, 3, 6, 9},
                               ok = {0, 3, 6, 10};
    struct RaggedBad {
      const std::vector<int32_t>* qo;
      const char* expect;
    };
    for (const RaggedBad& c : {RaggedBad{&decreasing, "sequence 1: q_offsets[2] = 4 is below"},
                               RaggedBad{&short_end, "q_offsets[3] = 9 must equal"}}) {
      const hattn::Status st = hattn::ragged_attention(
          qq.view({10, hq, dim}, {hq * dim, dim, 1}), kk.view({10, hkv, dim}, {hkv * dim, dim, 1}),
          kk.view({10, hkv, dim}, {hkv * dim, dim, 1}), out.view({10, hq, dim}, {hq * dim, dim, 1}),
          c.qo->data(), ok.data(), 3);
      EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
      EXPECT_NE(st.message.find(c.expect), std::string::npos) << st.message;
      for (float x : out.f32) ASSERT_TRUE(std::isnan(x)) << "a refused call wrote out";
    }
  }
}

}  // namespace
}  // namespace hattn_test
