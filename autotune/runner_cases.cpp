// hattn-tune-runner's variants: inputs, the call and the oracle of one row (see runner_cases.h).
//
// Every oracle is tests/reference.cpp's, called on a one-row slice: the query row against its
// visible keys (bottom-right causal alignment, GQA by h / group) as a non-causal call, so a check
// costs one row's work rather than the whole tensor's.
#include "runner_cases.h"

#include <algorithm>
#include <cmath>

#include "hattn/kernel_registry.h"
#include "reference.h"
#include "sparsek_sweep.h"

namespace hattn_tune {
namespace {

using IBuf = Halide::Runtime::Buffer<int32_t>;

// A row whose selection boundary (the k-th and (k+1)-th scores, |u - tau|) is closer than
// hattn_test::kMinGap is not compared: about ten times the fp32 error of a 128-term score of
// random inputs. At k = 4096 of 32K keys (Loki decode) about half the rows fall under it, so the
// runner needs only a quarter clear.
bool clear_of_tie(const std::vector<double>& gap) { return gap[0] > hattn_test::kMinGap; }

void fill(Buf& x, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> u(lo, hi);
  x.for_each_value([&](float& v) { v = u(rng); });
}

// The dtype's unit roundoff (half its spacing at 1).
double unit_roundoff(DType t) {
  return t == DType::bf16 ? std::ldexp(1.0, -8) : t == DType::f16 ? std::ldexp(1.0, -11) : 0.0;
}

// `x` as stored in dtype `t`: x's values are rounded to it in place (the oracle reads them), and
// the returned buffer holds their bits, laid out as x (both dense, in the same order). An empty
// buffer for fp32 (x is passed itself).
Halide::Runtime::Buffer<void> stored_as(DType t, Buf& x) {
  if (t == DType::f32) return {};
  const halide_type_t type(t == DType::bf16 ? halide_type_bfloat : halide_type_float, 16);
  std::vector<int> sizes(x.dimensions());
  for (int i = 0; i < x.dimensions(); i++) sizes[i] = x.dim(i).extent();
  Halide::Runtime::Buffer<void> typed(type, sizes);
  auto* bits = static_cast<uint16_t*>(typed.data());
  float* v = x.data();
  for (size_t n = 0; n < x.number_of_elements(); n++) {
    bits[n] = hattn::to_16bit(t, v[n]);
    v[n] = hattn::from_16bit(t, bits[n]);
  }
  return typed;
}

bool is_stored(const Halide::Runtime::Buffer<void>& typed) { return typed.data() != nullptr; }

halide_buffer_t* arg(Buf& x, Halide::Runtime::Buffer<void>& typed) {
  return is_stored(typed) ? typed.raw_buffer() : x.raw_buffer();
}

// The attention variants' common part: q [D, LQ, H, B], k and v [D, LK, HKV, B] (Halide order),
// the output [D, LQ, H, B], the mapping of an output row to its query row and kv head, and the
// rows that see no key (zeros in every variant).
class AttentionCase : public Case {
 public:
  AttentionCase(const Shape& s, std::mt19937& rng)
      : s_(s),
        q_(s.d, s.lq, s.h, s.b),
        k_(s.d, s.lk, s.hkv, s.b),
        v_(s.d, s.lk, s.hkv, s.b),
        out_(s.d, s.lq, s.h, s.b),
        scale_(1.f / std::sqrt(float(s.d))) {
    fill(q_, rng);
    fill(k_, rng);
    fill(v_, rng);
    tq_ = stored_as(s.qo, q_);
    tk_ = stored_as(s.kv, k_);
    tv_ = stored_as(s.kv, v_);
    tout_ = stored_as(s.qo, out_);
  }
  Buf& out() override { return out_; }
  void poison() override {
    out_.fill(NAN);
    if (!is_stored(tout_)) return;
    auto* bits = static_cast<uint16_t*>(tout_.data());
    std::fill(bits, bits + tout_.number_of_elements(), hattn::to_16bit(s_.qo, NAN));
  }
  void finish() override {
    if (!is_stored(tout_)) return;
    const auto* bits = static_cast<const uint16_t*>(tout_.data());
    float* o = out_.data();
    for (size_t n = 0; n < out_.number_of_elements(); n++) o[n] = hattn::from_16bit(s_.qo, bits[n]);
  }
  double tolerance() const override { return 1e-4 + 2 * unit_roundoff(s_.qo); }
  bool reference_row(int64_t r, std::vector<double>* ref) final {
    const Row w = row(r);
    if (w.visible == 0) return ref->assign(s_.d, 0.0), true;
    return reference_visible(w, ref);
  }

 protected:
  struct Row {
    int i, h, b, kvh;
    int visible;  // keys the row sees: a prefix of k and v
    hattn_test::AttnShape shape;
    hattn_test::AttnStrides strides;
    const float *q, *k, *v;
  };

  Row row(int64_t r) const {
    Row w{};
    w.i = static_cast<int>(r % s_.lq);
    w.h = static_cast<int>((r / s_.lq) % s_.h);
    w.b = static_cast<int>(r / (int64_t(s_.lq) * s_.h));
    w.kvh = w.h / (s_.h / s_.hkv);
    w.visible = s_.causal ? std::clamp(w.i + s_.lk - s_.lq + 1, 0, s_.lk) : s_.lk;
    w.shape.lk = std::max(w.visible, 1);
    w.shape.head_dim = s_.d;
    w.strides.q = {0, 0, 0, 1};  // [b, h, l, d] element strides of the one-row slice
    w.strides.k = w.strides.v = {0, 0, k_.dim(1).stride(), 1};
    w.q = &q_(0, w.i, w.h, w.b);
    w.k = &k_(0, 0, w.kvh, w.b);
    w.v = &v_(0, 0, w.kvh, w.b);
    return w;
  }

  // The oracle of a row that sees at least one key.
  virtual bool reference_visible(const Row& w, std::vector<double>* ref) = 0;

  // The kernel's arguments: the 16-bit copies where the dtype is 16-bit, else the fp32 buffers.
  halide_buffer_t* q() { return arg(q_, tq_); }
  halide_buffer_t* k() { return arg(k_, tk_); }
  halide_buffer_t* v() { return arg(v_, tv_); }
  halide_buffer_t* o() { return arg(out_, tout_); }

  Shape s_;
  Buf q_, k_, v_, out_;
  Halide::Runtime::Buffer<void> tq_, tk_, tv_, tout_;  // stored_as: undefined for fp32
  float scale_;
};

class DenseCase : public AttentionCase {
 public:
  using AttentionCase::AttentionCase;
  int call(void* fn) override {
    return reinterpret_cast<hattn_dense_fn>(fn)(nullptr, q(), k(), v(), scale_, s_.knob, o(), lse_);
  }
  bool reference_visible(const Row& w, std::vector<double>* ref) override {
    hattn_test::reference_attention(w.q, w.k, w.v, w.shape, w.strides, false, scale_, ref, nullptr);
    return true;
  }

 private:
  Buf lse_{s_.lq, s_.h, s_.b};
};

class TopkCase : public AttentionCase {
 public:
  using AttentionCase::AttentionCase;
  int call(void* fn) override {
    return reinterpret_cast<hattn_topk_fn>(fn)(nullptr, q(), k(), v(), scale_, s_.knob, o());
  }
  bool reference_visible(const Row& w, std::vector<double>* ref) override {
    std::vector<double> gap;
    hattn_test::reference_topk_attention(w.q, w.k, w.v, w.shape, w.strides, false, scale_, s_.knob,
                                         ref, &gap);
    return clear_of_tie(gap);
  }
};

// Loki: k is taken as already rotated; each kv head's basis is a Householder reflection
// I - 2 u u^T / |u|^2 (orthonormal and dense, so no channel of q passes through unmixed);
// k_lead holds k's first `rank` channels, as the runtime's cache keeps them.
class LokiCase : public AttentionCase {
 public:
  LokiCase(const Shape& s, std::mt19937& rng)
      : AttentionCase(s, rng),
        rank_(s.knob2),
        k_lead_(rank_, s.lk, s.hkv, s.b),
        basis_(s.d, s.d, s.hkv) {
    k_lead_.for_each_element(
        [&](int c, int j, int h, int b) { k_lead_(c, j, h, b) = k_(c, j, h, b); });
    std::normal_distribution<double> n(0.0, 1.0);
    for (int h = 0; h < s.hkv; h++) {
      std::vector<double> u(s.d);
      double norm2 = 0;
      for (double& x : u) {
        x = n(rng);
        norm2 += x * x;
      }
      for (int e = 0; e < s.d; e++) {
        for (int c = 0; c < s.d; c++) {
          basis_(c, e, h) = static_cast<float>((e == c ? 1.0 : 0.0) - 2 * u[e] * u[c] / norm2);
        }
      }
    }
  }
  int call(void* fn) override {
    return reinterpret_cast<hattn_loki_fn>(fn)(nullptr, q_, k_, k_lead_, v_, basis_, scale_, rank_,
                                               s_.knob, out_);
  }
  bool reference_visible(const Row& w, std::vector<double>* ref) override {
    std::vector<double> gap;
    hattn_test::reference_loki_attention(w.q, w.k, w.v, &basis_(0, 0, w.kvh), w.shape, w.strides,
                                         false, scale_, rank_, s_.knob, ref, &gap);
    return clear_of_tie(gap);
  }

 private:
  int rank_;
  Buf k_lead_, basis_;
};

// SPARSEK: scores u drawn from [0, 8) (a spread that leaves free and saturated keys); each row's
// selection comes from the runtime's sweep (runtime/src/sparsek_sweep.cpp), as a prefill call
// makes it, and the oracle recomputes the selection from u itself.
class SparsekCase : public AttentionCase {
 public:
  SparsekCase(const Shape& s, std::mt19937& rng)
      : AttentionCase(s, rng),
        slots_(std::max(1, std::min(s.knob, s.lk))),
        u_(s.lk, s.hkv, s.b),
        index_(slots_, s.lq, s.hkv, s.b),
        gate_(slots_, s.lq, s.hkv, s.b),
        count_(s.lq, s.hkv, s.b) {
    fill(u_, rng, 0.f, 8.f);
    index_.fill(0);
    gate_.fill(0.f);
    for (int b = 0; b < s.b; b++) {
      for (int h = 0; h < s.hkv; h++) {
        hattn::SparsekSweep sweep(std::min(s.knob, s.lk));
        int pushed = 0;
        for (int i = 0; i < s.lq; i++) {
          const int candidates = std::min(s.lk, i + (s.lk - s.lq) - s.knob2 + 1);
          for (; pushed < candidates; pushed++) sweep.push(u_(pushed, h, b), pushed);
          count_(i, h, b) = sweep.select(&index_(0, i, h, b), &gate_(0, i, h, b), false);
        }
      }
    }
  }
  int call(void* fn) override {
    return reinterpret_cast<hattn_sparsek_fn>(fn)(nullptr, q_, k_, v_, index_, gate_, count_,
                                                  scale_, s_.knob2, s_.lk - s_.lq, 0, 0, out_);
  }
  bool reference_visible(const Row& w, std::vector<double>* ref) override {
    std::vector<double> gap;  // causal: w's keys are the prefix up to the row's position
    hattn_test::reference_sparsek_attention(w.q, w.k, w.v, &u_(0, w.kvh, w.b), w.shape, s_.knob,
                                            s_.knob2, false, scale_, ref, &gap);
    return clear_of_tie(gap);
  }

 private:
  int slots_;
  Buf u_;
  IBuf index_;
  Buf gate_;
  IBuf count_;
};

// The top-k FFN: x [T, D], w1 and w2t [d_ff, D]; an output row is a token.
class TopkFfnCase : public Case {
 public:
  TopkFfnCase(const Shape& s, std::mt19937& rng)
      : s_(s), x_(s.d, s.lq), w1_(s.d, s.lk), w2t_(s.d, s.lk), y_(s.d, s.lq) {
    fill(x_, rng);
    fill(w1_, rng);
    fill(w2t_, rng);
  }
  Buf& out() override { return y_; }
  int call(void* fn) override {
    return reinterpret_cast<hattn_topk_ffn_fn>(fn)(nullptr, x_, w1_, w2t_, s_.knob, y_);
  }
  bool reference_row(int64_t r, std::vector<double>* ref) override {
    std::vector<double> gap;
    hattn_test::reference_topk_ffn(&x_(0, static_cast<int>(r)), w1_.data(), w2t_.data(), 1, s_.d,
                                   s_.lk, s_.knob, ref, &gap);
    return clear_of_tie(gap);
  }

 private:
  Shape s_;
  Buf x_, w1_, w2t_, y_;
};

// EL-attention: x [B * beam, T, Dm] and hidden states Hs [B, N, Dm]; the candidate takes the
// scaled query q = s x (the Q projection happens before it) and returns concat_h(o_h) before
// Wo, so the oracle is tests/reference.cpp's standard multi-head attention with Wq = Wo = I and
// bq = bo = 0. Its bk is random: EL drops it (a per-row constant under softmax), and the oracle,
// which adds it, checks that this is lossless. An output row is a (row, token); the oracle
// computes a sample's rows at once (its K and V projections are the cost) and keeps them.
class ElCase : public Case {
 public:
  ElCase(const Shape& s, std::mt19937& rng)
      : s_(s),
        scale_(1.f / std::sqrt(float(s.d / s.h))),
        x_(s.d, s.lq, s.b * s.knob),
        q_(s.d, s.lq, s.b * s.knob),
        hs_(s.d, s.lk, s.b),
        wk_(s.d, s.d),
        wv_(s.d, s.d),
        bv_(s.d),
        out_(s.d, s.lq, s.b * s.knob),
        lengths_(s.b),
        ref_(s.b) {
    fill(x_, rng);
    fill(hs_, rng);
    const float w = 1.f / std::sqrt(float(s.d));  // keeps k and v of order 1
    fill(wk_, rng, -w, w);
    fill(wv_, rng, -w, w);
    fill(bv_, rng);
    q_.for_each_element([&](int m, int t, int r) { q_(m, t, r) = scale_ * x_(m, t, r); });
    for (int b = 0; b < s.b; b++) lengths_(b) = std::max(1, s.lk - b);  // not all full
    weights_.dm = s.d;
    weights_.wq.assign(size_t(s.d) * s.d, 0.f);
    weights_.wo = weights_.wq;
    for (int m = 0; m < s.d; m++)
      weights_.wq[size_t(m) * s.d + m] = weights_.wo[size_t(m) * s.d + m] = 1.f;
    weights_.bq.assign(s.d, 0.f);
    weights_.bo = weights_.bq;
    weights_.bk.resize(s.d);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& x : weights_.bk) x = u(rng);
    weights_.wk.assign(wk_.data(), wk_.data() + wk_.number_of_elements());
    weights_.wv.assign(wv_.data(), wv_.data() + wv_.number_of_elements());
    weights_.bv.assign(bv_.data(), bv_.data() + bv_.number_of_elements());
  }
  Buf& out() override { return out_; }
  int call(void* fn) override {
    return reinterpret_cast<hattn_el_fn>(fn)(nullptr, q_, hs_, wk_, wv_, bv_, lengths_, s_.h,
                                             s_.knob, s_.causal, out_);
  }
  bool reference_row(int64_t r, std::vector<double>* ref) override {
    const int64_t per_sample = int64_t(s_.knob) * s_.lq;  // rows of one sample: beam x T
    const int b = static_cast<int>(r / per_sample);
    std::vector<float>& y = ref_[b];
    if (y.empty()) {
      y.resize(size_t(per_sample) * s_.d);
      hattn_test::reference_mha(&x_(0, 0, b * s_.knob), &hs_(0, 0, b), weights_, s_.knob, s_.lq,
                                s_.lk, s_.h, s_.knob, s_.causal, &lengths_(b), scale_, y.data());
    }
    const float* row = y.data() + (r % per_sample) * s_.d;
    ref->assign(row, row + s_.d);
    return true;
  }

 private:
  Shape s_;
  float scale_;
  Buf x_, q_, hs_, wk_, wv_, bv_, out_;
  IBuf lengths_;
  hattn_test::MhaHostWeights weights_;
  std::vector<std::vector<float>> ref_;  // per sample, computed on first use
};

// The linear layer y = scale * (x W^T + bias): x [rows, in], W [out, in]; an output row is an
// input row's outputs.
class LinearCase : public Case {
 public:
  LinearCase(const Shape& s, std::mt19937& rng)
      : s_(s), x_(s.d, s.lq), w_(s.d, s.lk), bias_(s.lk), y_(s.lk, s.lq) {
    fill(x_, rng);
    const float w = 1.f / std::sqrt(float(s.d));  // outputs of order 1
    fill(w_, rng, -w, w);
    fill(bias_, rng);
  }
  Buf& out() override { return y_; }
  int call(void* fn) override {
    return reinterpret_cast<hattn_linear_fn>(fn)(nullptr, x_, w_, bias_, kScale, y_);
  }
  bool reference_row(int64_t r, std::vector<double>* ref) override {
    hattn_test::reference_linear_row(&x_(0, static_cast<int>(r)), w_.data(), bias_.data(), s_.d,
                                     s_.lk, kScale, ref);
    return true;
  }

 private:
  static constexpr float kScale = 0.125f;  // not 1, so a kernel that drops it is wrong
  Shape s_;
  Buf x_, w_, bias_, y_;
};

// The SparseK operator on rows of scores z [rows, m] drawn from [0, 8), each row with its own
// valid length in [m/2, m] (row 0 full): mask = clip(z - tau, 0, 1) on the first len columns, 0
// past them. The mask is continuous in tau, so no row sits at a decision boundary.
class SparsekMaskCase : public Case {
 public:
  SparsekMaskCase(const Shape& s, std::mt19937& rng)
      : s_(s), z_(s.lk, s.lq), len_(s.lq), mask_(s.lk, s.lq), tau_(s.lq) {
    fill(z_, rng, 0.f, 8.f);
    std::uniform_int_distribution<int> len(s.lk / 2, s.lk);
    for (int r = 0; r < s.lq; r++) len_(r) = r == 0 ? s.lk : len(rng);
  }
  Buf& out() override { return mask_; }
  int call(void* fn) override {
    return reinterpret_cast<hattn_sparsek_mask_fn>(fn)(nullptr, z_, len_, s_.knob, mask_, tau_);
  }
  bool reference_row(int64_t r, std::vector<double>* ref) override {
    const int row = static_cast<int>(r), n = len_(row);
    std::vector<double> z(&z_(0, row), &z_(0, row) + n);
    const double tau = hattn_test::reference_sparsek_tau(z, n, s_.knob);
    ref->assign(s_.lk, 0.0);
    for (int j = 0; j < n; j++) (*ref)[j] = std::clamp(z[j] - tau, 0.0, 1.0);
    return true;
  }

 private:
  Shape s_;
  Buf z_;
  IBuf len_;
  Buf mask_, tau_;
};

}  // namespace

bool parse_variant(const std::string& text, std::string* variant, Shape* s, std::string* why) {
  const size_t dot = text.find('.');
  *variant = text.substr(0, dot);
  if (dot == std::string::npos) return true;
  const std::string dtype = text.substr(dot + 1);
  const bool kv_only = dtype.size() > 2 && dtype.compare(dtype.size() - 2, 2, "kv") == 0;
  const std::string base = kv_only ? dtype.substr(0, dtype.size() - 2) : dtype;
  if (base != "bf16" && base != "f16") {
    *why = "VARIANT's dtype must be bf16, f16, bf16kv or f16kv, got '" + dtype + "'";
    return false;
  }
  s->kv = base == "bf16" ? DType::bf16 : DType::f16;
  s->qo = kv_only ? DType::f32 : s->kv;
  return true;
}

std::unique_ptr<Case> make_case(const std::string& variant, const Shape& s, std::mt19937& rng,
                                std::string* why) {
  const bool kv_only = s.qo == DType::f32 && s.kv != DType::f32;
  if (variant == "dense") return std::make_unique<DenseCase>(s, rng);
  if (kv_only) {
    *why = variant + ": a 16-bit cache with fp32 q and out (bf16kv, f16kv) is dense's alone";
    return nullptr;
  }
  if (variant == "topk") return std::make_unique<TopkCase>(s, rng);
  if (s.qo != DType::f32) {
    *why = "the runner times 16-bit kernels of dense and topk only, not " + variant;
    return nullptr;
  }
  if (variant == "loki") {
    if (s.knob2 < 1 || s.knob2 > s.d) *why = "loki: KNOB is k/rank with 1 <= rank <= D";
    return why->empty() ? std::make_unique<LokiCase>(s, rng) : nullptr;
  }
  if (variant == "sparsek") {
    if (!s.causal || s.lq > s.lk || s.knob2 < 0) {
      *why = "sparsek: causal only, LQ <= LK, KNOB is k/window with window >= 0";
    }
    return why->empty() ? std::make_unique<SparsekCase>(s, rng) : nullptr;
  }
  if (variant == "topk_ffn") {
    if (s.b != 1 || s.h != 1 || s.hkv != 1) *why = "topk_ffn: B, H and HKV must be 1";
    return why->empty() ? std::make_unique<TopkFfnCase>(s, rng) : nullptr;
  }
  if (variant == "el") {
    if (s.hkv != 1 || s.d % 16 != 0 || s.d % s.h != 0) {
      *why = "el: D (model dim) a multiple of 16 and of H (heads), HKV 1, KNOB the beam";
    }
    return why->empty() ? std::make_unique<ElCase>(s, rng) : nullptr;
  }
  if (variant == "linear") {
    if (s.b != 1 || s.h != 1 || s.hkv != 1 || s.d % 16 != 0) {
      *why = "linear: D (input features) a multiple of 16, B, H and HKV 1";
    }
    return why->empty() ? std::make_unique<LinearCase>(s, rng) : nullptr;
  }
  if (variant == "sparsek_mask") {
    if (s.b != 1 || s.h != 1 || s.hkv != 1) *why = "sparsek_mask: B, H and HKV must be 1";
    return why->empty() ? std::make_unique<SparsekMaskCase>(s, rng) : nullptr;
  }
  *why = "VARIANT must be dense, topk, loki, sparsek, topk_ffn, el, linear or sparsek_mask, got " +
         variant;
  return nullptr;
}

}  // namespace hattn_tune
