// Loki attention against the double-precision reference (tests/reference.cpp), and the spec's
// invariants: k = Lk equals dense attention for any r; r = D equals exact top-k attention; an
// identity basis selects on the first r raw channels; the result is rotation invariant at r = D;
// fractions d_f, k_f mean what they say; every kernel forced; every refusal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "hattn/loki_prep.h"
#include "test_support.h"

namespace {

using hattn::Dispatch;
using hattn::LokiOptions;
using hattn::Status;
using hattn::StatusCode;
using namespace hattn_test;

// A random orthonormal [D, D] basis per kv head: Gram-Schmidt (twice) of Gaussian columns, in
// double, stored as fp32 (orthonormal to ~1e-7).
std::vector<float> random_bases(int64_t heads, int64_t d, TestRng& rng) {
  std::vector<float> out(static_cast<size_t>(heads * d * d));
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<std::vector<double>> cols(static_cast<size_t>(d), std::vector<double>(d));
    for (auto& c : cols) {
      for (double& x : c) x = rng.normal();
    }
    for (int64_t c = 0; c < d; ++c) {
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t p = 0; p < c; ++p) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += cols[c][e] * cols[p][e];
          for (int64_t e = 0; e < d; ++e) cols[c][e] -= dot * cols[p][e];
        }
        double norm = 0;
        for (double x : cols[c]) norm += x * x;
        for (double& x : cols[c]) x /= std::sqrt(norm);
      }
      for (int64_t e = 0; e < d; ++e) out[static_cast<size_t>((h * d + e) * d + c)] = cols[c][e];
    }
  }
  return out;
}

std::vector<float> identity_bases(int64_t heads, int64_t d) {
  std::vector<float> out(static_cast<size_t>(heads * d * d), 0.f);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t e = 0; e < d; ++e) out[static_cast<size_t>((h * d + e) * d + e)] = 1.f;
  }
  return out;
}

struct LokiProblem {
  AttnShape shape;
  bool causal = false;
  HostTensor q, k, k_rot, v;
  std::vector<float> basis;
  double scale = 0;
};

// q, k, v random; k_rot = k P per kv head (in double).
LokiProblem make_problem(const AttnShape& s, bool causal, TestRng& rng, bool identity = false,
                         Layout layout = Layout::kContiguous) {
  LokiProblem p;
  p.shape = s;
  p.causal = causal;
  p.q = HostTensor({s.batch, s.q_heads, s.lq, s.head_dim}, layout);
  p.k = HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, Layout::kContiguous);
  p.k_rot = HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, layout);
  p.v = HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, layout);
  p.q.fill_normal(rng);
  p.k.fill_normal(rng);
  p.v.fill_normal(rng);
  p.basis =
      identity ? identity_bases(s.kv_heads, s.head_dim) : random_bases(s.kv_heads, s.head_dim, rng);
  const int64_t d = s.head_dim;
  for (int64_t row = 0; row < s.batch * s.kv_heads * s.lk; ++row) {
    const int64_t hk = (row / s.lk) % s.kv_heads;
    for (int64_t c = 0; c < d; ++c) {
      double x = 0;
      for (int64_t e = 0; e < d; ++e) {
        x += double(p.k.at_flat(row * d + e)) * p.basis[static_cast<size_t>((hk * d + e) * d + c)];
      }
      p.k_rot.at_flat(row * d + c) = static_cast<float>(x);
    }
  }
  p.scale = static_cast<double>(1.f / std::sqrt(static_cast<float>(d)));
  return p;
}

hattn::TensorView basis_view(const LokiProblem& p) {
  return hattn::TensorView::contiguous(p.basis.data(),
                                       {p.shape.kv_heads, p.shape.head_dim, p.shape.head_dim});
}

Status run_loki(const LokiProblem& p, LokiOptions o, HostTensor* out, Dispatch* d) {
  const AttnShape& s = p.shape;
  *out = HostTensor({s.batch, s.q_heads, s.lq, s.head_dim}, Layout::kPadded);
  out->poison();
  out->snapshot();
  o.causal = p.causal;
  return hattn::loki_attention(p.q.view(), p.k_rot.view(), p.v.view(), basis_view(p), out->view(),
                               o, d);
}

AttnStrides strides_of(const HostTensor& q, const HostTensor& k, const HostTensor& v) {
  return AttnStrides{q.strides4(), k.strides4(), v.strides4()};
}

// Runs Loki with (rank, k) and compares with the double reference; "" or the failure.
std::string check(const LokiProblem& p, int64_t rank, int64_t k, const std::string& kernel = "") {
  LokiOptions o;
  o.rank = rank;
  o.k = k;
  o.kernel = kernel;
  HostTensor out;
  Dispatch d;
  Status s = run_loki(p, o, &out, &d);
  const std::string where = "r=" + std::to_string(rank) + " k=" + std::to_string(k) + " " +
                            describe_shape(p.shape) + (p.causal ? " causal" : "") + " kernel " +
                            d.kernel;
  if (!s.ok()) return where + ": " + s.message;
  std::vector<double> ref, gap;
  reference_loki_attention(p.q.data(), p.k_rot.data(), p.v.data(), p.basis.data(), p.shape,
                           strides_of(p.q, p.k_rot, p.v), p.causal, p.scale, rank, k, &ref, &gap);
  int left_out = 0;
  std::string m = compare_rows(out, ref, &gap, p.shape.head_dim, &left_out);
  const std::string pad = out.changed_since_snapshot(true);
  if (!pad.empty()) m += "\n  out padding written: " + pad;
  if (left_out > 0) std::cout << "[  GAPS    ] " << where << ": " << left_out << " rows left out\n";
  return m.empty() ? "" : where + ":" + m;
}

TEST(Loki, MatchesReference) {
  struct Case {
    const char* name;
    AttnShape shape;
    bool causal;
    int64_t rank, k;
    Layout layout;
  };
  const Case cases[] = {
      {"decode_gqa_d128", {1, 8, 2, 1, 1000, 128}, false, 32, 100, Layout::kContiguous},
      {"decode_lq3_causal", {2, 4, 4, 3, 500, 128}, true, 16, 40, Layout::kPadded},
      {"decode_d80_mqa", {1, 2, 1, 1, 300, 80}, false, 10, 30, Layout::kContiguous},
      {"prefill_causal_d64", {1, 2, 2, 70, 70, 64}, true, 16, 8, Layout::kContiguous},
      {"prefill_strided_d96", {1, 2, 1, 40, 90, 96}, false, 48, 20, Layout::kPadded},
  };
  for (const Case& c : cases) {
    TestRng rng(c.name);
    LokiProblem p = make_problem(c.shape, c.causal, rng, false, c.layout);
    EXPECT_EQ(check(p, c.rank, c.k), "") << c.name << " " << rng.description();
  }
}

// k >= Lk keeps every key: dense attention on the unrotated q and k, whatever r is.
TEST(Loki, KEqualsLkIsDense) {
  TestRng rng("k_eq_lk");
  for (bool causal : {false, true}) {
    LokiProblem p = make_problem({1, 4, 2, causal ? 20 : 1, 300, 64}, causal, rng);
    std::vector<double> dense;
    reference_attention(p.q.data(), p.k.data(), p.v.data(), p.shape, strides_of(p.q, p.k, p.v),
                        causal, p.scale, &dense, nullptr);
    for (int64_t rank : {int64_t{1}, int64_t{5}, int64_t{64}}) {
      for (int64_t k : {int64_t{300}, int64_t{1000}}) {
        LokiOptions o;
        o.rank = rank;
        o.k = k;
        HostTensor out;
        Dispatch d;
        ASSERT_TRUE(run_loki(p, o, &out, &d).ok());
        EXPECT_EQ(compare_to_reference(out, dense, Tolerance{}, "loki out"), "")
            << "r=" << rank << " k=" << k << " causal=" << causal << " " << rng.description();
        if (k > 300) {
          EXPECT_NE(d.reason.find("clamped"), std::string::npos) << d.reason;
        }
      }
    }
  }
}

// r = D: the approximate scores are exact, so Loki is top-k attention on the unrotated keys.
TEST(Loki, FullRankIsTopk) {
  TestRng rng("full_rank");
  for (bool causal : {false, true}) {
    LokiProblem p = make_problem({1, 4, 4, causal ? 30 : 2, 400, 64}, causal, rng);
    std::vector<double> ref, gap;
    reference_topk_attention(p.q.data(), p.k.data(), p.v.data(), p.shape, strides_of(p.q, p.k, p.v),
                             causal, p.scale, 16, &ref, &gap);
    LokiOptions o;
    o.rank = 64;
    o.k = 16;
    HostTensor out;
    Dispatch d;
    ASSERT_TRUE(run_loki(p, o, &out, &d).ok());
    int left_out = 0;
    EXPECT_EQ(compare_rows(out, ref, &gap, 64, &left_out), "") << rng.description();
  }
}

// With P = I the selection sees the first r raw channels only: the result matches the reference
// with r channels and differs from the full-rank selection.
TEST(Loki, IdentityBasisSelectsOnLeadingChannels) {
  TestRng rng("identity");
  LokiProblem p = make_problem({1, 2, 2, 1, 500, 64}, false, rng, true);
  EXPECT_EQ(check(p, 4, 20), "") << rng.description();
  LokiOptions o;
  o.k = 20;
  HostTensor low, full;
  Dispatch d;
  o.rank = 4;
  ASSERT_TRUE(run_loki(p, o, &low, &d).ok());
  o.rank = 64;
  ASSERT_TRUE(run_loki(p, o, &full, &d).ok());
  EXPECT_NE(compare_bitwise(low, full, "r=4 vs r=64"), "") << "r did not change the selection";
}

// At r = D the basis cannot matter: two different bases give the same output.
TEST(Loki, RotationInvariantAtFullRank) {
  TestRng rng("rotation");
  LokiProblem a = make_problem({1, 4, 2, 1, 600, 128}, false, rng);
  LokiProblem b = a;
  b.basis = random_bases(2, 128, rng);
  const int64_t d = 128;
  for (int64_t row = 0; row < 2 * 600; ++row) {
    const int64_t hk = row / 600;
    for (int64_t c = 0; c < d; ++c) {
      double x = 0;
      for (int64_t e = 0; e < d; ++e) {
        x += double(a.k.at_flat(row * d + e)) * b.basis[static_cast<size_t>((hk * d + e) * d + c)];
      }
      b.k_rot.at_flat(row * d + c) = static_cast<float>(x);
    }
  }
  EXPECT_EQ(check(a, d, 50), "") << rng.description();
  EXPECT_EQ(check(b, d, 50), "") << rng.description();
}

TEST(Loki, FractionsMatchAbsoluteCounts) {
  TestRng rng("fractions");
  LokiProblem p = make_problem({1, 2, 1, 1, 800, 128}, false, rng);
  HostTensor by_fraction, by_count;
  Dispatch d;
  LokiOptions f;
  f.rank_fraction = 0.25;
  f.k_fraction = 0.125;
  ASSERT_TRUE(run_loki(p, f, &by_fraction, &d).ok());
  EXPECT_NE(d.reason.find("r=32 of D=128, k=100"), std::string::npos) << d.reason;
  LokiOptions c;
  c.rank = 32;
  c.k = 100;
  ASSERT_TRUE(run_loki(p, c, &by_count, &d).ok());
  EXPECT_EQ(compare_bitwise(by_fraction, by_count, "fractions vs counts"), "");
}

// A contiguous copy of the leading channels (LokiOptions::k_lead) is only a faster path: the
// result is bitwise the one that reads k_rot's own leading channels. Too few channels, or a
// mismatched shape, is refused.
TEST(Loki, LeadingChannelCopyGivesTheSameResult) {
  TestRng rng("k_lead");
  LokiProblem p = make_problem({2, 4, 2, 1, 700, 128}, false, rng);
  const int64_t rows = 2 * 2 * 700, r = 32, stored = 40;
  std::vector<float> lead(static_cast<size_t>(rows * stored));
  for (int64_t j = 0; j < rows; ++j) {
    for (int64_t c = 0; c < stored; ++c) {
      lead[static_cast<size_t>(j * stored + c)] = p.k_rot.at_flat(j * 128 + c);
    }
  }
  const hattn::TensorView lead_view =
      hattn::TensorView::contiguous(lead.data(), {2, 2, 700, stored});
  LokiOptions o;
  o.rank = r;
  o.k = 90;
  HostTensor plain, with_lead;
  Dispatch d;
  ASSERT_TRUE(run_loki(p, o, &plain, &d).ok());
  o.k_lead = &lead_view;
  Status s = run_loki(p, o, &with_lead, &d);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(compare_bitwise(plain, with_lead, "k_lead vs k_rot"), "");
  EXPECT_EQ(check(p, r, 90), "") << rng.description();
  o.rank = 41;
  s = run_loki(p, o, &with_lead, &d);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(s.message.find("needs r=41 <= R"), std::string::npos) << s.message;
  const hattn::TensorView short_view =
      hattn::TensorView::contiguous(lead.data(), {2, 2, 699, stored});
  o.rank = r;
  o.k_lead = &short_view;
  s = run_loki(p, o, &with_lead, &d);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(s.message.find("k_rot's B, Hkv, Lk"), std::string::npos) << s.message;
}

TEST(Loki, EveryKernelForced) {
  int forced = 0;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    // (16-bit kernels: Loki16Bit below.)
    if (k.variant != "loki" || k.dtype != "f32" || hattn::selected_build(k).empty()) continue;
    TestRng rng(k.name);
    const int64_t d = k.head_dim ? k.head_dim : 48;
    const bool decode = k.phase == "decode";
    LokiProblem p = make_problem({1, 2, 1, decode ? 2 : 33, 200, d}, k.causal, rng);
    EXPECT_EQ(check(p, d / 4, 24, k.name), "") << rng.description();
    ++forced;
  }
  EXPECT_GT(forced, 0) << "no loki kernel in this build";
}

// 16-bit decode and prefill (bf16, f16): q, the rotated cache, its leading-channel copy, v and out
// in the dtype, the basis in fp32. The rotated keys are rotated in double and rounded to the dtype,
// as a caller keeping a 16-bit cache would; the reference runs on the same rounded values. The
// kernel's scores, selection and softmax are fp32, so out is within half an ulp of its dtype
// (sixteen_bit_output_tolerance); rows whose approximate k-th scores nearly tie are left out.
TEST(Loki16Bit, MatchesReferenceOnRoundedInputs) {
  struct Case16 {
    const char* name;
    AttnShape shape;
    int64_t rank, k;
    bool lead;  // a contiguous copy of the leading channels (LokiOptions::k_lead)
  };
  const Case16 cases[] = {{"d128_gqa_r32_k64_lead", {1, 8, 2, 1, 700, 128}, 32, 64, true},
                          {"d128_lq3_r16_k20", {1, 2, 2, 3, 300, 128}, 16, 20, false},
                          {"d80_lq2_r20_k7_lead", {2, 2, 1, 2, 150, 80}, 20, 7, true},
                          {"d128_lq_gt_lk", {1, 2, 2, 6, 3, 128}, 8, 2, false},
                          // Prefill (Lq > 8: the generic-D kernels)
                          {"prefill_d64_gqa_r16_k12", {1, 4, 2, 30, 90, 64}, 16, 12, false},
                          {"prefill_d96_r24_k9_lead", {1, 2, 2, 20, 20, 96}, 24, 9, true}};
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (const Case16& c : cases) {
      for (bool causal : {false, true}) {
        const AttnShape& a = c.shape;
        const std::string name =
            std::string(hattn::to_string(t)) + "_" + c.name + (causal ? "_causal" : "");
        SCOPED_TRACE(name);
        TestRng rng(name);
        SCOPED_TRACE(rng.description());
        const int64_t d = a.head_dim, rows_kv = a.batch * a.kv_heads * a.lk;
        const std::vector<float> basis = random_bases(a.kv_heads, d, rng);
        const Sixteen q = draw_16bit(t, a.batch * a.q_heads * a.lq * d, rng);
        const Sixteen k = draw_16bit(t, rows_kv * d, rng);
        const Sixteen v = draw_16bit(t, rows_kv * d, rng);
        Sixteen k_rot{std::vector<uint16_t>(k.bits.size()), std::vector<float>(k.bits.size())};
        for (int64_t row = 0; row < rows_kv; ++row) {
          const int64_t hk = (row / a.lk) % a.kv_heads;
          for (int64_t ch = 0; ch < d; ++ch) {
            double x = 0;
            for (int64_t e = 0; e < d; ++e) {
              x += double(k.values[static_cast<size_t>(row * d + e)]) *
                   basis[static_cast<size_t>((hk * d + e) * d + ch)];
            }
            const size_t at = static_cast<size_t>(row * d + ch);
            k_rot.bits[at] = ref_to_16bit(t, static_cast<float>(x));
            k_rot.values[at] = ref_from_16bit(t, k_rot.bits[at]);
          }
        }
        std::vector<uint16_t> lead(static_cast<size_t>(rows_kv * c.rank));
        for (int64_t row = 0; row < rows_kv; ++row) {
          for (int64_t ch = 0; ch < c.rank; ++ch) {
            lead[static_cast<size_t>(row * c.rank + ch)] =
                k_rot.bits[static_cast<size_t>(row * d + ch)];
          }
        }
        const std::vector<int64_t> qs = {a.batch, a.q_heads, a.lq, d};
        const std::vector<int64_t> kvs = {a.batch, a.kv_heads, a.lk, d};
        const hattn::TensorView lead_view =
            hattn::TensorView::contiguous(lead.data(), t, {a.batch, a.kv_heads, a.lk, c.rank});
        std::vector<uint16_t> out(q.bits.size(), 0xffff);  // NaN in both dtypes
        LokiOptions o;
        o.rank = c.rank;
        o.k = c.k;
        o.causal = causal;
        if (c.lead) o.k_lead = &lead_view;
        Dispatch disp;
        const Status st =
            hattn::loki_attention(hattn::TensorView::contiguous(q.bits.data(), t, qs),
                                  hattn::TensorView::contiguous(k_rot.bits.data(), t, kvs),
                                  hattn::TensorView::contiguous(v.bits.data(), t, kvs),
                                  hattn::TensorView::contiguous(basis.data(), {a.kv_heads, d, d}),
                                  hattn::TensorView::contiguous(out.data(), t, qs), o, &disp);
        ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
        EXPECT_NE(disp.kernel.find(a.lq <= 8 ? "loki_decode_" : "loki_prefill_"), std::string::npos)
            << disp.kernel;
        EXPECT_NE(disp.kernel.find(std::string("_") + hattn::to_string(t) + "_"), std::string::npos)
            << disp.kernel;
        used.insert(disp.kernel);

        std::vector<double> ref, gap;
        const AttnStrides strides = dense_strides(a);
        const double scale = static_cast<double>(1.f / std::sqrt(static_cast<float>(d)));
        reference_loki_attention(q.values.data(), k_rot.values.data(), v.values.data(),
                                 basis.data(), a, strides, causal, scale, c.rank, c.k, &ref, &gap);
        int left_out = 0;
        EXPECT_EQ(compare_16bit_rows(t, out, ref, gap, d, &left_out), "");
      }
    }
  }
  // Every 16-bit loki kernel ran on some case above.
  EXPECT_EQ(sixteen_bit_kernels_not_run("loki", used), std::vector<std::string>{});
}

TEST(Loki, RefusesBadArguments) {
  TestRng rng("errors");
  LokiProblem p = make_problem({1, 2, 1, 1, 50, 16}, false, rng);
  auto refused = [&](LokiOptions o, const std::string& phrase, const LokiProblem& prob) {
    HostTensor out;
    Dispatch d;
    Status s = run_loki(prob, o, &out, &d);
    EXPECT_EQ(s.code, StatusCode::invalid_argument) << phrase << ": " << s.message;
    EXPECT_NE(s.message.find(phrase), std::string::npos) << s.message;
    EXPECT_EQ(out.changed_since_snapshot(false), "") << "out written by a refused call";
  };
  LokiOptions o;
  o.k = 4;
  refused(o, "rank_fraction in (0, 1]", p);
  o.rank = 17;
  refused(o, "outside [1, D=16]", p);
  o.rank = -1;
  refused(o, "outside [1, D=16]", p);
  o.rank = 4;
  o.rank_fraction = 0.5;
  refused(o, "not both", p);
  o.rank_fraction = 0;
  o.k = 0;
  refused(o, "must be >= 1", p);
  o.k_fraction = 1.5;
  refused(o, "k_fraction must be in (0, 1]", p);
  o.k_fraction = 0;
  o.k = 4;
  LokiProblem skewed = p;
  skewed.basis[3] += 0.01f;
  refused(o, "not orthonormal", skewed);
  LokiProblem nan_basis = p;
  nan_basis.basis[0] = NAN;
  refused(o, "not orthonormal", nan_basis);
  LokiOptions unchecked = o;
  unchecked.check_basis = false;
  HostTensor out;
  Dispatch d;
  EXPECT_TRUE(run_loki(skewed, unchecked, &out, &d).ok()) << "check_basis = false still checked";
  // Wrong basis shape.
  std::vector<float> small(2 * 8 * 8, 0.f);
  Status s = hattn::loki_attention(p.q.view(), p.k_rot.view(), p.v.view(),
                                   hattn::TensorView::contiguous(small.data(), {2, 8, 8}),
                                   out.view(), o, &d);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(s.message.find("basis must be [Hkv, D, D] = [1, 16, 16]"), std::string::npos)
      << s.message;
}

// ---------------------------------------------------------------------------------------------
// Boundary rows (issue 21): rows built on float boundaries (reference.h, boundary_rows) through
// Loki's selection (the radix select on the float bits of the approximate scores).

// Each row as the approximate scores of one query: basis = identity, rank r = 1, D = n (or the
// kernel's compiled D), q = +-e_0, k_rot_j = z_j e_0 so that the approximate score (channel 0) and
// the exact one are both +-scale z_j exactly, v_j = e_j so that out is the weight vector (out[j] >
// 0 iff key j was selected). Two query rows, q = +e_0 (the k largest z) and q = -e_0 (the k
// smallest, ties still by the lower index); under a causal mask the first sees keys [0, n - 1)
// only. Through the dispatcher's choice and every loki kernel forced, each with and without the
// narrow copy k_lead (R = 1); weights against a double softmax over the expected set. k = 0 (and
// no k_fraction) is refused.
TEST(LokiBoundary, SelectsTheStableSortTopk) {
  TestRng rng("boundary");
  SCOPED_TRACE(rng.description());
  const std::vector<BoundaryRow> rows = boundary_rows(rng.seed(), 160);
  std::vector<const hattn::KernelInfo*> kernels = {nullptr};  // nullptr: the dispatcher chooses
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.variant == "loki" && k.dtype == "f32" && !hattn::selected_build(k).empty()) {
      kernels.push_back(&k);
    }
  }
  int calls = 0, refused_k0 = 0, left_out = 0, failures = 0;
  auto fail = [&](const std::string& what) {
    if (++failures <= 20) ADD_FAILURE() << what;
  };
  for (const BoundaryRow& row : rows) {
    const int64_t n = static_cast<int64_t>(row.z.size());
    if (row.k == 0) {
      LokiProblem p;
      p.shape = {1, 1, 1, 1, n, n};
      p.q = HostTensor({1, 1, 1, n}, Layout::kContiguous);
      p.k_rot = HostTensor({1, 1, n, n}, Layout::kContiguous);
      p.v = HostTensor({1, 1, n, n}, Layout::kContiguous);
      p.q.fill(1.f);
      p.k_rot.fill(1.f);
      p.v.fill(1.f);
      p.basis = identity_bases(1, n);
      LokiOptions o;
      o.rank = 1;
      o.k = 0;
      HostTensor out;
      Dispatch d;
      Status s = run_loki(p, o, &out, &d);
      if (s.code != StatusCode::invalid_argument ||
          s.message.find("k (keys kept per row) must be >= 1, got 0") == std::string::npos ||
          !out.changed_since_snapshot(false).empty()) {
        fail(row.kind + ": k = 0 not refused as it should be: " + s.message);
      }
      ++refused_k0;
      continue;
    }
    float scale = 0;
    std::string why;
    if (!exact_boundary_scale(row.z, &scale, &why)) {
      ++left_out;
      std::cout << "[  LEFT OUT] " << row.kind << " (n=" << n << "): " << why
                << "; its selection is tested through topk_ffn (test_topk)\n";
      continue;
    }
    for (const hattn::KernelInfo* kernel : kernels) {
      if (kernel != nullptr && kernel->head_dim != 0 && kernel->head_dim < n) continue;
      const int64_t d = kernel != nullptr && kernel->head_dim != 0 ? kernel->head_dim : n;
      LokiProblem p;
      p.shape = {1, 1, 1, 2, n, d};
      p.causal = kernel != nullptr && kernel->causal;
      p.q = HostTensor({1, 1, 2, d}, Layout::kContiguous);
      p.k_rot = HostTensor({1, 1, n, d}, Layout::kContiguous);
      p.v = HostTensor({1, 1, n, d}, Layout::kContiguous);
      p.q.fill(0.f);
      p.k_rot.fill(0.f);
      p.v.fill(0.f);
      p.q.data()[0] = 1.f;
      p.q.data()[d] = -1.f;
      std::vector<float> lead(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) {
        p.k_rot.data()[j * d] = lead[static_cast<size_t>(j)] = row.z[static_cast<size_t>(j)];
        p.v.data()[j * d + j] = 1.f;
      }
      p.basis = identity_bases(1, d);
      const hattn::TensorView lead_view = hattn::TensorView::contiguous(lead.data(), {1, 1, n, 1});
      for (bool with_lead : {false, true}) {
        LokiOptions o;
        o.rank = 1;
        o.k = row.k;
        o.has_scale = true;
        o.scale = scale;
        o.kernel = kernel != nullptr ? kernel->name : "";
        o.k_lead = with_lead ? &lead_view : nullptr;
        HostTensor out;
        Dispatch disp;
        Status s = run_loki(p, o, &out, &disp);
        ++calls;
        const std::string where = row.kind + " (n=" + std::to_string(n) + ", scale 2^" +
                                  std::to_string(std::ilogb(scale)) + ", kernel " + disp.kernel +
                                  (with_lead ? ", k_lead" : "") + ")";
        if (!s.ok()) {
          fail(where + ": " + s.message);
          continue;
        }
        for (int64_t r = 0; r < 2; ++r) {
          const double sign = r == 0 ? 1.0 : -1.0;
          const int64_t visible = p.causal ? n - 1 + r : n;
          std::vector<double> values(static_cast<size_t>(n));
          for (int64_t j = 0; j < n; ++j) values[static_cast<size_t>(j)] = sign * row.z[j];
          std::vector<float> got(static_cast<size_t>(d));
          for (int64_t j = 0; j < d; ++j) got[static_cast<size_t>(j)] = out.at_flat(r * d + j);
          const std::string bad =
              check_selected_weights(got.data(), d, values, visible, row.k, scale);
          if (!bad.empty()) {
            fail(where + ", q = " + (r == 0 ? "+" : "-") + "e_0, " + std::to_string(visible) +
                 " visible: " + bad);
          }
        }
      }
    }
  }
  std::cout << "[  ROWS    ] loki_attention: " << rows.size() << " boundary rows, " << calls
            << " calls, " << refused_k0 << " with k = 0 refused, " << left_out << " left out, "
            << failures << " wrong\n";
  EXPECT_EQ(failures, 0);
  EXPECT_LE(left_out, 2) << "most rows must reach loki_attention";
}

}  // namespace
