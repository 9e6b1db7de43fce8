#include "test_support.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <vector>

#include "dispatch.h"  // runtime/src: isa_limit_refusals()

namespace hattn_test {
namespace {

// Logical elements of outputs are poisoned with this NaN, padding with the other one.
constexpr uint32_t kPoisonBits = 0x7fc0deadu;
constexpr uint32_t kPaddingBits = 0xffc0beefu;

float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string current_test_name() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info == nullptr) return "(no test)";
  return std::string(info->test_suite_name()) + "." + info->name();
}

std::string format_double(double x) {
  std::ostringstream o;
  o << std::setprecision(9) << x;
  return o.str();
}

// --- ISA restriction (HATTN_TEST_ISA) ---------------------------------------------------------

struct IsaSetting {
  std::string name = "native";
  std::string error;
};

// The runtime's own cap (hattn::limit_isa), installed before any kernel runs.
IsaSetting install_isa_restriction() {
  IsaSetting s;
  const char* env = std::getenv("HATTN_TEST_ISA");
  const std::string want = env == nullptr ? "" : env;
  if (want.empty() || want == "native") return s;
  const hattn::Status st = hattn::limit_isa(want);
  if (!st.ok()) {
    s.error = "HATTN_TEST_ISA: " + st.message;
    std::cerr << s.error << std::endl;
    return s;
  }
  s.name = want;
  std::cout << "[   ISA    ] HATTN_TEST_ISA=" << want << ": builds above " << want << " disabled"
            << std::endl;
  return s;
}

// Installed during static initialization, before any test (or kernel call) runs.
const IsaSetting g_isa = install_isa_restriction();

}  // namespace

std::string isa_restriction() { return g_isa.name; }
std::string isa_restriction_error() { return g_isa.error; }
int64_t isa_refusals() { return hattn::isa_limit_refusals(); }

std::string compare_16bit_rows(hattn::DType t, const std::vector<uint16_t>& got,
                               const std::vector<double>& ref, const std::vector<double>& gap,
                               int64_t row_len, int* left_out) {
  std::ostringstream e;
  int bad = 0;
  *left_out = 0;
  const int64_t rows = static_cast<int64_t>(ref.size()) / row_len;
  for (int64_t r = 0; r < rows; ++r) {
    if (gap[static_cast<size_t>(r)] < kMinGap) {
      ++*left_out;
      continue;
    }
    for (int64_t x = 0; x < row_len; ++x) {
      const size_t i = static_cast<size_t>(r * row_len + x);
      const double have = ref_from_16bit(t, got[i]);
      const double tol = sixteen_bit_output_tolerance(t, ref[i]);
      if (!(std::fabs(have - ref[i]) <= tol) && bad++ < 5) {
        e << "\n  row " << r << " [" << x << "]: got " << have << ", want " << ref[i]
          << " (tolerance " << tol << ")";
      }
    }
  }
  if (bad > 0) e << "\n  " << bad << " elements differ";
  if (*left_out > 1 + rows / 20) {
    e << "\n  " << *left_out << " of " << rows << " rows had near-tied k-th scores: the test "
      << "would check too little";
  }
  return e.str();
}

std::vector<std::string> sixteen_bit_kernels_not_run(const std::string& variant,
                                                     const std::set<std::string>& used) {
  std::vector<std::string> missing;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.variant == variant && k.family != "cuda" && (k.dtype == "bf16" || k.dtype == "f16") &&
        used.count(k.name) == 0) {
      missing.push_back(k.name);
    }
  }
  return missing;
}

double sixteen_bit_output_tolerance(hattn::DType t, double ref) {
  const double half_ulp = t == hattn::DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  return half_ulp * std::fabs(ref) + 2e-5 * (1 + std::fabs(ref));
}

double sixteen_bit_tolerance(hattn::DType t, double ref, double ref_abs) {
  const double p_rounding = t == hattn::DType::bf16 ? std::ldexp(1.0, -8) : 0.0;
  return sixteen_bit_output_tolerance(t, ref) + p_rounding * ref_abs;
}

bool verbose() {
  const char* env = std::getenv("HATTN_TEST_VERBOSE");
  return env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
}

uint64_t base_seed() {
  const char* env = std::getenv("HATTN_SEED");
  if (env == nullptr || env[0] == '\0') return kDefaultSeed;
  char* end = nullptr;
  unsigned long long v = std::strtoull(env, &end, 0);
  if (end == env || *end != '\0') {
    std::cerr << "HATTN_SEED='" << env << "' is not an integer; using " << kDefaultSeed << "\n";
    return kDefaultSeed;
  }
  return static_cast<uint64_t>(v);
}

TestRng::TestRng(const std::string& label) {
  const uint64_t base = base_seed();
  const std::string test = current_test_name();
  seed_ = splitmix64(base ^ fnv1a(test + "/" + label));
  engine_.seed(seed_);
  std::ostringstream o;
  o << "HATTN_SEED=" << base << " test=" << test << " label=" << (label.empty() ? "-" : label)
    << " seed=" << seed_;
  if (g_isa.name != "native") o << " HATTN_TEST_ISA=" << g_isa.name;
  description_ = o.str();
  std::cout << "[   SEED   ] " << description_ << std::endl;
}

float TestRng::normal(float stddev) {
  std::normal_distribution<float> dist(0.f, stddev);
  return dist(engine_);
}

float TestRng::uniform(float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  return dist(engine_);
}

int64_t TestRng::uniform_int(int64_t lo, int64_t hi) {
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  return dist(engine_);
}

const char* to_string(Layout layout) {
  switch (layout) {
    case Layout::kContiguous:
      return "contiguous";
    case Layout::kPadded:
      return "padded";
    case Layout::kBLHD:
      return "BLHD";
    case Layout::kHBLD:
      return "HBLD";
  }
  return "?";
}

HostTensor::HostTensor(const std::vector<int64_t>& shape, Layout layout)
    : shape_(shape), layout_(layout) {
  const int r = rank();
  if (r != 3 && r != 4) {
    std::cerr << "HostTensor: rank must be 3 or 4\n";
    std::abort();
  }
  strides_.assign(static_cast<size_t>(r), 1);
  int64_t size = 0;  // buffer elements
  if (r == 3 && (layout == Layout::kBLHD || layout == Layout::kHBLD)) layout_ = Layout::kPadded;
  const int64_t n0 = shape_[0], n1 = shape_[1], n2 = shape_[2], n3 = r == 4 ? shape_[3] : 1;
  switch (layout_) {
    case Layout::kContiguous: {
      int64_t s = 1;
      for (int i = r - 1; i >= 0; --i) {
        strides_[static_cast<size_t>(i)] = s;
        s *= shape_[static_cast<size_t>(i)];
      }
      offset_ = 0;
      size = s;
      break;
    }
    case Layout::kPadded: {
      // Innermost stride 1; every outer stride padded by a few (odd) elements.
      const int64_t inner = r == 4 ? n3 : n2;
      const int64_t s_row = inner + 3;
      if (r == 4) {
        strides_ = {0, 0, s_row, 1};
        strides_[1] = n2 * s_row + 5;
        strides_[0] = n1 * strides_[1] + 7;
      } else {
        strides_ = {0, inner + 3, 1};
        strides_[0] = n1 * strides_[1] + 5;
      }
      offset_ = 13;
      int64_t last = 0;
      for (int i = 0; i < r; ++i) {
        last += (shape_[static_cast<size_t>(i)] - 1) * strides_[static_cast<size_t>(i)];
      }
      size = offset_ + last + 1 + 9;
      break;
    }
    case Layout::kBLHD: {
      // Buffer [B, L, H + 2, D]; the view is heads 1 .. H.
      const int64_t h_total = n1 + 2;
      strides_ = {n2 * h_total * n3, n3, h_total * n3, 1};
      offset_ = n3;
      size = n0 * n2 * h_total * n3;
      break;
    }
    case Layout::kHBLD: {
      strides_ = {n2 * n3, n0 * n2 * n3, n3, 1};
      offset_ = 0;
      size = n0 * n1 * n2 * n3;
      break;
    }
  }
  buffer_.assign(static_cast<size_t>(size), float_from_bits(kPaddingBits));
  in_view_.assign(static_cast<size_t>(size), 0);
  const int64_t n = numel();
  for (int64_t f = 0; f < n; ++f) {
    const int64_t off = offset_ + offset_of_flat(f);
    if (off < 0 || off >= size || in_view_[static_cast<size_t>(off)]) {
      std::cerr << "HostTensor: bad layout " << describe() << "\n";
      std::abort();
    }
    in_view_[static_cast<size_t>(off)] = 1;
  }
  poison();
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

hattn::TensorView HostTensor::view() const {
  return hattn::TensorView::strided(const_cast<float*>(data()), shape_, strides_);
}

std::array<int64_t, 4> HostTensor::strides4() const {
  std::array<int64_t, 4> s{1, 1, 1, 1};
  for (int i = 0; i < rank() && i < 4; ++i)
    s[static_cast<size_t>(i)] = strides_[static_cast<size_t>(i)];
  return s;
}

int64_t HostTensor::offset_of_flat(int64_t flat) const {
  int64_t off = 0;
  for (int i = rank() - 1; i >= 0; --i) {
    const int64_t n = shape_[static_cast<size_t>(i)];
    off += (flat % n) * strides_[static_cast<size_t>(i)];
    flat /= n;
  }
  return off;
}

std::vector<int64_t> HostTensor::index_of_flat(int64_t flat) const {
  std::vector<int64_t> idx(shape_.size());
  for (int i = rank() - 1; i >= 0; --i) {
    const int64_t n = shape_[static_cast<size_t>(i)];
    idx[static_cast<size_t>(i)] = flat % n;
    flat /= n;
  }
  return idx;
}

void HostTensor::fill_normal(TestRng& rng, float stddev) {
  const int64_t n = numel();
  for (int64_t f = 0; f < n; ++f) at_flat(f) = rng.normal(stddev);
}

void HostTensor::poison() { fill(float_from_bits(kPoisonBits)); }

void HostTensor::fill(float value) {
  const int64_t n = numel();
  for (int64_t f = 0; f < n; ++f) at_flat(f) = value;
}

void HostTensor::snapshot() { snapshot_ = buffer_; }

std::string HostTensor::changed_since_snapshot(bool padding_only) const {
  if (snapshot_.size() != buffer_.size()) return "no snapshot was taken";
  int64_t changed = 0, first = -1;
  for (size_t i = 0; i < buffer_.size(); ++i) {
    if (padding_only && in_view_[i]) continue;
    if (bits_of(buffer_[i]) != bits_of(snapshot_[i])) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++changed;
    }
  }
  if (changed == 0) return "";
  std::ostringstream o;
  o << changed << (padding_only ? " padding" : "") << " element(s) of the buffer changed, first at "
    << "buffer offset " << first << " (view starts at " << offset_ << "; "
    << (in_view_[static_cast<size_t>(first)] ? "inside" : "outside") << " the view): was "
    << snapshot_[static_cast<size_t>(first)] << ", now " << buffer_[static_cast<size_t>(first)];
  return o.str();
}

std::vector<float> HostTensor::to_dense() const {
  std::vector<float> d(static_cast<size_t>(numel()));
  for (int64_t f = 0; f < numel(); ++f) d[static_cast<size_t>(f)] = at_flat(f);
  return d;
}

std::string index_string(const std::vector<int64_t>& index) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < index.size(); ++i) o << (i ? ", " : "") << index[i];
  o << "]";
  return o.str();
}

std::string HostTensor::describe() const {
  std::ostringstream o;
  o << index_string(shape_) << " " << to_string(layout_) << " strides " << index_string(strides_);
  return o.str();
}

std::string compare_to_reference(const HostTensor& got, const std::vector<double>& ref,
                                 const Tolerance& tol, const std::string& what,
                                 double* max_abs_error) {
  const int64_t n = got.numel();
  if (static_cast<int64_t>(ref.size()) != n) {
    return what + ": reference has " + std::to_string(ref.size()) + " elements, result " +
           std::to_string(n);
  }
  int64_t bad = 0, worst = -1, max_at = -1;
  double worst_ratio = 0.0, max_err = 0.0;
  for (int64_t f = 0; f < n; ++f) {
    const double g = got.at_flat(f);
    const double r = ref[static_cast<size_t>(f)];
    double ratio;
    if (!std::isfinite(r)) {
      ratio = (g == r) ? 0.0 : std::numeric_limits<double>::infinity();
    } else if (!std::isfinite(g)) {
      ratio = std::numeric_limits<double>::infinity();
    } else {
      const double err = std::fabs(g - r);
      if (err > max_err || max_at < 0) {
        max_err = err;
        max_at = f;
      }
      ratio = err / (tol.atol + tol.rtol * std::fabs(r));
    }
    if (ratio > 1.0) ++bad;
    if (ratio > worst_ratio || worst < 0) {
      worst_ratio = ratio;
      worst = f;
    }
  }
  if (max_abs_error != nullptr) *max_abs_error = max_err;
  if (bad == 0) return "";
  std::ostringstream o;
  o << what << " " << got.describe() << ": " << bad << " of " << n
    << " elements outside |got - ref| <= " << tol.atol << " + " << tol.rtol << " * |ref|";
  const double g = got.at_flat(worst), r = ref[static_cast<size_t>(worst)];
  o << "; worst at " << index_string(got.index_of_flat(worst)) << ": got " << format_double(g)
    << ", ref " << format_double(r) << ", |err| " << format_double(std::fabs(g - r));
  if (max_at >= 0) {
    o << "; max finite |err| " << format_double(max_err) << " at "
      << index_string(got.index_of_flat(max_at));
  }
  return o.str();
}

std::string compare_bitwise(const HostTensor& a, const HostTensor& b, const std::string& what) {
  if (a.shape() != b.shape()) return what + ": shapes differ";
  int64_t bad = 0, first = -1;
  for (int64_t f = 0; f < a.numel(); ++f) {
    if (bits_of(a.at_flat(f)) != bits_of(b.at_flat(f))) {
      if (first < 0) first = f;
      ++bad;
    }
  }
  if (bad == 0) return "";
  std::ostringstream o;
  o << what << ": " << bad << " of " << a.numel() << " elements differ bitwise; first at "
    << index_string(a.index_of_flat(first)) << ": " << format_double(a.at_flat(first)) << " vs "
    << format_double(b.at_flat(first));
  return o.str();
}

std::string describe_shape(const AttnShape& s) {
  std::ostringstream o;
  o << "B=" << s.batch << " Hq=" << s.q_heads << " Hkv=" << s.kv_heads << " Lq=" << s.lq
    << " Lk=" << s.lk << " D=" << s.head_dim;
  return o.str();
}

std::string DenseCase::describe() const {
  std::ostringstream o;
  o << (name.empty() ? "case" : name) << ": " << describe_shape(shape)
    << (causal ? " causal" : " non-causal");
  if (has_scale) o << " scale=" << format_double(scale);
  o << " layouts q=" << to_string(q_layout) << " k=" << to_string(k_layout)
    << " v=" << to_string(v_layout) << " out=" << to_string(out_layout);
  if (with_lse) o << " lse=" << to_string(lse_layout);
  if (!kernel.empty()) o << " kernel=" << kernel;
  if (decode_splits != 0) o << " decode_splits=" << decode_splits;
  if (input_stddev != 1.f) o << " input_stddev=" << input_stddev;
  return o.str();
}

void PrintTo(const DenseCase& c, std::ostream* os) { *os << c.describe(); }

void recompute_reference(DenseProblem* p) {
  AttnStrides strides{p->q.strides4(), p->k.strides4(), p->v.strides4()};
  reference_attention(p->q.data(), p->k.data(), p->v.data(), p->c.shape, strides, p->c.causal,
                      p->scale, &p->ref_out, &p->ref_lse);
}

DenseProblem make_problem(const DenseCase& c, TestRng& rng) {
  DenseProblem p;
  p.c = c;
  const AttnShape& s = c.shape;
  p.q = HostTensor({s.batch, s.q_heads, s.lq, s.head_dim}, c.q_layout);
  p.k = HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, c.k_layout);
  p.v = HostTensor({s.batch, s.kv_heads, s.lk, s.head_dim}, c.v_layout);
  p.q.fill_normal(rng, c.input_stddev);
  p.k.fill_normal(rng, c.input_stddev);
  p.v.fill_normal(rng, c.input_stddev);
  p.q.snapshot();
  p.k.snapshot();
  p.v.snapshot();
  // The library computes the default scale in fp32; use the same float so only the attention
  // itself is compared.
  p.scale = c.has_scale ? static_cast<double>(c.scale)
                        : static_cast<double>(1.f / std::sqrt(static_cast<float>(s.head_dim)));
  recompute_reference(&p);
  return p;
}

hattn::AttentionOptions options_for(const DenseCase& c, const hattn::TensorView* lse) {
  hattn::AttentionOptions o;
  o.causal = c.causal;
  o.has_scale = c.has_scale;
  o.scale = c.scale;
  o.lse = lse;
  o.kernel = c.kernel;
  o.decode_splits = c.decode_splits;
  return o;
}

RunOutput run_attention(const DenseProblem& p) { return run_attention(p, p.c); }

namespace {
AttentionRunner& runner() {
  static AttentionRunner r;
  return r;
}
}  // namespace

void set_attention_runner(AttentionRunner r) { runner() = std::move(r); }

namespace {
hattn::Status call_attention(const hattn::TensorView& q, const hattn::TensorView& k,
                             const hattn::TensorView& v, const hattn::TensorView& out,
                             const hattn::AttentionOptions& options, hattn::Dispatch* chosen) {
  return runner() ? runner()(q, k, v, out, options, chosen)
                  : hattn::attention(q, k, v, out, options, chosen);
}
}  // namespace

RunOutput run_attention(const DenseProblem& p, const DenseCase& c) {
  RunOutput r;
  const AttnShape& s = p.c.shape;
  r.out = HostTensor({s.batch, s.q_heads, s.lq, s.head_dim}, c.out_layout);
  r.out.snapshot();
  hattn::TensorView lse_view;
  if (c.with_lse) {
    r.lse = HostTensor({s.batch, s.q_heads, s.lq}, c.lse_layout);
    r.lse.snapshot();
    lse_view = r.lse.view();
  }
  const hattn::AttentionOptions options = options_for(c, c.with_lse ? &lse_view : nullptr);
  r.status = call_attention(p.q.view(), p.k.view(), p.v.view(), r.out.view(), options, &r.dispatch);
  std::string problems;
  const HostTensor* inputs[] = {&p.q, &p.k, &p.v};
  const char* names[] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    std::string m = inputs[i]->changed_since_snapshot(false);
    if (!m.empty()) problems += std::string("\ninput ") + names[i] + " was modified: " + m;
  }
  std::string m = r.out.changed_since_snapshot(true);
  if (!m.empty()) problems += "\nout padding was written: " + m;
  if (c.with_lse) {
    m = r.lse.changed_since_snapshot(true);
    if (!m.empty()) problems += "\nlse padding was written: " + m;
  }
  r.problems = problems;
  return r;
}

std::string run_and_check(const DenseProblem& p, hattn::Dispatch* dispatch) {
  return run_and_check(p, p.c, dispatch);
}

std::string run_and_check(const DenseProblem& p, const DenseCase& c, hattn::Dispatch* dispatch) {
  RunOutput r = run_attention(p, c);
  if (dispatch != nullptr) *dispatch = r.dispatch;
  const std::string where =
      c.describe() + " [kernel " + r.dispatch.kernel +
      (r.dispatch.decode_splits > 1 ? ", splits " + std::to_string(r.dispatch.decode_splits)
                                    : std::string()) +
      "]";
  if (!r.status.ok()) {
    return where + ": attention returned " + hattn::to_string(r.status.code) + ": " +
           r.status.message;
  }
  std::string msg = r.problems;
  double err_out = 0.0, err_lse = 0.0;
  std::string m = compare_to_reference(r.out, p.ref_out, c.tol, "out", &err_out);
  if (!m.empty()) msg += "\n" + m;
  if (c.with_lse) {
    m = compare_to_reference(r.lse, p.ref_lse, c.tol, "lse", &err_lse);
    if (!m.empty()) msg += "\n" + m;
  }
  if (verbose()) {
    std::ostringstream o;
    o << "[ MAX ERR  ] " << where << ": out " << err_out << " lse " << err_lse << "\n";
    std::cout << o.str() << std::flush;
  }
  if (msg.empty()) return "";
  return where + ":" + msg;
}

std::vector<std::string> kernel_names(const std::string& variant) {
  std::vector<std::string> names;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family != "cuda" && k.variant == variant && k.dtype == "f32") names.push_back(k.name);
  }
  return names;
}

std::string cpu_family() {
#if defined(__aarch64__)
  return "arm";
#else
  return "x86";
#endif
}

std::vector<std::string> cuda_kernel_names(const std::string& dtype) {
  std::vector<std::string> names;
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.family == "cuda" && k.dtype == dtype) {
      names.push_back(k.name);
    }
  }
  return names;
}

const hattn::KernelInfo* find_kernel(const std::string& name) {
  for (const hattn::KernelInfo& k : hattn::list_kernels()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

DenseCase make_case(const std::string& name, AttnShape shape, bool causal) {
  DenseCase c;
  c.name = name;
  c.shape = shape;
  c.causal = causal;
  return c;
}

std::string compare_rows(const HostTensor& got, const std::vector<double>& ref,
                         const std::vector<double>* gap, int64_t row_len, int* left_out) {
  std::ostringstream e;
  int bad = 0;
  *left_out = 0;
  const int64_t rows = static_cast<int64_t>(ref.size()) / row_len;
  for (int64_t r = 0; r < rows; ++r) {
    if (gap != nullptr && (*gap)[static_cast<size_t>(r)] < kMinGap) {
      ++*left_out;
      continue;
    }
    for (int64_t x = 0; x < row_len; ++x) {
      const int64_t flat = r * row_len + x;
      const double want = ref[static_cast<size_t>(flat)];
      const double have = got.at_flat(flat);
      if (!(std::abs(have - want) <= 1e-5 + 1e-4 * std::abs(want))) {
        if (bad++ < 5) {
          e << "\n  at " << index_string(got.index_of_flat(flat)) << ": got " << have << ", want "
            << want;
        }
      }
    }
  }
  if (bad > 0) e << "\n  " << bad << " elements differ";
  const int limit = 1 + static_cast<int>(rows / 20);
  if (*left_out > limit) {
    e << "\n  " << *left_out << " of " << rows << " rows had near-tied k-th scores (limit " << limit
      << "): the test would check too little";
  }
  return e.str();
}

std::string index_list(const std::vector<int64_t>& idx) {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < idx.size(); ++i) os << (i ? ", " : "") << idx[i];
  os << "}";
  return os.str();
}

std::string check_selected_weights(const float* out, int64_t d, const std::vector<double>& values,
                                   int64_t visible, int64_t k, double scale) {
  const std::vector<int64_t> want = stable_sort_topk(values, visible, k);
  double top = -std::numeric_limits<double>::infinity(), sum = 0;
  for (int64_t j : want) top = std::max(top, scale * values[static_cast<size_t>(j)]);
  std::vector<double> weight(static_cast<size_t>(d), 0.0);
  for (int64_t j : want) {
    sum += weight[static_cast<size_t>(j)] = std::exp(scale * values[static_cast<size_t>(j)] - top);
  }
  std::vector<int64_t> got;
  std::ostringstream bad;
  for (int64_t j = 0; j < d; ++j) {
    const float w = out[j];
    if (w != 0.f) got.push_back(j);
    const double ref = weight[static_cast<size_t>(j)] / (sum > 0 ? sum : 1);
    const bool ok = ref == 0 ? w == 0.f : std::abs(w - ref) <= 1e-5 * ref;
    if (!ok && bad.tellp() < 400) bad << " key " << j << ": " << w << " want " << ref << ";";
  }
  if (got == want && bad.str().empty()) return "";
  return "selected " + index_list(got) + ", want " + index_list(want) + bad.str();
}

uint16_t ref_to_16bit(hattn::DType t, float x) {
  // In double: the nearest value of the format (p significand bits, smallest normal exponent
  // emin), ties to even (nearbyint in the default rounding mode), then its fields.
  const bool half = t == hattn::DType::f16;
  const int p = half ? 11 : 8, emin = half ? -14 : -126, bias = half ? 15 : 127;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const uint16_t inf = half ? 0x7c00 : 0x7f80;
  const double a = std::fabs(static_cast<double>(x));
  if (std::isinf(a)) return sign | inf;
  const int e = a == 0 ? emin : std::max(emin, std::ilogb(a));
  const double quantum = std::ldexp(1.0, e - (p - 1));
  const double r = std::nearbyint(a / quantum) * quantum;
  if (r == 0) return sign;
  const double max_finite = std::ldexp(2.0 - std::ldexp(1.0, 1 - p), half ? 15 : 127);
  if (r > max_finite) return sign | inf;
  const int er = std::ilogb(r);
  if (er < emin) return static_cast<uint16_t>(sign | static_cast<uint16_t>(r / quantum));
  const auto mantissa = static_cast<uint16_t>(std::ldexp(r, (p - 1) - er) - std::ldexp(1.0, p - 1));
  return static_cast<uint16_t>(sign | (er + bias) << (p - 1) | mantissa);
}

float ref_from_16bit(hattn::DType t, uint16_t bits) {
  const bool half = t == hattn::DType::f16;
  const int p = half ? 11 : 8, bias = half ? 15 : 127, emax_field = half ? 31 : 255;
  const int field = (bits & 0x7fff) >> (p - 1), mantissa = bits & ((1 << (p - 1)) - 1);
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (field == emax_field) {
    return mantissa ? std::numeric_limits<float>::quiet_NaN()
                    : static_cast<float>(sign * std::numeric_limits<double>::infinity());
  }
  if (field == 0) return static_cast<float>(sign * std::ldexp(mantissa, 1 - bias - (p - 1)));
  return static_cast<float>(sign *
                            std::ldexp(mantissa + std::ldexp(1.0, p - 1), field - bias - (p - 1)));
}

Sixteen draw_16bit(hattn::DType t, int64_t n, TestRng& rng) {
  Sixteen s;
  for (int64_t i = 0; i < n; ++i) {
    s.bits.push_back(ref_to_16bit(t, rng.normal()));
    s.values.push_back(ref_from_16bit(t, s.bits.back()));
  }
  return s;
}

std::string check_16bit_attention(hattn::DType t, const AttnShape& a, bool causal, bool with_lse,
                                  bool fp32_query, TestRng& rng, hattn::Dispatch* dispatch) {
  const int64_t nq = a.batch * a.q_heads * a.lq * a.head_dim;
  const int64_t nkv = a.batch * a.kv_heads * a.lk * a.head_dim;
  const hattn::DType qt = fp32_query ? hattn::DType::f32 : t;
  Sixteen q16;
  std::vector<float> q32;
  if (fp32_query) {
    for (int64_t i = 0; i < nq; ++i) {
      q32.push_back(rng.normal());
    }
  } else {
    q16 = draw_16bit(t, nq, rng);
  }
  const Sixteen k = draw_16bit(t, nkv, rng), v = draw_16bit(t, nkv, rng);
  std::vector<uint16_t> out16;
  std::vector<float> out32;
  void* out_data = nullptr;
  if (fp32_query) {
    out32.assign(static_cast<size_t>(nq), std::numeric_limits<float>::quiet_NaN());
    out_data = out32.data();
  } else {
    out16.assign(static_cast<size_t>(nq), 0xffff);  // NaN in both dtypes
    out_data = out16.data();
  }
  std::vector<float> lse(static_cast<size_t>(a.batch * a.q_heads * a.lq),
                         std::numeric_limits<float>::quiet_NaN());
  const std::vector<int64_t> qs = {a.batch, a.q_heads, a.lq, a.head_dim};
  const std::vector<int64_t> kvs = {a.batch, a.kv_heads, a.lk, a.head_dim};
  const hattn::TensorView lse_view =
      hattn::TensorView::contiguous(lse.data(), {a.batch, a.q_heads, a.lq});
  hattn::AttentionOptions o;
  o.causal = causal;
  o.lse = with_lse ? &lse_view : nullptr;
  const void* q_data = fp32_query ? static_cast<const void*>(q32.data()) : q16.bits.data();
  const hattn::Status st =
      call_attention(hattn::TensorView::contiguous(q_data, qt, qs),
                     hattn::TensorView::contiguous(k.bits.data(), t, kvs),
                     hattn::TensorView::contiguous(v.bits.data(), t, kvs),
                     hattn::TensorView::contiguous(out_data, qt, qs), o, dispatch);
  if (!st.ok()) {
    return std::string("attention returned ") + hattn::to_string(st.code) + ": " + st.message;
  }

  const float* q_values = fp32_query ? q32.data() : q16.values.data();
  std::vector<double> ref, ref_lse;
  const AttnStrides strides = dense_strides(a);
  const double scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  reference_attention(q_values, k.values.data(), v.values.data(), a, strides, causal, scale, &ref,
                      &ref_lse);
  std::vector<float> v_abs(v.values.size());
  for (size_t i = 0; i < v_abs.size(); ++i) {
    v_abs[i] = std::fabs(v.values[i]);
  }
  std::vector<double> ref_abs, unused;
  reference_attention(q_values, k.values.data(), v_abs.data(), a, strides, causal, scale, &ref_abs,
                      &unused);
  std::ostringstream msg;
  int bad = 0;
  const Tolerance fp32_tol;
  for (size_t i = 0; i < ref.size() && bad < 5; ++i) {
    const double got = fp32_query ? out32[i] : ref_from_16bit(t, out16[i]);
    const double tol = fp32_query ? fp32_tol.atol + fp32_tol.rtol * std::fabs(ref[i])
                                  : sixteen_bit_tolerance(t, ref[i], ref_abs[i]);
    if (!(std::fabs(got - ref[i]) <= tol)) {
      msg << "\nout[" << i << "] = " << got << ", reference " << ref[i] << " (tolerance " << tol
          << ")";
      ++bad;
    }
  }
  for (size_t r = 0; r < ref_lse.size() && bad < 5; ++r) {
    if (std::isinf(ref_lse[r])) {
      if (with_lse && !(std::isinf(lse[r]) && lse[r] < 0)) {
        msg << "\nlse[" << r << "] = " << lse[r] << ", the row sees no key (-inf)";
        ++bad;
      }
      for (int64_t x = 0; x < a.head_dim; ++x) {
        const size_t i = r * static_cast<size_t>(a.head_dim) + static_cast<size_t>(x);
        const float got = fp32_query ? out32[i] : ref_from_16bit(t, out16[i]);
        if (got != 0.f) {
          msg << "\nout[" << i << "] = " << got << ", row " << r << " sees no key (0)";
          ++bad;
          break;
        }
      }
    } else if (with_lse &&
               !(std::fabs(lse[r] - ref_lse[r]) <= 1e-5 * (1 + std::fabs(ref_lse[r])))) {
      msg << "\nlse[" << r << "] = " << lse[r] << ", reference " << ref_lse[r];
      ++bad;
    }
  }
  return msg.str();
}

}  // namespace hattn_test
