// topk attention and the top-k FFN against double-precision brute force (tests/reference.cpp),
// and every invariant the spec lists: k >= visible equals dense; chunk independence; equality
// with brute-force top-k; at most k non-zero weights; ties by the lower index; causal rows with
// fewer than k visible keys; FFN with k = d_ff equals the dense FFN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"

namespace {

using hattn::Dispatch;
using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;
using hattn::TopkOptions;
using namespace hattn_test;

struct TopkCase {
  std::string name;
  AttnShape shape;
  bool causal = false;
  int64_t k = 8;
  Layout q_layout = Layout::kContiguous, k_layout = Layout::kContiguous,
         v_layout = Layout::kContiguous, out_layout = Layout::kContiguous;
  std::string kernel;
};

struct TopkInputs {
  HostTensor q, k, v;
  double scale = 0;
};

TopkInputs make_inputs(const TopkCase& c, TestRng& rng) {
  const AttnShape& s = c.shape;
  TopkInputs in{HostTensor({s.batch, s.q_heads, s.lq, s.head_dim}, c.q_layout),
                HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, c.k_layout),
                HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, c.v_layout), 0.0};
  in.q.fill_normal(rng);
  in.k.fill_normal(rng);
  in.v.fill_normal(rng);
  in.scale = static_cast<double>(1.f / std::sqrt(static_cast<float>(s.head_dim)));
  return in;
}

AttnStrides strides_of(const TopkInputs& in) {
  AttnStrides st;
  st.q = in.q.strides4();
  st.k = in.k.strides4();
  st.v = in.v.strides4();
  return st;
}

Status run_topk(const TopkCase& c, const TopkInputs& in, HostTensor* out, Dispatch* d) {
  const AttnShape& s = c.shape;
  *out = HostTensor({s.batch, s.q_heads, s.lq, s.head_dim}, c.out_layout);
  out->snapshot();
  TopkOptions o;
  o.k = c.k;
  o.causal = c.causal;
  o.kernel = c.kernel;
  return hattn::topk_attention(in.q.view(), in.k.view(), in.v.view(), out->view(), o, d);
}

// Runs a case and checks it against brute-force top-k; returns "" or the failure.
std::string check_topk_case(const TopkCase& c) {
  TestRng rng(c.name);
  TopkInputs in = make_inputs(c, rng);
  in.q.snapshot();
  in.k.snapshot();
  in.v.snapshot();
  HostTensor out;
  Dispatch d;
  Status s = run_topk(c, in, &out, &d);
  const std::string where = c.name + " (" + rng.description() + ", kernel " + d.kernel + ")";
  if (!s.ok()) return where + ": " + hattn::to_string(s.code) + ": " + s.message;
  std::vector<double> ref, gap;
  reference_topk_attention(in.q.data(), in.k.data(), in.v.data(), c.shape, strides_of(in), c.causal,
                           in.scale, c.k, &ref, &gap);
  int left_out = 0;
  std::string msg = compare_rows(out, ref, &gap, c.shape.head_dim, &left_out);
  for (const HostTensor* t : {&in.q, &in.k, &in.v}) {
    const std::string m = t->changed_since_snapshot(false);
    if (!m.empty()) msg += "\n  an input was modified: " + m;
  }
  const std::string pad = out.changed_since_snapshot(true);
  if (!pad.empty()) msg += "\n  out padding written: " + pad;
  if (left_out > 0) std::cout << "[  GAPS    ] " << where << ": " << left_out << " rows left out\n";
  return msg.empty() ? "" : where + ":" + msg;
}

TopkCase make_topk(const std::string& name, AttnShape shape, bool causal, int64_t k) {
  TopkCase c;
  c.name = name;
  c.shape = shape;
  c.causal = causal;
  c.k = k;
  return c;
}

TEST(Topk, MatchesBruteForceTopk) {
  std::vector<TopkCase> cases = {
      make_topk("prefill_d64_k16", {1, 4, 4, 150, 200, 64}, false, 16),
      make_topk("prefill_causal_d128_k32", {2, 2, 2, 130, 130, 128}, true, 32),
      make_topk("prefill_gqa_lq_lt_lk_d64_k8", {1, 8, 2, 40, 300, 64}, true, 8),
      make_topk("prefill_generic_d80_k5", {1, 3, 1, 70, 90, 80}, false, 5),
      make_topk("prefill_k1", {1, 2, 2, 50, 64, 64}, true, 1),
      make_topk("decode_lq1_d128_k64", {2, 8, 8, 1, 3000, 128}, false, 64),
      make_topk("decode_lq3_causal_gqa_d64_k16", {1, 8, 2, 3, 1000, 64}, true, 16),
      make_topk("decode_generic_d96_k7", {1, 4, 4, 1, 700, 96}, false, 7),
  };
  TopkCase strided = make_topk("prefill_strided_d64_k12", {2, 3, 3, 50, 60, 64}, false, 12);
  strided.q_layout = Layout::kPadded;
  strided.k_layout = Layout::kBLHD;
  strided.v_layout = Layout::kHBLD;
  strided.out_layout = Layout::kPadded;
  cases.push_back(strided);
  for (const TopkCase& c : cases) {
    std::string failure = check_topk_case(c);
    EXPECT_TRUE(failure.empty()) << failure;
  }
}

// k >= the visible count is exactly dense attention (compared with the dense oracle).
TEST(Topk, KAtLeastVisibleEqualsDense) {
  for (bool causal : {false, true}) {
    for (int64_t lq : {1, 3, 70}) {
      TopkCase c =
          make_topk(std::string("k_ge_lk_") + (causal ? "causal_" : "") + "lq" + std::to_string(lq),
                    {1, 4, 2, lq, 90, 64}, causal, 90);
      for (int64_t k : {int64_t{90}, int64_t{1000}}) {
        c.k = k;
        TestRng rng(c.name + "_k" + std::to_string(k));
        TopkInputs in = make_inputs(c, rng);
        HostTensor out;
        Dispatch d;
        Status s = run_topk(c, in, &out, &d);
        ASSERT_TRUE(s.ok()) << s.message;
        std::vector<double> dense;
        reference_attention(in.q.data(), in.k.data(), in.v.data(), c.shape, strides_of(in), causal,
                            in.scale, &dense, nullptr);
        int left_out = 0;
        std::string m = compare_rows(out, dense, nullptr, c.shape.head_dim, &left_out);
        EXPECT_TRUE(m.empty()) << c.name << " k=" << k << " (" << rng.description() << ")" << m;
        if (k > c.shape.lk) {
          EXPECT_NE(d.reason.find("clamped"), std::string::npos) << d.reason;
        }
      }
    }
  }
}

// Rows computed in separate calls of any size (the chunking a caller or a schedule might use)
// give bitwise the same result as one call to the same kernel. Causal calls on a row range [a, b)
// see keys [0, b + Lk - Lq), which keeps every row's mask.
TEST(Topk, ChunkIndependent) {
  for (bool causal : {false, true}) {
    TopkCase c = make_topk(causal ? "chunks_causal" : "chunks", {1, 2, 2, 70, 100, 64}, causal, 9);
    TestRng rng(c.name);
    TopkInputs in = make_inputs(c, rng);
    HostTensor whole;
    Dispatch d;
    ASSERT_TRUE(run_topk(c, in, &whole, &d).ok());
    for (int64_t chunk : {1, 7, 33}) {
      for (int64_t a = 0; a < c.shape.lq; a += chunk) {
        const int64_t b = std::min(a + chunk, c.shape.lq);
        const int64_t keys = causal ? b + c.shape.lk - c.shape.lq : c.shape.lk;
        const int64_t dd = c.shape.head_dim;
        TensorView q = TensorView::strided(in.q.data() + a * dd, {1, 2, b - a, dd},
                                           {2 * 70 * dd, 70 * dd, dd, 1});
        TensorView k =
            TensorView::strided(in.k.data(), {1, 2, keys, dd}, {2 * 100 * dd, 100 * dd, dd, 1});
        TensorView v =
            TensorView::strided(in.v.data(), {1, 2, keys, dd}, {2 * 100 * dd, 100 * dd, dd, 1});
        std::vector<float> part(static_cast<size_t>(2 * (b - a) * dd));
        TensorView o = TensorView::contiguous(part.data(), {1, 2, b - a, dd});
        TopkOptions opt;
        opt.k = c.k;
        opt.causal = causal;
        opt.kernel = d.kernel;  // the same kernel (a decode kernel sums in another order)
        Status s = hattn::topk_attention(q, k, v, o, opt);
        ASSERT_TRUE(s.ok()) << s.message;
        for (int64_t h = 0; h < 2; ++h) {
          for (int64_t i = a; i < b; ++i) {
            for (int64_t x = 0; x < dd; ++x) {
              const float want = whole.data()[(h * 70 + i) * dd + x];
              const float got = part[static_cast<size_t>((h * (b - a) + i - a) * dd + x)];
              ASSERT_EQ(std::memcmp(&want, &got, sizeof(float)), 0)
                  << c.name << " chunk " << chunk << " row " << i << " head " << h << ": " << got
                  << " vs " << want << " (" << rng.description() << ")";
            }
          }
        }
      }
    }
  }
}

// With V = identity (v_j = e_j, D = Lk), out_i is the weight vector itself: exactly k_eff
// non-zero weights, summing to 1, on the brute-force top-k set.
TEST(Topk, AtMostKNonZeroWeights) {
  const int64_t lk = 64;
  for (bool decode : {false, true}) {
    for (int64_t k : {1, 5, 20}) {
      const int64_t lq = decode ? 1 : 40;
      TopkCase c = make_topk("weights_k" + std::to_string(k) + (decode ? "_decode" : ""),
                             {1, 1, 1, lq, lk, lk}, true, k);
      TestRng rng(c.name);
      TopkInputs in = make_inputs(c, rng);
      in.v.fill(0.f);
      for (int64_t j = 0; j < lk; ++j) in.v.data()[j * lk + j] = 1.f;
      HostTensor out;
      Dispatch d;
      ASSERT_TRUE(run_topk(c, in, &out, &d).ok());
      std::vector<double> ref, gap;
      reference_topk_attention(in.q.data(), in.k.data(), in.v.data(), c.shape, strides_of(in), true,
                               in.scale, k, &ref, &gap);
      for (int64_t i = 0; i < lq; ++i) {
        const int64_t visible = std::min<int64_t>(i + lk - lq + 1, lk);
        int nonzero = 0;
        double sum = 0;
        for (int64_t j = 0; j < lk; ++j) {
          const float w = out.data()[i * lk + j];
          nonzero += w != 0.f;
          sum += w;
          if (j >= visible) {
            EXPECT_EQ(w, 0.f) << "masked key " << j << " has weight, row " << i;
          }
        }
        EXPECT_EQ(nonzero, std::min(k, visible))
            << c.name << " row " << i << " " << rng.description();
        EXPECT_NEAR(sum, 1.0, 1e-5) << c.name << " row " << i;
      }
      int left_out = 0;
      std::string m = compare_rows(out, ref, &gap, lk, &left_out);
      EXPECT_TRUE(m.empty()) << c.name << m;
    }
  }
}

// Equal scores: the lower key indices win. All keys equal -> the first k keys, weight 1/k each.
TEST(Topk, TiesGoToTheLowerIndex) {
  const int64_t lk = 48, k = 6;
  for (int64_t lq : {1, 20}) {
    TopkCase c = make_topk("ties_lq" + std::to_string(lq), {1, 1, 1, lq, lk, lk}, false, k);
    TestRng rng(c.name);
    TopkInputs in = make_inputs(c, rng);
    for (int64_t j = 1; j < lk; ++j) {
      for (int64_t x = 0; x < lk; ++x) in.k.data()[j * lk + x] = in.k.data()[x];
    }
    in.v.fill(0.f);
    for (int64_t j = 0; j < lk; ++j) in.v.data()[j * lk + j] = 1.f;
    HostTensor out;
    Dispatch d;
    ASSERT_TRUE(run_topk(c, in, &out, &d).ok());
    for (int64_t i = 0; i < lq; ++i) {
      for (int64_t j = 0; j < lk; ++j) {
        const float want = j < k ? 1.f / k : 0.f;
        EXPECT_NEAR(out.data()[i * lk + j], want, 1e-6) << "row " << i << " key " << j;
      }
    }
  }
}

// Causal rows that see fewer than k keys use what they have; rows that see none output zeros.
TEST(Topk, CausalRowsWithFewVisibleKeys) {
  std::string failure = check_topk_case(make_topk("few_visible", {1, 2, 2, 40, 40, 64}, true, 16));
  EXPECT_TRUE(failure.empty()) << failure;
  TopkCase c = make_topk("none_visible", {1, 2, 2, 60, 20, 64}, true, 8);  // rows 0..39: none
  failure = check_topk_case(c);
  EXPECT_TRUE(failure.empty()) << failure;
}

TEST(Topk, EveryKernelForced) {
  for (const std::string& name : kernel_names("topk")) {
    const hattn::KernelInfo* k = find_kernel(name);
    ASSERT_NE(k, nullptr);
    const int64_t d = k->head_dim ? k->head_dim : 48;
    const int64_t lq = k->phase == "decode" ? 2 : 45;
    TopkCase c = make_topk("forced_" + name, {1, 2, 1, lq, 333, d}, k->causal, 10);
    c.kernel = name;
    std::string failure = check_topk_case(c);
    EXPECT_TRUE(failure.empty()) << failure;
  }
}

TEST(Topk, RefusesBadArguments) {
  TopkCase c = make_topk("errors", {1, 2, 2, 10, 20, 64}, false, 4);
  TestRng rng(c.name);
  TopkInputs in = make_inputs(c, rng);
  HostTensor out;
  Dispatch d;
  for (int64_t bad_k : {0, -3}) {
    c.k = bad_k;
    Status s = run_topk(c, in, &out, &d);
    EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
    EXPECT_NE(s.message.find("k ("), std::string::npos) << s.message;
    EXPECT_TRUE(out.changed_since_snapshot(false).empty()) << "a refused call wrote out";
  }
  c.k = 4;
  c.kernel = "dense_prefill_noncausal_d64_f32_" + cpu_family();
  Status s = run_topk(c, in, &out, &d);
  EXPECT_EQ(s.code, StatusCode::unsupported) << s.message;
  EXPECT_NE(s.message.find("not topk"), std::string::npos) << s.message;
  HostTensor wrong_v({1, 2, 21, 64}, Layout::kContiguous);
  wrong_v.fill_normal(rng);
  TopkOptions o;
  o.k = 4;
  s = hattn::topk_attention(in.q.view(), in.k.view(), wrong_v.view(), out.view(), o);
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
  o.check_finite = true;
  in.k.data()[5] = std::numeric_limits<float>::quiet_NaN();
  s = hattn::topk_attention(in.q.view(), in.k.view(), in.v.view(), out.view(), o);
  EXPECT_EQ(s.code, StatusCode::non_finite_input) << s.message;
}

// ---------------------------------------------------------------------------------------------
// topk_ffn

// ---------------------------------------------------------------------------------------------
// 16-bit tensors (bf16, f16): decode over a 16-bit cache and prefill (generic-D kernels), against
// the float64 brute force on the rounded inputs. Scores, selection and softmax are fp32 in the
// kernel, so the only 16-bit rounding is the output's (sixteen_bit_output_tolerance); rows whose
// k-th and (k+1)-th scores nearly tie are left out as in the fp32 tests.

struct Topk16Case {
  const char* name;
  AttnShape shape;
  int64_t k;
};

// Runs topk_attention on 16-bit views of `q`, `k`, `v` (out poisoned with NaN first); returns
// the status and the output bits.
Status run_topk_16bit(hattn::DType t, const AttnShape& a, bool causal, int64_t k, const Sixteen& q,
                      const Sixteen& kk, const Sixteen& v, std::vector<uint16_t>* out,
                      Dispatch* d) {
  out->assign(q.bits.size(), 0xffff);  // NaN in both dtypes
  const std::vector<int64_t> qs = {a.batch, a.q_heads, a.lq, a.head_dim};
  const std::vector<int64_t> kvs = {a.batch, a.kv_heads, a.lk, a.head_dim};
  TopkOptions o;
  o.k = k;
  o.causal = causal;
  return hattn::topk_attention(TensorView::contiguous(q.bits.data(), t, qs),
                               TensorView::contiguous(kk.bits.data(), t, kvs),
                               TensorView::contiguous(v.bits.data(), t, kvs),
                               TensorView::contiguous(out->data(), t, qs), o, d);
}

// bf16 topk prefill and the bf16 FFN write their products as bf16 pairs (vdpbf16ps) in a build
// for CPUs with AVX512-BF16: unless HATTN_TEST_ISA holds it back, such a CPU runs that build.
void expect_pair_build(hattn::DType t, const std::string& kernel) {
#if defined(__x86_64__)
  auto build_of = [](const std::string& name) {
    for (const hattn::KernelInfo& k : hattn::list_kernels()) {
      if (k.name == name) {
        return hattn::selected_build(k);
      }
    }
    return std::string();
  };
  if (t == hattn::DType::bf16 && kernel.find("_decode_") == std::string::npos &&
      isa_restriction() == "native" && __builtin_cpu_supports("avx512bf16")) {
    EXPECT_NE(build_of(kernel).find("avx512_zen4"), std::string::npos)
        << kernel << " runs " << build_of(kernel);
  }
#else
  (void)t;
  (void)kernel;
#endif
}

// On a CPU with AVX512-BF16, bf16 prefill runs its pair-product build (q.k as vdpbf16ps; an odd
// D adds its last column alone: D = 33); test_topk.isa_avx512 runs this test again on the
// AVX-512 build.
TEST(Topk16Bit, MatchesReferenceOnRoundedInputs) {
  ASSERT_TRUE(isa_restriction_error().empty()) << isa_restriction_error();
  // Decode (Lq <= 8): specialized and generic head dims, grouped heads, k past the visible count
  // (exact dense), and causal rows that see no key (Lq > Lk: zeros). Prefill (the generic-D
  // kernels): Lq > 8, Lq < Lk and Lq > Lk, grouped heads.
  const Topk16Case cases[] = {{"d128_gqa_k32", {1, 8, 2, 1, 900, 128}, 32},
                              {"d64_lq3_k16", {2, 4, 4, 3, 300, 64}, 16},
                              {"d80_lq2_k7", {1, 2, 1, 2, 200, 80}, 7},
                              {"d64_k_past_lk", {1, 2, 2, 1, 20, 64}, 40},
                              {"d64_lq_gt_lk", {1, 2, 2, 6, 3, 64}, 2},
                              {"prefill_d64_gqa_k16", {1, 4, 2, 40, 120, 64}, 16},
                              {"prefill_d128_k8", {2, 2, 2, 33, 33, 128}, 8},
                              {"prefill_d48_lq_gt_lk_k5", {1, 2, 1, 20, 12, 48}, 5},
                              {"prefill_d33_k6", {1, 2, 2, 19, 45, 33}, 6}};
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (const Topk16Case& c : cases) {
      for (bool causal : {false, true}) {
        const AttnShape& a = c.shape;
        const std::string name =
            std::string(hattn::to_string(t)) + "_" + c.name + (causal ? "_causal" : "");
        SCOPED_TRACE(name);
        TestRng rng(name);
        SCOPED_TRACE(rng.description());
        const Sixteen q = draw_16bit(t, a.batch * a.q_heads * a.lq * a.head_dim, rng);
        const Sixteen kk = draw_16bit(t, a.batch * a.kv_heads * a.lk * a.head_dim, rng);
        const Sixteen v = draw_16bit(t, a.batch * a.kv_heads * a.lk * a.head_dim, rng);
        const Sixteen q0 = q, k0 = kk, v0 = v;
        std::vector<uint16_t> out;
        Dispatch d;
        const Status st = run_topk_16bit(t, a, causal, c.k, q, kk, v, &out, &d);
        ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
        EXPECT_NE(d.kernel.find(a.lq <= 8 ? "topk_decode_" : "topk_prefill_"), std::string::npos)
            << d.kernel;
        EXPECT_NE(d.kernel.find(std::string("_") + hattn::to_string(t) + "_"), std::string::npos)
            << d.kernel;
        used.insert(d.kernel);
        expect_pair_build(t, d.kernel);
        EXPECT_TRUE(q.bits == q0.bits && kk.bits == k0.bits && v.bits == v0.bits)
            << "an input was modified";

        std::vector<double> ref, gap;
        const AttnStrides strides = dense_strides(a);
        const double scale = static_cast<double>(1.f / std::sqrt(static_cast<float>(a.head_dim)));
        reference_topk_attention(q.values.data(), kk.values.data(), v.values.data(), a, strides,
                                 causal, scale, c.k, &ref, &gap);
        int left_out = 0;
        EXPECT_EQ(compare_16bit_rows(t, out, ref, gap, a.head_dim, &left_out), "");
      }
    }
  }
  // Every 16-bit topk kernel ran on some case above.
  EXPECT_EQ(sixteen_bit_kernels_not_run("topk", used), std::vector<std::string>{});
}

struct FfnProblem {
  HostTensor x, w1, w2t;
};

// HostTensor has rank 3 or 4: the FFN's matrices are [1, rows, D] tensors seen as [rows, D].
TensorView matrix(const HostTensor& t) {
  return TensorView::strided(t.data(), {t.shape()[1], t.shape()[2]},
                             {t.strides()[1], t.strides()[2]});
}

FfnProblem make_ffn(int64_t tokens, int64_t dim, int64_t d_ff, TestRng& rng) {
  FfnProblem p{HostTensor({1, tokens, dim}, Layout::kContiguous),
               HostTensor({1, d_ff, dim}, Layout::kContiguous),
               HostTensor({1, d_ff, dim}, Layout::kContiguous)};
  p.x.fill_normal(rng);
  p.w1.fill_normal(rng, 1.f / std::sqrt(static_cast<float>(dim)));
  p.w2t.fill_normal(rng, 1.f / std::sqrt(static_cast<float>(d_ff)));
  return p;
}

Status run_ffn(const FfnProblem& p, int64_t k, HostTensor* y, Dispatch* d) {
  *y = HostTensor({1, p.x.shape()[1], p.x.shape()[2]}, Layout::kPadded);
  y->snapshot();
  hattn::TopkFfnOptions o;
  o.k = k;
  return hattn::topk_ffn(matrix(p.x), matrix(p.w1), matrix(p.w2t), matrix(*y), o, d);
}

TEST(TopkFfn, MatchesBruteForceTopk) {
  struct Shape {
    int64_t tokens, dim, d_ff, k;
  };
  // 300 tokens and D = 80: the W2 sum's tasks (gt tokens) and slices of D (gd values) each end
  // in a partial one (the tables' gt = 256, gd = 32 or 64).
  for (Shape s : {Shape{37, 64, 300, 32}, Shape{5, 96, 1000, 100}, Shape{70, 48, 200, 1},
                  Shape{300, 80, 256, 24}}) {
    TestRng rng("ffn_T" + std::to_string(s.tokens) + "_k" + std::to_string(s.k));
    FfnProblem p = make_ffn(s.tokens, s.dim, s.d_ff, rng);
    HostTensor y;
    Dispatch d;
    Status st = run_ffn(p, s.k, &y, &d);
    ASSERT_TRUE(st.ok()) << st.message;
    std::vector<double> ref, gap;
    reference_topk_ffn(p.x.data(), p.w1.data(), p.w2t.data(), s.tokens, s.dim, s.d_ff, s.k, &ref,
                       &gap);
    int left_out = 0;
    std::string m = compare_rows(y, ref, &gap, s.dim, &left_out);
    EXPECT_TRUE(m.empty()) << rng.description() << " kernel " << d.kernel << m;
    EXPECT_TRUE(y.changed_since_snapshot(true).empty()) << "y padding written";
  }
}

// k >= d_ff is the dense FFN y = relu(x W1^T) W2^T, computed here directly.
TEST(TopkFfn, KAtLeastDffEqualsDenseFfn) {
  const int64_t tokens = 20, dim = 64, d_ff = 128;
  TestRng rng("ffn_dense");
  FfnProblem p = make_ffn(tokens, dim, d_ff, rng);
  std::vector<double> dense(static_cast<size_t>(tokens * dim), 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t f = 0; f < d_ff; ++f) {
      double h = 0;
      for (int64_t x = 0; x < dim; ++x)
        h += double(p.x.data()[t * dim + x]) * p.w1.data()[f * dim + x];
      h = std::max(h, 0.0);
      for (int64_t x = 0; x < dim; ++x)
        dense[static_cast<size_t>(t * dim + x)] += h * p.w2t.data()[f * dim + x];
    }
  }
  for (int64_t k : {d_ff, 5 * d_ff}) {
    HostTensor y;
    Dispatch d;
    ASSERT_TRUE(run_ffn(p, k, &y, &d).ok());
    int left_out = 0;
    std::string m = compare_rows(y, dense, nullptr, dim, &left_out);
    EXPECT_TRUE(m.empty()) << "k=" << k << " " << rng.description() << m;
    if (k > d_ff) {
      EXPECT_NE(d.reason.find("clamped"), std::string::npos) << d.reason;
    }
  }
}

// Exact ties: small-integer x and W1 make every h an exact integer (in fp32 and in double), and
// W1's rows repeat, so units tie in groups; the k-th unit falls inside a tied group and the
// lower-indexed units of it are taken. Random W2 rows tell which ones were. No row is left out.
TEST(TopkFfn, TiesTakeTheLowerUnits) {
  const int64_t tokens = 40, dim = 32, d_ff = 96;
  TestRng rng("ffn_ties");
  FfnProblem p = make_ffn(tokens, dim, d_ff, rng);
  for (int64_t i = 0; i < tokens * dim; ++i) {
    p.x.data()[i] = static_cast<float>(rng.uniform_int(-2, 2));
  }
  for (int64_t f = 0; f < d_ff; ++f) {
    for (int64_t d = 0; d < dim; ++d) {
      p.w1.data()[f * dim + d] = f % 4 == 0 ? static_cast<float>(rng.uniform_int(-1, 1))
                                            : p.w1.data()[(f - f % 4) * dim + d];
    }
  }
  for (int64_t k : {1, 6, 13, 50}) {
    HostTensor y;
    Dispatch d;
    ASSERT_TRUE(run_ffn(p, k, &y, &d).ok());
    std::vector<double> ref, gap;
    reference_topk_ffn(p.x.data(), p.w1.data(), p.w2t.data(), tokens, dim, d_ff, k, &ref, &gap);
    int left_out = 0;
    std::string m = compare_rows(y, ref, nullptr, dim, &left_out);
    EXPECT_TRUE(m.empty()) << "k=" << k << " " << rng.description() << " kernel " << d.kernel << m;
  }
}

TEST(TopkFfn, RefusesBadArguments) {
  TestRng rng("ffn_errors");
  FfnProblem p = make_ffn(4, 32, 64, rng);
  HostTensor y;
  Dispatch d;
  Status s = run_ffn(p, 0, &y, &d);
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
  FfnProblem wrong = make_ffn(4, 32, 64, rng);
  wrong.w2t = HostTensor({1, 65, 32}, Layout::kContiguous);
  wrong.w2t.fill_normal(rng);
  s = run_ffn(wrong, 8, &y, &d);
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
  EXPECT_NE(s.message.find("d_ff"), std::string::npos) << s.message;
  wrong = make_ffn(4, 32, 64, rng);
  wrong.w1 = HostTensor({1, 64, 31}, Layout::kContiguous);
  wrong.w1.fill_normal(rng);
  s = run_ffn(wrong, 8, &y, &d);
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << s.message;
  EXPECT_NE(s.message.find("model dim"), std::string::npos) << s.message;
}

// n normal values times 2^exp2 rounded to the dtype (the scale keeps hidden units and sums of
// the FFN near 1, as trained weights do).
Sixteen draw_scaled_16bit(hattn::DType t, int64_t n, int exp2, TestRng& rng) {
  Sixteen a = draw_16bit(t, n, rng);
  for (size_t i = 0; i < a.bits.size(); ++i) {
    a.bits[i] = ref_to_16bit(t, std::ldexp(a.values[i], exp2));
    a.values[i] = ref_from_16bit(t, a.bits[i]);
  }
  return a;
}

// The top-k FFN in bf16 / f16: x, w1, w2t and y in the dtype, against the float64 top-k FFN on
// the rounded inputs (half an ulp of y's dtype plus fp32 noise; near-tied k-th units left out),
// k below, at and past d_ff; mixed dtypes refused with y untouched. On a CPU with AVX512-BF16 the
// bf16 kernel runs its pair-product build (x W1^T as vdpbf16ps; an odd D adds its last column
// alone: D = 33); test_topk.isa_avx512 runs this test again on the AVX-512 build.
TEST(TopkFfn16Bit, MatchesReferenceOnRoundedInputs) {
  ASSERT_TRUE(isa_restriction_error().empty()) << isa_restriction_error();
  struct Shape {
    int64_t tokens, dim, d_ff, k;
  };
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (Shape sh : {Shape{37, 64, 300, 32}, Shape{5, 96, 1000, 100}, Shape{9, 48, 40, 60},
                     Shape{300, 80, 256, 24}, Shape{21, 33, 90, 10}}) {
      const std::string name = std::string(hattn::to_string(t)) + "_T" + std::to_string(sh.tokens) +
                               "_k" + std::to_string(sh.k);
      SCOPED_TRACE(name);
      TestRng rng("ffn16_" + name);
      SCOPED_TRACE(rng.description());
      const Sixteen x = draw_16bit(t, sh.tokens * sh.dim, rng);
      const Sixteen w1 = draw_scaled_16bit(t, sh.d_ff * sh.dim, -3, rng);
      const Sixteen w2t = draw_scaled_16bit(t, sh.d_ff * sh.dim, -4, rng);
      std::vector<uint16_t> y(x.bits.size(), 0xffff);  // NaN in both dtypes
      hattn::TopkFfnOptions o;
      o.k = sh.k;
      Dispatch d;
      const Status st =
          hattn::topk_ffn(TensorView::contiguous(x.bits.data(), t, {sh.tokens, sh.dim}),
                          TensorView::contiguous(w1.bits.data(), t, {sh.d_ff, sh.dim}),
                          TensorView::contiguous(w2t.bits.data(), t, {sh.d_ff, sh.dim}),
                          TensorView::contiguous(y.data(), t, {sh.tokens, sh.dim}), o, &d);
      ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
      EXPECT_NE(d.kernel.find(std::string("_") + hattn::to_string(t) + "_"), std::string::npos)
          << d.kernel;
      used.insert(d.kernel);
      expect_pair_build(t, d.kernel);
      std::vector<double> ref, gap;
      reference_topk_ffn(x.values.data(), w1.values.data(), w2t.values.data(), sh.tokens, sh.dim,
                         sh.d_ff, sh.k, &ref, &gap);
      int left_out = 0;
      EXPECT_EQ(compare_16bit_rows(t, y, ref, gap, sh.dim, &left_out), "");
    }
  }
  EXPECT_EQ(sixteen_bit_kernels_not_run("topk_ffn", used), std::vector<std::string>{});

  // One dtype for the four tensors: a bf16 x with fp32 weights is refused, y untouched.
  TestRng rng("ffn16_mixed");
  const Sixteen x = draw_16bit(hattn::DType::bf16, 4 * 32, rng);
  std::vector<float> w(64 * 32, 0.5f);
  std::vector<uint16_t> y(x.bits.size(), 0xffff);
  hattn::TopkFfnOptions o;
  o.k = 4;
  const Status st = hattn::topk_ffn(
      TensorView::contiguous(x.bits.data(), hattn::DType::bf16, {4, 32}),
      TensorView::contiguous(w.data(), {64, 32}), TensorView::contiguous(w.data(), {64, 32}),
      TensorView::contiguous(y.data(), hattn::DType::bf16, {4, 32}), o);
  EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
  EXPECT_NE(st.message.find("one dtype"), std::string::npos) << st.message;
  for (uint16_t v : y) ASSERT_EQ(v, 0xffff) << "a refused call wrote y";
}

// ---------------------------------------------------------------------------------------------
// Boundary rows (issue 21): rows built on float boundaries (reference.h, boundary_rows) through
// the radix select on the float bits that topk attention and the top-k FFN share. The expected
// selection is computed independently, by a stable sort.

// What a boundary test counted; printed, and checked to leave no row out unseen.
struct BoundaryTally {
  int rows = 0, calls = 0, refused_k0 = 0, left_out = 0, failures = 0;
  void fail(const std::string& what) {
    if (++failures <= 20) ADD_FAILURE() << what;
  }
};

// Each row as the scores of one query: D = n (or the kernel's compiled D), q = +-e_0, key j =
// z_j e_0 (other channels 0) so that scale q . k_j = +-scale z_j exactly, v_j = e_j so that out
// is the weight vector: out[j] > 0 iff key j was selected. Two query rows, q = +e_0 (the k largest
// z) and q = -e_0 (the k smallest, ties still by the lower index); under a causal mask (Lq = 2,
// bottom-right) the first sees keys [0, n - 1) only. Through the dispatcher's choice and every
// topk kernel forced, whose D fits n. The weights are compared with a double softmax over the
// expected set. k = 0 is refused by topk_attention (k >= 1): checked to be refused, with its
// message, and out untouched.
TEST(TopkBoundary, AttentionSelectsTheStableSortTopk) {
  TestRng rng("boundary");
  SCOPED_TRACE(rng.description());
  const std::vector<BoundaryRow> rows = boundary_rows(rng.seed(), 160);
  std::vector<const hattn::KernelInfo*> kernels = {nullptr};  // nullptr: the dispatcher chooses
  for (const std::string& name : kernel_names("topk")) kernels.push_back(find_kernel(name));
  BoundaryTally tally;
  for (const BoundaryRow& row : rows) {
    const int64_t n = static_cast<int64_t>(row.z.size());
    ++tally.rows;
    if (row.k == 0) {
      HostTensor q({1, 1, 1, n}, Layout::kContiguous), k({1, 1, n, n}, Layout::kContiguous),
          v({1, 1, n, n}, Layout::kContiguous), out({1, 1, 1, n}, Layout::kContiguous);
      q.fill(1.f);
      k.fill(1.f);
      v.fill(1.f);
      out.snapshot();
      TopkOptions o;
      o.k = 0;
      Status s = hattn::topk_attention(q.view(), k.view(), v.view(), out.view(), o);
      if (s.code != StatusCode::invalid_argument ||
          s.message.find("k (keys kept per row) must be >= 1, got 0") == std::string::npos ||
          !out.changed_since_snapshot(false).empty()) {
        tally.fail(row.kind + ": k = 0 not refused as it should be: " + s.message);
      }
      ++tally.refused_k0;
      continue;
    }
    float scale = 0;
    std::string why;
    if (!exact_boundary_scale(row.z, &scale, &why)) {
      ++tally.left_out;
      std::cout << "[  LEFT OUT] " << row.kind << " (n=" << n << "): " << why
                << "; its selection is tested through topk_ffn\n";
      continue;
    }
    for (const hattn::KernelInfo* kernel : kernels) {
      if (kernel != nullptr && kernel->head_dim != 0 && kernel->head_dim < n) continue;
      const int64_t d = kernel != nullptr && kernel->head_dim != 0 ? kernel->head_dim : n;
      const bool causal = kernel != nullptr && kernel->causal;
      HostTensor q({1, 1, 2, d}, Layout::kContiguous), k({1, 1, n, d}, Layout::kContiguous),
          v({1, 1, n, d}, Layout::kContiguous), out({1, 1, 2, d}, Layout::kContiguous);
      q.fill(0.f);
      k.fill(0.f);
      v.fill(0.f);
      out.poison();
      q.data()[0] = 1.f;
      q.data()[d] = -1.f;
      for (int64_t j = 0; j < n; ++j) {
        k.data()[j * d] = row.z[static_cast<size_t>(j)];
        v.data()[j * d + j] = 1.f;
      }
      TopkOptions o;
      o.k = row.k;
      o.causal = causal;
      o.has_scale = true;
      o.scale = scale;
      o.kernel = kernel != nullptr ? kernel->name : "";
      Dispatch disp;
      Status s = hattn::topk_attention(q.view(), k.view(), v.view(), out.view(), o, &disp);
      ++tally.calls;
      const std::string where = row.kind + " (n=" + std::to_string(n) + ", scale 2^" +
                                std::to_string(std::ilogb(scale)) + ", kernel " + disp.kernel + ")";
      if (!s.ok()) {
        tally.fail(where + ": " + s.message);
        continue;
      }
      for (int64_t r = 0; r < 2; ++r) {
        const double sign = r == 0 ? 1.0 : -1.0;
        const int64_t visible = causal ? n - 1 + r : n;
        std::vector<double> values(static_cast<size_t>(n));
        for (int64_t j = 0; j < n; ++j) values[static_cast<size_t>(j)] = sign * row.z[j];
        std::vector<float> got(static_cast<size_t>(d));
        for (int64_t j = 0; j < d; ++j) got[static_cast<size_t>(j)] = out.data()[r * d + j];
        const std::string bad =
            check_selected_weights(got.data(), d, values, visible, row.k, scale);
        if (!bad.empty()) {
          tally.fail(where + ", q = " + (r == 0 ? "+" : "-") + "e_0, " + std::to_string(visible) +
                     " visible: " + bad);
        }
      }
    }
  }
  std::cout << "[  ROWS    ] topk_attention: " << tally.rows << " boundary rows, " << tally.calls
            << " calls, " << tally.refused_k0 << " with k = 0 refused, " << tally.left_out
            << " left out, " << tally.failures << " wrong\n";
  EXPECT_EQ(tally.failures, 0);
  EXPECT_LE(tally.left_out, 2) << "most rows must reach topk_attention";
}

// Each row as one FFN hidden layer: x = +-e_0 (two tokens), w1 row j = z_j e_0 so that the
// pre-activation h_j = +-z_j exactly (no scale: the +-FLT_MAX rows go through unchanged), w2t row
// j = e_j (D = n) so that y[j] = relu(h_j) if unit j was selected, else 0. ReLU zeroes the
// negative entries, so y shows the selection on the positive ones only; the token x = -e_0 shows
// it on the negative z (the k largest of -z). Checked exactly. k = 0 is refused.
TEST(TopkBoundary, FfnSelectsTheStableSortTopk) {
  TestRng rng("boundary");
  SCOPED_TRACE(rng.description());
  const std::vector<BoundaryRow> rows = boundary_rows(rng.seed(), 160);
  BoundaryTally tally;
  for (const BoundaryRow& row : rows) {
    const int64_t n = static_cast<int64_t>(row.z.size());
    ++tally.rows;
    FfnProblem p{HostTensor({1, 2, n}, Layout::kContiguous),
                 HostTensor({1, n, n}, Layout::kContiguous),
                 HostTensor({1, n, n}, Layout::kContiguous)};
    p.x.fill(0.f);
    p.w1.fill(0.f);
    p.w2t.fill(0.f);
    p.x.data()[0] = 1.f;
    p.x.data()[n] = -1.f;
    for (int64_t j = 0; j < n; ++j) {
      p.w1.data()[j * n] = row.z[static_cast<size_t>(j)];
      p.w2t.data()[j * n + j] = 1.f;
    }
    HostTensor y;
    Dispatch d;
    Status s = run_ffn(p, row.k, &y, &d);
    ++tally.calls;
    const std::string where = row.kind + " (n=" + std::to_string(n) + ", kernel " + d.kernel + ")";
    if (row.k == 0) {
      if (s.code != StatusCode::invalid_argument ||
          s.message.find("k (hidden units kept per row) must be >= 1") == std::string::npos ||
          !y.changed_since_snapshot(false).empty()) {
        tally.fail(where + ": k = 0 not refused as it should be: " + s.message);
      }
      ++tally.refused_k0;
      continue;
    }
    if (!s.ok()) {
      tally.fail(where + ": " + s.message);
      continue;
    }
    for (int64_t t = 0; t < 2; ++t) {
      const double sign = t == 0 ? 1.0 : -1.0;
      std::vector<double> values(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) values[static_cast<size_t>(j)] = sign * row.z[j];
      const std::vector<int64_t> want = stable_sort_topk(values, n, row.k);
      std::vector<float> ref(static_cast<size_t>(n), 0.f);
      for (int64_t j : want) ref[j] = std::max(static_cast<float>(values[j]), 0.f);
      std::vector<int64_t> got, want_positive;
      for (int64_t j : want) {
        if (ref[j] > 0) want_positive.push_back(j);
      }
      std::ostringstream bad;
      for (int64_t j = 0; j < n; ++j) {
        const float yj = y.at_flat(t * n + j);
        if (yj > 0) got.push_back(j);
        if (!(yj == ref[j]) && bad.tellp() < 400)
          bad << " y[" << j << "] " << yj << " want " << ref[j] << ";";
      }
      if (got != want_positive || !bad.str().empty()) {
        tally.fail(where + ", x = " + (t == 0 ? "+" : "-") + "e_0: selected with h > 0 " +
                   index_list(got) + ", want " + index_list(want_positive) + " (of " +
                   index_list(want) + ")" + bad.str());
      }
    }
  }
  std::cout << "[  ROWS    ] topk_ffn: " << tally.rows << " boundary rows, " << tally.calls
            << " calls, " << tally.refused_k0 << " with k = 0 refused, " << tally.failures
            << " wrong\n";
  EXPECT_EQ(tally.failures, 0);
}

}  // namespace

// Scores far below -1e30 (the finite mask value of the dense kernels) with a causal mask: masked
// keys must still never be selected, and a row whose every score is below -1e30 is a softmax, not
// 0 / 0. Before masked_key and the -FLT_MAX row max, a masked key at score 5 - 1e30 outranked the
// visible ones (row 0 returned v_2, which it cannot see) and such rows were NaN. topk and Loki
// (rank 1 of an identity basis: the same scores) share the selection and the softmax.
TEST(TopkBoundary, ScoresFarBelowTheMaskValue) {
  using hattn::LokiOptions;
  const int64_t lq = 2, lk = 3, dim = 3;
  std::vector<float> basis = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::vector<float> v = basis;  // v_j = e_j: the output says which keys got weight
  std::vector<float> q = {1, 0, 0, 1, 0, 0};
  auto view = [](std::vector<float>& x, std::vector<int64_t> shape) {
    return TensorView::contiguous(x.data(), std::move(shape));
  };
  for (float z0 : {-2e30f, -1e38f}) {
    for (bool causal : {true, false}) {
      // Causal: row 0 sees keys 0 and 1 (z0 > 2 z0), row 1 all three (key 2 scores 5). Not causal:
      // every score below -1e30, the largest at key 0.
      std::vector<float> keys = {z0, 0, 0, 2 * z0, 0, 0, causal ? 5.f : 3 * z0, 0, 0};
      const int64_t want_row1 = causal ? 2 : 0;
      for (int64_t k : {1, 2, 3}) {
        for (const char* variant : {"topk", "loki"}) {
          SCOPED_TRACE(std::string(variant) + " z0=" + std::to_string(z0) +
                       (causal ? " causal" : "") + " k=" + std::to_string(k));
          std::vector<float> out(static_cast<size_t>(lq * dim), std::nanf(""));
          Status s;
          if (std::string(variant) == "topk") {
            TopkOptions o;
            o.k = k;
            o.causal = causal;
            o.has_scale = true;
            o.scale = 1.f;
            s = hattn::topk_attention(view(q, {1, 1, lq, dim}), view(keys, {1, 1, lk, dim}),
                                      view(v, {1, 1, lk, dim}), view(out, {1, 1, lq, dim}), o);
          } else {
            LokiOptions o;
            o.k = k;
            o.rank = 1;
            o.causal = causal;
            o.has_scale = true;
            o.scale = 1.f;
            s = hattn::loki_attention(view(q, {1, 1, lq, dim}), view(keys, {1, 1, lk, dim}),
                                      view(v, {1, 1, lk, dim}), view(basis, {1, dim, dim}),
                                      view(out, {1, 1, lq, dim}), o);
          }
          ASSERT_TRUE(s.ok()) << s.message;
          for (int64_t c = 0; c < dim; ++c) {
            EXPECT_EQ(out[static_cast<size_t>(c)], c == 0 ? 1.f : 0.f) << "row 0, channel " << c;
            EXPECT_EQ(out[static_cast<size_t>(dim + c)], c == want_row1 ? 1.f : 0.f)
                << "row 1, channel " << c;
          }
        }
      }
    }
  }
}
