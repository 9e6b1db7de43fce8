// hattn-tune-runner: times one candidate kernel and checks its output. It needs no libHalide:
// the candidate is a shared object built from a generator's `object` output (target with
// no_runtime, and with user_context as the library's kernels are built), and the Halide runtime
// is linked into this program and exported (-rdynamic) so the candidate's halide_* references
// resolve against it at dlopen. The same program therefore runs on a machine without Halide (the
// one being tuned), given candidates built elsewhere.
//
//   hattn-tune-runner SO FUNCTION VARIANT PHASE CAUSAL D B H HKV LQ LK KNOB REPS SEED [DEVICE]
//
// VARIANT is dense (KNOB: decode splits), topk (KNOB: k), loki (KNOB: k/rank), sparsek (KNOB:
// k/window), topk_ffn (D: model dim, LQ: tokens, LK: d_ff, KNOB: k), el (D: model dim, H:
// heads, LQ: tokens, LK: hidden states, KNOB: beam), linear (D: in, LQ: rows, LK: out) or
// sparsek_mask (LQ: rows, LK: columns, KNOB: k), dense and topk also with the table's dtype
// suffix (dense.bf16, topk.f16, dense.bf16kv: inputs rounded to it and stored in it, the 16-bit
// output checked within its rounding); runner_cases.h has each variant's inputs and
// call, through the variant's kernel signature in hattn/kernel_registry.h (the runtime's own,
// with a null user_context). A candidate built without user_context (an older tuner's, or a
// `--adams` file) would take every argument one place off: its metadata says so, and it is
// refused as an error. Sampled rows are checked against tests/reference.cpp, the test suite's
// double-precision oracle.
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

#include "runner_cases.h"

namespace {

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

// True if the kernel takes user_context: its Halide metadata lists the argument.
bool takes_user_context(const halide_filter_metadata_t* md) {
  for (int i = 0; i < md->num_arguments; i++) {
    if (std::string(md->arguments[i].name) == "__user_context") return true;
  }
  return false;
}

int fail_call(const char* what, int rc) {
  return fail(std::string(what) + " returned " + std::to_string(rc) +
              (halide_message.empty() ? "" : ": " + halide_message));
}

// KNOB as `K` or `K/K2` (loki: k/rank, sparsek: k/window); false if it is neither.
bool parse_knob(const std::string& text, hattn_tune::Shape* s) {
  char* end = nullptr;
  s->knob = static_cast<int>(std::strtol(text.c_str(), &end, 10));
  if (*end == '/') s->knob2 = static_cast<int>(std::strtol(end + 1, &end, 10));
  return *end == '\0' && end != text.c_str();
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
  hattn_tune::Shape s;
  std::string variant, why;
  if (!hattn_tune::parse_variant(argv[3], &variant, &s, &why)) return fail(why);
  if (cuda && variant != "dense") return fail("only dense has a CUDA schedule");
  if (cuda && s.kv != hattn_tune::DType::f32) return fail("16-bit kernels are tuned on CPUs here");
  s.causal = std::string(argv[5]) == "true";
  s.d = std::atoi(argv[6]);
  s.b = std::atoi(argv[7]);
  s.h = std::atoi(argv[8]);
  s.hkv = std::atoi(argv[9]);
  s.lq = std::atoi(argv[10]);
  s.lk = std::atoi(argv[11]);
  const bool knob_ok = parse_knob(argv[12], &s);
  const int reps = std::atoi(argv[13]);
  const unsigned seed = static_cast<unsigned>(std::strtoul(argv[14], nullptr, 10));
  if (s.d <= 0 || s.b <= 0 || s.h <= 0 || s.hkv <= 0 || s.h % s.hkv != 0 || s.lq <= 0 ||
      s.lk <= 0 || !knob_ok || s.knob <= 0 || reps <= 0) {
    return fail("bad shape: need positive sizes, H divisible by HKV, KNOB as K or K/K2");
  }
  void* so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (so == nullptr) return fail(std::string("dlopen: ") + dlerror());
  void* fn = dlsym(so, argv[2]);
  if (fn == nullptr) return fail(std::string("no symbol ") + argv[2]);
  using Metadata = const halide_filter_metadata_t* (*)();
  auto metadata =
      reinterpret_cast<Metadata>(dlsym(so, (std::string(argv[2]) + "_metadata").c_str()));
  if (metadata == nullptr) return fail(std::string("no symbol ") + argv[2] + "_metadata");
  if (!takes_user_context(metadata())) {
    return fail(std::string("built without user_context (target ") + metadata()->target +
                "): rebuild it with the target's -user_context feature");
  }

  std::mt19937 rng(seed);
  const std::unique_ptr<hattn_tune::Case> c = hattn_tune::make_case(variant, s, rng, &why);
  if (c == nullptr) return fail(why);
  hattn_tune::Buf& out = c->out();
  c->poison();
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
    const int rc = c->call(fn);
    return rc != 0 ? rc : out.device_sync();  // a no-op for CPU candidates
  };
  if (int rc = run(); rc != 0) return fail_call("kernel", rc);
  if (int rc = out.copy_to_host(); rc != 0) return fail_call("copy to host", rc);
  c->finish();

  // Check 64 sampled rows (all of them when fewer), normwise relative error.
  double err2 = 0, ref2 = 0;
  std::vector<double> ref;
  const int64_t all_rows = c->rows(), width = out.dim(0).extent();
  std::uniform_int_distribution<int64_t> pick(0, all_rows - 1);
  const int64_t rows = std::min<int64_t>(64, all_rows);
  int64_t checked = 0;
  for (int64_t n = 0; n < rows; n++) {
    const int64_t r = rows == all_rows ? n : pick(rng);
    if (!c->reference_row(r, &ref)) continue;
    checked++;
    const float* got = out.data() + r * width;
    for (int64_t x = 0; x < width; x++) {
      err2 += std::isfinite(got[x]) ? (got[x] - ref[x]) * (got[x] - ref[x]) : INFINITY;
      ref2 += ref[x] * ref[x];
    }
  }
  if (checked < std::max<int64_t>(1, rows / 4)) {
    return fail("too few rows clear of a selection tie to check: " + std::to_string(checked) +
                " of " + std::to_string(rows));
  }
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));
  if (!(rel <= c->tolerance())) {
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
