// Hostile and edge inputs, for every variant in tests/variants.cpp (a new variant is covered by
// its entry there): empty tensors along each axis, L = 1, head dims that are no
// specialization, outputs overlapping inputs, misaligned pointers, views beyond 32-bit
// indexing, NaN/+Inf/-Inf inputs, fully masked rows, and knobs at and beyond their limits.
// Each call must give the reference's answer or a refusal with a clear message; none may
// crash, hang or write outside its output (sanitizer builds run these too).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"
#include "variants.h"

namespace hattn_test {
namespace {

using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;

class Hostile : public ::testing::TestWithParam<std::string> {
 protected:
  const Variant& var() const { return variant_named(GetParam()); }

  // Calls with `views` and expects an invalid_argument refusal containing each phrase, with no
  // tensor of `t` changed.
  void ExpectRefused(const std::vector<TensorView>& views, const std::vector<HostTensor>& t,
                     const Knobs& k, const std::vector<std::string>& phrases) {
    hattn::Dispatch d;
    Status s = var().call(views, k, &d);
    EXPECT_EQ(s.code, StatusCode::invalid_argument)
        << hattn::to_string(s.code) << ": " << s.message;
    for (const std::string& p : phrases) {
      EXPECT_NE(s.message.find(p), std::string::npos)
          << "message lacks \"" << p << "\": " << s.message;
    }
    for (size_t i = 0; i < t.size(); ++i) {
      EXPECT_EQ(t[i].changed_since_snapshot(false), "")
          << var().roles[i] << " changed by a refused call";
    }
  }
};

const AttnShape kSmall = {2, 4, 2, 6, 11, 40};

TEST_P(Hostile, EmptyAlongEachAxis) {
  TestRng rng("empty");
  std::vector<HostTensor> t = make_tensors(var(), kSmall, rng);
  for (size_t i = 0; i < t.size(); ++i) {
    std::vector<TensorView> base = views_of(var(), t);
    for (int axis = 0; axis < base[i].rank; ++axis) {
      SCOPED_TRACE(var().roles[i] + " axis " + std::to_string(axis));
      std::vector<TensorView> views = base;
      views[i].shape[axis] = 0;
      ExpectRefused(views, t, var().defaults, {var().roles[i], "zero-size"});
    }
  }
}

TEST_P(Hostile, LengthOne) {
  // L = 1 on either side (and both), causal and not.
  for (AttnShape s : {AttnShape{1, 2, 1, 1, 1, 64}, AttnShape{1, 2, 2, 1, 37, 64},
                      AttnShape{2, 2, 1, 5, 1, 64}}) {
    for (bool causal : {false, true}) {
      if (causal && !var().has_causal) continue;
      SCOPED_TRACE(describe_shape(s) + (causal ? " causal" : ""));
      TestRng rng("L1");
      std::vector<HostTensor> t = make_tensors(var(), s, rng);
      Knobs k = var().defaults;
      k.causal = causal;
      EXPECT_EQ(run_and_compare(var(), &t, s, k), "") << rng.description();
    }
  }
}

TEST_P(Hostile, HeadDimNotASpecialization) {
  for (int64_t d : {1, 3, 17, 40, 130}) {
    const AttnShape s = {1, 2, 1, 9, 23, d};
    SCOPED_TRACE("D=" + std::to_string(d));
    TestRng rng("D" + std::to_string(d));
    std::vector<HostTensor> t = make_tensors(var(), s, rng, Layout::kPadded);
    hattn::Dispatch chosen;
    EXPECT_EQ(run_and_compare(var(), &t, s, var().defaults, &chosen), "") << rng.description();
  }
}

TEST_P(Hostile, OutputOverlapsAnInput) {
  TestRng rng("overlap");
  std::vector<HostTensor> t = make_tensors(var(), kSmall, rng);
  const size_t out = static_cast<size_t>(var().result);
  for (size_t i = 0; i < t.size(); ++i) {
    if (var().written[i]) continue;
    const int64_t in_n = t[i].numel(), out_n = t[out].numel();
    for (int64_t shift : {int64_t{0}, in_n / 2, in_n - 1}) {
      SCOPED_TRACE("out over " + var().roles[i] + " + " + std::to_string(shift));
      // The input and then room for the output, in one buffer.
      std::vector<float> buf(static_cast<size_t>(in_n + out_n), 0.f);
      std::vector<float> in = t[i].to_dense();
      std::copy(in.begin(), in.end(), buf.begin());
      const std::vector<float> before = buf;
      std::vector<TensorView> views = views_of(var(), t);
      views[i].data = buf.data();
      for (int d = views[i].rank - 1, s = 1; d >= 0; --d) {
        views[i].strides[d] = s;
        s *= static_cast<int>(views[i].shape[d]);
      }
      views[out].data = buf.data() + shift;
      for (int d = views[out].rank - 1, s = 1; d >= 0; --d) {
        views[out].strides[d] = s;
        s *= static_cast<int>(views[out].shape[d]);
      }
      ExpectRefused(views, t, var().defaults, {"overlaps " + var().roles[i]});
      EXPECT_TRUE(buf == before) << "a refused call wrote the shared buffer";
    }
  }
  // Strides that make the output overlap itself.
  std::vector<TensorView> views = views_of(var(), t);
  views[out].strides[views[out].rank - 2] = 0;
  ExpectRefused(views, t, var().defaults, {var().roles[out], "alias"});
}

TEST_P(Hostile, MisalignedPointers) {
  TestRng rng("misaligned");
  std::vector<HostTensor> t = make_tensors(var(), kSmall, rng);
  for (size_t i = 0; i < t.size(); ++i) {
    for (int bytes : {1, 2, 3}) {
      SCOPED_TRACE(var().roles[i] + " + " + std::to_string(bytes) + " bytes");
      std::vector<TensorView> views = views_of(var(), t);
      views[i].data = static_cast<char*>(views[i].data) + bytes;
      ExpectRefused(views, t, var().defaults, {var().roles[i], "misaligned"});
    }
  }
  // Aligned to the element but to no vector width: every tensor one float past a 64-byte
  // boundary (kPadded views start 13 floats into their buffers).
  std::vector<HostTensor> padded = make_tensors(var(), kSmall, rng, Layout::kPadded);
  for (size_t i = 0; i < padded.size(); ++i) {
    if (var().roles[i] == "basis") continue;  // kept contiguous by make_tensors
    EXPECT_NE(reinterpret_cast<uintptr_t>(padded[i].data()) % 16, 0u)
        << "the view is vector-aligned";
  }
  EXPECT_EQ(run_and_compare(var(), &padded, kSmall, var().defaults), "") << rng.description();
}

TEST_P(Hostile, BeyondThirtyTwoBitIndexing) {
  TestRng rng("int32");
  std::vector<HostTensor> t = make_tensors(var(), kSmall, rng);
  for (size_t i = 0; i < t.size(); ++i) {
    std::vector<TensorView> base = views_of(var(), t);
    // More than 2^31-1 elements: the outermost dimension grown over a zero stride (no memory
    // behind it: the call must refuse before touching any).
    {
      SCOPED_TRACE(var().roles[i] + ": 2^31 elements");
      std::vector<TensorView> views = base;
      int64_t inner = 1;
      for (int d = 1; d < views[i].rank; ++d) inner *= views[i].shape[d];
      views[i].shape[0] = (int64_t{1} << 31) / inner + 1;
      views[i].strides[0] = 0;
      // A vector (el's biases) gets there by its one dimension, refused as such.
      if (views[i].rank == 1) {
        ExpectRefused(views, t, var().defaults, {var().roles[i], "exceeds 2^31-1"});
      } else {
        ExpectRefused(views, t, var().defaults, {var().roles[i], "2^31-1 elements", "32 bits"});
      }
    }
    // Few elements, but an offset beyond 2^31-1.
    {
      SCOPED_TRACE(var().roles[i] + ": offset beyond 2^31");
      std::vector<TensorView> views = base;
      views[i].strides[0] = std::numeric_limits<int32_t>::max();
      ExpectRefused(views, t, var().defaults, {var().roles[i], "offset beyond 2^31-1", "32 bits"});
    }
  }
}

// Non-finite inputs: the call succeeds; output rows that read no non-finite value are exactly
// what they are without it (the reference's); rows that do read one are unspecified (NaN, an
// infinity or a number: README "Guarantees"), and are not checked.
TEST_P(Hostile, NonFiniteInputs) {
  const AttnShape s = {2, 4, 2, 7, 7, 16};
  const float values[] = {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  const bool causal = var().has_causal;
  for (size_t role = 0; role < var().roles.size(); ++role) {
    if (var().written[role]) continue;
    for (float bad : values) {
      TestRng rng("nonfinite");
      std::vector<HostTensor> t = make_tensors(var(), s, rng);
      HostTensor& in = t[role];
      // The last element of the first batch's / head's block: for k and v the last key, seen
      // only by the last causal row.
      const int64_t flat = in.numel() / in.shape()[0] - 1;
      in.at_flat(flat) = bad;
      const std::vector<int64_t> idx = in.index_of_flat(flat);
      SCOPED_TRACE(var().roles[role] + index_string(idx) + " = " + std::to_string(bad));
      Knobs k = var().defaults;
      k.causal = causal;
      Status st = var().call(views_of(var(), t), k, nullptr);
      if (var().roles[role] == "basis") {
        // Loki checks its basis by default: a non-finite one is refused, not used.
        EXPECT_EQ(st.code, StatusCode::invalid_argument) << st.message;
        EXPECT_NE(st.message.find("non-finite entries"), std::string::npos) << st.message;
        continue;
      }
      ASSERT_TRUE(st.ok()) << hattn::to_string(st.code) << ": " << st.message;
      std::vector<double> ref, gap;
      var().reference(t, s, k, &ref, &gap);
      const HostTensor& out = t[static_cast<size_t>(var().result)];
      const int64_t row_len = out.shape().back(), rows = out.numel() / row_len;
      int64_t checked = 0;
      for (int64_t r = 0; r < rows; ++r) {
        if (var().reads(static_cast<int>(role), idx, r, s, causal)) continue;
        if (!gap.empty() && gap[static_cast<size_t>(r)] < kMinGap) continue;
        ++checked;
        for (int64_t x = 0; x < row_len; ++x) {
          const double want = ref[static_cast<size_t>(r * row_len + x)];
          const double have = out.at_flat(r * row_len + x);
          ASSERT_TRUE(std::isfinite(have) && std::abs(have - want) <= 1e-5 + 1e-4 * std::abs(want))
              << "row " << r << " reads no non-finite input, got " << have << ", want " << want;
        }
      }
      // Weights (Variant::shared) are read by every row; elsewhere at least half the rows (a kv
      // head's basis: the other kv head's rows) read no bad value and are checked.
      if (var().shared.empty() || !var().shared[role]) {
        EXPECT_GE(checked, rows / 2) << "too few unaffected rows checked";
      }
    }
  }
}

TEST_P(Hostile, FullyMaskedRowsAreZero) {
  if (!var().has_causal) GTEST_SKIP() << var().name << " has no mask";
  // Causal with Lq > Lk: the first Lq - Lk rows of every head see no key.
  const AttnShape s = {1, 2, 1, 12, 5, 32};
  TestRng rng("masked");
  std::vector<HostTensor> t = make_tensors(var(), s, rng);
  Knobs k = var().defaults;
  k.causal = true;
  ASSERT_EQ(run_and_compare(var(), &t, s, k), "") << rng.description();
  // el: such a row is its output bias bo, which the comparison with the reference has checked.
  if (!var().masked_rows_zero) return;
  const HostTensor& out = t[static_cast<size_t>(var().result)];
  for (int64_t h = 0; h < s.q_heads; ++h) {
    for (int64_t i = 0; i < s.lq - s.lk; ++i) {
      for (int64_t x = 0; x < s.head_dim; ++x) {
        const float y = out.at_flat((h * s.lq + i) * s.head_dim + x);
        ASSERT_EQ(y, 0.f) << "head " << h << " row " << i << " sees no key";
      }
    }
  }
}

TEST_P(Hostile, KnobsAtAndBeyondTheirLimits) {
  const AttnShape s = {1, 2, 1, 4, 19, 24};
  for (const KnobCase& c : var().knob_cases(s)) {
    SCOPED_TRACE(c.label);
    TestRng rng("knobs");
    std::vector<HostTensor> t = make_tensors(var(), s, rng);
    if (c.accepted) {
      EXPECT_EQ(run_and_compare(var(), &t, s, c.knobs), "") << rng.description();
    } else {
      ExpectRefused(views_of(var(), t), t, c.knobs, {c.phrase});
    }
  }
}

// Every variant this program's kernel set holds has an entry in the tests' variant table (so the
// tests above, test_determinism, test_threads and the fuzz target cover it): a variant added to
// cmake/HattnKernels.cmake without one fails here. A companion kernel is covered through the
// entry of the API that calls it (its declaration's other forms: el's linear layer).
TEST(VariantTable, CoversEveryCompiledVariant) {
  const std::vector<std::pair<std::string, std::string>> kCompanions = {{"linear", "el"}};
  std::vector<std::string> missing;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    std::string entry = k.variant;
    for (const auto& [companion, api] : kCompanions) {
      if (entry == companion) entry = api;
    }
    bool found = false;
    for (const Variant& v : variant_table()) found |= v.name == entry;
    if (!found) missing.push_back(k.name + " (variant " + k.variant + ")");
  }
  EXPECT_TRUE(missing.empty()) << "kernels whose variant has no entry in tests/variants.cpp: "
                               << ::testing::PrintToString(missing);
  EXPECT_FALSE(hattn::list_kernels().empty());
}

INSTANTIATE_TEST_SUITE_P(Variants, Hostile, ::testing::ValuesIn([] {
                           std::vector<std::string> names;
                           for (const Variant& v : all_variants()) names.push_back(v.name);
                           return names;
                         }()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace hattn_test
