// Determinism: the same inputs give bit-identical outputs run after run on one build, for every
// variant in tests/variants.cpp, and across worker-thread counts (hattn::set_num_threads) when
// the decode split count is fixed. With decode_splits = 0 (automatic) the split count follows
// the thread count (checked below), and a different split count merges partial softmax states
// in a different grouping, so results may differ in the last bits between thread counts (never
// between runs with the same count).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"
#include "variants.h"

namespace hattn_test {
namespace {

struct Case {
  std::string label;
  AttnShape shape;
};

// A prefill and a decode shape (several key blocks, so decode splits the keys).
const Case kCases[] = {{"prefill", {1, 4, 2, 40, 300, 64}}, {"decode", {2, 4, 2, 1, 3000, 64}}};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The knobs of a determinism run: the variant's defaults, causal, and a fixed split count.
Knobs fixed_knobs(const Variant& v) {
  Knobs k = v.defaults;
  k.causal = v.has_causal;
  k.decode_splits = 5;
  return k;
}

class Determinism : public ::testing::TestWithParam<std::string> {
 protected:
  void TearDown() override { hattn::set_num_threads(0); }
  const Variant& var() const { return variant_named(GetParam()); }
};

TEST_P(Determinism, RepeatedRunsAreBitIdentical) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.label);
    TestRng rng(c.label);
    std::vector<HostTensor> t = make_tensors(var(), c.shape, rng);
    for (int auto_splits = 0; auto_splits < 2; ++auto_splits) {
      Knobs k = fixed_knobs(var());
      if (auto_splits) k.decode_splits = 0;
      std::string error;
      const std::vector<float> first = run_result(var(), &t, k, &error);
      ASSERT_EQ(error, "");
      for (int run = 1; run < 4; ++run) {
        const std::vector<float> again = run_result(var(), &t, k, &error);
        ASSERT_EQ(error, "");
        EXPECT_TRUE(bitwise_equal(first, again))
            << "run " << run << " differs from run 0 (" << rng.description() << ")";
      }
    }
  }
}

TEST_P(Determinism, BitIdenticalAcrossThreadCounts) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.label);
    TestRng rng(c.label);
    std::vector<HostTensor> t = make_tensors(var(), c.shape, rng);
    const Knobs k = fixed_knobs(var());
    hattn::set_num_threads(1);
    std::string error;
    const std::vector<float> one = run_result(var(), &t, k, &error);
    ASSERT_EQ(error, "");
    // The single-threaded result is also the reference's (so the comparison is not vacuous).
    EXPECT_EQ(run_and_compare(var(), &t, c.shape, k), "") << rng.description();
    for (int threads : {2, 3, 8, 0}) {
      hattn::set_num_threads(threads);
      const std::vector<float> many = run_result(var(), &t, k, &error);
      ASSERT_EQ(error, "");
      EXPECT_TRUE(bitwise_equal(one, many)) << threads << " threads differ from 1 thread";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Determinism, ::testing::ValuesIn([] {
                           std::vector<std::string> names;
                           for (const Variant& v : all_variants()) names.push_back(v.name);
                           return names;
                         }()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

// set_num_threads reaches the dispatcher: automatic decode splits grow with the worker count.
// (Only planned: k and v are zero-stride views of one row, so no memory stands behind them.)
TEST(ThreadCount, AutomaticDecodeSplitsFollowIt) {
  std::vector<float> q(4 * 64, 0.5f), row(64, 0.25f), out(4 * 64);
  const hattn::TensorView qv = hattn::TensorView::contiguous(q.data(), {1, 4, 1, 64});
  const hattn::TensorView kv =
      hattn::TensorView::strided(row.data(), {1, 2, 65536, 64}, {0, 0, 0, 1});
  const hattn::TensorView ov = hattn::TensorView::contiguous(out.data(), {1, 4, 1, 64});
  int splits[2] = {0, 0};
  const int threads[2] = {1, 16};
  for (int i = 0; i < 2; ++i) {
    hattn::set_num_threads(threads[i]);
    hattn::Dispatch d;
    hattn::Status s = hattn::plan_attention(qv, kv, kv, ov, {}, &d);
    ASSERT_TRUE(s.ok()) << s.message;
    splits[i] = d.decode_splits;
  }
  hattn::set_num_threads(0);
  EXPECT_LT(splits[0], splits[1]) << "decode splits with 1 thread: " << splits[0]
                                  << ", with 16: " << splits[1];
}

}  // namespace
}  // namespace hattn_test
