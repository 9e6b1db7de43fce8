// Dense attention through the public API, against the double-precision reference.
//
// Every test draws fresh random inputs from a printed seed (HATTN_SEED overrides), poisons the
// outputs (and the padding of strided views) with NaN first, and checks that inputs are left
// bitwise unchanged and that no padding is written. See test_support.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "reference.h"
#include "test_support.h"

namespace hattn_test {
namespace {

using hattn::Dispatch;
using hattn::KernelInfo;
using hattn::StatusCode;

template <typename F>
DenseCase with(DenseCase c, F edit) {
  edit(c);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Shapes, masks, scales and layouts chosen by the dispatcher.

std::vector<DenseCase> shape_cases() {
  std::vector<DenseCase> v;
  // Single query / single key, short and long sequences (Lq and Lk = 1, 7, 1000).
  v.push_back(make_case("L1_d64", {1, 2, 2, 1, 1, 64}, false));
  v.push_back(make_case("L1_causal_d64", {1, 2, 2, 1, 1, 64}, true));
  v.push_back(make_case("L1_d80", {1, 2, 2, 1, 1, 80}, false));
  v.push_back(make_case("L7_d64", {1, 2, 2, 7, 7, 64}, false));
  v.push_back(make_case("L7_causal_d128", {1, 2, 2, 7, 7, 128}, true));
  v.push_back(make_case("L1000_d64", {1, 2, 2, 1000, 1000, 64}, false));
  v.push_back(make_case("L1000_causal_d128", {1, 1, 1, 1000, 1000, 128}, true));
  v.push_back(make_case("L1000_causal_d80", {1, 1, 1, 1000, 1000, 80}, true));
  v.push_back(make_case("Lq1_Lk1000_d64", {1, 2, 2, 1, 1000, 64}, false));
  v.push_back(make_case("Lq1_Lk1000_causal_d128", {1, 2, 2, 1, 1000, 128}, true));
  v.push_back(make_case("Lq7_Lk1000_d128", {1, 2, 2, 7, 1000, 128}, false));
  v.push_back(make_case("Lq7_Lk1000_causal_d64", {1, 2, 2, 7, 1000, 64}, true));
  v.push_back(make_case("Lq1000_Lk7_d64", {1, 2, 2, 1000, 7, 64}, false));
  v.push_back(make_case("Lq1000_Lk1_d128", {1, 1, 1, 1000, 1, 128}, false));
  v.push_back(make_case("Lq1_Lk7_d80", {1, 2, 2, 1, 7, 80}, false));
  // Around the decode threshold (4): the dispatcher switches phase between these.
  v.push_back(make_case("Lq4_Lk300_causal_d64", {1, 2, 2, 4, 300, 64}, true));
  v.push_back(make_case("Lq5_Lk300_causal_d64", {1, 2, 2, 5, 300, 64}, true));
  // Head dims: specialized 64/128, generic for the rest (80 and odd sizes).
  v.push_back(make_case("d80", {2, 2, 2, 100, 300, 80}, false));
  v.push_back(make_case("d80_causal_gqa", {1, 4, 2, 100, 300, 80}, true));
  v.push_back(make_case("d1", {1, 2, 1, 33, 65, 1}, false));
  v.push_back(make_case("d3_causal", {1, 2, 2, 40, 41, 3}, true));
  v.push_back(make_case("d8", {1, 2, 2, 17, 300, 8}, false));
  v.push_back(make_case("d96_causal", {1, 2, 2, 70, 90, 96}, true));
  v.push_back(make_case("d256", {1, 1, 1, 50, 300, 256}, false));
  v.push_back(make_case("decode_d200", {1, 2, 2, 1, 300, 200}, false));
  v.push_back(make_case("decode_causal_d160_lq3", {1, 2, 1, 3, 500, 160}, true));
  v.push_back(make_case("decode_d256", {1, 2, 2, 1, 300, 256}, false));
  v.push_back(make_case("decode_d16", {1, 2, 2, 1, 300, 16}, false));
  v.push_back(make_case("decode_d1", {1, 2, 2, 2, 300, 1}, true));
  // GQA 8:2 and MQA (Hkv = 1).
  v.push_back(make_case("gqa8_2_d64", {1, 8, 2, 64, 200, 64}, false));
  v.push_back(make_case("gqa8_2_causal_d128", {1, 8, 2, 64, 200, 128}, true));
  v.push_back(make_case("gqa8_2_decode_d64", {1, 8, 2, 1, 513, 64}, false));
  v.push_back(make_case("mqa4_1_causal_d64", {1, 4, 1, 40, 300, 64}, true));
  v.push_back(make_case("mqa6_1_d80", {2, 6, 1, 20, 100, 80}, false));
  v.push_back(make_case("mqa8_1_decode_causal_d128", {1, 8, 1, 1, 700, 128}, true));
  // Decode packs a kv group's rows (Lq x Hq/Hkv) into one block: several rows per group, causal
  // rows that see no key (Lq > Lk), a group of 32 rows per query, odd groups, batches.
  v.push_back(make_case("gqa8_2_decode_causal_lq8_d128", {2, 8, 2, 8, 1000, 128}, true));
  v.push_back(make_case("mqa32_1_decode_causal_lq8_d128", {1, 32, 1, 8, 300, 128}, true));
  v.push_back(make_case("gqa6_3_decode_causal_lq3_lk2_d80", {1, 6, 3, 3, 2, 80}, true));
  v.push_back(make_case("gqa6_2_decode_lq2_d64", {3, 6, 2, 2, 777, 64}, false));
  v.push_back(make_case("gqa4_2_decode_lk1_d64", {1, 4, 2, 1, 1, 64}, false));
  // Causal with Lq < Lk (bottom-right alignment: row i sees keys 0 .. i + Lk - Lq).
  v.push_back(make_case("causal_Lq_lt_Lk_d64", {1, 2, 2, 100, 700, 64}, true));
  v.push_back(make_case("causal_Lq_lt_Lk_d128", {1, 2, 2, 300, 557, 128}, true));
  // Causal with Lq > Lk: the first Lq - Lk rows see no key (zeros, lse -inf).
  v.push_back(make_case("causal_Lq_gt_Lk_d64", {1, 2, 2, 300, 100, 64}, true));
  v.push_back(make_case("causal_Lq_gt_Lk_d128", {1, 2, 2, 300, 100, 128}, true));
  v.push_back(make_case("causal_Lq_gt_Lk_d80", {1, 2, 2, 70, 33, 80}, true));
  v.push_back(make_case("causal_Lq1000_Lk7_d64", {1, 2, 2, 1000, 7, 64}, true));
  v.push_back(make_case("causal_Lq1000_Lk1_d80", {1, 1, 1, 1000, 1, 80}, true));
  v.push_back(make_case("causal_Lq7_Lk1_d64", {1, 2, 2, 7, 1, 64}, true));
  // Causal with Lq == Lk, across block boundaries.
  v.push_back(make_case("causal_square_257_d64", {1, 2, 2, 257, 257, 64}, true));
  v.push_back(make_case("causal_square_33_d128", {1, 2, 2, 33, 33, 128}, true));
  // Non-causal with Lq != Lk.
  v.push_back(make_case("noncausal_Lq33_Lk517_d128", {1, 2, 2, 33, 517, 128}, false));
  v.push_back(make_case("noncausal_Lq517_Lk33_d64", {1, 2, 2, 517, 33, 64}, false));
  // Batches.
  v.push_back(make_case("batch3_gqa_causal_d64", {3, 4, 2, 50, 70, 64}, true));
  v.push_back(make_case("batch2_d128", {2, 2, 2, 60, 130, 128}, false));
  v.push_back(make_case("batch3_decode_d64", {3, 4, 2, 1, 600, 64}, false));
  // Custom scales.
  v.push_back(with(make_case("scale_0_37_d64", {1, 2, 2, 64, 128, 64}, false), [](DenseCase& c) {
    c.has_scale = true;
    c.scale = 0.37f;
  }));
  v.push_back(
      with(make_case("scale_0_01_causal_d128", {1, 2, 2, 64, 128, 128}, true), [](DenseCase& c) {
        c.has_scale = true;
        c.scale = 0.01f;
      }));
  v.push_back(with(make_case("scale_1_decode_d80", {1, 2, 2, 1, 500, 80}, false), [](DenseCase& c) {
    c.has_scale = true;
    c.scale = 1.f;
  }));
  // Without an lse output (the library then uses scratch).
  v.push_back(with(make_case("no_lse_causal_d64", {1, 2, 2, 300, 300, 64}, true),
                   [](DenseCase& c) { c.with_lse = false; }));
  v.push_back(with(make_case("no_lse_decode_d128", {1, 4, 2, 1, 800, 128}, false),
                   [](DenseCase& c) { c.with_lse = false; }));
  // Long key sequences: the x86 AVX-512 table gives D = 128 non-causal prefill taller query
  // blocks from 12 MiB of K and V per kv head (lqb, lmb: 12288 fp32 keys), here at and past the
  // threshold; a partial last query block and key block, with and without lse.
  v.push_back(make_case("long_keys_d128", {1, 1, 1, 140, 12300, 128}, false));
  v.push_back(with(make_case("long_keys_no_lse_gqa_d128", {1, 2, 1, 70, 12288, 128}, false),
                   [](DenseCase& c) { c.with_lse = false; }));
  // Strided views: padded strides, head slices of packed [B, L, H, D] buffers, heads outermost.
  v.push_back(with(make_case("strided_q_padded_gqa", {2, 4, 2, 37, 129, 64}, false),
                   [](DenseCase& c) { c.q_layout = Layout::kPadded; }));
  v.push_back(
      with(make_case("strided_kv_blhd_out_padded", {2, 4, 2, 37, 129, 64}, true), [](DenseCase& c) {
        c.k_layout = Layout::kBLHD;
        c.v_layout = Layout::kBLHD;
        c.out_layout = Layout::kPadded;
        c.lse_layout = Layout::kPadded;
      }));
  v.push_back(with(make_case("strided_all_padded_causal_d128", {2, 2, 2, 70, 300, 128}, true),
                   [](DenseCase& c) {
                     c.q_layout = c.k_layout = c.v_layout = c.out_layout = Layout::kPadded;
                     c.lse_layout = Layout::kPadded;
                   }));
  v.push_back(with(
      make_case("strided_all_blhd_causal_d80", {2, 4, 2, 50, 60, 80}, true),
      [](DenseCase& c) { c.q_layout = c.k_layout = c.v_layout = c.out_layout = Layout::kBLHD; }));
  v.push_back(with(make_case("strided_mixed_d64", {2, 4, 4, 65, 200, 64}, false), [](DenseCase& c) {
    c.q_layout = Layout::kBLHD;
    c.k_layout = Layout::kHBLD;
    c.v_layout = Layout::kPadded;
    c.out_layout = Layout::kHBLD;
    c.lse_layout = Layout::kPadded;
  }));
  v.push_back(
      with(make_case("strided_decode_d128", {2, 8, 2, 1, 1000, 128}, false), [](DenseCase& c) {
        c.q_layout = Layout::kBLHD;
        c.k_layout = Layout::kPadded;
        c.v_layout = Layout::kHBLD;
        c.out_layout = Layout::kBLHD;
        c.lse_layout = Layout::kPadded;
      }));
  v.push_back(with(make_case("strided_decode_causal_lq3_d80", {1, 4, 1, 3, 900, 80}, true),
                   [](DenseCase& c) {
                     c.q_layout = Layout::kPadded;
                     c.k_layout = Layout::kBLHD;
                     c.v_layout = Layout::kBLHD;
                     c.out_layout = Layout::kPadded;
                   }));
  return v;
}

class DenseShapes : public ::testing::TestWithParam<DenseCase> {};

TEST_P(DenseShapes, MatchesReference) {
  const DenseCase& c = GetParam();
  TestRng rng(c.name);
  SCOPED_TRACE(rng.description());
  DenseProblem p = make_problem(c, rng);
  Dispatch d;
  std::string failure = run_and_check(p, &d);
  EXPECT_TRUE(failure.empty()) << failure;
  // The dispatcher's choice is reported and is a compiled kernel.
  EXPECT_FALSE(d.kernel.empty());
  EXPECT_NE(find_kernel(d.kernel), nullptr)
      << "Dispatch::kernel '" << d.kernel << "' is not in list_kernels()";
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseShapes, ::testing::ValuesIn(shape_cases()),
                         [](const ::testing::TestParamInfo<DenseCase>& param_info) {
                           return param_info.param.name;
                         });

// Rows that see no key: zeros and lse = -inf exactly, while the other rows are normal. Stated
// separately from the reference comparison so that a failure names the convention.
TEST(DenseConventions, RowsWithoutVisibleKeysAreZeroWithLseMinusInf) {
  for (int64_t d : {64, 128, 80}) {
    DenseCase c = make_case("empty_rows_d" + std::to_string(d), {1, 2, 1, 50, 20, d}, true);
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    RunOutput r = run_attention(p);
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    EXPECT_TRUE(r.problems.empty()) << r.problems;
    const int64_t lq = c.shape.lq, lk = c.shape.lk;
    for (int64_t h = 0; h < c.shape.q_heads; ++h) {
      for (int64_t i = 0; i < lq; ++i) {
        const bool empty = i + (lk - lq) < 0;
        const float lse = r.lse.at_flat(h * lq + i);
        if (empty) {
          EXPECT_TRUE(std::isinf(lse) && lse < 0)
              << "lse at [0, " << h << ", " << i << "] = " << lse << ", expected -inf";
          for (int64_t x = 0; x < d; ++x) {
            const float o = r.out.at_flat((h * lq + i) * d + x);
            ASSERT_EQ(o, 0.f) << "out at [0, " << h << ", " << i << ", " << x << "]";
          }
        } else {
          EXPECT_TRUE(std::isfinite(lse)) << "lse at [0, " << h << ", " << i << "] = " << lse;
        }
      }
    }
    std::string m = compare_to_reference(r.out, p.ref_out, c.tol, "out");
    EXPECT_TRUE(m.empty()) << m;
  }
}

// ---------------------------------------------------------------------------------------------
// 16-bit tensors: q, k, v and out in bf16 or f16, lse in fp32. The kernels widen each element to
// fp32 on load, accumulate in fp32 and round out once, so out is compared with the double
// reference on the 16-bit inputs within half a unit in the last place of the dtype plus fp32
// noise, and lse (fp32) as in the fp32 tests. The conversions (test_support) work in double (the
// nearest value of the format, then its fields), independent of the runtime's bit-level ones.

TEST(Dense16Bit, MatchesReferenceOnRoundedInputs) {
  struct Shape16 {
    const char* name;
    AttnShape shape;
    bool noncausal_only = false;
  };
  // Prefill at the specialized and a generic D, decode (Lq <= 8) with GQA, and Lq > Lk, whose
  // causal rows that see no key must be exactly 0 with lse -inf.
  const Shape16 shapes[] = {{"prefill_d64_gqa", {1, 4, 2, 70, 70, 64}},
                            {"prefill_d128_lq_lt_lk", {2, 2, 1, 40, 100, 128}},
                            {"prefill_d80", {1, 2, 2, 33, 33, 80}},
                            {"decode_d128_gqa", {1, 8, 2, 1, 600, 128}},
                            {"decode_d64_lq3", {1, 2, 2, 3, 40, 64}},
                            {"decode_d80", {1, 2, 1, 1, 50, 80}},
                            {"lq_gt_lk_d64", {1, 2, 2, 12, 5, 64}},
                            // The long-key query blocks (lqb, lmb in the AVX-512 table):
                            // 12 MiB of 16-bit K and V are 24576 keys.
                            {"long_keys_d128", {1, 1, 1, 20, 24600, 128}, true}};
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    // The stated 16-bit tolerance: test_support.h, sixteen_bit_tolerance.
    for (const Shape16& sh : shapes) {
      for (int form = 0; form < 4; ++form) {
        const bool causal = (form & 1) != 0, with_lse = (form & 2) != 0;
        if (causal && sh.noncausal_only) {
          continue;
        }
        const std::string name = std::string(hattn::to_string(t)) + "_" + sh.name +
                                 (causal ? "_causal" : "") + (with_lse ? "_lse" : "");
        SCOPED_TRACE(name);
        TestRng rng(name);
        SCOPED_TRACE(rng.description());
        Dispatch d;
        EXPECT_EQ(check_16bit_attention(t, sh.shape, causal, with_lse, false, rng, &d), "");
        EXPECT_NE(d.kernel.find(std::string("_") + hattn::to_string(t) + "_"), std::string::npos)
            << d.kernel;
        used.insert(d.kernel);
      }
    }
  }
  // Every 16-bit CPU kernel ran on some shape above (prefill with and without lse, decode, the
  // specialized and the generic head dims).
  for (const KernelInfo& k : hattn::list_kernels()) {
    if (k.variant == "dense" && k.family != "cuda" && (k.dtype == "bf16" || k.dtype == "f16")) {
      EXPECT_EQ(used.count(k.name), 1u) << k.name << " never ran";
    }
  }
}

// Decode with an fp32 q and out over a bf16 or f16 K/V cache (the bf16kv, f16kv kernels), as
// inference engines keep them: the float64 reference on the fp32 q and the cache as stored; out
// and lse are fp32 and nothing is rounded to 16 bits, so the fp32 tolerance applies.
TEST(Dense16Bit, Fp32QueryOver16BitCache) {
  const AttnShape shapes[] = {
      {1, 8, 2, 1, 600, 128}, {2, 2, 2, 3, 40, 64}, {1, 2, 1, 1, 50, 80}, {1, 2, 2, 6, 3, 64}};
  std::set<std::string> used;
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (const AttnShape& a : shapes) {
      for (bool causal : {false, true}) {
        const std::string name = std::string(hattn::to_string(t)) + "kv_" + describe_shape(a) +
                                 (causal ? "_causal" : "");
        SCOPED_TRACE(name);
        TestRng rng(name);
        SCOPED_TRACE(rng.description());
        HostTensor q({a.batch, a.q_heads, a.lq, a.head_dim}, Layout::kContiguous);
        q.fill_normal(rng);
        const int64_t nkv = a.batch * a.kv_heads * a.lk * a.head_dim;
        const Sixteen k = draw_16bit(t, nkv, rng), v = draw_16bit(t, nkv, rng);
        HostTensor out({a.batch, a.q_heads, a.lq, a.head_dim}, Layout::kPadded);
        out.poison();
        out.snapshot();
        std::vector<float> lse(static_cast<size_t>(a.batch * a.q_heads * a.lq),
                               std::numeric_limits<float>::quiet_NaN());
        const hattn::TensorView lse_view =
            hattn::TensorView::contiguous(lse.data(), {a.batch, a.q_heads, a.lq});
        const std::vector<int64_t> kvs = {a.batch, a.kv_heads, a.lk, a.head_dim};
        hattn::AttentionOptions o;
        o.causal = causal;
        o.lse = &lse_view;
        Dispatch d;
        const hattn::Status st = hattn::attention(
            q.view(), hattn::TensorView::contiguous(k.bits.data(), t, kvs),
            hattn::TensorView::contiguous(v.bits.data(), t, kvs), out.view(), o, &d);
        ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
        EXPECT_NE(d.kernel.find(std::string("_") + hattn::to_string(t) + "kv_"), std::string::npos)
            << d.kernel;
        used.insert(d.kernel);
        std::vector<double> ref, ref_lse;
        const AttnStrides strides = dense_strides(a);
        reference_attention(q.data(), k.values.data(), v.values.data(), a, strides, causal,
                            1.0 / std::sqrt(static_cast<double>(a.head_dim)), &ref, &ref_lse);
        int left_out = 0;
        EXPECT_EQ(compare_rows(out, ref, nullptr, a.head_dim, &left_out), "");
        EXPECT_EQ(out.changed_since_snapshot(true), "") << "out padding written";
        for (size_t r = 0; r < ref_lse.size(); ++r) {
          if (std::isinf(ref_lse[r])) {
            EXPECT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << "lse[" << r << "] = " << lse[r];
          } else {
            EXPECT_NEAR(lse[r], ref_lse[r], 1e-5 * (1 + std::fabs(ref_lse[r]))) << "lse " << r;
          }
        }
      }
    }
  }
  for (const KernelInfo& k : hattn::list_kernels()) {
    if (k.family != "cuda" && k.variant == "dense" && (k.dtype == "bf16kv" || k.dtype == "f16kv")) {
      EXPECT_EQ(used.count(k.name), 1u) << k.name << " never ran";
    }
  }
  // Prefill (Lq > 8) has no such kernels: refused, saying what the call's dtypes are.
  HostTensor q({1, 2, 12, 64}, Layout::kContiguous), out({1, 2, 12, 64}, Layout::kContiguous);
  TestRng rng("kv_prefill");
  q.fill_normal(rng);
  out.poison();
  out.snapshot();
  const Sixteen k = draw_16bit(hattn::DType::bf16, 2 * 30 * 64, rng);
  const hattn::TensorView kv =
      hattn::TensorView::contiguous(k.bits.data(), hattn::DType::bf16, {1, 2, 30, 64});
  const hattn::Status st = hattn::attention(q.view(), kv, kv, out.view());
  EXPECT_EQ(st.code, StatusCode::unsupported) << st.message;
  EXPECT_NE(st.message.find("the call's are bf16kv (f32 q and out, bf16 k and v)"),
            std::string::npos)
      << st.message;
  EXPECT_EQ(out.changed_since_snapshot(false), "") << "a refused call wrote out";
}

// hattn::to_16bit / from_16bit (what callers stage 16-bit tensors with) against this file's own
// conversions: random values, ties at half an ulp, overflow, subnormals and signed zeros.
TEST(Dense16Bit, ConversionsRoundToNearestEven) {
  TestRng rng("conversions");
  std::vector<float> xs = {0.f,
                           -0.f,
                           1.f,
                           -1.f,
                           65504.f,
                           65520.f,
                           1e6f,
                           -1e6f,
                           6e-8f,
                           1e-10f,
                           3.0e38f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  // Exact ties: 1 + half an ulp of each dtype, and the next value up (ties go to even).
  xs.push_back(1.f + std::ldexp(1.f, -8));
  xs.push_back(1.f + 3 * std::ldexp(1.f, -8));
  xs.push_back(1.f + std::ldexp(1.f, -11));
  xs.push_back(1.f + 3 * std::ldexp(1.f, -11));
  for (int i = 0; i < 20000; ++i) xs.push_back(rng.normal() * std::ldexp(1.f, i % 40 - 20));
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (float x : xs) {
      const uint16_t want = ref_to_16bit(t, x);
      ASSERT_EQ(hattn::to_16bit(t, x), want) << hattn::to_string(t) << " " << x;
      const float back = hattn::from_16bit(t, want), mine = ref_from_16bit(t, want);
      ASSERT_TRUE(back == mine || (std::isnan(back) && std::isnan(mine)))
          << hattn::to_string(t) << " bits " << want;
    }
  }
}

// Mixed dtypes are refused before anything is written; an fp32-only variant refuses 16-bit.
TEST(Dense16Bit, MixedDtypesAreRefused) {
  TestRng rng("mixed");
  Sixteen q = draw_16bit(hattn::DType::bf16, 2 * 4 * 64, rng);
  std::vector<float> k(2 * 6 * 64, 0.5f), v(k.size(), -0.25f);
  std::vector<uint16_t> out(q.bits.size(), 0xffff);
  const hattn::Status st = hattn::attention(
      hattn::TensorView::contiguous(q.bits.data(), hattn::DType::bf16, {1, 2, 4, 64}),
      hattn::TensorView::contiguous(k.data(), {1, 2, 6, 64}),
      hattn::TensorView::contiguous(v.data(), {1, 2, 6, 64}),
      hattn::TensorView::contiguous(out.data(), hattn::DType::bf16, {1, 2, 4, 64}));
  EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
  EXPECT_NE(st.message.find("share one dtype"), std::string::npos) << st.message;
  for (uint16_t x : out) ASSERT_EQ(x, 0xffff) << "a refused call wrote out";
  // An fp32 q over a 16-bit cache: k and v must share the cache's dtype, out q's.
  std::vector<float> q32(q.bits.size(), 0.125f), out32(q.bits.size(), -7.f);
  std::vector<uint16_t> k16(k.size(), 0x3f00);
  const hattn::TensorView kb =
      hattn::TensorView::contiguous(k16.data(), hattn::DType::bf16, {1, 2, 6, 64});
  const hattn::Status st_v =
      hattn::attention(hattn::TensorView::contiguous(q32.data(), {1, 2, 4, 64}), kb,
                       hattn::TensorView::contiguous(v.data(), {1, 2, 6, 64}),
                       hattn::TensorView::contiguous(out32.data(), {1, 2, 4, 64}));
  EXPECT_EQ(st_v.code, StatusCode::invalid_argument) << st_v.message;
  EXPECT_NE(st_v.message.find("but v has f32"), std::string::npos) << st_v.message;
  const hattn::Status st_o = hattn::attention(
      hattn::TensorView::contiguous(q32.data(), {1, 2, 4, 64}), kb, kb,
      hattn::TensorView::contiguous(out.data(), hattn::DType::bf16, {1, 2, 4, 64}));
  EXPECT_EQ(st_o.code, StatusCode::invalid_argument) << st_o.message;
  EXPECT_NE(st_o.message.find("but out has bf16"), std::string::npos) << st_o.message;
  for (float x : out32) ASSERT_EQ(x, -7.f) << "a refused call wrote out";
  for (uint16_t x : out) ASSERT_EQ(x, 0xffff) << "a refused call wrote out";
  // The SparseK operator works on fp32 scores: bf16 rows are refused, saying so.
  std::vector<float> tau(8, -7.f);
  const hattn::Status st2 = hattn::sparsek_mask(
      hattn::TensorView::contiguous(q.bits.data(), hattn::DType::bf16, {8, 64}), nullptr, 2,
      hattn::TensorView::contiguous(out.data(), hattn::DType::bf16, {8, 64}),
      hattn::TensorView::contiguous(tau.data(), {8}));
  EXPECT_EQ(st2.code, StatusCode::unsupported) << st2.message;
  EXPECT_NE(st2.message.find("fp32 kernels only"), std::string::npos) << st2.message;
  for (uint16_t x : out) ASSERT_EQ(x, 0xffff) << "a refused call wrote out";
  for (float x : tau) ASSERT_EQ(x, -7.f) << "a refused call wrote tau";
}

// ---------------------------------------------------------------------------------------------
// Decode: Lq = 1 and small Lq against a long cache, with several key-split counts.

struct DecodeShape {
  std::string name;
  AttnShape shape;
  bool causal;
};

void PrintTo(const DecodeShape& s, std::ostream* os) {
  *os << s.name << ": " << describe_shape(s.shape) << (s.causal ? " causal" : "");
}

class DecodeSplits : public ::testing::TestWithParam<DecodeShape> {};

TEST_P(DecodeSplits, EverySplitCountMatchesReference) {
  const DecodeShape& s = GetParam();
  DenseCase c = make_case(s.name, s.shape, s.causal);
  TestRng rng(c.name);
  SCOPED_TRACE(rng.description());
  DenseProblem p = make_problem(c, rng);
  for (int splits : {0, 1, 2, 3, 7}) {
    DenseCase cs = c;
    cs.decode_splits = splits;
    SCOPED_TRACE("decode_splits=" + std::to_string(splits));
    Dispatch d;
    std::string failure = run_and_check(p, cs, &d);
    EXPECT_TRUE(failure.empty()) << failure;
    const KernelInfo* k = find_kernel(d.kernel);
    ASSERT_NE(k, nullptr) << d.kernel;
    EXPECT_EQ(k->phase, "decode") << "Lq=" << c.shape.lq << " <= decode_threshold() "
                                  << hattn::decode_threshold() << " but " << d.kernel
                                  << " was chosen";
    if (splits > 0) {
      EXPECT_EQ(d.decode_splits, splits)
          << "requested splits not honoured (Lk=" << c.shape.lk << ")";
    } else {
      EXPECT_GE(d.decode_splits, 1);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Dense, DecodeSplits,
    ::testing::Values(DecodeShape{"Lq1_gqa8_2_d64", {1, 8, 2, 1, 4096, 64}, false},
                      DecodeShape{"Lq1_causal_d128", {1, 4, 4, 1, 4096, 128}, true},
                      DecodeShape{"Lq1_mqa_causal_d80", {1, 4, 1, 1, 4096, 80}, true},
                      DecodeShape{"Lq4_gqa8_2_causal_d64", {1, 8, 2, 4, 4096, 64}, true},
                      DecodeShape{"Lq4_d80", {1, 2, 2, 4, 4096, 80}, false},
                      DecodeShape{"Lq2_batch2_d128", {2, 2, 1, 2, 4096, 128}, false},
                      DecodeShape{"Lq3_Lk4097_causal_d64", {1, 2, 2, 3, 4097, 64}, true}),
    [](const ::testing::TestParamInfo<DecodeShape>& param_info) { return param_info.param.name; });

// Split counts that exceed the number of key blocks (or keys) must still give exact results.
TEST(DecodeSplitsEdge, MoreSplitsThanKeyBlocks) {
  struct Edge {
    AttnShape shape;
    bool causal;
    int splits;
  };
  const Edge edges[] = {
      {{1, 2, 2, 1, 3, 64}, false, 7},   {{1, 2, 2, 1, 129, 128}, true, 3},
      {{1, 2, 1, 4, 300, 80}, true, 64}, {{1, 2, 2, 1, 4096, 64}, false, 40},
      {{1, 2, 2, 2, 1, 64}, true, 2},    {{1, 2, 2, 4, 2, 128}, true, 7},
  };
  for (const Edge& e : edges) {
    DenseCase c = make_case("edge", e.shape, e.causal);
    c.decode_splits = e.splits;
    TestRng rng(describe_shape(e.shape) + " splits=" + std::to_string(e.splits));
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    std::string failure = run_and_check(p);
    EXPECT_TRUE(failure.empty()) << failure;
  }
}

// decode_splits is a decode knob; a prefill call must ignore it and stay exact.
TEST(DecodeSplitsEdge, IgnoredByPrefill) {
  DenseCase c = make_case("prefill_with_splits", {1, 2, 2, 100, 300, 64}, true);
  c.decode_splits = 3;
  TestRng rng(c.name);
  SCOPED_TRACE(rng.description());
  DenseProblem p = make_problem(c, rng);
  std::string failure = run_and_check(p);
  EXPECT_TRUE(failure.empty()) << failure;
}

// ---------------------------------------------------------------------------------------------
// Every compiled kernel, forced by name, on every candidate shape it can take.

std::vector<DenseCase> forced_candidates() {
  std::vector<DenseCase> v;
  for (int64_t d : {64, 128, 80}) {
    for (bool causal : {false, true}) {
      const std::string tag =
          std::string(causal ? "causal" : "noncausal") + "_d" + std::to_string(d);
      v.push_back(make_case("prefill_square_" + tag, {1, 2, 2, 300, 300, d}, causal));
      v.push_back(make_case("prefill_gqa_" + tag, {2, 4, 2, 77, 333, d}, causal));
      v.push_back(make_case("prefill_Lq_gt_Lk_" + tag, {1, 2, 2, 200, 50, d}, causal));
      v.push_back(make_case("decode_Lq1_" + tag, {1, 4, 2, 1, 1000, d}, causal));
      v.push_back(with(make_case("decode_Lq4_" + tag, {1, 2, 1, 4, 700, d}, causal),
                       [](DenseCase& c) { c.decode_splits = 3; }));
      v.push_back(
          with(make_case("strided_" + tag, {2, 4, 2, 65, 190, d}, causal), [](DenseCase& c) {
            c.q_layout = Layout::kBLHD;
            c.k_layout = Layout::kPadded;
            c.v_layout = Layout::kHBLD;
            c.out_layout = Layout::kPadded;
            c.lse_layout = Layout::kPadded;
          }));
    }
  }
  return v;
}

class ForcedKernel : public ::testing::TestWithParam<std::string> {};

TEST_P(ForcedKernel, RunsAndMatchesReferenceOnEveryShapeItTakes) {
  const std::string& name = GetParam();
  const KernelInfo* info = find_kernel(name);
  ASSERT_NE(info, nullptr);
  int ran = 0, ran_own_phase = 0;
  for (DenseCase c : forced_candidates()) {
    c.kernel = name;
    c.with_lse = info->lse;  // a kernel without the lse output refuses calls that ask for it
    SCOPED_TRACE(c.describe());
    // Plan first, on throwaway tensors of the right shapes: only `unsupported` may skip.
    HostTensor q({c.shape.batch, c.shape.q_heads, c.shape.lq, c.shape.head_dim}, c.q_layout);
    HostTensor k({c.shape.batch, c.shape.kv_heads, c.shape.lk, c.shape.head_dim}, c.k_layout);
    HostTensor out({c.shape.batch, c.shape.q_heads, c.shape.lq, c.shape.head_dim}, c.out_layout);
    Dispatch planned;
    hattn::Status s = hattn::plan_attention(q.view(), k.view(), k.view(), out.view(),
                                            options_for(c, nullptr), &planned);
    const bool capable =
        info->causal == c.causal && (info->head_dim == 0 || info->head_dim == c.shape.head_dim);
    if (s.code == StatusCode::unsupported) {
      EXPECT_FALSE(s.message.empty());
      // A kernel built for this mask and head dim must not refuse a shape of its own phase.
      const bool own_phase = (info->phase == "decode") == (c.shape.lq <= hattn::decode_threshold());
      EXPECT_FALSE(capable && own_phase)
          << name << " refused a call it was built for: " << s.message;
      continue;
    }
    ASSERT_TRUE(s.ok()) << hattn::to_string(s.code) << ": " << s.message;
    EXPECT_TRUE(capable) << name << " accepted a call with causal=" << c.causal
                         << " D=" << c.shape.head_dim;
    EXPECT_EQ(planned.kernel, name);

    TestRng rng(name + "/" + c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    Dispatch d;
    std::string failure = run_and_check(p, &d);
    EXPECT_TRUE(failure.empty()) << failure;
    EXPECT_EQ(d.kernel, name) << "forced kernel not used";
    ++ran;
    if ((info->phase == "decode") == (c.shape.lq <= hattn::decode_threshold())) ++ran_own_phase;
  }
  EXPECT_GT(ran, 0) << "kernel " << name << " was never exercised";
  EXPECT_GT(ran_own_phase, 0) << "kernel " << name << " never ran on a shape of its own phase";
}

INSTANTIATE_TEST_SUITE_P(Dense, ForcedKernel, ::testing::ValuesIn(kernel_names()),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           return param_info.param;
                         });

// ---------------------------------------------------------------------------------------------
// The kernel list and the dispatcher's report.

// HATTN_TEST_ISA=avx512|avx2|sse41 runs this whole suite on those builds of the kernels (see
// test_support.h); check that the restriction really reached the kernels' dispatch, and that
// every kernel reports the build that the restriction leaves.
TEST(IsaRestriction, EffectiveWhenRequested) {
  ASSERT_TRUE(isa_restriction_error().empty()) << isa_restriction_error();
  if (isa_restriction() == "native") {
    GTEST_SKIP() << "HATTN_TEST_ISA not set: kernels run the best build for this CPU";
  }
  const bool avx512 = isa_restriction() == "avx512";
#if defined(__x86_64__)
  if (avx512 && !__builtin_cpu_supports("avx512bw")) {
    GTEST_SKIP() << "HATTN_TEST_ISA=avx512 on a CPU without AVX-512: the suite ran the AVX2 builds";
  }
#endif
  if (avx512) {
    // Only the bf16 kernels have a build above AVX-512 (AVX512-BF16): probe one. Its results
    // are checked by Dense16Bit in this same run.
    Dispatch d;
    std::vector<uint16_t> q(2 * 40 * 64, 0x3f80), kv(2 * 50 * 64, 0x3f00), out(q.size());
    const hattn::Status st = hattn::attention(
        hattn::TensorView::contiguous(q.data(), hattn::DType::bf16, {1, 2, 40, 64}),
        hattn::TensorView::contiguous(kv.data(), hattn::DType::bf16, {1, 2, 50, 64}),
        hattn::TensorView::contiguous(kv.data(), hattn::DType::bf16, {1, 2, 50, 64}),
        hattn::TensorView::contiguous(out.data(), hattn::DType::bf16, {1, 2, 40, 64}), {}, &d);
    ASSERT_TRUE(st.ok()) << st.message;
  } else {
    DenseCase c = make_case("isa_probe", {1, 2, 2, 40, 50, 64}, true);
    TestRng rng(c.name);
    DenseProblem p = make_problem(c, rng);
    std::string failure = run_and_check(p);
    EXPECT_TRUE(failure.empty()) << failure;
  }
  EXPECT_GT(isa_refusals(), 0)
      << "the kernels never asked about the refused features: restriction not effective";
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family == "cuda") continue;
    const std::string build = hattn::selected_build(k);
    EXPECT_FALSE(build.empty()) << k.name << ": no usable build";
    if (avx512) {
      EXPECT_EQ(build.find("avx512_zen4"), std::string::npos) << k.name << " runs " << build;
      EXPECT_NE(build.find("avx512_skylake"), std::string::npos) << k.name << " runs " << build;
      continue;
    }
    EXPECT_EQ(build.find("avx512"), std::string::npos) << k.name << " runs " << build;
    if (isa_restriction() == "sse41") {
      EXPECT_EQ(build.find("avx"), std::string::npos) << k.name << " runs " << build;
    } else {
      EXPECT_NE(build.find("avx2"), std::string::npos) << k.name << " runs " << build;
    }
  }
}

// Every kernel runs the best build this CPU supports: what Halide's wrapper picks is what
// selected_build() reports, and an x86 kernel always has an SSE4.1 fallback.
TEST(IsaRestriction, SelectedBuildIsReported) {
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family != "x86") continue;
    EXPECT_NE(k.target.find("sse41"), std::string::npos) << k.name << ": " << k.target;
    EXPECT_FALSE(hattn::selected_build(k).empty()) << k.name;
    std::cout << "[  BUILD   ] " << k.name << " runs " << hattn::selected_build(k) << std::endl;
  }
}

TEST(KernelList, NamesAreUniqueAndDescribed) {
  const auto& kernels = hattn::list_kernels();
  ASSERT_FALSE(kernels.empty());
  std::set<std::string> names;
  bool generic[2] = {false, false};  // a generic-D kernel per mask
  for (const KernelInfo& k : kernels) {
    EXPECT_FALSE(k.name.empty());
    EXPECT_TRUE(names.insert(k.name).second) << "duplicate kernel name " << k.name;
    EXPECT_TRUE(k.variant == "dense" || k.variant == "dense_paged" || k.variant == "topk" ||
                k.variant == "topk_paged" || k.variant == "loki_paged" || k.variant == "topk_ffn" ||
                k.variant == "loki" || k.variant == "sparsek" || k.variant == "sparsek_mask" ||
                k.variant == "el" || k.variant == "linear")
        << k.name;
    EXPECT_TRUE(k.phase == "prefill" || k.phase == "decode") << k.name << ": " << k.phase;
    // 16-bit kernels: every attention variant and the FFN on CPUs, not the SparseK operator (its
    // scores are fp32); fp32 q and out over a 16-bit cache (bf16kv, f16kv): dense decode, and el
    // and linear (fp32 activations over 16-bit weights and memory).
    const bool sixteen_bit_variant = k.variant == "dense" || k.variant == "dense_paged" ||
                                     k.variant == "topk_ffn" || k.variant == "sparsek" ||
                                     k.variant == "topk" || k.variant == "loki" ||
                                     k.variant == "topk_paged" || k.variant == "loki_paged";
    const bool kv_dtype = k.dtype == "bf16kv" || k.dtype == "f16kv";
    // CUDA: dense alone, in every dtype.
    const bool cuda = k.family == "cuda";
    EXPECT_TRUE(!cuda || k.variant == "dense") << k.name;
    EXPECT_TRUE(k.dtype == "f32" ||
                ((k.dtype == "bf16" || k.dtype == "f16") && sixteen_bit_variant) ||
                (kv_dtype && ((k.variant == "dense" && k.phase == "decode") ||
                              (!cuda && (k.variant == "el" || k.variant == "linear")))))
        << k.name;
    EXPECT_NE(k.name.find("_" + k.dtype + "_"), std::string::npos) << k.name;
    EXPECT_GE(k.head_dim, 0) << k.name;
    EXPECT_FALSE(k.target.empty()) << k.name;
    if (k.variant == "dense" && k.head_dim == 0) generic[k.causal ? 1 : 0] = true;
  }
  EXPECT_TRUE(generic[0]) << "no generic-D non-causal kernel: D=80 could not run";
  EXPECT_TRUE(generic[1]) << "no generic-D causal kernel: D=80 could not run";
}

TEST(DispatchReport, NamesACompiledKernelForTheShape) {
  struct Probe {
    AttnShape shape;
    bool causal;
  };
  const Probe probes[] = {
      {{1, 2, 2, 100, 200, 64}, false}, {{1, 2, 2, 100, 200, 64}, true},
      {{1, 2, 2, 100, 200, 128}, true}, {{1, 2, 2, 100, 200, 80}, false},
      {{1, 4, 2, 1, 500, 64}, false},   {{1, 4, 2, 1, 500, 128}, true},
      {{1, 4, 2, 4, 500, 80}, true},    {{1, 2, 2, 5, 500, 64}, false},
  };
  for (const Probe& pr : probes) {
    DenseCase c = make_case("probe", pr.shape, pr.causal);
    c.with_lse = false;  // planned below without lse: the same options as the run
    SCOPED_TRACE(c.describe());
    TestRng rng(describe_shape(pr.shape) + (pr.causal ? " causal" : ""));
    DenseProblem p = make_problem(c, rng);

    // plan_attention reports the same choice as attention and writes nothing.
    HostTensor out({pr.shape.batch, pr.shape.q_heads, pr.shape.lq, pr.shape.head_dim},
                   Layout::kContiguous);
    out.snapshot();
    Dispatch planned;
    hattn::Status s = hattn::plan_attention(p.q.view(), p.k.view(), p.v.view(), out.view(),
                                            options_for(c, nullptr), &planned);
    ASSERT_TRUE(s.ok()) << s.message;
    std::string changed = out.changed_since_snapshot(false);
    EXPECT_TRUE(changed.empty()) << "plan_attention wrote to out: " << changed;

    Dispatch d;
    std::string failure = run_and_check(p, &d);
    EXPECT_TRUE(failure.empty()) << failure;
    EXPECT_EQ(planned.kernel, d.kernel);
    EXPECT_EQ(planned.decode_splits, d.decode_splits);
    EXPECT_FALSE(d.reason.empty());
    const KernelInfo* k = find_kernel(d.kernel);
    ASSERT_NE(k, nullptr) << "Dispatch::kernel '" << d.kernel << "' is not in list_kernels()";
    EXPECT_EQ(k->causal, pr.causal) << d.kernel;
    EXPECT_TRUE(k->head_dim == 0 || k->head_dim == pr.shape.head_dim) << d.kernel;
    const std::string phase = pr.shape.lq <= hattn::decode_threshold() ? "decode" : "prefill";
    EXPECT_EQ(k->phase, phase) << d.kernel << " for Lq=" << pr.shape.lq;
    // A kernel specialized for this D (same phase and mask) is preferred over the generic one.
    bool specialized_exists = false;
    for (const KernelInfo& other : hattn::list_kernels()) {
      if (other.family != k->family || other.variant != "dense") continue;
      specialized_exists |=
          other.phase == phase && other.causal == pr.causal && other.head_dim == pr.shape.head_dim;
    }
    if (specialized_exists) {
      EXPECT_EQ(k->head_dim, pr.shape.head_dim) << d.kernel << " chosen over a D-specialized one";
    }
    if (pr.shape.head_dim == 80) {
      EXPECT_EQ(k->head_dim, 0) << d.kernel;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Invariants.

// The same input run twice gives bitwise identical out and lse.
TEST(DenseInvariants, Deterministic) {
  const DenseCase cases[] = {
      make_case("prefill_causal_d64", {1, 4, 2, 500, 700, 64}, true),
      make_case("prefill_d80", {2, 2, 2, 130, 260, 80}, false),
      make_case("decode_d128", {1, 8, 2, 1, 4096, 128}, false),
      make_case("decode_lq4_causal_d64", {1, 4, 1, 4, 3000, 64}, true),
  };
  for (const DenseCase& c : cases) {
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    RunOutput a = run_attention(p);
    RunOutput b = run_attention(p);
    ASSERT_TRUE(a.status.ok()) << a.status.message;
    ASSERT_TRUE(b.status.ok()) << b.status.message;
    EXPECT_EQ(a.dispatch.kernel, b.dispatch.kernel);
    std::string m = compare_bitwise(a.out, b.out, "out (run 1 vs run 2)");
    EXPECT_TRUE(m.empty()) << m;
    m = compare_bitwise(a.lse, b.lse, "lse (run 1 vs run 2)");
    EXPECT_TRUE(m.empty()) << m;
    m = compare_to_reference(a.out, p.ref_out, c.tol, "out");
    EXPECT_TRUE(m.empty()) << m;
  }
}

// Asking for lse does not change out.
TEST(DenseInvariants, LseDoesNotChangeOut) {
  for (const DenseCase& c : {make_case("prefill", {1, 2, 2, 200, 300, 64}, true),
                             make_case("decode", {1, 4, 2, 1, 2000, 80}, false)}) {
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    DenseCase without = c;
    without.with_lse = false;
    RunOutput a = run_attention(p, c);
    RunOutput b = run_attention(p, without);
    ASSERT_TRUE(a.status.ok() && b.status.ok()) << a.status.message << b.status.message;
    std::string m = compare_bitwise(a.out, b.out, "out with lse vs without");
    EXPECT_TRUE(m.empty()) << m;
  }
}

// GQA equals MHA on K/V repeated explicitly per query head (both computed by hattn).
TEST(DenseInvariants, GqaEqualsRepeatedKv) {
  const DenseCase cases[] = {
      make_case("gqa8_2_d64", {1, 8, 2, 100, 300, 64}, false),
      make_case("gqa8_2_decode_causal_d128", {1, 8, 2, 1, 2000, 128}, true),
      make_case("mqa6_1_causal_d80", {2, 6, 1, 50, 120, 80}, true),
      make_case("mqa4_1_decode_lq3_d64", {1, 4, 1, 3, 700, 64}, false),
  };
  for (const DenseCase& c : cases) {
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem gqa = make_problem(c, rng);
    const AttnShape& s = c.shape;
    const int64_t group = s.q_heads / s.kv_heads;
    // Same q; k and v repeated so that head h holds kv head h / group.
    DenseProblem mha;
    mha.c = c;
    mha.c.shape.kv_heads = s.q_heads;
    mha.q = gqa.q;
    mha.k = HostTensor({s.batch, s.q_heads, s.lk, s.head_dim}, Layout::kContiguous);
    mha.v = HostTensor({s.batch, s.q_heads, s.lk, s.head_dim}, Layout::kContiguous);
    const int64_t per_head = s.lk * s.head_dim;
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t h = 0; h < s.q_heads; ++h) {
        for (int64_t x = 0; x < per_head; ++x) {
          const int64_t src = (b * s.kv_heads + h / group) * per_head + x;
          const int64_t dst = (b * s.q_heads + h) * per_head + x;
          mha.k.at_flat(dst) = gqa.k.at_flat(src);
          mha.v.at_flat(dst) = gqa.v.at_flat(src);
        }
      }
    }
    mha.k.snapshot();
    mha.v.snapshot();
    mha.scale = gqa.scale;
    RunOutput a = run_attention(gqa);
    RunOutput b = run_attention(mha);
    ASSERT_TRUE(a.status.ok()) << a.status.message;
    ASSERT_TRUE(b.status.ok()) << b.status.message;
    EXPECT_TRUE(a.problems.empty()) << a.problems;
    EXPECT_TRUE(b.problems.empty()) << b.problems;
    // Each (head, row) is the same computation in both calls: allow only rounding-level noise.
    const std::vector<float> dense_b = b.out.to_dense();
    const std::vector<double> mha_out(dense_b.begin(), dense_b.end());
    Tolerance tight{1e-6, 1e-5};
    std::string m = compare_to_reference(a.out, mha_out, tight, "GQA out vs MHA on repeated K/V");
    EXPECT_TRUE(m.empty()) << m;
    m = compare_to_reference(a.out, gqa.ref_out, c.tol, "GQA out vs reference");
    EXPECT_TRUE(m.empty()) << m;
  }
}

// Large scores (scale 30/sqrt(D), scores of magnitude ~100) must not overflow: no NaN/Inf and
// the result matches the reference. fp32 scores of magnitude S carry an absolute error of about
// S * 2^-24 * sqrt(D), which the softmax turns into a relative error of the weights, hence the
// looser tolerance.
TEST(DenseInvariants, LargeScoresDoNotOverflow) {
  const DenseCase base[] = {
      make_case("prefill_causal_d64", {1, 2, 2, 300, 300, 64}, true),
      make_case("prefill_d80", {1, 2, 2, 100, 500, 80}, false),
      make_case("decode_d128", {1, 4, 2, 1, 2048, 128}, false),
      make_case("decode_lq4_causal_d64", {1, 4, 2, 4, 1500, 64}, true),
  };
  for (DenseCase c : base) {
    c.has_scale = true;
    c.scale = 30.f / std::sqrt(static_cast<float>(c.shape.head_dim));
    c.tol = Tolerance{2e-4, 2e-3};
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    std::string failure = run_and_check(p);
    EXPECT_TRUE(failure.empty()) << failure;
  }
}

// Huge-magnitude inputs: scores around +-1e4 (exp would overflow without the max subtraction).
// The softmax is then essentially one-hot, so out is close to one row of v.
TEST(DenseInvariants, HugeScoresStayFinite) {
  for (DenseCase c : {make_case("prefill_d64", {1, 2, 2, 64, 256, 64}, false),
                      make_case("decode_causal_d80", {1, 2, 2, 1, 1000, 80}, true)}) {
    c.has_scale = true;
    c.scale = 20.f;
    c.tol = Tolerance{1e-3, 1e-2};
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    RunOutput r = run_attention(p);
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    for (int64_t f = 0; f < r.out.numel(); ++f) {
      ASSERT_TRUE(std::isfinite(r.out.at_flat(f)))
          << "out " << index_string(r.out.index_of_flat(f)) << " = " << r.out.at_flat(f);
    }
    for (int64_t f = 0; f < r.lse.numel(); ++f) {
      ASSERT_TRUE(std::isfinite(r.lse.at_flat(f)))
          << "lse " << index_string(r.lse.index_of_flat(f)) << " = " << r.lse.at_flat(f);
    }
    std::string m = compare_to_reference(r.out, p.ref_out, c.tol, "out");
    EXPECT_TRUE(m.empty()) << m;
  }
}

// Rows are independent: a NaN in one query row poisons that row only (and the header promises
// non-finite outputs for non-finite inputs, never a crash).
TEST(DenseInvariants, NanInOneQueryRowStaysInThatRow) {
  for (DenseCase c : {make_case("prefill_d64", {1, 2, 2, 40, 300, 64}, false),
                      make_case("prefill_causal_d80", {1, 2, 2, 40, 300, 80}, true),
                      make_case("decode_d128", {1, 2, 2, 1, 600, 128}, false)}) {
    TestRng rng(c.name);
    SCOPED_TRACE(rng.description());
    DenseProblem p = make_problem(c, rng);
    const AttnShape& s = c.shape;
    const int64_t bad_h = 1, bad_i = s.lq / 2, bad_d = 5;
    const int64_t bad_row = (0 * s.q_heads + bad_h) * s.lq + bad_i;
    p.q.at_flat(bad_row * s.head_dim + bad_d) = std::numeric_limits<float>::quiet_NaN();
    p.q.snapshot();
    recompute_reference(&p);
    RunOutput r = run_attention(p);
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    bool row_non_finite = false;
    for (int64_t x = 0; x < s.head_dim; ++x) {
      row_non_finite |= !std::isfinite(r.out.at_flat(bad_row * s.head_dim + x));
    }
    EXPECT_TRUE(row_non_finite) << "a NaN in q row [0, " << bad_h << ", " << bad_i
                                << "] gave a finite output row";
    // Every other row matches the reference (the reference row itself is NaN: skip it).
    int64_t bad = 0;
    for (int64_t f = 0; f < r.out.numel(); ++f) {
      if (f / s.head_dim == bad_row) continue;
      const double g = r.out.at_flat(f), ref = p.ref_out[static_cast<size_t>(f)];
      if (!(std::fabs(g - ref) <= c.tol.atol + c.tol.rtol * std::fabs(ref))) {
        if (bad++ == 0) {
          ADD_FAILURE() << "row not containing the NaN differs at "
                        << index_string(r.out.index_of_flat(f)) << ": got " << g << ", ref " << ref;
        }
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

}  // namespace
}  // namespace hattn_test

namespace hattn_test {
namespace {

// Without a requested lse the dispatcher takes a kernel that computes none; with one, a kernel
// that does; forcing a kernel without lse on a call that asks for it is refused with the reason.
TEST(DispatchLse, PicksKernelByLseRequest) {
  DenseCase c = make_case("lse_choice", {1, 2, 2, 64, 64, 64}, false);
  TestRng rng("lse_choice");
  SCOPED_TRACE(rng.description());
  c.with_lse = false;
  DenseProblem p = make_problem(c, rng);
  Dispatch d;
  std::string failure = run_and_check(p, &d);
  EXPECT_TRUE(failure.empty()) << failure;
  const std::string f = "_f32_" + cpu_family();
  EXPECT_EQ(d.kernel, "dense_prefill_noncausal_d64" + f);

  c.with_lse = true;
  p = make_problem(c, rng);
  failure = run_and_check(p, &d);
  EXPECT_TRUE(failure.empty()) << failure;
  EXPECT_EQ(d.kernel, "dense_prefill_noncausal_lse_d64" + f);

  c.kernel = "dense_prefill_noncausal_d64" + f;
  p = make_problem(c, rng);
  failure = run_and_check(p, &d);
  EXPECT_NE(failure.find("computes no log-sum-exp"), std::string::npos) << failure;
}

}  // namespace
}  // namespace hattn_test
