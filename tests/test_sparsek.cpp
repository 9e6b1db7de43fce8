// SPARSEK (Lou et al. 2024) against plain double-precision loops written here, and the spec's
// invariants: the mask lies in [0, 1] and sums to k; it equals the projection of a sort-based
// float64 reference (tests/reference.cpp), on random rows and on rows built to hit the operator's
// boundaries (boundary_rows: integer spacing, powers of two, 0/1 solutions, ties, tiny and huge
// magnitudes, k = 0, 1, n - 1, n, > n); tau is shift-equivariant; the per-prefix sweep equals that
// projection on every prefix (ties and monotone sequences included); k >= L with w = 0 is dense
// causal attention; k = 0 is sliding-window attention; both gate modes; bottom-right alignment;
// decode over the bounded cache equals prefill with the full mask; every refusal; bf16 and f16
// q, k, v and out (with 16-bit x and w_score for the scores) against the float64 reference on the
// rounded inputs, the decoder's 16-bit cache included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "sparsek_sweep.h"  // runtime/src: the sweep is tested directly as well
#include "test_support.h"

namespace {

using hattn::Dispatch;
using hattn::SparsekGate;
using hattn::SparsekOptions;
using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;
using namespace hattn_test;

// --- independent reference ------------------------------------------------------------------

struct SparsekShape {
  int64_t batch = 1, q_heads = 2, kv_heads = 1, lq = 64, lk = 64, head_dim = 64, model_dim = 32;
};

// reference_sparsek_attention (tests/reference.cpp) over this shape, with the library's own
// scores u (fp32) so that selections compare like with like.
void ref_sparsek(const std::vector<float>& q, const std::vector<float>& k,
                 const std::vector<float>& v, const std::vector<float>& u, const SparsekShape& s,
                 int64_t budget, int64_t window, bool logit, double scale, std::vector<double>* out,
                 std::vector<double>* gap) {
  const AttnShape shape{s.batch, s.q_heads, s.kv_heads, s.lq, s.lk, s.head_dim};
  reference_sparsek_attention(q.data(), k.data(), v.data(), u.data(), shape, budget, window, logit,
                              scale, out, gap);
}

// --- helpers ----------------------------------------------------------------------------------

std::vector<float> randn(size_t n, TestRng& rng, float sd = 1.f) {
  std::vector<float> x(n);
  for (float& e : x) e = rng.normal(sd);
  return x;
}

HostTensor tensor_from(const std::vector<float>& data, const std::vector<int64_t>& shape,
                       Layout layout) {
  HostTensor t(shape, layout);
  for (int64_t f = 0; f < t.numel(); ++f) t.at_flat(f) = data[static_cast<size_t>(f)];
  return t;
}

struct AttnCase {
  SparsekShape s;
  int64_t budget = 8, window = 16;
  float slope = 0.f;
  bool logit = false;
  Layout layout = Layout::kContiguous;
  std::string kernel;
};

struct AttnInputs {
  std::vector<float> q, k, v, x, w, u;
};

AttnInputs make_inputs(const AttnCase& c, TestRng& rng) {
  const SparsekShape& s = c.s;
  AttnInputs in;
  in.q = randn(static_cast<size_t>(s.batch * s.q_heads * s.lq * s.head_dim), rng);
  in.k = randn(static_cast<size_t>(s.batch * s.kv_heads * s.lk * s.head_dim), rng);
  in.v = randn(in.k.size(), rng);
  in.x = randn(static_cast<size_t>(s.batch * s.lk * s.model_dim), rng);
  in.w = randn(static_cast<size_t>(s.kv_heads * s.model_dim), rng, 0.5f);
  in.u.assign(static_cast<size_t>(s.batch * s.kv_heads * s.lk), 0.f);
  Status st =
      hattn::sparsek_scores(TensorView::contiguous(in.x.data(), {s.batch, s.lk, s.model_dim}),
                            TensorView::contiguous(in.w.data(), {s.kv_heads, s.model_dim}), c.slope,
                            TensorView::contiguous(in.u.data(), {s.batch, s.kv_heads, s.lk}));
  EXPECT_TRUE(st.ok()) << st.message;
  return in;
}

SparsekOptions options_of(const AttnCase& c) {
  SparsekOptions o;
  o.k = c.budget;
  o.window = c.window;
  o.slope = c.slope;
  o.gate = c.logit ? SparsekGate::logit : SparsekGate::value;
  o.kernel = c.kernel;
  return o;
}

// Runs sparsek_attention (poisoned output, inputs checked unchanged) and returns the output.
HostTensor run_sparsek(const AttnCase& c, const AttnInputs& in, Dispatch* d = nullptr) {
  const SparsekShape& s = c.s;
  HostTensor q = tensor_from(in.q, {s.batch, s.q_heads, s.lq, s.head_dim}, c.layout);
  HostTensor k = tensor_from(in.k, {s.batch, s.kv_heads, s.lk, s.head_dim}, c.layout);
  HostTensor v = tensor_from(in.v, {s.batch, s.kv_heads, s.lk, s.head_dim}, c.layout);
  HostTensor x = tensor_from(in.x, {s.batch, s.lk, s.model_dim}, Layout::kPadded);
  HostTensor out({s.batch, s.q_heads, s.lq, s.head_dim}, c.layout);
  out.poison();
  out.snapshot();
  for (HostTensor* t : {&q, &k, &v, &x}) t->snapshot();
  std::vector<float> w = in.w;
  Status st = hattn::sparsek_attention(q.view(), k.view(), v.view(), x.view(),
                                       TensorView::contiguous(w.data(), {s.kv_heads, s.model_dim}),
                                       out.view(), options_of(c), d);
  EXPECT_TRUE(st.ok()) << st.message;
  for (HostTensor* t : {&q, &k, &v, &x}) EXPECT_EQ(t->changed_since_snapshot(false), "");
  EXPECT_EQ(out.changed_since_snapshot(true), "") << "out padding written";
  return out;
}

std::string check_case(const AttnCase& c, TestRng& rng, Dispatch* d = nullptr) {
  AttnInputs in = make_inputs(c, rng);
  HostTensor out = run_sparsek(c, in, d);
  std::vector<double> ref, gap;
  ref_sparsek(in.q, in.k, in.v, in.u, c.s, c.budget, c.window, c.logit,
              1.0 / std::sqrt(double(c.s.head_dim)), &ref, &gap);
  int left_out = 0;
  std::string m = compare_rows(out, ref, &gap, c.s.head_dim, &left_out);
  if (left_out > 0) std::cout << "[  GAPS    ] " << left_out << " rows left out\n";
  return m;
}

// --- the SparseK operator ----------------------------------------------------------------------

struct MaskResult {
  std::vector<float> p, tau;
};

MaskResult run_mask(const std::vector<float>& z, int64_t rows, int64_t m,
                    const std::vector<int64_t>& lengths, int64_t k) {
  MaskResult r;
  r.p.assign(static_cast<size_t>(rows * m), std::nanf(""));
  r.tau.assign(static_cast<size_t>(rows), std::nanf(""));
  Dispatch d;
  Status s = hattn::sparsek_mask(TensorView::contiguous(z.data(), {rows, m}), &lengths, k,
                                 TensorView::contiguous(r.p.data(), {rows, m}),
                                 TensorView::contiguous(r.tau.data(), {rows}), &d);
  EXPECT_TRUE(s.ok()) << s.message;
  return r;
}

TEST(SparsekMask, InUnitBoxSumsToKAndEqualsBruteForceProjection) {
  TestRng rng("mask");
  SCOPED_TRACE(rng.description());
  const int64_t m = 300;
  const std::vector<int64_t> lengths = {300, 0, 1, 7, 8, 9, 64, 65, 299, 150, 300, 37};
  const int64_t rows = static_cast<int64_t>(lengths.size());
  std::vector<float> z = randn(static_cast<size_t>(rows * m), rng, 2.f);
  // Row 10: many ties (values on a coarse grid), row 11: a narrow cluster (large free set).
  for (int64_t j = 0; j < m; ++j) z[10 * m + j] = std::round(z[10 * m + j]) * 0.5f;
  for (int64_t j = 0; j < m; ++j) z[11 * m + j] = 3.f + 0.01f * z[11 * m + j];
  for (int64_t k : {1, 5, 8, 64, 299, 300, 1000}) {
    MaskResult r = run_mask(z, rows, m, lengths, k);
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t n = lengths[static_cast<size_t>(row)];
      SCOPED_TRACE("k=" + std::to_string(k) + " row=" + std::to_string(row) +
                   " n=" + std::to_string(n));
      std::vector<double> zr(z.begin() + row * m, z.begin() + (row + 1) * m);
      const double tau = reference_sparsek_tau(zr, n, k);
      double sum = 0;
      for (int64_t j = 0; j < m; ++j) {
        const float p = r.p[static_cast<size_t>(row * m + j)];
        if (j >= n) {
          ASSERT_EQ(p, 0.f) << "past the row's length, j=" << j;
          continue;
        }
        ASSERT_TRUE(p >= 0.f && p <= 1.f) << "p=" << p << " j=" << j;
        const double ref_p = std::clamp(zr[static_cast<size_t>(j)] - tau, 0.0, 1.0);
        ASSERT_NEAR(p, ref_p, 2e-6) << "j=" << j;
        sum += p;
      }
      ASSERT_NEAR(sum, double(std::min(k, n)), 1e-5 * std::max<double>(1, double(k)));
      // tau is unique when some entry is free (0 < z - tau < 1); else f is flat at the root.
      bool unique = false;
      for (int64_t j = 0; j < n; ++j) {
        const double g = zr[static_cast<size_t>(j)] - tau;
        unique = unique || (g > 1e-6 && g < 1 - 1e-6);
      }
      if (std::isfinite(tau) && unique) {
        ASSERT_NEAR(r.tau[static_cast<size_t>(row)], tau, 1e-6 * (1 + std::abs(tau)));
      }
    }
  }
}

// Every boundary row, alone (m = n) and packed with others into one call of several lengths (the
// columns past a row's length hold huge values that must not count), p and tau poisoned first.
TEST(SparsekMask, BoundaryRowsMatchTheSortedProjection) {
  TestRng rng("boundary");
  SCOPED_TRACE(rng.description());
  const std::vector<BoundaryRow> rows = boundary_rows(rng.seed(), 200);
  int failures = 0;
  for (const BoundaryRow& row : rows) {
    const int64_t n = static_cast<int64_t>(row.z.size());
    std::vector<float> p(static_cast<size_t>(n), std::nanf("")), tau(1, std::nanf(""));
    const std::vector<int64_t> len = {n};
    Status s = hattn::sparsek_mask(TensorView::contiguous(row.z.data(), {1, n}), &len, row.k,
                                   TensorView::contiguous(p.data(), {1, n}),
                                   TensorView::contiguous(tau.data(), {1}));
    ASSERT_TRUE(s.ok()) << s.message;
    const std::string why = check_sparsek_row(row.z.data(), p.data(), n, row.k, tau[0]);
    if (!why.empty() && ++failures <= 20) ADD_FAILURE() << row.kind << " (n=" << n << "): " << why;
  }
  EXPECT_EQ(failures, 0) << "of " << rows.size() << " rows";
  std::cout << "[  ROWS    ] " << rows.size() << " boundary rows, " << failures << " wrong\n";

  // Packed: rows of one k side by side, m = the longest, the rest of each row poisoned.
  for (int64_t k : {1, 2, 9, 33}) {
    std::vector<const BoundaryRow*> group;
    int64_t m = 1;
    for (const BoundaryRow& row : rows) {
      if (row.k != k) continue;
      group.push_back(&row);
      m = std::max<int64_t>(m, static_cast<int64_t>(row.z.size()));
    }
    if (group.empty()) continue;
    const int64_t r = static_cast<int64_t>(group.size());
    std::vector<float> z(static_cast<size_t>(r * m), 3e38f), p(z.size(), std::nanf(""));
    std::vector<float> tau(static_cast<size_t>(r), std::nanf(""));
    std::vector<int64_t> len;
    for (int64_t i = 0; i < r; ++i) {
      std::copy(group[i]->z.begin(), group[i]->z.end(), z.begin() + i * m);
      len.push_back(static_cast<int64_t>(group[i]->z.size()));
    }
    Status s = hattn::sparsek_mask(TensorView::contiguous(z.data(), {r, m}), &len, k,
                                   TensorView::contiguous(p.data(), {r, m}),
                                   TensorView::contiguous(tau.data(), {r}));
    ASSERT_TRUE(s.ok()) << s.message;
    for (int64_t i = 0; i < r; ++i) {
      const std::string why =
          check_sparsek_row(group[i]->z.data(), p.data() + i * m, len[i], k, tau[i]);
      EXPECT_TRUE(why.empty()) << "packed, k=" << k << ", " << group[i]->kind << ": " << why;
      for (int64_t j = len[i]; j < m; ++j) ASSERT_EQ(p[i * m + j], 0.f) << "past the length";
    }
  }
}

// The operator's own example of issue 21: the projection of [11.5, 1.5, 0] onto sum p = 2.
TEST(SparsekMask, FlatRootBelowAPowerOfTwo) {
  const std::vector<float> z = {11.5f, 1.5f, 0.f};
  std::vector<float> p(3, std::nanf("")), tau(1, std::nanf(""));
  ASSERT_TRUE(hattn::sparsek_mask(TensorView::contiguous(z.data(), {1, 3}), nullptr, 2,
                                  TensorView::contiguous(p.data(), {1, 3}),
                                  TensorView::contiguous(tau.data(), {1}))
                  .ok());
  EXPECT_EQ(p, (std::vector<float>{1.f, 1.f, 0.f}));
  EXPECT_TRUE(tau[0] >= 0.f && tau[0] <= 0.5f) << tau[0];
}

// The reference itself on rows whose projection is known by hand.
TEST(SparsekMask, SortedReferenceOnKnownRows) {
  auto roots = [](std::vector<double> z, int64_t k) {
    return reference_sparsek_roots(z, static_cast<int64_t>(z.size()), k);
  };
  SparsekRoots r = roots({11.5, 1.5, 0}, 2);  // flat: [z_(3), z_(2) - 1]
  EXPECT_EQ(r.free_count, 0);
  EXPECT_EQ(r.lo, 0.0);
  EXPECT_EQ(r.hi, 0.5);
  r = roots({1.0, 0.5, 0.25}, 1);  // (1.75 - 1) / 3 = 0.25, where z = 0.25 is no longer free
  EXPECT_EQ(r.free_count, 2);
  EXPECT_NEAR(r.lo, 0.25, 1e-15);
  r = roots({3.0, 2.0, 1.0}, 1);  // z_(2) = z_(1) - 1: a single point, nothing free
  EXPECT_EQ(r.lo, 2.0);
  EXPECT_EQ(r.hi, 2.0);
  r = roots({5.0, 4.5}, 1);  // both free: (9.5 - 1) / 2
  EXPECT_EQ(r.lo, 4.25);
  EXPECT_EQ(roots({1.0, 2.0}, 2).hi, 0.0);  // k >= n: up to min z - 1
  EXPECT_TRUE(std::isinf(roots({1.0, 2.0}, 0).hi));
}

// The per-prefix sweep (which builds sparsek_attention's masks) on the same boundary rows: its tau
// on every prefix gives the reference's projection of that prefix.
TEST(SparsekSweep, BoundaryRowsEveryPrefix) {
  TestRng rng("boundary");
  SCOPED_TRACE(rng.description());
  for (const BoundaryRow& row : boundary_rows(rng.seed(), 64)) {
    if (row.k <= 0) continue;  // the sweep keeps no candidate for k = 0 (tested below)
    hattn::SparsekSweep sweep(row.k);
    std::vector<double> z;
    for (size_t j = 0; j < row.z.size(); ++j) {
      sweep.push(row.z[j], static_cast<int64_t>(j));
      z.push_back(row.z[j]);
      const int64_t n = static_cast<int64_t>(z.size());
      const SparsekRoots roots = reference_sparsek_roots(z, n, row.k);
      const double t = sweep.tau();
      if (row.k >= n) {
        ASSERT_TRUE(std::isinf(t) && t < 0) << row.kind << " prefix " << n;
        continue;
      }
      // Within the root interval, up to double rounding (of the closed form, and of z - 1 itself
      // once |z| >= 2^53, where a saturated entry goes straight to dead).
      double zmax = 1;
      for (double v : z) zmax = std::max(zmax, std::abs(v));
      const double slack = double(n) * 0x1p-52 * zmax;
      ASSERT_TRUE(t >= roots.lo - slack && t <= roots.hi + slack)
          << row.kind << " prefix " << n << ": tau " << t << " not in [" << roots.lo << ", "
          << roots.hi << "]";
      std::vector<int32_t> index(static_cast<size_t>(row.k));
      std::vector<float> gate(static_cast<size_t>(row.k));
      const int32_t got = sweep.select(index.data(), gate.data(), false);
      double sum = 0;
      for (int32_t s = 0; s < got; ++s) sum += gate[s];
      // The gates are p on the k largest: they sum to k unless ties past the k-th hold mass, or
      // doubles are 1 or more apart at tau (|tau| >= 2^52: two ties at FLT_MAX with k = 1 need
      // tau = FLT_MAX - 0.5, which no double holds; only tau's position is checked there).
      int64_t positive = 0;
      for (double v : z) positive += (v - t > 0) ? 1 : 0;
      if (positive <= row.k && std::abs(t) < 0x1p52) {
        ASSERT_NEAR(sum, double(row.k), 1e-5 * double(row.k)) << row.kind << " prefix " << n;
      }
    }
  }
}

TEST(SparsekMask, ShiftEquivariant) {
  TestRng rng("shift");
  SCOPED_TRACE(rng.description());
  const int64_t rows = 4, m = 500, k = 32;
  std::vector<float> z = randn(static_cast<size_t>(rows * m), rng, 1.5f);
  const std::vector<int64_t> len(rows, m);
  MaskResult base = run_mask(z, rows, m, len, k);
  for (float c : {3.25f, -17.5f, 100.f}) {
    std::vector<float> zc = z;
    for (float& e : zc) e += c;
    MaskResult sh = run_mask(zc, rows, m, len, k);
    const double ulp = std::abs(c) * 1.2e-7 * 4;  // z + c is rounded once in fp32
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(sh.tau[r], base.tau[r] + c, 1e-6 + 2 * ulp) << "c=" << c;
      for (int64_t j = 0; j < m; ++j) {
        ASSERT_NEAR(sh.p[r * m + j], base.p[r * m + j], 1e-6 + 4 * ulp) << "c=" << c;
      }
    }
  }
}

TEST(SparsekMask, RefusesBadArguments) {
  std::vector<float> z(12, 1.f), p(12), tau(3);
  auto zv = TensorView::contiguous(z.data(), {3, 4});
  auto pv = TensorView::contiguous(p.data(), {3, 4});
  auto tv = TensorView::contiguous(tau.data(), {3});
  Status s = hattn::sparsek_mask(zv, nullptr, -1, pv, tv);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(s.message.find("k must be >= 0"), std::string::npos) << s.message;
  s = hattn::sparsek_mask(zv, nullptr, 2, pv, TensorView::contiguous(tau.data(), {2}));
  EXPECT_NE(s.message.find("tau must be [rows]"), std::string::npos) << s.message;
  s = hattn::sparsek_mask(zv, nullptr, 2, TensorView::contiguous(p.data(), {4, 3}), tv);
  EXPECT_NE(s.message.find("p must have z's shape"), std::string::npos) << s.message;
  std::vector<int64_t> bad_len = {1, 5, 2};
  s = hattn::sparsek_mask(zv, &bad_len, 2, pv, tv);
  EXPECT_NE(s.message.find("lengths[1] = 5"), std::string::npos) << s.message;
  s = hattn::sparsek_mask(zv, nullptr, 2, zv, tv);
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
}

// The sweep's tau on every prefix equals the brute-force projection of that prefix.
TEST(SparsekSweep, EveryPrefixEqualsTheProjection) {
  TestRng rng("sweep");
  SCOPED_TRACE(rng.description());
  const int64_t n = 400;
  std::vector<std::vector<float>> sequences(5, std::vector<float>(n));
  for (int64_t j = 0; j < n; ++j) {
    sequences[0][j] = rng.normal(2.f);
    sequences[1][j] = std::round(rng.normal(2.f)) * 0.25f;  // ties
    sequences[2][j] = 0.01f * float(j);                     // increasing
    sequences[3][j] = -0.02f * float(j);                    // decreasing
    sequences[4][j] = 1.f + 0.001f * rng.normal();          // a dense cluster
  }
  for (size_t sq = 0; sq < sequences.size(); ++sq) {
    for (int64_t k : {1, 3, 16, 64}) {
      hattn::SparsekSweep sweep(k);
      std::vector<double> z;
      for (int64_t j = 0; j < n; ++j) {
        sweep.push(sequences[sq][j], j);
        z.push_back(sequences[sq][j]);
        if (j + 1 <= k) {
          ASSERT_TRUE(std::isinf(sweep.tau()) && sweep.tau() < 0);
          continue;
        }
        // tau is unique unless f is flat at the root (no free entry); the mask always is.
        const double ref = reference_sparsek_tau(z, j + 1, k);
        double f = 0;
        for (int64_t i = 0; i <= j; ++i) {
          const double p = std::clamp(z[i] - sweep.tau(), 0.0, 1.0);
          f += p;
          ASSERT_NEAR(p, std::clamp(z[i] - ref, 0.0, 1.0), 1e-9)
              << "sequence " << sq << " k=" << k << " prefix " << j + 1 << " entry " << i;
        }
        ASSERT_NEAR(f, double(k), 1e-9) << "sequence " << sq << " k=" << k << " prefix " << j + 1;
      }
      // The k largest, ties by the lower position.
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return z[a] > z[b]; });
      std::vector<int64_t> got;
      for (const auto& e : sweep.top()) got.push_back(e.pos);
      std::sort(got.begin(), got.end());
      std::vector<int64_t> want(order.begin(), order.begin() + k);
      std::sort(want.begin(), want.end());
      EXPECT_EQ(got, want) << "sequence " << sq << " k=" << k;
    }
  }
}

// --- attention ---------------------------------------------------------------------------------

TEST(SparsekAttention, MatchesReference) {
  for (bool logit : {false, true}) {
    for (int64_t d : {64, 128}) {
      TestRng rng("ref_d" + std::to_string(d) + (logit ? "_logit" : "_value"));
      SCOPED_TRACE(rng.description());
      AttnCase c;
      c.s = {2, 4, 2, 200, 200, d, 48};
      c.budget = 16;
      c.window = 24;
      c.slope = 0.01f;
      c.logit = logit;
      c.layout = Layout::kPadded;
      Dispatch disp;
      EXPECT_EQ(check_case(c, rng, &disp), "");
      if (d == 128) {
        EXPECT_NE(disp.kernel.find("d128"), std::string::npos) << disp.kernel;
      }
    }
  }
}

TEST(SparsekAttention, EveryKernelForced) {
  for (const std::string& name : kernel_names("sparsek")) {
    TestRng rng("forced_" + name);
    SCOPED_TRACE(rng.description() + " " + name);
    const hattn::KernelInfo* info = find_kernel(name);
    ASSERT_NE(info, nullptr);
    if (hattn::selected_build(*info).empty()) continue;
    AttnCase c;
    c.s = {1, 2, 1, 130, 130, info->head_dim ? info->head_dim : 80, 16};
    c.budget = 9;
    c.window = 5;
    c.kernel = name;
    EXPECT_EQ(check_case(c, rng), "");
  }
}

TEST(SparsekAttention, BottomRightAlignedWhenLqBelowLk) {
  TestRng rng("lq_lt_lk");
  SCOPED_TRACE(rng.description());
  AttnCase c;
  c.s = {1, 2, 2, 7, 333, 64, 24};
  c.budget = 20;
  c.window = 10;
  c.slope = -0.003f;
  EXPECT_EQ(check_case(c, rng), "");
}

TEST(SparsekAttention, LargeBudgetNoWindowIsDenseCausal) {
  TestRng rng("dense");
  SCOPED_TRACE(rng.description());
  AttnCase c;
  c.s = {1, 4, 2, 150, 150, 64, 16};
  c.budget = 150;
  c.window = 0;
  AttnInputs in = make_inputs(c, rng);
  HostTensor out = run_sparsek(c, in);
  AttnShape shape{1, 4, 2, 150, 150, 64};
  const AttnStrides strides = dense_strides(shape);
  std::vector<double> ref;
  reference_attention(in.q.data(), in.k.data(), in.v.data(), shape, strides, true,
                      1.0 / std::sqrt(64.0), &ref, nullptr);
  EXPECT_EQ(compare_to_reference(out, ref, Tolerance{}, "k >= L, w = 0 vs dense causal"), "");
}

TEST(SparsekAttention, ZeroBudgetIsSlidingWindow) {
  TestRng rng("window");
  SCOPED_TRACE(rng.description());
  AttnCase c;
  c.s = {1, 2, 1, 120, 120, 64, 16};
  c.budget = 0;
  c.window = 17;
  AttnInputs in = make_inputs(c, rng);
  HostTensor out = run_sparsek(c, in);
  // Sliding window by construction: dense causal attention of each row over its last w keys.
  const int64_t D = 64;
  std::vector<double> ref(static_cast<size_t>(2 * 120 * D), 0.0);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t i = 0; i < 120; ++i) {
      const int64_t j0 = std::max<int64_t>(0, i - 16);
      AttnShape one{1, 1, 1, 1, i - j0 + 1, D};
      const AttnStrides st = dense_strides(one);
      std::vector<double> o;
      reference_attention(&in.q[static_cast<size_t>((h * 120 + i) * D)],
                          &in.k[static_cast<size_t>(j0 * D)], &in.v[static_cast<size_t>(j0 * D)],
                          one, st, false, 1.0 / 8.0, &o, nullptr);
      std::copy(o.begin(), o.end(), ref.begin() + (h * 120 + i) * D);
    }
  }
  EXPECT_EQ(compare_to_reference(out, ref, Tolerance{}, "k = 0 vs sliding window"), "");
}

TEST(SparsekAttention, RefusesBadArguments) {
  std::vector<float> q(2 * 8 * 16, 1.f), k(8 * 16, 1.f), v(8 * 16, 1.f), o(2 * 8 * 16);
  std::vector<float> x(8 * 4, 1.f), w(4, 1.f);
  auto qv = TensorView::contiguous(q.data(), {1, 2, 8, 16});
  auto kv = TensorView::contiguous(k.data(), {1, 1, 8, 16});
  auto vv = TensorView::contiguous(v.data(), {1, 1, 8, 16});
  auto ov = TensorView::contiguous(o.data(), {1, 2, 8, 16});
  auto xv = TensorView::contiguous(x.data(), {1, 8, 4});
  auto wv = TensorView::contiguous(w.data(), {1, 4});
  SparsekOptions opt;
  opt.k = -1;
  Status s = hattn::sparsek_attention(qv, kv, vv, xv, wv, ov, opt);
  EXPECT_NE(s.message.find("budget k must be >= 0"), std::string::npos) << s.message;
  opt.k = 2;
  opt.window = -3;
  s = hattn::sparsek_attention(qv, kv, vv, xv, wv, ov, opt);
  EXPECT_NE(s.message.find("window w must be >= 0"), std::string::npos) << s.message;
  opt.window = 2;
  s = hattn::sparsek_attention(qv, kv, vv, TensorView::contiguous(x.data(), {1, 4, 8}), wv, ov,
                               opt);
  EXPECT_NE(s.message.find("x must be [B, Lk, Dm]"), std::string::npos) << s.message;
  s = hattn::sparsek_attention(qv, kv, vv, xv, TensorView::contiguous(w.data(), {2, 2}), ov, opt);
  EXPECT_NE(s.message.find("w_score must be [Hkv, Dm]"), std::string::npos) << s.message;
  s = hattn::sparsek_attention(qv, kv, TensorView::contiguous(v.data(), {1, 1, 4, 32}), xv, wv, ov,
                               opt);
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
  opt.slope = std::nanf("");
  s = hattn::sparsek_attention(qv, kv, vv, xv, wv, ov, opt);
  EXPECT_NE(s.message.find("slope must be finite"), std::string::npos) << s.message;
  hattn::SparsekDecoder dec;
  s = dec.step(qv, kv, vv, xv, ov);
  EXPECT_NE(s.message.find("before a successful reset"), std::string::npos) << s.message;
  opt.slope = 0;
  ASSERT_TRUE(dec.reset(1, 2, 1, 16, wv, opt).ok());
  s = dec.step(qv, kv, vv, xv, ov);  // Lq = 8, not one token
  EXPECT_NE(s.message.find("SparsekDecoder::step takes"), std::string::npos) << s.message;
  s = dec.reset(1, 3, 2, 16, wv, opt);
  EXPECT_NE(s.message.find("not a multiple"), std::string::npos) << s.message;
}

TEST(SparsekScores, MatchesDoubleReference) {
  TestRng rng("scores");
  SCOPED_TRACE(rng.description());
  const int64_t B = 2, L = 50, Dm = 70, H = 3;
  const float slope = 0.125f;
  std::vector<float> x = randn(static_cast<size_t>(B * L * Dm), rng), w = randn(H * Dm, rng);
  std::vector<float> u(static_cast<size_t>(B * H * L), std::nanf(""));
  ASSERT_TRUE(hattn::sparsek_scores(TensorView::contiguous(x.data(), {B, L, Dm}),
                                    TensorView::contiguous(w.data(), {H, Dm}), slope,
                                    TensorView::contiguous(u.data(), {B, H, L}))
                  .ok());
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t j = 0; j < L; ++j) {
        double ref = slope * double(j);
        for (int64_t m = 0; m < Dm; ++m) ref += double(w[h * Dm + m]) * x[(b * L + j) * Dm + m];
        ASSERT_NEAR(u[(b * H + h) * L + j], ref, 1e-5 * (1 + std::abs(ref)));
      }
    }
  }
}

// --- decode over the bounded cache ---------------------------------------------------------------

void check_decode(int64_t budget, int64_t window, bool logit, TestRng& rng) {
  AttnCase c;
  c.s = {2, 4, 2, 260, 260, 64, 20};
  c.budget = budget;
  c.window = window;
  c.slope = 0.004f;
  c.logit = logit;
  AttnInputs in = make_inputs(c, rng);
  HostTensor full = run_sparsek(c, in);  // prefill with the full mask
  const SparsekShape& s = c.s;
  hattn::SparsekDecoder dec;
  std::vector<float> w = in.w;
  ASSERT_TRUE(dec.reset(s.batch, s.q_heads, s.kv_heads, s.head_dim,
                        TensorView::contiguous(w.data(), {s.kv_heads, s.model_dim}), options_of(c))
                  .ok());
  const int64_t D = s.head_dim;
  std::vector<float> qt(s.batch * s.q_heads * D), kt(s.batch * s.kv_heads * D), vt(kt.size()),
      xt(s.batch * s.model_dim), ot(qt.size());
  double worst = 0;
  for (int64_t t = 0; t < s.lk; ++t) {
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.q_heads; ++h) {
        std::copy_n(&in.q[((b * s.q_heads + h) * s.lq + t) * D], D, &qt[(b * s.q_heads + h) * D]);
      }
      for (int64_t h = 0; h < s.kv_heads; ++h) {
        std::copy_n(&in.k[((b * s.kv_heads + h) * s.lk + t) * D], D, &kt[(b * s.kv_heads + h) * D]);
        std::copy_n(&in.v[((b * s.kv_heads + h) * s.lk + t) * D], D, &vt[(b * s.kv_heads + h) * D]);
      }
      std::copy_n(&in.x[(b * s.lk + t) * s.model_dim], s.model_dim, &xt[b * s.model_dim]);
    }
    std::fill(ot.begin(), ot.end(), std::nanf(""));
    Status st = dec.step(TensorView::contiguous(qt.data(), {s.batch, s.q_heads, 1, D}),
                         TensorView::contiguous(kt.data(), {s.batch, s.kv_heads, 1, D}),
                         TensorView::contiguous(vt.data(), {s.batch, s.kv_heads, 1, D}),
                         TensorView::contiguous(xt.data(), {s.batch, 1, s.model_dim}),
                         TensorView::contiguous(ot.data(), {s.batch, s.q_heads, 1, D}));
    ASSERT_TRUE(st.ok()) << st.message;
    ASSERT_LE(dec.cached_pairs(), budget + window) << "step " << t;
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.q_heads; ++h) {
        for (int64_t d = 0; d < D; ++d) {
          const double want = full.at_flat(((b * s.q_heads + h) * s.lq + t) * D + d);
          const double got = ot[(b * s.q_heads + h) * D + d];
          ASSERT_NEAR(got, want, 1e-5 + 1e-4 * std::abs(want))
              << "step " << t << " b=" << b << " h=" << h << " d=" << d;
          worst = std::max(worst, std::abs(got - want));
        }
      }
    }
  }
  EXPECT_EQ(dec.position(), s.lk);
  std::cout << "[  DECODE  ] k=" << budget << " w=" << window << (logit ? " logit" : " value")
            << ": max |decode - prefill| " << worst << ", KV pairs held " << dec.cached_pairs()
            << " of " << s.lk << ", mask scores " << dec.mask_scores() << "\n";
}

TEST(SparsekDecode, BoundedCacheEqualsPrefill) {
  struct P {
    int64_t k, w;
    bool logit;
  };
  for (P p :
       {P{16, 24, false}, P{16, 24, true}, P{12, 0, false}, P{0, 9, false}, P{300, 4, false}}) {
    TestRng rng("decode_k" + std::to_string(p.k) + "_w" + std::to_string(p.w));
    SCOPED_TRACE(rng.description());
    check_decode(p.k, p.w, p.logit, rng);
  }
}

// --- 16-bit tensors ------------------------------------------------------------------------------

struct Sparsek16Case {
  std::string name;
  SparsekShape s;
  int64_t budget, window;
  bool logit;
};

struct Sparsek16Inputs {
  Sixteen q, k, v, x, w;
  std::vector<float> u;  // the library's scores of x and w (fp32)
};

// q, k, v, x and w_score drawn in dtype t, and the scores hattn::sparsek_scores gives for them,
// which must equal its scores of the same values in fp32 exactly (the scoring widens, then sums
// in the same order).
Sparsek16Inputs make_16bit_inputs(hattn::DType t, const SparsekShape& s, float slope,
                                  TestRng& rng) {
  Sparsek16Inputs in{draw_16bit(t, s.batch * s.q_heads * s.lq * s.head_dim, rng),
                     draw_16bit(t, s.batch * s.kv_heads * s.lk * s.head_dim, rng),
                     draw_16bit(t, s.batch * s.kv_heads * s.lk * s.head_dim, rng),
                     draw_16bit(t, s.batch * s.lk * s.model_dim, rng),
                     draw_16bit(t, s.kv_heads * s.model_dim, rng),
                     {}};
  const std::vector<int64_t> xs = {s.batch, s.lk, s.model_dim}, ws = {s.kv_heads, s.model_dim},
                             us = {s.batch, s.kv_heads, s.lk};
  in.u.assign(static_cast<size_t>(s.batch * s.kv_heads * s.lk), std::nanf(""));
  std::vector<float> u32(in.u.size(), std::nanf(""));
  EXPECT_TRUE(hattn::sparsek_scores(TensorView::contiguous(in.x.bits.data(), t, xs),
                                    TensorView::contiguous(in.w.bits.data(), t, ws), slope,
                                    TensorView::contiguous(in.u.data(), us))
                  .ok());
  EXPECT_TRUE(hattn::sparsek_scores(TensorView::contiguous(in.x.values.data(), xs),
                                    TensorView::contiguous(in.w.values.data(), ws), slope,
                                    TensorView::contiguous(u32.data(), us))
                  .ok());
  EXPECT_EQ(std::memcmp(in.u.data(), u32.data(), u32.size() * sizeof(float)), 0)
      << "16-bit x and w_score scored differently from their fp32 values";
  return in;
}

TEST(Sparsek16Bit, MatchesReferenceOnRoundedInputs) {
  // The specialized D = 128 and the generic kernel (D = 80), grouped heads, Lq < Lk (bottom-right
  // aligned), both gates, a budget past the candidates (dense causal) and none (sliding window).
  const Sparsek16Case cases[] = {{"d128_gqa", {1, 4, 2, 150, 150, 128, 24}, 12, 16, false},
                                 {"d128_logit", {2, 2, 1, 90, 90, 128, 16}, 8, 8, true},
                                 {"d80_lq_lt_lk", {1, 2, 1, 40, 70, 80, 20}, 10, 5, false},
                                 {"d80_dense", {1, 2, 2, 30, 30, 80, 8}, 64, 0, false},
                                 {"d128_window", {1, 2, 2, 50, 50, 128, 8}, 0, 7, false}};
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (const Sparsek16Case& c : cases) {
      const std::string name = std::string(hattn::to_string(t)) + "_" + c.name;
      SCOPED_TRACE(name);
      TestRng rng("sparsek16_" + name);
      SCOPED_TRACE(rng.description());
      const SparsekShape& s = c.s;
      const float slope = 0.004f;
      Sparsek16Inputs in = make_16bit_inputs(t, s, slope, rng);
      const Sparsek16Inputs before = in;
      const std::vector<int64_t> qs = {s.batch, s.q_heads, s.lq, s.head_dim},
                                 kvs = {s.batch, s.kv_heads, s.lk, s.head_dim};
      std::vector<uint16_t> out(in.q.bits.size(), 0xffff);  // NaN in both dtypes
      AttnCase opts;
      opts.budget = c.budget;
      opts.window = c.window;
      opts.slope = slope;
      opts.logit = c.logit;
      Dispatch d;
      const Status st = hattn::sparsek_attention(
          TensorView::contiguous(in.q.bits.data(), t, qs),
          TensorView::contiguous(in.k.bits.data(), t, kvs),
          TensorView::contiguous(in.v.bits.data(), t, kvs),
          TensorView::contiguous(in.x.bits.data(), t, {s.batch, s.lk, s.model_dim}),
          TensorView::contiguous(in.w.bits.data(), t, {s.kv_heads, s.model_dim}),
          TensorView::contiguous(out.data(), t, qs), options_of(opts), &d);
      ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
      EXPECT_NE(d.kernel.find(std::string("_") + hattn::to_string(t) + "_"), std::string::npos)
          << d.kernel;
      used.insert(d.kernel);
      EXPECT_TRUE(in.q.bits == before.q.bits && in.k.bits == before.k.bits &&
                  in.v.bits == before.v.bits && in.x.bits == before.x.bits &&
                  in.w.bits == before.w.bits)
          << "an input was modified";

      std::vector<double> ref, gap;
      ref_sparsek(in.q.values, in.k.values, in.v.values, in.u, s, c.budget, c.window, c.logit,
                  static_cast<double>(1.f / std::sqrt(static_cast<float>(s.head_dim))), &ref, &gap);
      int left_out = 0;
      EXPECT_EQ(compare_16bit_rows(t, out, ref, gap, s.head_dim, &left_out), "");
    }
  }
  EXPECT_EQ(sixteen_bit_kernels_not_run("sparsek", used), std::vector<std::string>{});
}

// The decoder's cache in bf16 / f16: token by token, each step's output equals the float64
// reference of the whole sequence at that row (as the fp32 decoder equals prefill).
TEST(Sparsek16Bit, DecoderCacheInTheCallsDtype) {
  const SparsekShape s{2, 4, 2, 120, 120, 64, 20};
  const int64_t budget = 10, window = 12, D = s.head_dim;
  const float slope = 0.004f;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    SCOPED_TRACE(hattn::to_string(t));
    TestRng rng(std::string("sparsek16_decoder_") + hattn::to_string(t));
    SCOPED_TRACE(rng.description());
    Sparsek16Inputs in = make_16bit_inputs(t, s, slope, rng);
    AttnCase opts;
    opts.budget = budget;
    opts.window = window;
    opts.slope = slope;
    hattn::SparsekDecoder dec;
    ASSERT_TRUE(dec.reset(s.batch, s.q_heads, s.kv_heads, D,
                          TensorView::contiguous(in.w.bits.data(), t, {s.kv_heads, s.model_dim}),
                          options_of(opts), t)
                    .ok());
    std::vector<uint16_t> qt(s.batch * s.q_heads * D), kt(s.batch * s.kv_heads * D), vt(kt.size()),
        xt(s.batch * s.model_dim), ot(qt.size()), all(in.q.bits.size(), 0xffff);
    for (int64_t p = 0; p < s.lk; ++p) {
      for (int64_t b = 0; b < s.batch; ++b) {
        for (int64_t h = 0; h < s.q_heads; ++h) {
          std::copy_n(&in.q.bits[((b * s.q_heads + h) * s.lq + p) * D], D,
                      &qt[(b * s.q_heads + h) * D]);
        }
        for (int64_t h = 0; h < s.kv_heads; ++h) {
          const int64_t row = ((b * s.kv_heads + h) * s.lk + p) * D;
          std::copy_n(&in.k.bits[row], D, &kt[(b * s.kv_heads + h) * D]);
          std::copy_n(&in.v.bits[row], D, &vt[(b * s.kv_heads + h) * D]);
        }
        std::copy_n(&in.x.bits[(b * s.lk + p) * s.model_dim], s.model_dim, &xt[b * s.model_dim]);
      }
      std::fill(ot.begin(), ot.end(), uint16_t{0xffff});
      const Status st = dec.step(TensorView::contiguous(qt.data(), t, {s.batch, s.q_heads, 1, D}),
                                 TensorView::contiguous(kt.data(), t, {s.batch, s.kv_heads, 1, D}),
                                 TensorView::contiguous(vt.data(), t, {s.batch, s.kv_heads, 1, D}),
                                 TensorView::contiguous(xt.data(), t, {s.batch, 1, s.model_dim}),
                                 TensorView::contiguous(ot.data(), t, {s.batch, s.q_heads, 1, D}));
      ASSERT_TRUE(st.ok()) << "step " << p << ": " << st.message;
      for (int64_t b = 0; b < s.batch; ++b) {
        for (int64_t h = 0; h < s.q_heads; ++h) {
          std::copy_n(&ot[(b * s.q_heads + h) * D], D, &all[((b * s.q_heads + h) * s.lq + p) * D]);
        }
      }
    }
    std::vector<double> ref, gap;
    ref_sparsek(in.q.values, in.k.values, in.v.values, in.u, s, budget, window, false,
                static_cast<double>(1.f / std::sqrt(static_cast<float>(D))), &ref, &gap);
    int left_out = 0;
    EXPECT_EQ(compare_16bit_rows(t, all, ref, gap, D, &left_out), "");

    // An fp32 step against the 16-bit cache is refused and writes nothing.
    std::vector<float> q32(qt.size(), 0.5f), k32(kt.size(), 0.25f), o32(qt.size(), std::nanf(""));
    const Status bad = dec.step(TensorView::contiguous(q32.data(), {s.batch, s.q_heads, 1, D}),
                                TensorView::contiguous(k32.data(), {s.batch, s.kv_heads, 1, D}),
                                TensorView::contiguous(k32.data(), {s.batch, s.kv_heads, 1, D}),
                                TensorView::contiguous(xt.data(), t, {s.batch, 1, s.model_dim}),
                                TensorView::contiguous(o32.data(), {s.batch, s.q_heads, 1, D}));
    EXPECT_FALSE(bad.ok());
    EXPECT_NE(bad.message.find("cache"), std::string::npos) << bad.message;
    for (float o : o32) ASSERT_TRUE(std::isnan(o)) << "a refused step wrote out";
    EXPECT_EQ(dec.position(), s.lk) << "a refused step moved the decoder";
  }
}

}  // namespace
