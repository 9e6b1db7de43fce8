// Argument validation of the public API: every refusal returns a non-ok Status with the expected
// code and a message naming what is wrong, from attention() and plan_attention() alike, and
// writes nothing. None of these calls may abort: the test process surviving is part of the check.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"

namespace hattn_test {
namespace {

using hattn::AttentionOptions;
using hattn::Dispatch;
using hattn::DType;
using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool contains_ci(const std::string& text, const std::string& phrase) {
  return lower(text).find(lower(phrase)) != std::string::npos;
}

// `word` occurs in `text` not surrounded by letters, digits or '_' (case-sensitive), so that "q"
// or "D" must really be named rather than appear inside some other word.
bool mentions_word(const std::string& text, const std::string& word) {
  auto is_word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; };
  for (size_t pos = text.find(word); pos != std::string::npos; pos = text.find(word, pos + 1)) {
    const bool left_ok = pos == 0 || !is_word(text[pos - 1]);
    const size_t end = pos + word.size();
    const bool right_ok = end >= text.size() || !is_word(text[end]);
    if (left_ok && right_ok) return true;
  }
  return false;
}

struct Expect {
  std::vector<StatusCode> codes;              // any of these
  std::vector<std::string> phrases;           // each must occur (case-insensitive)
  std::vector<std::string> words;             // each must occur as a word (case-sensitive)
  std::vector<std::vector<std::string>> any;  // from each group, one phrase (case-insensitive)
};

std::string codes_string(const std::vector<StatusCode>& codes) {
  std::string s;
  for (StatusCode c : codes) s += (s.empty() ? "" : " or ") + std::string(hattn::to_string(c));
  return s;
}

class ApiErrors : public ::testing::Test {
 protected:
  // B=2, Hq=4, Hkv=2, Lq=5, Lk=6, D=64: a valid GQA prefill call.
  static constexpr int64_t kB = 2, kHq = 4, kHkv = 2, kLq = 5, kLk = 6, kD = 64;

  void SetUp() override {
    rng_ = std::make_unique<TestRng>("inputs");
    q_ = HostTensor({kB, kHq, kLq, kD}, Layout::kContiguous);
    k_ = HostTensor({kB, kHkv, kLk, kD}, Layout::kContiguous);
    v_ = HostTensor({kB, kHkv, kLk, kD}, Layout::kContiguous);
    out_ = HostTensor({kB, kHq, kLq, kD}, Layout::kContiguous);
    lse_ = HostTensor({kB, kHq, kLq}, Layout::kContiguous);
    q_.fill_normal(*rng_);
    k_.fill_normal(*rng_);
    v_.fill_normal(*rng_);
    out_.snapshot();
    lse_.snapshot();
  }

  TensorView q() const { return q_.view(); }
  TensorView k() const { return k_.view(); }
  TensorView v() const { return v_.view(); }
  TensorView out() const { return out_.view(); }

  // Calls attention() and plan_attention() and checks both refuse as expected, with the same
  // code and message, without touching out or lse.
  void ExpectRefused(const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const AttentionOptions& options, const Expect& e) {
    Dispatch chosen;
    Status s = hattn::attention(q, k, v, out, options, &chosen);
    Dispatch planned;
    Status p = hattn::plan_attention(q, k, v, out, options, &planned);
    SCOPED_TRACE("message: \"" + s.message + "\"");
    EXPECT_FALSE(s.ok()) << "attention() accepted the call";
    bool code_ok = false;
    for (StatusCode c : e.codes) code_ok |= s.code == c;
    EXPECT_TRUE(code_ok) << "code " << hattn::to_string(s.code) << ", expected "
                         << codes_string(e.codes);
    EXPECT_FALSE(s.message.empty()) << "refusal without a message";
    for (const std::string& ph : e.phrases) {
      EXPECT_TRUE(contains_ci(s.message, ph)) << "message lacks \"" << ph << "\"";
    }
    for (const std::string& w : e.words) {
      EXPECT_TRUE(mentions_word(s.message, w)) << "message does not name \"" << w << "\"";
    }
    for (const auto& group : e.any) {
      bool found = false;
      std::string all;
      for (const std::string& ph : group) {
        found |= contains_ci(s.message, ph);
        all += " \"" + ph + "\"";
      }
      EXPECT_TRUE(found) << "message contains none of" << all;
    }
    // plan_attention validates exactly as attention does.
    EXPECT_EQ(p.code, s.code) << "plan_attention: " << p.message;
    EXPECT_EQ(p.message, s.message);
    // A refused call writes nothing.
    std::string changed = out_.changed_since_snapshot(false);
    EXPECT_TRUE(changed.empty()) << "refused call wrote to out: " << changed;
    changed = lse_.changed_since_snapshot(false);
    EXPECT_TRUE(changed.empty()) << "refused call wrote to lse: " << changed;
  }

  void ExpectRefused(const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const Expect& e) {
    ExpectRefused(q, k, v, out, AttentionOptions{}, e);
  }

  void ExpectRefusedOptions(const AttentionOptions& options, const Expect& e) {
    ExpectRefused(q(), k(), v(), out(), options, e);
  }

  std::unique_ptr<TestRng> rng_;
  HostTensor q_, k_, v_, out_, lse_;
};

const char* const kNames[4] = {"q", "k", "v", "out"};
const char* const kDims[4] = {"B", "H", "L", "D"};

TEST_F(ApiErrors, ValidCallSucceeds) {
  // Sanity: the fixture's call is accepted, so each refusal below is due to its one change.
  TensorView lse = lse_.view();
  AttentionOptions o;
  o.lse = &lse;
  Dispatch d;
  Status s = hattn::attention(q(), k(), v(), out(), o, &d);
  ASSERT_TRUE(s.ok()) << hattn::to_string(s.code) << ": " << s.message;
  EXPECT_TRUE(s.message.empty());
  EXPECT_FALSE(d.kernel.empty());
  s = hattn::plan_attention(q(), k(), v(), out(), o, &d);
  EXPECT_TRUE(s.ok()) << s.message;
  // chosen may be null.
  s = hattn::plan_attention(q(), k(), v(), out(), o, nullptr);
  EXPECT_TRUE(s.ok()) << s.message;
  s = hattn::attention(q(), k(), v(), out(), o, nullptr);
  EXPECT_TRUE(s.ok()) << s.message;
}

TEST_F(ApiErrors, NullData) {
  for (int n = 0; n < 4; ++n) {
    SCOPED_TRACE(kNames[n]);
    TensorView t[4] = {q(), k(), v(), out()};
    t[n].data = nullptr;
    ExpectRefused(t[0], t[1], t[2], t[3],
                  {{StatusCode::invalid_argument}, {"null"}, {kNames[n]}, {}});
  }
}

TEST_F(ApiErrors, RankNotFour) {
  for (int n = 0; n < 4; ++n) {
    SCOPED_TRACE(kNames[n]);
    TensorView base[4] = {q(), k(), v(), out()};
    const TensorView& b = base[n];
    float* data = static_cast<float*>(b.data);
    // Rank 3 (L and D merged), rank 5 (refused by the view builder), rank 0 (default view).
    TensorView r3 = TensorView::contiguous(data, {b.shape[0], b.shape[1], b.shape[2] * b.shape[3]});
    TensorView r5 =
        TensorView::contiguous(data, {b.shape[0], b.shape[1], b.shape[2], b.shape[3], 1});
    TensorView r0;
    r0.data = data;
    for (const TensorView& bad : {r3, r5, r0}) {
      TensorView t[4] = {q(), k(), v(), out()};
      t[n] = bad;
      ExpectRefused(t[0], t[1], t[2], t[3],
                    {{StatusCode::invalid_argument}, {"rank"}, {kNames[n]}, {}});
    }
  }
}

TEST_F(ApiErrors, ShapeAndStrideCountsDiffer) {
  // strided() with mismatched shape/stride lists yields a view that validation refuses.
  TensorView bad =
      TensorView::strided(q_.data(), {kB, kHq, kLq, kD}, {kHq * kLq * kD, kLq * kD, kD});
  ExpectRefused(bad, k(), v(), out(), {{StatusCode::invalid_argument}, {"rank"}, {"q"}, {}});
}

// The header lists "zero sizes" among validated arguments: an empty dimension anywhere is
// refused (not treated as a no-op), and the message names the tensor and the dimension.
TEST_F(ApiErrors, ZeroSizeDims) {
  for (int n = 0; n < 4; ++n) {
    for (int dim = 0; dim < 4; ++dim) {
      SCOPED_TRACE(std::string(kNames[n]) + " dim " + kDims[dim]);
      TensorView t[4] = {q(), k(), v(), out()};
      t[n].shape[dim] = 0;
      ExpectRefused(t[0], t[1], t[2], t[3],
                    {{StatusCode::invalid_argument}, {"zero"}, {kNames[n], kDims[dim]}, {}});
    }
  }
}

TEST_F(ApiErrors, NegativeDims) {
  for (int n = 0; n < 4; ++n) {
    for (int dim = 0; dim < 4; ++dim) {
      SCOPED_TRACE(std::string(kNames[n]) + " dim " + kDims[dim]);
      TensorView t[4] = {q(), k(), v(), out()};
      t[n].shape[dim] = -3;
      ExpectRefused(t[0], t[1], t[2], t[3],
                    {{StatusCode::invalid_argument}, {"negative"}, {kNames[n], kDims[dim]}, {}});
    }
  }
}

TEST_F(ApiErrors, DimensionBeyondInt32) {
  // The kernels index with 32-bit extents; a bigger dimension must be refused before any access.
  for (int n = 0; n < 4; ++n) {
    SCOPED_TRACE(kNames[n]);
    TensorView t[4] = {q(), k(), v(), out()};
    t[n].shape[2] = int64_t{1} << 31;
    ExpectRefused(t[0], t[1], t[2], t[3], {{StatusCode::invalid_argument}, {}, {kNames[n]}, {}});
  }
}

TEST_F(ApiErrors, InnermostStrideNotOne) {
  // Buffers big enough for the strided views (the library must refuse without reading them).
  std::vector<float> big(static_cast<size_t>(kB * kHq * kLq * kD * 2 + 16), 1.f);
  for (int n = 0; n < 4; ++n) {
    for (int64_t stride : {int64_t{2}, int64_t{0}}) {
      SCOPED_TRACE(std::string(kNames[n]) + " D stride " + std::to_string(stride));
      TensorView t[4] = {q(), k(), v(), out()};
      TensorView& x = t[n];
      x.data = big.data();
      x.strides[3] = stride;
      x.strides[2] = x.shape[3] * 2;
      x.strides[1] = x.strides[2] * x.shape[2];
      x.strides[0] = x.strides[1] * x.shape[1];
      ExpectRefused(t[0], t[1], t[2], t[3],
                    {{StatusCode::invalid_argument}, {"stride"}, {kNames[n]}, {}});
    }
  }
}

TEST_F(ApiErrors, NegativeStrides) {
  for (int n = 0; n < 4; ++n) {
    for (int dim = 0; dim < 3; ++dim) {
      SCOPED_TRACE(std::string(kNames[n]) + " negative stride on " + kDims[dim]);
      TensorView t[4] = {q(), k(), v(), out()};
      TensorView& x = t[n];
      // Point at the last slice of `dim` and walk backwards: addresses stay inside the buffer.
      x.data = static_cast<float*>(x.data) + (x.shape[dim] - 1) * x.strides[dim];
      x.strides[dim] = -x.strides[dim];
      ExpectRefused(t[0], t[1], t[2], t[3],
                    {{StatusCode::invalid_argument}, {"stride"}, {kNames[n]}, {}});
    }
  }
}

TEST_F(ApiErrors, OutputStridesAliasElements) {
  // out's L stride 0: all rows of a head would be written to the same memory.
  TensorView o = out();
  o.strides[2] = 0;
  ExpectRefused(q(), k(), v(), o,
                {{StatusCode::invalid_argument}, {}, {"out"}, {{"alias", "overlap"}}});
  // Rows overlapping each other (L stride smaller than D).
  o = out();
  o.strides[2] = kD / 2;
  ExpectRefused(q(), k(), v(), o,
                {{StatusCode::invalid_argument}, {}, {"out"}, {{"alias", "overlap"}}});
}

TEST_F(ApiErrors, MismatchedHeadDim) {
  HostTensor k32({kB, kHkv, kLk, 32}, Layout::kContiguous);
  HostTensor v32({kB, kHkv, kLk, 32}, Layout::kContiguous);
  k32.fill_normal(*rng_);
  v32.fill_normal(*rng_);
  ExpectRefused(q(), k32.view(), v32.view(), out(),
                {{StatusCode::invalid_argument}, {}, {"D"}, {}});
  ExpectRefused(q(), k32.view(), v(), out(), {{StatusCode::invalid_argument}, {}, {"D"}, {}});
  ExpectRefused(q(), k(), v32.view(), out(), {{StatusCode::invalid_argument}, {}, {"D"}, {}});
}

TEST_F(ApiErrors, KeyValueShapesDiffer) {
  HostTensor v7({kB, kHkv, kLk + 1, kD}, Layout::kContiguous);
  HostTensor v1h({kB, 1, kLk, kD}, Layout::kContiguous);
  HostTensor v1b({1, kHkv, kLk, kD}, Layout::kContiguous);
  for (const HostTensor* bad : {&v7, &v1h, &v1b}) {
    SCOPED_TRACE(bad->describe());
    ExpectRefused(q(), k(), bad->view(), out(),
                  {{StatusCode::invalid_argument}, {"shape"}, {"k", "v"}, {}});
  }
}

TEST_F(ApiErrors, BatchDiffers) {
  HostTensor k1({1, kHkv, kLk, kD}, Layout::kContiguous);
  HostTensor v1({1, kHkv, kLk, kD}, Layout::kContiguous);
  ExpectRefused(q(), k1.view(), v1.view(), out(),
                {{StatusCode::invalid_argument}, {}, {}, {{"batch", " B"}}});
}

TEST_F(ApiErrors, QueryHeadsNotAMultipleOfKvHeads) {
  HostTensor k3({kB, 3, kLk, kD}, Layout::kContiguous);
  HostTensor v3({kB, 3, kLk, kD}, Layout::kContiguous);
  ExpectRefused(q(), k3.view(), v3.view(), out(),
                {{StatusCode::invalid_argument}, {"head", "multiple"}, {"4", "3"}, {}});
  // More kv heads than query heads.
  HostTensor k8({kB, 8, kLk, kD}, Layout::kContiguous);
  HostTensor v8({kB, 8, kLk, kD}, Layout::kContiguous);
  ExpectRefused(q(), k8.view(), v8.view(), out(),
                {{StatusCode::invalid_argument}, {"head"}, {"4", "8"}, {}});
}

TEST_F(ApiErrors, OutShapeDiffersFromQ) {
  const std::vector<std::vector<int64_t>> shapes = {
      {kB, kHq, kLq + 1, kD}, {kB, kHq, kLq - 1, kD}, {kB, kHkv, kLq, kD},
      {1, kHq, kLq, kD},      {kB, kHq, kLq, 32},
  };
  for (const auto& shape : shapes) {
    HostTensor o(shape, Layout::kContiguous);
    SCOPED_TRACE(o.describe());
    ExpectRefused(q(), k(), v(), o.view(), {{StatusCode::invalid_argument}, {}, {"out"}, {}});
  }
}

TEST_F(ApiErrors, DtypeNotF32) {
  // One tensor of another dtype than the rest: q, k, v and out share one dtype (refused as
  // invalid; a dtype no compiled kernel takes would be unsupported: accept either).
  for (DType dt : {DType::f16, DType::bf16}) {
    for (int n = 0; n < 4; ++n) {
      SCOPED_TRACE(std::string(kNames[n]) + " " + hattn::to_string(dt));
      TensorView t[4] = {q(), k(), v(), out()};
      t[n].dtype = dt;
      ExpectRefused(t[0], t[1], t[2], t[3],
                    {{StatusCode::unsupported, StatusCode::invalid_argument},
                     {hattn::to_string(dt)},
                     {kNames[n]},
                     {}});
    }
  }
}

TEST_F(ApiErrors, TensorsOnDifferentDevices) {
  for (int n = 1; n < 4; ++n) {
    SCOPED_TRACE(kNames[n]);
    TensorView t[4] = {q(), k(), v(), out()};
    t[n].device = hattn::Device::cuda;
    ExpectRefused(t[0], t[1], t[2], t[3],
                  {{StatusCode::invalid_argument}, {"cuda", "one device"}, {kNames[n]}, {}});
  }
}

TEST_F(ApiErrors, UnknownDeviceValue) {
  TensorView t[4] = {q(), k(), v(), out()};
  t[2].device = static_cast<hattn::Device>(7);
  ExpectRefused(t[0], t[1], t[2], t[3], {{StatusCode::invalid_argument}, {"device"}, {"v"}, {}});
}

// Without a usable GPU, CUDA tensors get no_device with the reason (no driver, no device, or no
// CUDA kernels in this build); never a crash. With a GPU, tests/test_cuda.cpp runs them for real.
TEST_F(ApiErrors, CudaTensorsWithoutAUsableDevice) {
  std::string why;
  if (hattn::cuda_available(&why)) {
    GTEST_SKIP() << "a CUDA device is usable here; test_cuda runs CUDA calls for real";
  }
  std::cout << "[   INFO   ] CUDA unavailable: " << why << std::endl;
  EXPECT_FALSE(why.empty());
  TensorView t[4] = {q(), k(), v(), out()};
  for (TensorView& x : t) x.device = hattn::Device::cuda;
  ExpectRefused(t[0], t[1], t[2], t[3],
                {{StatusCode::no_device, StatusCode::unsupported}, {"CUDA"}, {}, {}});
}

TEST_F(ApiErrors, OutOverlapsAnInput) {
  // q, k, v all [2, 4, 5, 64] (MHA) back to back inside one buffer (after a gap of n elements),
  // so out can be placed over any of them.
  const int64_t n = kB * kHq * kLq * kD;
  std::vector<float> buf(static_cast<size_t>(6 * n));
  for (float& x : buf) x = rng_->normal();
  const std::vector<int64_t> shape = {kB, kHq, kLq, kD};
  TensorView in[3] = {TensorView::contiguous(buf.data() + n, shape),
                      TensorView::contiguous(buf.data() + 2 * n, shape),
                      TensorView::contiguous(buf.data() + 3 * n, shape)};
  for (int which = 0; which < 3; ++which) {
    // Shifts that overlap `which` (and possibly the next tensor, never an earlier one).
    for (int64_t shift : {int64_t{0}, n / 2, n - 1, -(n - 1)}) {
      if (shift < 0 && which != 0) continue;
      SCOPED_TRACE(std::string("out over ") + kNames[which] + " shifted by " +
                   std::to_string(shift));
      TensorView o = TensorView::contiguous(static_cast<float*>(in[which].data) + shift, shape);
      ExpectRefused(in[0], in[1], in[2], o,
                    {{StatusCode::invalid_argument}, {"overlap"}, {kNames[which]}, {}});
    }
  }
  // The same buffer, disjoint regions (right before q and right after v): accepted.
  for (float* at : {buf.data(), buf.data() + 4 * n}) {
    std::fill(at, at + n, std::numeric_limits<float>::quiet_NaN());
    TensorView o = TensorView::contiguous(at, shape);
    Status s = hattn::attention(in[0], in[1], in[2], o);
    EXPECT_TRUE(s.ok()) << hattn::to_string(s.code) << ": " << s.message;
    int64_t unwritten = 0;
    for (int64_t i = 0; i < n; ++i) unwritten += std::isfinite(at[i]) ? 0 : 1;
    EXPECT_EQ(unwritten, 0) << "elements of out left unwritten (still NaN)";
  }
}

TEST_F(ApiErrors, LseOverlapsATensor) {
  TensorView lse_on_out = TensorView::contiguous(out_.data() + 3, {kB, kHq, kLq});
  TensorView lse_on_q = TensorView::contiguous(q_.data(), {kB, kHq, kLq});
  for (const TensorView* lse : {&lse_on_out, &lse_on_q}) {
    AttentionOptions o;
    o.lse = lse;
    ExpectRefusedOptions(o, {{StatusCode::invalid_argument}, {"overlap"}, {"lse"}, {}});
  }
}

TEST_F(ApiErrors, BadScale) {
  for (float scale :
       {0.f, -0.f, -1.f, std::numeric_limits<float>::quiet_NaN(),
        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE("scale " + std::to_string(scale));
    AttentionOptions o;
    o.has_scale = true;
    o.scale = scale;
    ExpectRefusedOptions(o, {{StatusCode::invalid_argument}, {"scale"}, {}, {}});
  }
  // Without has_scale the field is ignored.
  AttentionOptions o;
  o.scale = -1.f;
  Status s = hattn::attention(q(), k(), v(), out(), o);
  EXPECT_TRUE(s.ok()) << s.message;
}

TEST_F(ApiErrors, UnknownKernelName) {
  AttentionOptions o;
  o.kernel = "dense_prefill_noncausal_d63_f32_nonexistent";
  // It names what was asked and what this program's kernel set holds (hattn's own here; a
  // consumer's set is checked by examples/consumer, run by scripts/test_consumer.sh).
  ExpectRefusedOptions(o, {{StatusCode::invalid_argument},
                           {o.kernel, "kernel set 'hattn'",
                            "dense " + hattn_test::cpu_family() + " f32 D=64,128,any"},
                           {},
                           {}});
}

TEST_F(ApiErrors, ForcedKernelCannotTakeTheShape) {
  // A D=64 kernel forced on a D=128 call.
  const hattn::KernelInfo* d64 = nullptr;
  const hattn::KernelInfo* causal_kernel = nullptr;
  for (const hattn::KernelInfo& kinfo : hattn::list_kernels()) {
    if (kinfo.family == "cuda" || kinfo.variant != "dense" || kinfo.dtype != "f32") continue;
    if (kinfo.head_dim == 64 && !kinfo.causal && d64 == nullptr) d64 = &kinfo;
    if (kinfo.causal && causal_kernel == nullptr) causal_kernel = &kinfo;
  }
  ASSERT_NE(d64, nullptr) << "no non-causal D=64 kernel compiled";
  ASSERT_NE(causal_kernel, nullptr) << "no causal kernel compiled";
  HostTensor q128({1, 2, 8, 128}, Layout::kContiguous), k128({1, 2, 8, 128}, Layout::kContiguous),
      v128({1, 2, 8, 128}, Layout::kContiguous), o128({1, 2, 8, 128}, Layout::kContiguous);
  q128.fill_normal(*rng_);
  k128.fill_normal(*rng_);
  v128.fill_normal(*rng_);
  AttentionOptions o;
  o.kernel = d64->name;
  ExpectRefused(q128.view(), k128.view(), v128.view(), o128.view(), o,
                {{StatusCode::unsupported}, {d64->name, "D=64", "D=128"}, {}, {}});
  // A causal kernel forced on a non-causal call (D matches the fixture when it is specialized).
  o = AttentionOptions{};
  o.kernel = causal_kernel->name;
  ExpectRefusedOptions(o, {{StatusCode::unsupported}, {causal_kernel->name, "causal"}, {}, {}});
}

TEST_F(ApiErrors, NegativeDecodeSplits) {
  for (int splits : {-1, -7}) {
    AttentionOptions o;
    o.decode_splits = splits;
    ExpectRefusedOptions(
        o, {{StatusCode::invalid_argument}, {"decode_splits", std::to_string(splits)}, {}, {}});
  }
}

TEST_F(ApiErrors, BadLse) {
  HostTensor big({kB, kHq, kLq + 1, 4}, Layout::kContiguous);  // storage for odd views
  std::vector<TensorView> bad;
  bad.push_back(TensorView::contiguous(big.data(), {kB, kHq, kLq, 1}));   // rank 4
  bad.push_back(TensorView::contiguous(big.data(), {kB, kHq * kLq}));     // rank 2
  bad.push_back(TensorView::contiguous(big.data(), {kB, kHq, kLq + 1}));  // L + 1
  bad.push_back(TensorView::contiguous(big.data(), {kB, kHkv, kLq}));     // Hkv heads
  bad.push_back(TensorView::contiguous(big.data(), {1, kHq, kLq}));       // B
  bad.push_back(TensorView::strided(big.data(), {kB, kHq, kLq},
                                    {kHq * kLq * 2, kLq * 2, 2}));  // innermost stride 2
  TensorView null_lse = TensorView::contiguous(big.data(), {kB, kHq, kLq});
  null_lse.data = nullptr;
  bad.push_back(null_lse);
  TensorView zero_lse = TensorView::contiguous(big.data(), {kB, kHq, 0});
  bad.push_back(zero_lse);
  for (const TensorView& lse : bad) {
    SCOPED_TRACE("lse " + lse.describe());
    AttentionOptions o;
    o.lse = &lse;
    ExpectRefusedOptions(o, {{StatusCode::invalid_argument}, {}, {"lse"}, {}});
  }
  TensorView f16_lse = TensorView::contiguous(big.data(), {kB, kHq, kLq});
  f16_lse.dtype = DType::f16;
  AttentionOptions o;
  o.lse = &f16_lse;
  ExpectRefusedOptions(o,
                       {{StatusCode::unsupported, StatusCode::invalid_argument}, {}, {"lse"}, {}});
}

TEST_F(ApiErrors, CheckFiniteNamesTheTensor) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Poison {
    int tensor;  // 0 q, 1 k, 2 v
    int64_t flat;
    float value;
  };
  const Poison poisons[] = {
      {1, 100, nan}, {0, 7, nan}, {2, kB * kHkv * kLk * kD - 1, inf}, {1, 0, -inf}, {2, 333, nan}};
  for (const Poison& p : poisons) {
    HostTensor* t[3] = {&q_, &k_, &v_};
    const float saved = t[p.tensor]->at_flat(p.flat);
    t[p.tensor]->at_flat(p.flat) = p.value;
    SCOPED_TRACE(std::string(kNames[p.tensor]) + " " +
                 index_string(t[p.tensor]->index_of_flat(p.flat)) + " = " +
                 std::to_string(p.value));
    AttentionOptions o;
    o.check_finite = true;
    Status s = hattn::attention(q(), k(), v(), out(), o);
    EXPECT_EQ(s.code, StatusCode::non_finite_input)
        << hattn::to_string(s.code) << ": " << s.message;
    EXPECT_TRUE(mentions_word(s.message, kNames[p.tensor])) << s.message;
    std::string changed = out_.changed_since_snapshot(false);
    EXPECT_TRUE(changed.empty()) << "refused call wrote to out: " << changed;
    // Without check_finite the call runs (non-finite in, non-finite out, never a crash).
    Status unchecked = hattn::attention(q(), k(), v(), out());
    EXPECT_TRUE(unchecked.ok()) << unchecked.message;
    t[p.tensor]->at_flat(p.flat) = saved;
    out_.poison();
    out_.snapshot();
  }
  // All finite: accepted.
  AttentionOptions o;
  o.check_finite = true;
  Status s = hattn::attention(q(), k(), v(), out(), o);
  EXPECT_TRUE(s.ok()) << s.message;
}

TEST_F(ApiErrors, CheckFiniteIgnoresPaddingOutsideTheView) {
  // HostTensor pads strided views with NaN; only elements inside the view are checked.
  HostTensor qp({kB, kHq, kLq, kD}, Layout::kPadded);
  HostTensor kp({kB, kHkv, kLk, kD}, Layout::kBLHD);
  qp.fill_normal(*rng_);
  kp.fill_normal(*rng_);
  AttentionOptions o;
  o.check_finite = true;
  Status s = hattn::attention(qp.view(), kp.view(), v(), out(), o);
  EXPECT_TRUE(s.ok()) << hattn::to_string(s.code) << ": " << s.message;
}

TEST(StatusStrings, DistinctAndNonEmpty) {
  const StatusCode codes[] = {StatusCode::ok,           StatusCode::invalid_argument,
                              StatusCode::unsupported,  StatusCode::non_finite_input,
                              StatusCode::kernel_error, StatusCode::no_device};
  std::vector<std::string> seen;
  for (StatusCode c : codes) {
    const std::string s = hattn::to_string(c);
    EXPECT_FALSE(s.empty());
    for (const std::string& other : seen) EXPECT_NE(s, other);
    seen.push_back(s);
  }
  EXPECT_TRUE(Status::success().ok());
  EXPECT_STREQ(hattn::to_string(DType::f32), "f32");
  EXPECT_STREQ(hattn::to_string(hattn::Device::cuda), "cuda");
}

}  // namespace
}  // namespace hattn_test
