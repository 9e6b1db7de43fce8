// A program that uses an installed hattn (see CMakeLists.txt): causal GQA attention at D=64 with
// the kernels its build generated, checked against a plain double-precision loop, then two calls
// this kernel set cannot take (D=128, and topk, neither generated), which must be refused with a
// status that names what was built and what was asked. Exit status 0 only if all three hold.
#include <hattn/hattn.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int64_t B = 1, Hq = 4, Hkv = 2, Lq = 37, Lk = 53, D = 64;

// out[b,h,i,:] = softmax_j(q.k_j / sqrt(D), j <= i + Lk - Lq) v_j, in double.
std::vector<double> reference(const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v) {
  std::vector<double> out(q.size(), 0.0);
  for (int64_t h = 0; h < Hq; ++h) {
    const int64_t g = h / (Hq / Hkv);
    for (int64_t i = 0; i < Lq; ++i) {
      const float* qi = &q[(h * Lq + i) * D];
      std::vector<double> s;
      double top = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= i + Lk - Lq; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < D; ++c) dot += double(qi[c]) * k[(g * Lk + j) * D + c];
        s.push_back(dot / std::sqrt(double(D)));
        top = std::max(top, s.back());
      }
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - top));
      for (size_t j = 0; j < s.size(); ++j) {
        for (int64_t c = 0; c < D; ++c) {
          out[(h * Lq + i) * D + c] += s[j] / sum * v[(g * Lk + int64_t(j)) * D + c];
        }
      }
    }
  }
  return out;
}

bool refused_naming(const char* what, const hattn::Status& s,
                    const std::vector<std::string>& words) {
  std::printf("%s -> %s\n", what, s.message.c_str());
  bool ok = !s.ok();
  for (const std::string& w : words) {
    if (s.message.find(w) == std::string::npos) {
      std::printf("  FAIL: the refusal does not mention '%s'\n", w.c_str());
      ok = false;
    }
  }
  return ok;
}

}  // namespace

int main() {
  const unsigned seed = 20261202;
  std::printf("hattn %s, seed %u\n", hattn::version(), seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> q(B * Hq * Lq * D), k(B * Hkv * Lk * D), v(B * Hkv * Lk * D);
  for (auto* t : {&q, &k, &v}) {
    for (float& x : *t) x = normal(rng);
  }
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned

  hattn::AttentionOptions opt;
  opt.causal = true;
  hattn::Dispatch chosen;
  hattn::Status s =
      hattn::attention(hattn::TensorView::contiguous(q.data(), {B, Hq, Lq, D}),
                       hattn::TensorView::contiguous(k.data(), {B, Hkv, Lk, D}),
                       hattn::TensorView::contiguous(v.data(), {B, Hkv, Lk, D}),
                       hattn::TensorView::contiguous(out.data(), {B, Hq, Lq, D}), opt, &chosen);
  if (!s.ok()) {
    std::printf("FAIL: attention refused: %s\n", s.message.c_str());
    return 1;
  }
  const std::vector<double> want = reference(q, k, v);
  double worst = 0;
  for (size_t n = 0; n < out.size(); ++n) {
    const double err = std::abs(out[n] - want[n]);
    worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
  }
  std::printf("dense causal GQA %ldx%ld heads, Lq=%ld Lk=%ld D=%ld: kernel %s; max |error| %.2e\n",
              long(Hq), long(Hkv), long(Lq), long(Lk), long(D), chosen.kernel.c_str(), worst);
  bool ok = worst < 1e-4;
  if (!ok) std::printf("FAIL: error above 1e-4 against the double-precision reference\n");

  // Not generated: D=128 (HEAD_DIMS 64 only) and the topk variant (VARIANTS dense only).
  std::vector<float> q2(Lq * 128, 0.5f), k2(Lk * 128, 0.25f), o2(Lq * 128);
  const auto q128 = hattn::TensorView::contiguous(q2.data(), {1, 1, Lq, 128});
  const auto k128 = hattn::TensorView::contiguous(k2.data(), {1, 1, Lk, 128});
  ok &= refused_naming(
      "dense at D=128",
      hattn::attention(q128, k128, k128, hattn::TensorView::contiguous(o2.data(), {1, 1, Lq, 128}),
                       opt),
      {"asked for dense", "D=128", "example_kernels", "D=64"});
  hattn::TopkOptions t;
  t.k = 8;
  ok &= refused_naming(
      "topk at D=64",
      hattn::topk_attention(hattn::TensorView::contiguous(q.data(), {B, Hq, Lq, D}),
                            hattn::TensorView::contiguous(k.data(), {B, Hkv, Lk, D}),
                            hattn::TensorView::contiguous(v.data(), {B, Hkv, Lk, D}),
                            hattn::TensorView::contiguous(out.data(), {B, Hq, Lq, D}), t),
      {"no topk kernel was generated", "example_kernels", "VARIANTS dense"});
  // CUDA is usable only with CUDA kernels in the set (TARGETS ... cuda), a driver and a device.
  std::string why;
  std::printf("CUDA: %s\n", hattn::cuda_available(&why) ? "usable" : why.c_str());
  std::printf(ok ? "consumer example: OK\n" : "consumer example: FAILED\n");
  return ok ? 0 : 1;
}
