// Loki calibration and key rotation (hattn/loki_prep.h) against independent double-precision
// constructions: keys whose sample covariance is known exactly, a double loop for the rotation,
// P^T P computed here, and every argument error with the phrase its message must contain.
// Inputs come from std::mt19937_64 seeded with kDefaultSeed (HATTN_SEED overrides) mixed with the
// test's name; each test prints its seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "hattn/loki_prep.h"

namespace {

using hattn::Device;
using hattn::DType;
using hattn::LokiCalibrateOptions;
using hattn::LokiCalibration;
using hattn::Status;
using hattn::StatusCode;
using hattn::TensorView;

constexpr uint64_t kDefaultSeed = 0x10c1'2024'0601ull;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::mt19937_64 make_rng() {
  uint64_t base = kDefaultSeed;
  if (const char* env = std::getenv("HATTN_SEED"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    base = std::strtoull(env, &end, 0);
    if (end == env || *end != '\0') {
      ADD_FAILURE() << "HATTN_SEED='" << env << "' is not an integer";
      base = kDefaultSeed;
    }
  }
  const testing::TestInfo* t = testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(t->test_suite_name()) + "." + t->name();
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the test name
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  const uint64_t seed = base ^ h;
  std::cout << "[   SEED   ] HATTN_SEED=" << base << " test=" << name << " seed=" << seed
            << std::endl;
  return std::mt19937_64(seed);
}

std::vector<double> normals(std::mt19937_64& rng, size_t n) {
  std::normal_distribution<double> dist;
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Orthonormalizes the `cols` columns of m (column-major, `rows` long each) in place: modified
// Gram-Schmidt, done twice so the result is orthonormal to double rounding.
void gram_schmidt(std::vector<double>* m, int64_t rows, int64_t cols) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t c = 0; c < cols; ++c) {
      double* v = m->data() + c * rows;
      for (int64_t p = 0; p < c; ++p) {
        const double* u = m->data() + p * rows;
        double dot = 0;
        for (int64_t r = 0; r < rows; ++r) dot += u[r] * v[r];
        for (int64_t r = 0; r < rows; ++r) v[r] -= dot * u[r];
      }
      double norm = 0;
      for (int64_t r = 0; r < rows; ++r) norm += v[r] * v[r];
      for (int64_t r = 0; r < rows; ++r) v[r] /= std::sqrt(norm);
    }
  }
}

// One head's keys [N, D] whose sample covariance is exactly Q diag(lambda) Q^T before fp32
// rounding, around a mean far larger than the spread (so that skipping the centring would make
// the mean the first axis): white noise whose centred columns are orthogonalized and scaled has
// sample covariance exactly I.
struct KnownHead {
  std::vector<double> axes;    // column-major [D][D]: axis c is axes[c * D + e], e = 0..D-1
  std::vector<double> lambda;  // the covariance's eigenvalues, descending
  std::vector<float> keys;     // [N, D]
};

KnownHead make_head(std::mt19937_64& rng, int64_t n, int64_t d, std::vector<double> lambda) {
  KnownHead k{normals(rng, d * d), std::move(lambda), std::vector<float>(n * d)};
  gram_schmidt(&k.axes, d, d);
  std::vector<double> z = normals(rng, n * d);  // column-major [D][N]
  for (int64_t i = 0; i < d; ++i) {
    double mean = 0;
    for (int64_t r = 0; r < n; ++r) mean += z[i * n + r] / static_cast<double>(n);
    for (int64_t r = 0; r < n; ++r) z[i * n + r] -= mean;
  }
  gram_schmidt(&z, n, d);
  std::uniform_real_distribution<double> mean_dist(2.0, 4.0);
  for (int64_t e = 0; e < d; ++e) {
    const double mu = mean_dist(rng) * (e % 2 ? -1 : 1);
    for (int64_t r = 0; r < n; ++r) {
      double x = mu;
      for (int64_t i = 0; i < d; ++i) {
        x += std::sqrt(k.lambda[i] * static_cast<double>(n - 1)) * z[i * n + r] * k.axes[i * d + e];
      }
      k.keys[r * d + e] = static_cast<float>(x);
    }
  }
  return k;
}

// Distinct eigenvalues, scale * 0.7^i.
std::vector<double> geometric(int64_t d, double scale) {
  std::vector<double> l(d);
  for (int64_t i = 0; i < d; ++i) l[i] = scale * std::pow(0.7, static_cast<double>(i));
  return l;
}

// `heads` known heads, their keys packed into one [Hkv, N, D] buffer.
struct KnownKeys {
  std::vector<KnownHead> heads;
  std::vector<float> keys;
};

KnownKeys make_keys(std::mt19937_64& rng, int64_t heads, int64_t n, int64_t d) {
  KnownKeys k;
  for (int64_t h = 0; h < heads; ++h) {
    k.heads.push_back(make_head(rng, n, d, geometric(d, 10.0 + 3.0 * h)));
    k.keys.insert(k.keys.end(), k.heads.back().keys.begin(), k.heads.back().keys.end());
  }
  return k;
}

// max |P^T P - I| of one [D, D] row-major head, computed here in double.
double orthonormality_error(const float* p, int64_t d) {
  double worst = 0;
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = 0; j < d; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < d; ++e) dot += double(p[e * d + i]) * p[e * d + j];
      worst = std::max(worst, std::abs(dot - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

struct Calibrated {
  Status status;
  std::vector<float> basis, ratio;
  LokiCalibration info;
};

// Calibrates contiguous keys of shape `shape` ([Hkv, N, D] or [L, Hkv, N, D]) into poisoned
// contiguous outputs.
Calibrated calibrate(const std::vector<float>& keys, std::vector<int64_t> shape,
                     double variance = 0.9) {
  const int64_t d = shape.back();
  std::vector<int64_t> bshape(shape.begin(), shape.end() - 2), rshape = bshape;
  bshape.push_back(d);
  bshape.push_back(d);
  rshape.push_back(d);
  Calibrated c;
  int64_t items = 1;
  for (size_t i = 0; i + 2 < shape.size(); ++i) items *= shape[i];
  c.basis.assign(items * d * d, kNaN);
  c.ratio.assign(items * d, kNaN);
  LokiCalibrateOptions opt;
  opt.variance = variance;
  c.status = hattn::loki_calibrate(TensorView::contiguous(keys.data(), shape),
                                   TensorView::contiguous(c.basis.data(), bshape),
                                   TensorView::contiguous(c.ratio.data(), rshape), opt, &c.info);
  return c;
}

// Bit patterns, not values: equal results must be the same floats (NaN included).
bool same_bits(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t x = 0, y = 0;
    std::memcpy(&x, a + i, sizeof x);
    std::memcpy(&y, b + i, sizeof y);
    if (x != y) return false;
  }
  return true;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && same_bits(a.data(), b.data(), static_cast<int64_t>(a.size()));
}

TEST(LokiCalibrate, RecoversKnownCovariance) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 3, n = 256, d = 16;
  KnownKeys k = make_keys(rng, heads, n, d);
  Calibrated c = calibrate(k.keys, {heads, n, d});
  ASSERT_TRUE(c.status.ok()) << c.status.message;
  EXPECT_EQ(c.info.layers, 1);
  EXPECT_EQ(c.info.kv_heads, heads);
  EXPECT_EQ(c.info.head_dim, d);
  for (int64_t h = 0; h < heads; ++h) {
    SCOPED_TRACE("head " + std::to_string(h));
    const float* p = c.basis.data() + h * d * d;
    const float* ratio = c.ratio.data() + h * d;
    const KnownHead& kh = k.heads[h];
    double total = 0, ratio_sum = 0;
    for (double l : kh.lambda) total += l;
    for (int64_t col = 0; col < d; ++col) {
      double dot = 0;
      int64_t big = 0;
      for (int64_t e = 0; e < d; ++e) {
        dot += p[e * d + col] * kh.axes[col * d + e];
        if (std::abs(p[e * d + col]) > std::abs(p[big * d + col])) big = e;
      }
      EXPECT_GT(std::abs(dot), 0.999) << "axis " << col;
      EXPECT_GT(p[big * d + col], 0.f) << "axis " << col << ": largest component not positive";
      EXPECT_NEAR(ratio[col], kh.lambda[col] / total, 1e-5) << "axis " << col;
      if (col > 0) {
        EXPECT_GE(ratio[col - 1], ratio[col]) << "ratios not sorted at " << col;
      }
      ratio_sum += ratio[col];
    }
    EXPECT_NEAR(ratio_sum, 1.0, 1e-5);
    EXPECT_LE(orthonormality_error(p, d), 1e-5);
  }
}

TEST(LokiCalibrate, RanksForVarianceThresholds) {
  std::mt19937_64 rng = make_rng();
  const int64_t n = 200, d = 16;
  KnownKeys k = make_keys(rng, 2, n, d);
  for (int64_t want : {1, 2, 5, 9, 16}) {
    // A threshold half-way between the cumulative ratios of want - 1 and want components (both
    // heads have the same decay, hence the same cumulative ratios).
    const std::vector<double>& l = k.heads[0].lambda;
    double total = 0, before = 0;
    for (double x : l) total += x;
    for (int64_t i = 0; i + 1 < want; ++i) before += l[i] / total;
    const double threshold = want == d ? 1.0 : before + 0.5 * l[want - 1] / total;
    Calibrated c = calibrate(k.keys, {2, n, d}, threshold);
    ASSERT_TRUE(c.status.ok()) << c.status.message;
    EXPECT_EQ(c.info.ranks, std::vector<int>(2, static_cast<int>(want)))
        << "variance " << threshold;
    EXPECT_EQ(c.info.max_rank, want);
  }
}

// Keys spanning 3 of 8 dimensions, in a random basis and around a large mean: fp32 rounding
// gives the covariance 8 non-zero eigenvalues, yet variance 1 must give rank 3 (and the basis is
// still a full orthonormal one). Keys along 3 channels, exactly zero elsewhere, likewise.
TEST(LokiCalibrate, RankDeficientKeys) {
  std::mt19937_64 rng = make_rng();
  const int64_t n = 100, d = 8;
  std::vector<double> axes = normals(rng, d * d);
  gram_schmidt(&axes, d, d);
  std::normal_distribution<double> dist;
  std::vector<float> rotated(n * d), aligned(n * d, 0.f);
  for (int64_t r = 0; r < n; ++r) {
    const double a[3] = {3 * dist(rng), 2 * dist(rng), dist(rng)};
    for (int64_t e = 0; e < d; ++e) {
      double x = 50.0;
      for (int i = 0; i < 3; ++i) x += a[i] * axes[i * d + e];
      rotated[r * d + e] = static_cast<float>(x);
    }
    for (int i = 0; i < 3; ++i) aligned[r * d + i] = static_cast<float>(a[i] + 1.0);
  }
  for (const std::vector<float>* keys : {&rotated, &aligned}) {
    SCOPED_TRACE(keys == &rotated ? "rotated" : "aligned");
    Calibrated c = calibrate(*keys, {1, n, d}, 1.0);
    ASSERT_TRUE(c.status.ok()) << c.status.message;
    EXPECT_EQ(c.info.ranks, std::vector<int>{3});
    for (int64_t col = 3; col < d; ++col) EXPECT_LT(c.ratio[col], 1e-6) << "axis " << col;
    EXPECT_LE(orthonormality_error(c.basis.data(), d), 1e-5);
    c = calibrate(*keys, {1, n, d}, 0.999999);
    EXPECT_EQ(c.info.ranks, std::vector<int>{3});
  }
}

// A threshold met exactly counts as reached: keys +-e_i (i < 4) have covariance (2/7) I, whose
// cumulative ratios k/4 are exact in binary.
TEST(LokiCalibrate, ThresholdMetExactly) {
  const int64_t d = 4;
  std::vector<float> keys(2 * d * d, 0.f);
  for (int64_t i = 0; i < d; ++i) {
    keys[(2 * i) * d + i] = 1.f;
    keys[(2 * i + 1) * d + i] = -1.f;
  }
  for (int want = 1; want <= d; ++want) {
    Calibrated c = calibrate(keys, {1, 2 * d, d}, 0.25 * want);
    ASSERT_TRUE(c.status.ok()) << c.status.message;
    EXPECT_EQ(c.info.ranks, std::vector<int>{want}) << "variance " << 0.25 * want;
    for (int64_t col = 0; col < d; ++col) EXPECT_EQ(c.ratio[col], 0.25f) << "axis " << col;
  }
}

// The sign convention makes the result a function of the covariance alone: negated keys (same
// covariance) and a repeated call give the same bits.
TEST(LokiCalibrate, DeterministicSigns) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 2, n = 64, d = 12;
  KnownKeys k = make_keys(rng, heads, n, d);
  std::vector<float> negated = k.keys;
  for (float& x : negated) x = -x;
  Calibrated a = calibrate(k.keys, {heads, n, d}), b = calibrate(k.keys, {heads, n, d});
  Calibrated c = calibrate(negated, {heads, n, d});
  ASSERT_TRUE(a.status.ok() && b.status.ok() && c.status.ok()) << c.status.message;
  EXPECT_TRUE(bitwise_equal(a.basis, b.basis));
  EXPECT_TRUE(bitwise_equal(a.basis, c.basis));
  EXPECT_TRUE(bitwise_equal(a.ratio, c.ratio));
}

TEST(LokiCalibrate, TwoLayersEqualTwoRank3Calls) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 2, n = 80, d = 10;
  KnownKeys l0 = make_keys(rng, heads, n, d), l1 = make_keys(rng, heads, n, d);
  std::vector<float> both = l0.keys;
  both.insert(both.end(), l1.keys.begin(), l1.keys.end());
  Calibrated all = calibrate(both, {2, heads, n, d});
  Calibrated a = calibrate(l0.keys, {heads, n, d}), b = calibrate(l1.keys, {heads, n, d});
  ASSERT_TRUE(all.status.ok() && a.status.ok() && b.status.ok()) << all.status.message;
  std::vector<float> basis = a.basis, ratio = a.ratio;
  basis.insert(basis.end(), b.basis.begin(), b.basis.end());
  ratio.insert(ratio.end(), b.ratio.begin(), b.ratio.end());
  EXPECT_TRUE(bitwise_equal(all.basis, basis));
  EXPECT_TRUE(bitwise_equal(all.ratio, ratio));
  std::vector<int> ranks = a.info.ranks;
  ranks.insert(ranks.end(), b.info.ranks.begin(), b.info.ranks.end());
  EXPECT_EQ(all.info.ranks, ranks);
  EXPECT_EQ(all.info.layers, 2);
  EXPECT_EQ(all.info.max_rank, *std::max_element(ranks.begin(), ranks.end()));
}

TEST(LokiCalibrate, StridedViewsEqualContiguous) {
  std::mt19937_64 rng = make_rng();
  const int64_t layers = 2, heads = 3, n = 40, d = 8;
  KnownKeys l0 = make_keys(rng, heads, n, d), l1 = make_keys(rng, heads, n, d);
  std::vector<float> dense = l0.keys;
  dense.insert(dense.end(), l1.keys.begin(), l1.keys.end());
  Calibrated want = calibrate(dense, {layers, heads, n, d});
  ASSERT_TRUE(want.status.ok()) << want.status.message;

  // Keys stored heads-outermost [Hkv, L, N, D + 3] and read as [L, Hkv, N, D]; outputs with
  // padded rows, starting unaligned.
  const int64_t row = d + 3, layer_stride = n * row, head_stride = layers * layer_stride;
  std::vector<float> buffer(heads * head_stride + 1, kNaN);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t r = 0; r < n; ++r) {
        std::copy_n(dense.data() + ((l * heads + h) * n + r) * d, d,
                    buffer.data() + 1 + h * head_stride + l * layer_stride + r * row);
      }
    }
  }
  const TensorView keys = TensorView::strided(buffer.data() + 1, {layers, heads, n, d},
                                              {layer_stride, head_stride, row, 1});
  std::vector<float> basis((layers * heads * d + 1) * (d + 2), kNaN),
      ratio(layers * heads * 11 + 3, kNaN);
  const int64_t brow = d + 2;
  const TensorView bview = TensorView::strided(basis.data() + 3, {layers, heads, d, d},
                                               {heads * d * brow, d * brow, brow, 1});
  const TensorView rview =
      TensorView::strided(ratio.data() + 2, {layers, heads, d}, {heads * 11, 11, 1});
  LokiCalibration info;
  Status s = hattn::loki_calibrate(keys, bview, rview, {}, &info);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(info.ranks, want.info.ranks);
  size_t written = 0;
  for (int64_t item = 0; item < layers * heads; ++item) {
    for (int64_t e = 0; e < d; ++e) {
      const float* got = basis.data() + 3 + item * d * brow + e * brow;
      EXPECT_TRUE(same_bits(got, want.basis.data() + (item * d + e) * d, d))
          << "basis item " << item << " row " << e;
      written += d;
    }
    EXPECT_TRUE(same_bits(ratio.data() + 2 + item * 11, want.ratio.data() + item * d, d))
        << "variance_ratio item " << item;
  }
  // Everything else is still NaN: no padding was written.
  size_t nan_basis = 0, nan_ratio = 0;
  for (float x : basis) nan_basis += std::isnan(x);
  for (float x : ratio) nan_ratio += std::isnan(x);
  EXPECT_EQ(nan_basis, basis.size() - written);
  EXPECT_EQ(nan_ratio, ratio.size() - static_cast<size_t>(layers * heads * d));
}

// out[b, h, j, c] = sum_e keys[b, h, j, e] * basis[h, e, c], in double.
std::vector<double> rotate_reference(const std::vector<float>& keys, const std::vector<float>& p,
                                     int64_t batch, int64_t heads, int64_t len, int64_t d) {
  std::vector<double> out(batch * heads * len * d, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t j = 0; j < len; ++j) {
        const int64_t row = ((b * heads + h) * len + j) * d;
        for (int64_t c = 0; c < d; ++c) {
          for (int64_t e = 0; e < d; ++e) {
            out[row + c] += double(keys[row + e]) * p[(h * d + e) * d + c];
          }
        }
      }
    }
  }
  return out;
}

// A calibrated basis for `heads` heads of dim d (any orthonormal basis would do).
std::vector<float> some_basis(std::mt19937_64& rng, int64_t heads, int64_t d) {
  KnownKeys k = make_keys(rng, heads, 3 * d, d);
  Calibrated c = calibrate(k.keys, {heads, 3 * d, d});
  EXPECT_TRUE(c.status.ok()) << c.status.message;
  return c.basis;
}

std::vector<float> random_floats(std::mt19937_64& rng, size_t n) {
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(LokiRotate, MatchesDoubleLoop) {
  std::mt19937_64 rng = make_rng();
  const int64_t batch = 2, heads = 3, len = 37, d = 16;
  const std::vector<float> p = some_basis(rng, heads, d);
  const std::vector<float> keys = random_floats(rng, batch * heads * len * d);
  const std::vector<double> want = rotate_reference(keys, p, batch, heads, len, d);

  // Keys read through padded rows, output written through padded rows.
  const int64_t row = d + 4;
  std::vector<float> kbuf(batch * heads * len * row, kNaN), obuf(batch * heads * len * row, kNaN);
  for (int64_t r = 0; r < batch * heads * len; ++r) {
    std::copy_n(keys.data() + r * d, d, kbuf.data() + r * row);
  }
  const std::vector<int64_t> shape = {batch, heads, len, d};
  const std::vector<int64_t> strides = {heads * len * row, len * row, row, 1};
  Status s = hattn::loki_rotate(TensorView::strided(kbuf.data(), shape, strides),
                                TensorView::contiguous(p.data(), {heads, d, d}),
                                TensorView::strided(obuf.data(), shape, strides));
  ASSERT_TRUE(s.ok()) << s.message;
  double worst = 0;
  for (int64_t r = 0; r < batch * heads * len; ++r) {
    for (int64_t c = 0; c < d; ++c) {
      const double ref = want[r * d + c], got = obuf[r * row + c];
      EXPECT_NEAR(got, ref, 1e-6 + 1e-6 * std::abs(ref)) << "row " << r << " c " << c;
      worst = std::max(worst, std::abs(got - ref));
    }
    for (int64_t c = d; c < row; ++c)
      ASSERT_TRUE(std::isnan(obuf[r * row + c])) << "padding written";
  }
  std::cout << "max |rotated - double reference| = " << worst << std::endl;
}

// With P orthonormal, (q P) . (k P) = q . k: what lets Loki score rotated keys exactly.
TEST(LokiRotate, PreservesDotProducts) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 3, lq = 5, lk = 37, d = 16;
  const std::vector<float> p = some_basis(rng, heads, d);
  const std::vector<float> q = random_floats(rng, heads * lq * d);
  const std::vector<float> k = random_floats(rng, heads * lk * d);
  std::vector<float> qh(q.size(), kNaN), kh(k.size(), kNaN);
  const TensorView basis = TensorView::contiguous(p.data(), {heads, d, d});
  ASSERT_TRUE(hattn::loki_rotate(TensorView::contiguous(q.data(), {1, heads, lq, d}), basis,
                                 TensorView::contiguous(qh.data(), {1, heads, lq, d}))
                  .ok());
  ASSERT_TRUE(hattn::loki_rotate(TensorView::contiguous(k.data(), {1, heads, lk, d}), basis,
                                 TensorView::contiguous(kh.data(), {1, heads, lk, d}))
                  .ok());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < lq; ++i) {
      for (int64_t j = 0; j < lk; ++j) {
        double plain = 0, rotated = 0, qq = 0, kk = 0;
        for (int64_t e = 0; e < d; ++e) {
          const int64_t qi = (h * lq + i) * d + e, kj = (h * lk + j) * d + e;
          plain += double(q[qi]) * k[kj];
          rotated += double(qh[qi]) * kh[kj];
          qq += double(q[qi]) * q[qi];
          kk += double(k[kj]) * k[kj];
        }
        EXPECT_NEAR(rotated, plain, 1e-5 * std::sqrt(qq * kk))
            << "head " << h << " q " << i << " k " << j;
      }
    }
  }
}

TEST(LokiCheckBasis, AcceptsOrthonormalRejectsPerturbed) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 4, d = 12;
  std::vector<float> p = some_basis(rng, heads, d);
  std::string worst;
  Status s = hattn::loki_check_basis(TensorView::contiguous(p.data(), {heads, d, d}), 1e-5, &worst);
  EXPECT_TRUE(s.ok()) << s.message;
  EXPECT_NE(worst.find("max |P^T P - I| = "), std::string::npos) << worst;

  std::vector<float> identity(d * d, 0.f);
  for (int64_t e = 0; e < d; ++e) identity[e * d + e] = 1.f;
  s = hattn::loki_check_basis(TensorView::contiguous(identity.data(), {1, d, d}), 0.0, &worst);
  EXPECT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(worst, "head 0: max |P^T P - I| = 0");

  std::vector<float> bad = p;
  bad[(2 * d + 5) * d + 7] += 1e-3f;
  s = hattn::loki_check_basis(TensorView::contiguous(bad.data(), {heads, d, d}), 1e-5, &worst);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(s.message.find("not orthonormal: head 2"), std::string::npos) << s.message;
  EXPECT_EQ(worst.rfind("head 2: ", 0), 0u) << worst;

  // Unit columns that are not orthogonal: column 1 leans towards column 0 by 1e-3.
  std::vector<float> skew = identity;
  skew[0 * d + 1] = std::sin(1e-3f);
  skew[1 * d + 1] = std::cos(1e-3f);
  s = hattn::loki_check_basis(TensorView::contiguous(skew.data(), {1, d, d}), 1e-5, &worst);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(worst.find("head 0: max |P^T P - I| = 0.001"), std::string::npos) << worst;

  // As two layers of two heads: the same element is layer 1, head 0.
  s = hattn::loki_check_basis(TensorView::contiguous(bad.data(), {2, 2, d, d}), 1e-5, &worst);
  EXPECT_NE(s.message.find("layer 1 head 0"), std::string::npos) << s.message;

  bad = p;
  bad[3 * d * d + 4] = kNaN;
  s = hattn::loki_check_basis(TensorView::contiguous(bad.data(), {heads, d, d}), 1e-5, &worst);
  EXPECT_EQ(s.code, StatusCode::invalid_argument);
  EXPECT_NE(s.message.find("head 3"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("non-finite"), std::string::npos) << s.message;
}

// The share of variance a basis's leading axes hold, on keys whose sample covariance is known
// exactly: with the true axes as basis, share[c] = sum_{i <= c} lambda_i / sum lambda (the keys
// sit around a large mean, so a share computed without centring would be far off). A second
// basis (the true axes in reverse order) tests the order, and the layered and strided forms
// must give the same floats.
TEST(LokiCapturedVariance, KnownSpectrum) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 2, n = 96, d = 8;
  KnownKeys k = make_keys(rng, heads, n, d);
  std::vector<float> basis(heads * d * d), reversed(heads * d * d);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t c = 0; c < d; ++c) {
      for (int64_t e = 0; e < d; ++e) {
        const auto axis = static_cast<float>(k.heads[h].axes[c * d + e]);
        basis[(h * d + e) * d + c] = axis;
        reversed[(h * d + e) * d + (d - 1 - c)] = axis;
      }
    }
  }
  std::vector<float> share(heads * d, kNaN), share_rev(heads * d, kNaN);
  Status s = hattn::loki_captured_variance(TensorView::contiguous(k.keys.data(), {heads, n, d}),
                                           TensorView::contiguous(basis.data(), {heads, d, d}),
                                           TensorView::contiguous(share.data(), {heads, d}));
  ASSERT_TRUE(s.ok()) << s.message;
  s = hattn::loki_captured_variance(TensorView::contiguous(k.keys.data(), {heads, n, d}),
                                    TensorView::contiguous(reversed.data(), {heads, d, d}),
                                    TensorView::contiguous(share_rev.data(), {heads, d}));
  ASSERT_TRUE(s.ok()) << s.message;
  for (int64_t h = 0; h < heads; ++h) {
    const std::vector<double>& lambda = k.heads[h].lambda;
    double total = 0;
    for (double l : lambda) total += l;
    double cum = 0, cum_rev = 0;
    for (int64_t c = 0; c < d; ++c) {
      cum += lambda[c];
      cum_rev += lambda[d - 1 - c];
      EXPECT_NEAR(share[h * d + c], cum / total, 2e-5) << "head " << h << " c " << c;
      EXPECT_NEAR(share_rev[h * d + c], cum_rev / total, 2e-5) << "head " << h << " c " << c;
    }
  }
  // Two layers of one head each, and keys read through a padded row stride.
  std::vector<float> layered(heads * d, kNaN);
  s = hattn::loki_captured_variance(TensorView::contiguous(k.keys.data(), {heads, 1, n, d}),
                                    TensorView::contiguous(basis.data(), {heads, 1, d, d}),
                                    TensorView::contiguous(layered.data(), {heads, 1, d}));
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_TRUE(bitwise_equal(layered, share));
  const int64_t pad = d + 3;
  std::vector<float> padded(heads * n * pad, kNaN), strided(heads * d, kNaN);
  for (int64_t r = 0; r < heads * n; ++r) {
    std::copy_n(k.keys.begin() + r * d, d, padded.begin() + r * pad);
  }
  TensorView pv = TensorView::contiguous(padded.data(), {heads, n, d});
  pv.strides[0] = n * pad;
  pv.strides[1] = pad;
  s = hattn::loki_captured_variance(pv, TensorView::contiguous(basis.data(), {heads, d, d}),
                                    TensorView::contiguous(strided.data(), {heads, d}));
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_TRUE(bitwise_equal(strided, share));
}

// --- argument errors ---------------------------------------------------------------------------

void expect_invalid(const Status& s, const std::string& phrase, const std::string& what) {
  EXPECT_EQ(s.code, StatusCode::invalid_argument) << what << ": " << s.message;
  EXPECT_NE(s.message.find(phrase), std::string::npos)
      << what << ": message '" << s.message << "' lacks '" << phrase << "'";
}

// A layer of a per-layer basis is a view of that layer's [Hkv, D, D], strides kept.
TEST(LokiBasisLayer, ViewsOneLayer) {
  const int64_t layers = 3, heads = 2, d = 4;
  std::vector<float> basis(layers * heads * d * d);
  for (size_t i = 0; i < basis.size(); ++i) basis[i] = static_cast<float>(i);
  TensorView layer;
  Status s = hattn::loki_basis_layer(TensorView::contiguous(basis.data(), {layers, heads, d, d}), 2,
                                     &layer);
  ASSERT_TRUE(s.ok()) << s.message;
  ASSERT_EQ(layer.rank, 3);
  EXPECT_EQ(layer.shape[0], heads);
  EXPECT_EQ(layer.shape[2], d);
  EXPECT_EQ(layer.strides[0], d * d);
  EXPECT_EQ(static_cast<const float*>(layer.data), basis.data() + 2 * heads * d * d);
  TensorView untouched;
  untouched.rank = 0;
  expect_invalid(hattn::loki_basis_layer(
                     TensorView::contiguous(basis.data(), {layers, heads, d, d}), 3, &untouched),
                 "layer 3 is outside [0, 2]", "layer past the end");
  expect_invalid(hattn::loki_basis_layer(
                     TensorView::contiguous(basis.data(), {layers, heads, d, d}), -1, &untouched),
                 "layer -1 is outside", "negative layer");
  expect_invalid(
      hattn::loki_basis_layer(TensorView::contiguous(basis.data(), {heads, d, d}), 0, &untouched),
      "must have rank 4", "rank-3 basis");
  EXPECT_EQ(untouched.rank, 0) << "a refused call set its output";
}

TEST(LokiCapturedVariance, Refusals) {
  std::mt19937_64 rng = make_rng();
  const int64_t heads = 2, n = 6, d = 4;
  std::vector<float> keys = random_floats(rng, heads * n * d), basis = some_basis(rng, heads, d);
  std::vector<float> share(heads * d, kNaN);
  const std::vector<float> poison = share;
  auto call = [&](const std::vector<float>& k, const std::vector<float>& b) {
    return hattn::loki_captured_variance(TensorView::contiguous(k.data(), {heads, n, d}),
                                         TensorView::contiguous(b.data(), {heads, d, d}),
                                         TensorView::contiguous(share.data(), {heads, d}));
  };
  std::vector<float> equal = keys;
  for (int64_t j = 0; j < n; ++j) std::copy_n(keys.begin() + n * d, d, equal.begin() + (n + j) * d);
  expect_invalid(call(equal, basis), "head 1 are all equal", "equal keys");
  std::vector<float> nan_keys = keys;
  nan_keys[3] = kNaN;
  expect_invalid(call(nan_keys, basis), "head 0 hold a non-finite value", "NaN key");
  std::vector<float> nan_basis = basis;
  nan_basis[d * d + 2] = kNaN;
  expect_invalid(call(keys, nan_basis), "basis of head 1 holds a non-finite", "NaN basis");
  EXPECT_TRUE(bitwise_equal(share, poison)) << "a refused call wrote share";
  expect_invalid(hattn::loki_captured_variance(TensorView::contiguous(keys.data(), {heads, n, d}),
                                               TensorView::contiguous(basis.data(), {1, d, d}),
                                               TensorView::contiguous(share.data(), {heads, d})),
                 "does not match keys", "basis heads");
  expect_invalid(
      hattn::loki_captured_variance(TensorView::contiguous(keys.data(), {heads * n, 1, d}),
                                    TensorView::contiguous(basis.data(), {heads, d, d}),
                                    TensorView::contiguous(share.data(), {heads, d})),
      "does not match keys", "one key per head");
  expect_invalid(
      hattn::loki_captured_variance(TensorView::contiguous(keys.data(), {heads, n, d}),
                                    TensorView::contiguous(basis.data(), {heads, d, d}),
                                    TensorView::contiguous(share.data(), {heads, d - 1})),
      "share [2, 3] must be [2, 4]", "share shape");
  expect_invalid(hattn::loki_captured_variance(TensorView::contiguous(keys.data(), {heads * n * d}),
                                               TensorView::contiguous(basis.data(), {heads, d, d}),
                                               TensorView::contiguous(share.data(), {heads, d})),
                 "keys must have rank 3", "rank");
  EXPECT_TRUE(bitwise_equal(share, poison)) << "a refused call wrote share";
}

class LokiErrors : public ::testing::Test {
 protected:
  static constexpr int64_t kH = 2, kN = 5, kD = 4;
  void SetUp() override {
    std::mt19937_64 rng = make_rng();
    keys_ = random_floats(rng, kH * kN * kD);
    basis_.assign(kH * kD * kD, kNaN);
    ratio_.assign(kH * kD, kNaN);
  }
  TensorView keys() { return TensorView::contiguous(keys_.data(), {kH, kN, kD}); }
  TensorView basis() { return TensorView::contiguous(basis_.data(), {kH, kD, kD}); }
  TensorView ratio() { return TensorView::contiguous(ratio_.data(), {kH, kD}); }
  Status calibrate(const TensorView& k, const TensorView& b, const TensorView& r,
                   double variance = 0.9) {
    LokiCalibrateOptions opt;
    opt.variance = variance;
    info_.ranks = {42};
    return hattn::loki_calibrate(k, b, r, opt, &info_);
  }
  // Nothing was written by a refused call.
  void expect_untouched() {
    for (float x : basis_) ASSERT_TRUE(std::isnan(x)) << "basis written by a refused call";
    for (float x : ratio_) ASSERT_TRUE(std::isnan(x)) << "variance_ratio written by a refused call";
    EXPECT_TRUE(info_.ranks.empty());
  }
  std::vector<float> keys_, basis_, ratio_;
  LokiCalibration info_;
};

TEST_F(LokiErrors, Calibrate) {
  struct Case {
    std::string what, phrase;
    std::function<Status()> call;
  };
  auto with = [](TensorView t, const std::function<void(TensorView&)>& edit) {
    edit(t);
    return t;
  };
  std::vector<float> bad = keys_;
  bad[(1 * kN + 3) * kD + 2] = kNaN;
  std::vector<float> inf = keys_;
  inf[0] = std::numeric_limits<float>::infinity();
  std::vector<float> equal = keys_;
  for (int64_t r = 1; r < kN; ++r)
    std::copy_n(equal.data() + kN * kD, kD, equal.data() + (kN + r) * kD);
  std::vector<float> big(kH * kN * kD * 2);
  const std::vector<Case> cases = {
      {"null keys", "keys has a null data pointer",
       [&] {
         return calibrate(with(keys(), [](TensorView& t) { t.data = nullptr; }), basis(), ratio());
       }},
      {"null basis", "basis has a null data pointer",
       [&] {
         return calibrate(keys(), with(basis(), [](TensorView& t) { t.data = nullptr; }), ratio());
       }},
      {"null ratio", "variance_ratio has a null data pointer",
       [&] {
         return calibrate(keys(), basis(), with(ratio(), [](TensorView& t) { t.data = nullptr; }));
       }},
      {"rank 2 keys", "keys must have rank 3 [Hkv, N, D] or 4",
       [&] {
         return calibrate(TensorView::contiguous(keys_.data(), {kH * kN, kD}), basis(), ratio());
       }},
      {"rank 4 basis for rank 3 keys", "basis must have rank 3",
       [&] {
         return calibrate(keys(), TensorView::contiguous(basis_.data(), {1, kH, kD, kD}), ratio());
       }},
      {"N = 1", "N >= 2",
       [&] {
         return calibrate(TensorView::contiguous(keys_.data(), {kH, 1, kD}), basis(), ratio());
       }},
      {"D = 0", "D must be >= 1",
       [&] {
         return calibrate(TensorView::contiguous(keys_.data(), {kH, kN, 0}), basis(), ratio());
       }},
      {"NaN key", "keys holds a non-finite value (nan) at [1, 3, 2]",
       [&] {
         return calibrate(TensorView::contiguous(bad.data(), {kH, kN, kD}), basis(), ratio());
       }},
      {"infinite key", "keys holds a non-finite value (inf) at [0, 0, 0]",
       [&] {
         return calibrate(TensorView::contiguous(inf.data(), {kH, kN, kD}), basis(), ratio());
       }},
      {"basis shape", "basis must have shape [2, 4, 4], got [2, 4, 3]",
       [&] {
         return calibrate(keys(), TensorView::contiguous(basis_.data(), {kH, kD, kD - 1}), ratio());
       }},
      {"ratio shape", "variance_ratio must have shape [2, 4], got [1, 4]",
       [&] {
         return calibrate(keys(), basis(), TensorView::contiguous(ratio_.data(), {1, kD}));
       }},
      {"variance 0", "variance must be in (0, 1]",
       [&] { return calibrate(keys(), basis(), ratio(), 0.0); }},
      {"variance 1.5", "variance must be in (0, 1]",
       [&] { return calibrate(keys(), basis(), ratio(), 1.5); }},
      {"variance NaN", "variance must be in (0, 1]",
       [&] { return calibrate(keys(), basis(), ratio(), std::nan("")); }},
      {"keys on cuda", "keys is on device cuda",
       [&] {
         return calibrate(with(keys(), [](TensorView& t) { t.device = Device::cuda; }), basis(),
                          ratio());
       }},
      {"basis on cuda", "basis is on device cuda",
       [&] {
         return calibrate(keys(), with(basis(), [](TensorView& t) { t.device = Device::cuda; }),
                          ratio());
       }},
      {"f16 keys", "keys has dtype f16",
       [&] {
         return calibrate(with(keys(), [](TensorView& t) { t.dtype = DType::f16; }), basis(),
                          ratio());
       }},
      {"bf16 ratio", "variance_ratio has dtype bf16",
       [&] {
         return calibrate(keys(), basis(),
                          with(ratio(), [](TensorView& t) { t.dtype = DType::bf16; }));
       }},
      {"D stride 2", "keys must be contiguous in its last dimension D",
       [&] {
         return calibrate(TensorView::strided(big.data(), {kH, kN, kD}, {kN * kD * 2, kD * 2, 2}),
                          basis(), ratio());
       }},
      {"basis aliases itself", "basis is written but its strides make elements alias",
       [&] {
         return calibrate(keys(), TensorView::strided(basis_.data(), {kH, kD, kD}, {0, kD, 1}),
                          ratio());
       }},
      {"basis over keys", "basis overlaps keys",
       [&] {
         return calibrate(keys(), TensorView::contiguous(keys_.data(), {kH, kD, kD}), ratio());
       }},
      {"ratio over basis", "basis and variance_ratio overlap",
       [&] {
         return calibrate(keys(), basis(), TensorView::contiguous(basis_.data() + 3, {kH, kD}));
       }},
      {"all keys of head 1 equal", "keys of head 1: zero variance",
       [&] {
         return calibrate(TensorView::contiguous(equal.data(), {kH, kN, kD}), basis(), ratio());
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    expect_invalid(c.call(), c.phrase, c.what);
    expect_untouched();
  }
  // The boundary values are accepted.
  EXPECT_TRUE(calibrate(keys(), basis(), ratio(), 1.0).ok());
  EXPECT_TRUE(calibrate(keys(), basis(), ratio(), 1e-9).ok());
}

TEST_F(LokiErrors, CalibrateRank4) {
  std::vector<float> b2(kD * kD * 4), r2(kD * 4);
  const TensorView k4 = TensorView::contiguous(keys_.data(), {2, 1, kN / 2, kD});
  expect_invalid(hattn::loki_calibrate(k4, TensorView::contiguous(b2.data(), {2, kD, kD}),
                                       TensorView::contiguous(r2.data(), {2, 1, kD})),
                 "basis must have rank 4 [2, 1, 4, 4]", "rank 3 basis for rank 4 keys");
  expect_invalid(hattn::loki_calibrate(k4, TensorView::contiguous(b2.data(), {2, 1, kD, kD}),
                                       TensorView::contiguous(r2.data(), {2, 2, kD})),
                 "variance_ratio must have shape [2, 1, 4], got [2, 2, 4]", "rank 4 ratio shape");
  std::vector<float> bad = keys_;
  bad[(1 * 2 + 1) * kD + 3] = kNaN;  // layer 1, head 0, key 1, channel 3
  expect_invalid(hattn::loki_calibrate(TensorView::contiguous(bad.data(), {2, 1, 2, kD}),
                                       TensorView::contiguous(b2.data(), {2, 1, kD, kD}),
                                       TensorView::contiguous(r2.data(), {2, 1, kD})),
                 "at [1, 0, 1, 3]", "rank 4 NaN index");
}

TEST_F(LokiErrors, Rotate) {
  const int64_t b = 2, l = 3;
  std::vector<float> k(b * kH * l * kD, 1.f), out(k.size() + 8), p(kH * kD * kD, 0.f);
  auto kv = [&] { return TensorView::contiguous(k.data(), {b, kH, l, kD}); };
  auto ov = [&] { return TensorView::contiguous(out.data(), {b, kH, l, kD}); };
  auto pv = [&] { return TensorView::contiguous(p.data(), {kH, kD, kD}); };
  auto with = [](TensorView t, const std::function<void(TensorView&)>& edit) {
    edit(t);
    return t;
  };
  struct Case {
    std::string what, phrase;
    Status status;
  };
  const std::vector<Case> cases = {
      {"null keys", "keys has a null data pointer",
       hattn::loki_rotate(with(kv(), [](TensorView& t) { t.data = nullptr; }), pv(), ov())},
      {"null basis", "basis has a null data pointer",
       hattn::loki_rotate(kv(), with(pv(), [](TensorView& t) { t.data = nullptr; }), ov())},
      {"null out", "out has a null data pointer",
       hattn::loki_rotate(kv(), pv(), with(ov(), [](TensorView& t) { t.data = nullptr; }))},
      {"rank 3 keys", "keys must have rank 4 [B, Hkv, L, D]",
       hattn::loki_rotate(TensorView::contiguous(k.data(), {b * kH, l, kD}), pv(), ov())},
      {"rank 4 basis", "basis must have rank 3 [Hkv, D, D]",
       hattn::loki_rotate(kv(), TensorView::contiguous(p.data(), {1, kH, kD, kD}), ov())},
      {"non-square basis", "basis must be square per head",
       hattn::loki_rotate(kv(), TensorView::contiguous(p.data(), {kH, kD, kD - 1}), ov())},
      {"basis heads", "basis must be [Hkv, D, D] = [2, 4, 4] for keys [2, 2, 3, 4], got [1, 4, 4]",
       hattn::loki_rotate(kv(), TensorView::contiguous(p.data(), {1, kD, kD}), ov())},
      {"basis dim", "basis must be [Hkv, D, D] = [2, 4, 4]",
       hattn::loki_rotate(kv(), TensorView::contiguous(p.data(), {kH, 2, 2}), ov())},
      {"out shape", "out must have keys' shape [2, 2, 3, 4], got [2, 2, 2, 4]",
       hattn::loki_rotate(kv(), pv(), TensorView::contiguous(out.data(), {b, kH, 2, kD}))},
      {"out is keys", "out overlaps keys", hattn::loki_rotate(kv(), pv(), kv())},
      {"out over basis", "out overlaps basis",
       hattn::loki_rotate(TensorView::contiguous(k.data(), {1, kH, 2, kD}), pv(),
                          TensorView::contiguous(p.data() + 2, {1, kH, 2, kD}))},
      {"out aliases itself", "out is written but its strides make elements alias",
       hattn::loki_rotate(kv(), pv(),
                          TensorView::strided(out.data(), {b, kH, l, kD}, {0, l * kD, kD, 1}))},
      {"keys on cuda", "keys is on device cuda",
       hattn::loki_rotate(with(kv(), [](TensorView& t) { t.device = Device::cuda; }), pv(), ov())},
      {"f16 out", "out has dtype f16",
       hattn::loki_rotate(kv(), pv(), with(ov(), [](TensorView& t) { t.dtype = DType::f16; }))},
  };
  for (const Case& c : cases) expect_invalid(c.status, c.phrase, c.what);
  EXPECT_TRUE(hattn::loki_rotate(kv(), pv(), ov()).ok());
}

TEST_F(LokiErrors, CheckBasis) {
  std::vector<float> p(kH * kD * kD, 0.f);
  auto pv = [&] { return TensorView::contiguous(p.data(), {kH, kD, kD}); };
  TensorView t = pv();
  t.data = nullptr;
  expect_invalid(hattn::loki_check_basis(t, 1e-5, nullptr), "basis has a null data pointer",
                 "null");
  expect_invalid(
      hattn::loki_check_basis(TensorView::contiguous(p.data(), {kH * kD, kD}), 1e-5, nullptr),
      "basis must have rank 3 [Hkv, D, D] or 4", "rank 2");
  expect_invalid(
      hattn::loki_check_basis(TensorView::contiguous(p.data(), {kH, kD, kD - 1}), 1e-5, nullptr),
      "basis must be square", "non-square");
  expect_invalid(hattn::loki_check_basis(pv(), -1.0, nullptr), "tolerance must be finite and >= 0",
                 "negative tolerance");
  expect_invalid(hattn::loki_check_basis(pv(), std::nan(""), nullptr), "tolerance must be finite",
                 "NaN tolerance");
  t = pv();
  t.device = Device::cuda;
  expect_invalid(hattn::loki_check_basis(t, 1e-5, nullptr), "basis is on device cuda", "cuda");
  t = pv();
  t.dtype = DType::bf16;
  expect_invalid(hattn::loki_check_basis(t, 1e-5, nullptr), "basis has dtype bf16", "bf16");
  // All zeros: P^T P = 0, deviation 1 on the diagonal.
  std::string worst;
  expect_invalid(hattn::loki_check_basis(pv(), 1e-5, &worst), "head 0: max |P^T P - I| = 1",
                 "zero basis");
  EXPECT_EQ(worst, "head 0: max |P^T P - I| = 1");
}

}  // namespace
