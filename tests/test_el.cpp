// EL-attention and the standard multi-head path against the double-precision reference
// (tests/reference.cpp: projections, per-head softmax and output projection in double), and the
// spec's invariants: non-zero k/v biases, padding, beam > 1, T > 1, H = 1; sharing the memory
// across beams equals replicating it; step-by-step causal decoding with EL equals one causal
// pass; every refusal says why; bf16 and f16 weights and memory (fp32 activations inside) against
// the reference on the rounded values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "test_support.h"

namespace {

using hattn::ElOptions;
using hattn::MhaWeights;
using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;
using namespace hattn_test;

constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_vec(size_t n, TestRng& rng, float stddev) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.normal(stddev);
  return v;
}

// Weights scaled so activations stay O(1); biases clearly non-zero.
MhaHostWeights random_weights(int64_t dm, TestRng& rng) {
  MhaHostWeights w;
  w.dm = dm;
  const float ws = 1.f / std::sqrt(static_cast<float>(dm));
  const size_t mat = static_cast<size_t>(dm * dm), vec = static_cast<size_t>(dm);
  w.wq = random_vec(mat, rng, 2.f * ws);  // x2: attention a little peaked
  w.wk = random_vec(mat, rng, 2.f * ws);
  w.wv = random_vec(mat, rng, ws);
  w.wo = random_vec(mat, rng, ws);
  w.bq = random_vec(vec, rng, 0.5f);
  w.bk = random_vec(vec, rng, 0.5f);
  w.bv = random_vec(vec, rng, 0.5f);
  w.bo = random_vec(vec, rng, 0.5f);
  return w;
}

MhaWeights views(const MhaHostWeights& w) {
  const int64_t dm = w.dm;
  MhaWeights v;
  v.wq = TensorView::contiguous(w.wq.data(), {dm, dm});
  v.wk = TensorView::contiguous(w.wk.data(), {dm, dm});
  v.wv = TensorView::contiguous(w.wv.data(), {dm, dm});
  v.wo = TensorView::contiguous(w.wo.data(), {dm, dm});
  v.bq = TensorView::contiguous(w.bq.data(), {dm});
  v.bk = TensorView::contiguous(w.bk.data(), {dm});
  v.bv = TensorView::contiguous(w.bv.data(), {dm});
  v.bo = TensorView::contiguous(w.bo.data(), {dm});
  return v;
}

// max |a - b| / max |b|: the normwise relative error the spec bounds by 1e-5. NaN anywhere in
// `a` (an unwritten, poisoned element) is reported as infinite.
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

struct ElCase {
  int64_t samples, beam, tokens, mem_len, dm, heads;
  bool causal;
  std::vector<int32_t> lengths;  // empty: none
};

std::string describe(const ElCase& c) {
  return "B=" + std::to_string(c.samples) + " beam=" + std::to_string(c.beam) +
         " T=" + std::to_string(c.tokens) + " N=" + std::to_string(c.mem_len) +
         " Dm=" + std::to_string(c.dm) + " H=" + std::to_string(c.heads) +
         (c.causal ? " causal" : "") + (c.lengths.empty() ? "" : " padded");
}

class ElVsReference : public ::testing::TestWithParam<ElCase> {};

TEST_P(ElVsReference, ElAndStandardPathMatchDoubleReference) {
  const ElCase c = GetParam();
  TestRng rng(describe(c));
  SCOPED_TRACE(rng.description() + " " + describe(c));
  const int64_t rows = c.samples * c.beam;
  MhaHostWeights w = random_weights(c.dm, rng);
  std::vector<float> x = random_vec(static_cast<size_t>(rows * c.tokens * c.dm), rng, 1.f);
  std::vector<float> mem = random_vec(static_cast<size_t>(c.samples * c.mem_len * c.dm), rng, 1.f);
  std::vector<float> ref(x.size());
  const double scale = 1.0 / std::sqrt(double(c.dm / c.heads));
  reference_mha(x.data(), mem.data(), w, rows, c.tokens, c.mem_len, c.heads, c.beam, c.causal,
                c.lengths.empty() ? nullptr : c.lengths.data(), scale, ref.data());

  ElOptions o;
  o.heads = c.heads;
  o.beam = c.beam;
  o.causal = c.causal;
  if (!c.lengths.empty()) o.key_lengths = c.lengths.data();
  const auto xv = TensorView::contiguous(x.data(), {rows, c.tokens, c.dm});
  const auto mv = TensorView::contiguous(mem.data(), {c.samples, c.mem_len, c.dm});
  std::vector<float> y_el(x.size(), kPoison), y_std(x.size(), kPoison);
  hattn::Dispatch chosen;
  Status s = hattn::el_attention(
      xv, mv, views(w), TensorView::contiguous(y_el.data(), {rows, c.tokens, c.dm}), o, &chosen);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_NE(chosen.kernel.find("el_dany_f32_"), std::string::npos) << chosen.kernel;
  s = hattn::mha_attention(xv, mv, views(w),
                           TensorView::contiguous(y_std.data(), {rows, c.tokens, c.dm}), o);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_LE(rel_error(y_el, ref), 1e-5) << "EL vs double reference";
  EXPECT_LE(rel_error(y_std, ref), 1e-5) << "standard path vs double reference";
  EXPECT_LE(rel_error(y_el, y_std), 1e-5) << "EL vs the standard path";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ElVsReference,
    ::testing::Values(ElCase{2, 1, 1, 37, 64, 4, false, {}},         // decode
                      ElCase{2, 3, 1, 50, 128, 8, false, {50, 17}},  // beams + padding
                      ElCase{1, 2, 5, 29, 64, 2, false, {}},         // T > 1
                      ElCase{2, 1, 2, 33, 64, 1, false, {}},         // H = 1
                      ElCase{2, 2, 6, 6, 64, 4, true, {}},           // causal self-attention
                      ElCase{2, 1, 3, 20, 96, 3, true, {20, 11}},    // causal + padding
                      ElCase{2, 2, 1, 9, 64, 4, false, {0, 9}},      // a sample with no keys
                      ElCase{1, 1, 4, 300, 192, 12, false, {}},      // GPT-2-like head split
                      // Dm not a multiple of AVX-512's 64-float model-dim tiles (the last
                      // tile reads clamped rows): Dh = 16 and Dh = 80.
                      ElCase{1, 1, 3, 23, 80, 5, false, {}},
                      ElCase{2, 1, 3, 23, 160, 2, true, {}}));

TEST(El, SharingMemoryAcrossBeamsEqualsReplicatingIt) {
  TestRng rng("share");
  SCOPED_TRACE(rng.description());
  const int64_t samples = 2, beam = 4, n = 41, dm = 128, heads = 8;
  MhaHostWeights w = random_weights(dm, rng);
  std::vector<float> x = random_vec(static_cast<size_t>(samples * beam * dm), rng, 1.f);
  std::vector<float> mem = random_vec(static_cast<size_t>(samples * n * dm), rng, 1.f);
  std::vector<float> rep;
  for (int64_t r = 0; r < samples * beam; ++r) {
    rep.insert(rep.end(), mem.begin() + (r / beam) * n * dm, mem.begin() + (r / beam + 1) * n * dm);
  }
  std::vector<float> y_shared(x.size(), kPoison), y_rep(x.size(), kPoison);
  ElOptions o;
  o.heads = heads;
  o.beam = beam;
  const auto xv = TensorView::contiguous(x.data(), {samples * beam, 1, dm});
  ASSERT_TRUE(
      hattn::el_attention(xv, TensorView::contiguous(mem.data(), {samples, n, dm}), views(w),
                          TensorView::contiguous(y_shared.data(), {samples * beam, 1, dm}), o)
          .ok());
  o.beam = 1;
  ASSERT_TRUE(hattn::el_attention(xv, TensorView::contiguous(rep.data(), {samples * beam, n, dm}),
                                  views(w),
                                  TensorView::contiguous(y_rep.data(), {samples * beam, 1, dm}), o)
                  .ok());
  EXPECT_LE(rel_error(y_shared, y_rep), 1e-6);
}

TEST(El, StepByStepCausalDecodingEqualsFullCausalPass) {
  TestRng rng("stepwise");
  SCOPED_TRACE(rng.description());
  const int64_t samples = 2, tokens = 9, dm = 64, heads = 4;
  MhaHostWeights w = random_weights(dm, rng);
  // Decoder self-attention: the memory is the layer's own inputs.
  std::vector<float> x = random_vec(static_cast<size_t>(samples * tokens * dm), rng, 1.f);
  const auto xv = TensorView::contiguous(x.data(), {samples, tokens, dm});
  ElOptions o;
  o.heads = heads;
  o.causal = true;
  std::vector<float> full(x.size(), kPoison), steps(x.size(), kPoison);
  ASSERT_TRUE(hattn::mha_attention(xv, xv, views(w),
                                   TensorView::contiguous(full.data(), {samples, tokens, dm}), o)
                  .ok());
  for (int64_t t = 0; t < tokens; ++t) {
    const auto xt = TensorView::strided(x.data() + t * dm, {samples, 1, dm}, {tokens * dm, dm, 1});
    const auto prefix = TensorView::strided(x.data(), {samples, t + 1, dm}, {tokens * dm, dm, 1});
    const auto yt =
        TensorView::strided(steps.data() + t * dm, {samples, 1, dm}, {tokens * dm, dm, 1});
    Status s = hattn::el_attention(xt, prefix, views(w), yt, o);
    ASSERT_TRUE(s.ok()) << "step " << t << ": " << s.message;
  }
  EXPECT_LE(rel_error(steps, full), 1e-5);
}

TEST(El, CachedStandardPathPerBeamAndSharedEqualUncached) {
  TestRng rng("cached");
  SCOPED_TRACE(rng.description());
  const int64_t samples = 2, beam = 3, tokens = 2, n = 23, dm = 64, heads = 4;
  MhaHostWeights w = random_weights(dm, rng);
  std::vector<float> x = random_vec(static_cast<size_t>(samples * beam * tokens * dm), rng, 1.f);
  std::vector<float> mem = random_vec(static_cast<size_t>(samples * n * dm), rng, 1.f);
  const auto xv = TensorView::contiguous(x.data(), {samples * beam, tokens, dm});
  const auto mv = TensorView::contiguous(mem.data(), {samples, n, dm});
  ElOptions o;
  o.heads = heads;
  o.beam = beam;
  std::vector<float> kc(mem.size(), kPoison), vc(mem.size(), kPoison);
  ASSERT_TRUE(hattn::mha_project_memory(mv, views(w),
                                        TensorView::contiguous(kc.data(), {samples, n, dm}),
                                        TensorView::contiguous(vc.data(), {samples, n, dm}))
                  .ok());
  std::vector<float> kb, vb;  // one cache per beam
  for (int64_t r = 0; r < samples * beam; ++r) {
    kb.insert(kb.end(), kc.begin() + (r / beam) * n * dm, kc.begin() + (r / beam + 1) * n * dm);
    vb.insert(vb.end(), vc.begin() + (r / beam) * n * dm, vc.begin() + (r / beam + 1) * n * dm);
  }
  std::vector<float> ref(x.size());
  reference_mha(x.data(), mem.data(), w, samples * beam, tokens, n, heads, beam, false, nullptr,
                1.0 / std::sqrt(16.0), ref.data());
  std::vector<float> shared(x.size(), kPoison), per_beam(x.size(), kPoison);
  const auto yv = [&](std::vector<float>& y) {
    return TensorView::contiguous(y.data(), {samples * beam, tokens, dm});
  };
  Status s = hattn::mha_attention_cached(xv, TensorView::contiguous(kc.data(), {samples, n, dm}),
                                         TensorView::contiguous(vc.data(), {samples, n, dm}),
                                         views(w), yv(shared), o);
  ASSERT_TRUE(s.ok()) << s.message;
  s = hattn::mha_attention_cached(xv, TensorView::contiguous(kb.data(), {samples * beam, n, dm}),
                                  TensorView::contiguous(vb.data(), {samples * beam, n, dm}),
                                  views(w), yv(per_beam), o);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_LE(rel_error(shared, ref), 1e-5);
  EXPECT_LE(rel_error(per_beam, ref), 1e-5);
}

TEST(El, StridedViewsAndMissingBiases) {
  TestRng rng("strided");
  SCOPED_TRACE(rng.description());
  const int64_t rows = 3, tokens = 2, n = 19, dm = 64, heads = 2, pad = 16;
  MhaHostWeights w = random_weights(dm, rng);
  w.bq.clear();  // no q and v biases
  w.bv.clear();
  MhaWeights wv = views(w);
  wv.bq = TensorView{};
  wv.bv = TensorView{};
  // x and y rows padded (not expressible as [rows * T, Dm]), memory interleaved with junk.
  const int64_t row_stride = dm + pad, x_stride = tokens * row_stride + 8;
  std::vector<float> xbuf = random_vec(static_cast<size_t>(rows * x_stride), rng, 1.f);
  std::vector<float> mbuf = random_vec(static_cast<size_t>(rows * n * 2 * dm), rng, 1.f);
  std::vector<float> ybuf(xbuf.size(), kPoison);
  const auto xv = TensorView::strided(xbuf.data(), {rows, tokens, dm}, {x_stride, row_stride, 1});
  const auto mv = TensorView::strided(mbuf.data(), {rows, n, dm}, {n * 2 * dm, 2 * dm, 1});
  const auto yv = TensorView::strided(ybuf.data(), {rows, tokens, dm}, {x_stride, row_stride, 1});
  std::vector<float> x, mem;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tokens; ++t) {
      const float* p = xbuf.data() + r * x_stride + t * row_stride;
      x.insert(x.end(), p, p + dm);
    }
    for (int64_t j = 0; j < n; ++j) {
      const float* p = mbuf.data() + (r * n + j) * 2 * dm;
      mem.insert(mem.end(), p, p + dm);
    }
  }
  std::vector<float> ref(x.size());
  reference_mha(x.data(), mem.data(), w, rows, tokens, n, heads, 1, false, nullptr,
                1.0 / std::sqrt(32.0), ref.data());
  ElOptions o;
  o.heads = heads;
  Status s = hattn::el_attention(xv, mv, wv, yv, o);
  ASSERT_TRUE(s.ok()) << s.message;
  std::vector<float> y;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tokens; ++t) {
      const float* p = ybuf.data() + r * x_stride + t * row_stride;
      y.insert(y.end(), p, p + dm);
      // The padding between rows was never written.
      for (int64_t e = dm; e < row_stride && t + 1 < tokens; ++e) ASSERT_TRUE(std::isnan(p[e]));
    }
  }
  EXPECT_LE(rel_error(y, ref), 1e-5);
}

// Every refusal of el_attention and the standard path, with the words a user needs.
TEST(El, RefusalsSayWhy) {
  TestRng rng("errors");
  const int64_t dm = 64;
  MhaHostWeights w = random_weights(dm, rng);
  std::vector<float> x = random_vec(static_cast<size_t>(4 * dm), rng, 1.f);
  std::vector<float> mem = random_vec(static_cast<size_t>(2 * 5 * dm), rng, 1.f);
  std::vector<float> y(x.size(), kPoison);
  const auto xv = TensorView::contiguous(x.data(), {4, 1, dm});
  const auto mv = TensorView::contiguous(mem.data(), {2, 5, dm});
  const auto yv = TensorView::contiguous(y.data(), {4, 1, dm});
  auto expect = [&](const Status& s, StatusCode code, const std::string& words) {
    EXPECT_EQ(s.code, code) << s.message;
    EXPECT_NE(s.message.find(words), std::string::npos) << s.message;
  };
  ElOptions o;
  o.heads = 4;
  o.beam = 2;
  ASSERT_TRUE(hattn::el_attention(xv, mv, views(w), yv, o).ok());
  ElOptions bad = o;
  bad.heads = 3;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::invalid_argument,
         "not divisible by heads=3");
  bad = o;
  bad.beam = 3;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::invalid_argument,
         "not divisible by beam=3");
  bad = o;
  bad.beam = 1;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::invalid_argument,
         "memory has B=2");
  bad = o;
  bad.heads = 0;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::invalid_argument,
         "heads must be >= 1");
  bad = o;
  int32_t lengths[2] = {5, 6};
  bad.key_lengths = lengths;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::invalid_argument,
         "key_lengths[1] = 6 is outside [0, N=5]");
  bad = o;
  bad.has_scale = true;
  bad.scale = -1.f;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::invalid_argument,
         "scale must be positive");
  MhaWeights wrong = views(w);
  wrong.wk = TensorView::contiguous(w.wk.data(), {dm / 2, dm});
  expect(hattn::el_attention(xv, mv, wrong, yv, o), StatusCode::invalid_argument,
         "wk must be [64, 64]");
  wrong = views(w);
  wrong.bv = TensorView::contiguous(w.bv.data(), {dm - 1});
  expect(hattn::el_attention(xv, mv, wrong, yv, o), StatusCode::invalid_argument,
         "bv must be [64]");
  std::vector<float> mem32(static_cast<size_t>(2 * 5 * 32), 1.f);
  expect(hattn::el_attention(xv, TensorView::contiguous(mem32.data(), {2, 5, 32}), views(w), yv, o),
         StatusCode::invalid_argument, "model dim Dm differs");
  expect(hattn::el_attention(xv, mv, views(w), TensorView::contiguous(y.data(), {4, 1, dm / 2}), o),
         StatusCode::invalid_argument, "y must have x's shape");
  expect(hattn::el_attention(xv, mv, views(w), xv, o), StatusCode::invalid_argument,
         "y overlaps x");
  expect(hattn::el_attention(TensorView::contiguous(static_cast<float*>(nullptr), {4, 1, dm}), mv,
                             views(w), yv, o),
         StatusCode::invalid_argument, "x");
  // Dm below the EL kernels' tile width: refused, and the standard path still takes it.
  MhaHostWeights w32 = random_weights(32, rng);
  std::vector<float> x32(static_cast<size_t>(4 * 32), 0.5f), y32(x32.size(), kPoison);
  const auto x32v = TensorView::contiguous(x32.data(), {4, 1, 32});
  const auto y32v = TensorView::contiguous(y32.data(), {4, 1, 32});
  const auto m32v = TensorView::contiguous(mem32.data(), {2, 5, 32});
  expect(hattn::el_attention(x32v, m32v, views(w32), y32v, o), StatusCode::unsupported,
         "el kernels need Dm >= 64");
  EXPECT_TRUE(hattn::mha_attention(x32v, m32v, views(w32), y32v, o).ok());
  // Dm not a multiple of 16: refused by both paths.
  MhaHostWeights w72 = random_weights(72, rng);
  std::vector<float> x72(static_cast<size_t>(4 * 72), 0.5f), y72(x72.size(), kPoison);
  std::vector<float> m72(static_cast<size_t>(2 * 5 * 72), 0.25f);
  expect(hattn::el_attention(TensorView::contiguous(x72.data(), {4, 1, 72}),
                             TensorView::contiguous(m72.data(), {2, 5, 72}), views(w72),
                             TensorView::contiguous(y72.data(), {4, 1, 72}), o),
         StatusCode::unsupported, "not a multiple of 16");
  expect(hattn::mha_attention(TensorView::contiguous(x72.data(), {4, 1, 72}),
                              TensorView::contiguous(m72.data(), {2, 5, 72}), views(w72),
                              TensorView::contiguous(y72.data(), {4, 1, 72}), o),
         StatusCode::unsupported, "not a multiple of 16");
  // NaN policy: refused on request, propagated (no crash) otherwise.
  x[3] = std::numeric_limits<float>::quiet_NaN();
  bad = o;
  bad.check_finite = true;
  expect(hattn::el_attention(xv, mv, views(w), yv, bad), StatusCode::non_finite_input, "x");
  EXPECT_TRUE(hattn::el_attention(xv, mv, views(w), yv, o).ok());
  // The standard path's own refusal: a causal shared cache with several beams.
  // (Copies of mem refilled, not vector(n, 1.f): aarch64 g++ 12 reports a false
  // -Wfree-nonheap-object on that constructor inlined here.)
  std::vector<float> kc = mem, vc = mem;
  std::fill(kc.begin(), kc.end(), 1.f);
  std::fill(vc.begin(), vc.end(), 1.f);
  bad = o;
  bad.causal = true;
  expect(
      hattn::mha_attention_cached(xv, TensorView::contiguous(kc.data(), {2, 5, dm}),
                                  TensorView::contiguous(vc.data(), {2, 5, dm}), views(w), yv, bad),
      StatusCode::invalid_argument, "needs one cache per beam");
}

// --- 16-bit weights, memory and activations ------------------------------------------------------

// A tensor rounded to dtype t: the bits the kernels read and the values the reference reads.
struct Rounded {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};
Rounded round_to(hattn::DType t, const std::vector<float>& x) {
  Rounded r{std::vector<uint16_t>(x.size()), std::vector<float>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) {
    r.bits[i] = ref_to_16bit(t, x[i]);
    r.values[i] = ref_from_16bit(t, r.bits[i]);
  }
  return r;
}

struct RoundedWeights {
  MhaHostWeights values;         // for the reference
  std::vector<Rounded> tensors;  // wq, bq, wk, bk, wv, bv, wo, bo
  MhaWeights views(hattn::DType t) {
    const int64_t dm = values.dm;
    MhaWeights v;
    TensorView* all[8] = {&v.wq, &v.bq, &v.wk, &v.bk, &v.wv, &v.bv, &v.wo, &v.bo};
    for (int i = 0; i < 8; ++i) {
      *all[i] = i % 2 == 1 ? TensorView::contiguous(tensors[i].bits.data(), t, {dm})
                           : TensorView::contiguous(tensors[i].bits.data(), t, {dm, dm});
    }
    return v;
  }
};
RoundedWeights round_weights(hattn::DType t, const MhaHostWeights& w) {
  RoundedWeights r;
  r.values.dm = w.dm;
  const std::vector<float>* src[8] = {&w.wq, &w.bq, &w.wk, &w.bk, &w.wv, &w.bv, &w.wo, &w.bo};
  std::vector<float>* dst[8] = {&r.values.wq, &r.values.bq, &r.values.wk, &r.values.bk,
                                &r.values.wv, &r.values.bv, &r.values.wo, &r.values.bo};
  for (int i = 0; i < 8; ++i) {
    r.tensors.push_back(round_to(t, *src[i]));
    *dst[i] = r.tensors.back().values;
  }
  return r;
}

// Each element within half an ulp of t of the reference (y rounded once, last) plus the fp32
// paths' normwise 1e-5 of the largest |ref|. "" when right.
std::string check_16bit_y(hattn::DType t, const std::vector<uint16_t>& y,
                          const std::vector<float>& ref) {
  double top = 0;
  for (float r : ref) top = std::max(top, std::fabs(double(r)));
  const double half_ulp = t == hattn::DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  int bad = 0;
  std::string first;
  for (size_t i = 0; i < y.size(); ++i) {
    const double got = ref_from_16bit(t, y[i]), want = ref[i];
    if (!(std::fabs(got - want) <= half_ulp * std::fabs(want) + 1e-5 * top) && bad++ == 0) {
      first = "element " + std::to_string(i) + ": got " + std::to_string(got) + ", want " +
              std::to_string(want);
    }
  }
  return bad == 0 ? "" : std::to_string(bad) + " elements differ; first " + first;
}

// EL and the standard path over bf16 / f16 weights and memory: with 16-bit x and y (y rounded
// once, within half an ulp of the reference on the rounded values) and with fp32 x and y (fp32
// accuracy on the rounded weights). The projections, EL's queries and per-head outputs stay fp32.
TEST(El16Bit, MatchesReferenceOnRoundedValues) {
  const ElCase cases[] = {{2, 3, 1, 50, 128, 8, false, {50, 17}},  // beams + padding
                          {2, 2, 6, 6, 64, 4, true, {}},           // causal self-attention
                          {1, 1, 4, 300, 192, 12, false, {}},      // GPT-2-like head split
                          {1, 1, 3, 23, 80, 5, false, {}}};        // a partial model-dim tile
  for (hattn::DType t : {hattn::DType::bf16, hattn::DType::f16}) {
    for (const ElCase& c : cases) {
      const std::string name = std::string(hattn::to_string(t)) + " " + describe(c);
      TestRng rng("el16 " + name);
      SCOPED_TRACE(rng.description() + " " + name);
      const int64_t rows = c.samples * c.beam;
      RoundedWeights w = round_weights(t, random_weights(c.dm, rng));
      const Rounded x = round_to(t, random_vec(size_t(rows * c.tokens * c.dm), rng, 1.f));
      const Rounded mem = round_to(t, random_vec(size_t(c.samples * c.mem_len * c.dm), rng, 1.f));
      std::vector<float> ref(x.values.size());
      reference_mha(x.values.data(), mem.values.data(), w.values, rows, c.tokens, c.mem_len,
                    c.heads, c.beam, c.causal, c.lengths.empty() ? nullptr : c.lengths.data(),
                    1.0 / std::sqrt(double(c.dm / c.heads)), ref.data());
      ElOptions o;
      o.heads = c.heads;
      o.beam = c.beam;
      o.causal = c.causal;
      if (!c.lengths.empty()) o.key_lengths = c.lengths.data();
      const std::vector<int64_t> xs = {rows, c.tokens, c.dm};
      const auto xv = TensorView::contiguous(x.bits.data(), t, xs);
      const auto mv = TensorView::contiguous(mem.bits.data(), t, {c.samples, c.mem_len, c.dm});

      std::vector<uint16_t> y_el(x.bits.size(), 0xffff), y_std(x.bits.size(), 0xffff);
      hattn::Dispatch chosen;
      Status s = hattn::el_attention(xv, mv, w.views(t), TensorView::contiguous(y_el.data(), t, xs),
                                     o, &chosen);
      ASSERT_TRUE(s.ok()) << s.message;
      EXPECT_NE(chosen.kernel.find(std::string("el_dany_") + hattn::to_string(t) + "kv_"),
                std::string::npos)
          << chosen.kernel;
      EXPECT_EQ(check_16bit_y(t, y_el, ref), "") << "EL";
      s = hattn::mha_attention(xv, mv, w.views(t), TensorView::contiguous(y_std.data(), t, xs), o);
      ASSERT_TRUE(s.ok()) << s.message;
      EXPECT_EQ(check_16bit_y(t, y_std, ref), "") << "standard path";

      // fp32 x and y over the 16-bit weights and memory: fp32 accuracy.
      std::vector<float> y32(x.values.size(), kPoison);
      s = hattn::el_attention(TensorView::contiguous(x.values.data(), xs), mv, w.views(t),
                              TensorView::contiguous(y32.data(), xs), o);
      ASSERT_TRUE(s.ok()) << s.message;
      EXPECT_LE(rel_error(y32, ref), 1e-5) << "EL, fp32 x and y";
    }
  }
}

// The dtype rules, each refusal leaving y untouched.
TEST(El16Bit, DtypeRefusalsSayWhy) {
  TestRng rng("el16 errors");
  const int64_t dm = 64;
  RoundedWeights w = round_weights(hattn::DType::bf16, random_weights(dm, rng));
  const Rounded x = round_to(hattn::DType::bf16, random_vec(size_t(4 * dm), rng, 1.f));
  const Rounded mem = round_to(hattn::DType::bf16, random_vec(size_t(2 * 5 * dm), rng, 1.f));
  std::vector<uint16_t> y(x.bits.size(), 0xffff);
  const auto xv = TensorView::contiguous(x.bits.data(), hattn::DType::bf16, {4, 1, dm});
  const auto mv = TensorView::contiguous(mem.bits.data(), hattn::DType::bf16, {2, 5, dm});
  const auto yv = TensorView::contiguous(y.data(), hattn::DType::bf16, {4, 1, dm});
  ElOptions o;
  o.heads = 4;
  o.beam = 2;
  auto expect = [&](const Status& s, StatusCode code, const std::string& words) {
    EXPECT_EQ(s.code, code) << s.message;
    EXPECT_NE(s.message.find(words), std::string::npos) << s.message;
    for (uint16_t e : y) ASSERT_EQ(e, 0xffff) << "a refused call wrote y";
  };
  MhaWeights mixed = w.views(hattn::DType::bf16);
  mixed.wv.dtype = hattn::DType::f16;
  expect(hattn::el_attention(xv, mv, mixed, yv, o), StatusCode::invalid_argument,
         "the weights and biases share one dtype: wq is bf16, wv is f16");
  expect(hattn::el_attention(xv, TensorView::contiguous(mem.values.data(), {2, 5, dm}),
                             w.views(hattn::DType::bf16), yv, o),
         StatusCode::invalid_argument, "el reads the memory in the weights' dtype (bf16)");
  const auto x_f16 = TensorView::contiguous(x.bits.data(), hattn::DType::f16, {4, 1, dm});
  expect(hattn::el_attention(x_f16, mv, w.views(hattn::DType::bf16), yv, o),
         StatusCode::invalid_argument, "x has dtype f16; activations are f32 or the weights'");
  std::vector<uint16_t> kc(mem.bits.size(), 0), vc(kc.size(), 0);
  expect(
      hattn::mha_project_memory(mv, w.views(hattn::DType::bf16),
                                TensorView::contiguous(kc.data(), hattn::DType::bf16, {2, 5, dm}),
                                TensorView::contiguous(vc.data(), hattn::DType::bf16, {2, 5, dm})),
      StatusCode::unsupported, "the standard path's caches hold fp32 projections");
  for (uint16_t e : kc) ASSERT_EQ(e, 0) << "a refused call wrote k_cache";
}

}  // namespace
