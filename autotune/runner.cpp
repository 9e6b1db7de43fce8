// hattn-tune-runner: times one candidate kernel and checks its output. It needs no libHalide:
// the candidate is a shared object built from a generator's `object` output (target with
// no_runtime), and the Halide runtime is linked into this program and exported (-rdynamic) so
// the candidate's halide_* references resolve against it at dlopen. The same program therefore
// runs on a machine without Halide (the one being tuned), given candidates built elsewhere.
//
//   hattn-tune-runner SO FUNCTION VARIANT PHASE CAUSAL D B H HKV LQ LK KNOB REPS SEED [DEVICE]
//
// VARIANT is dense (KNOB: decode splits) or topk (KNOB: k). Sampled rows are checked against
// tests/reference.cpp, the test suite's double-precision oracle.
//
// DEVICE is cpu (the default) or cuda: a CUDA candidate (a cuda target) gets its inputs copied
// to the GPU by the pipeline on the first call, its poisoned output copied there before it, and
// each timed call ends with a device sync. On a machine without a GPU or driver the CUDA
// candidate cannot run and the runner prints `error no CUDA device: ..` (exit 2).
//
// Prints one line: `ok median_ms=.. min_ms=.. max_ms=.. rel_err=..` or `wrong rel_err=..` (the
// output differs from a double-precision reference on sampled rows) or `error <why>`; the exit
// status is 0 only for `ok`. Outputs are poisoned with NaN before the checked run.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "HalideBuffer.h"
#include "reference.h"

namespace {

using Buf = Halide::Runtime::Buffer<float>;
using DenseFn = int (*)(halide_buffer_t*, halide_buffer_t*, halide_buffer_t*, float, int,
                        halide_buffer_t*, halide_buffer_t*);
using TopkFn = int (*)(halide_buffer_t*, halide_buffer_t*, halide_buffer_t*, float, int,
                       halide_buffer_t*);

struct Shape {
  int d, b, h, hkv, lq, lk;
  bool causal;
};

void fill(Buf& x, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  x.for_each_value([&](float& v) { v = u(rng); });
}

// Row (i, h, b) of the result from tests/reference.cpp, the test suite's double-precision
// oracle, on a one-row slice: the query row against its visible keys (bottom-right causal
// alignment, GQA by h / group) as a non-causal call. Returns false for a top-k row too close to
// a selection tie to compare (its k-th and (k+1)-th scores within 1e-4: fp32 may pick either).
bool reference_row(const std::string& variant, const Buf& q, const Buf& k, const Buf& v,
                   const Shape& s, double scale, int topk, int i, int h, int b,
                   std::vector<double>* out) {
  const int kvh = h / (s.h / s.hkv);
  const int visible = s.causal ? std::clamp(i + s.lk - s.lq + 1, 0, s.lk) : s.lk;
  if (visible == 0) {  // a fully masked row is zeros
    out->assign(s.d, 0.0);
    return true;
  }
  hattn_test::AttnShape one;
  one.lk = visible;
  one.head_dim = s.d;
  hattn_test::AttnStrides st;  // [b, h, l, d] element strides of one row's slice
  st.q = {0, 0, 0, 1};
  st.k = st.v = {0, 0, k.dim(1).stride(), 1};
  const float* qi = &q(0, i, h, b);
  const float* k0 = &k(0, 0, kvh, b);
  const float* v0 = &v(0, 0, kvh, b);
  if (variant == "dense") {
    hattn_test::reference_attention(qi, k0, v0, one, st, false, scale, out, nullptr);
    return true;
  }
  std::vector<double> gap;
  hattn_test::reference_topk_attention(qi, k0, v0, one, st, false, scale, topk, out, &gap);
  return gap[0] > 1e-4;
}

// The Halide runtime's last error message: its default handler aborts the process, which would
// read as a crash rather than as a candidate that cannot run here (e.g. no CUDA driver).
std::string halide_message;

void keep_halide_error(void*, const char* msg) {
  halide_message = msg;
  while (!halide_message.empty() && (halide_message.back() == '\n')) halide_message.pop_back();
}

int fail(const std::string& why) {
  std::printf("error %s\n", why.c_str());
  return 2;
}

int fail_call(const char* what, int rc) {
  return fail(std::string(what) + " returned " + std::to_string(rc) +
              (halide_message.empty() ? "" : ": " + halide_message));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 15 && argc != 16) {
    return fail(
        "usage: SO FUNCTION VARIANT PHASE CAUSAL D B H HKV LQ LK KNOB REPS SEED [cpu|cuda]");
  }
  const std::string device = argc == 16 ? argv[15] : "cpu";
  if (device != "cpu" && device != "cuda") return fail("DEVICE must be cpu or cuda, got " + device);
  const bool cuda = device == "cuda";
  halide_set_error_handler(keep_halide_error);
  const std::string variant = argv[3];
  if (variant != "dense" && variant != "topk") return fail("VARIANT must be dense or topk");
  Shape s{};
  s.causal = std::string(argv[5]) == "true";
  s.d = std::atoi(argv[6]);
  s.b = std::atoi(argv[7]);
  s.h = std::atoi(argv[8]);
  s.hkv = std::atoi(argv[9]);
  s.lq = std::atoi(argv[10]);
  s.lk = std::atoi(argv[11]);
  const int knob = std::atoi(argv[12]);  // dense: decode splits; topk: k
  const int reps = std::atoi(argv[13]);
  const unsigned seed = static_cast<unsigned>(std::strtoul(argv[14], nullptr, 10));
  if (s.d <= 0 || s.b <= 0 || s.h <= 0 || s.hkv <= 0 || s.h % s.hkv != 0 || s.lq <= 0 ||
      s.lk <= 0 || knob <= 0 || reps <= 0) {
    return fail("bad shape: need positive sizes, H divisible by HKV");
  }
  void* so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (so == nullptr) return fail(std::string("dlopen: ") + dlerror());
  void* fn = dlsym(so, argv[2]);
  if (fn == nullptr) return fail(std::string("no symbol ") + argv[2]);

  std::mt19937 rng(seed);
  Buf q(s.d, s.lq, s.h, s.b), k(s.d, s.lk, s.hkv, s.b), v(s.d, s.lk, s.hkv, s.b);
  Buf out(s.d, s.lq, s.h, s.b), lse(s.lq, s.h, s.b);
  fill(q, rng);
  fill(k, rng);
  fill(v, rng);
  const float scale = 1.f / std::sqrt(float(s.d));
  out.fill(NAN);
  if (cuda) {  // the poison must be where the kernel writes
    // Looked up, not linked: a runtime built without CUDA support still makes a CPU runner.
    using Interface = const halide_device_interface_t* (*)();
    auto cuda_interface =
        reinterpret_cast<Interface>(dlsym(RTLD_DEFAULT, "halide_cuda_device_interface"));
    if (cuda_interface == nullptr) return fail("this runner's Halide runtime has no CUDA support");
    out.set_host_dirty();
    if (int rc = out.copy_to_device(cuda_interface()); rc != 0) {
      return fail_call("no CUDA device: copying the output to the GPU", rc);
    }
  }

  auto run = [&] {
    int rc = variant == "dense" ? reinterpret_cast<DenseFn>(fn)(q, k, v, scale, knob, out, lse)
                                : reinterpret_cast<TopkFn>(fn)(q, k, v, scale, knob, out);
    return rc != 0 ? rc : out.device_sync();  // a no-op for CPU candidates
  };
  if (int rc = run(); rc != 0) return fail_call("kernel", rc);
  if (int rc = out.copy_to_host(); rc != 0) return fail_call("copy to host", rc);

  // Check 64 sampled rows (all of them when fewer), normwise relative error.
  double err2 = 0, ref2 = 0;
  std::vector<double> ref;
  std::uniform_int_distribution<int> pick_i(0, s.lq - 1), pick_h(0, s.h - 1), pick_b(0, s.b - 1);
  const int rows = std::min(64, s.lq * s.h * s.b);
  int checked = 0;
  for (int r = 0; r < rows; r++) {
    const int i = pick_i(rng), h = pick_h(rng), b = pick_b(rng);
    if (!reference_row(variant, q, k, v, s, scale, knob, i, h, b, &ref)) continue;
    checked++;
    for (int c = 0; c < s.d; c++) {
      const double got = out(c, i, h, b);
      err2 += std::isfinite(got) ? (got - ref[c]) * (got - ref[c]) : INFINITY;
      ref2 += ref[c] * ref[c];
    }
  }
  if (checked < rows / 2) return fail("too few rows clear of a top-k tie to check the result");
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));
  if (!(rel <= 1e-4)) {
    std::printf("wrong rel_err=%.3e\n", rel);
    return 1;
  }

  std::vector<double> ms;
  for (int r = 0; r < reps + 2; r++) {  // the first two are warm-up
    const auto t0 = std::chrono::steady_clock::now();
    if (int rc = run(); rc != 0) return fail_call("kernel", rc);
    const auto t1 = std::chrono::steady_clock::now();
    if (r >= 2) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("ok median_ms=%.4f min_ms=%.4f max_ms=%.4f rel_err=%.3e\n", ms[ms.size() / 2],
              ms.front(), ms.back(), rel);
  return 0;
}
