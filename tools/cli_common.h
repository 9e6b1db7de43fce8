// Pieces every `hattn` subcommand shares: the one-line error convention, loading .npy inputs with
// their expected rank, timing repeated calls, and the options common to every `run`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "npy.h"

namespace hattn_cli {

// A failure already reported to the user, with its exit status (2 usage, 1 data or runtime).
struct Failure {
  int status;
};

// Prints "hattn: error: <message>" as one line on stderr and throws Failure{status}.
[[noreturn]] void die(int status, const std::string& message);

// Reads a float32 .npy of rank `rank` (`layout` names the dimensions for the error message).
hattn::npy::Array load(const std::string& path, const char* name, size_t rank, const char* layout);
void save(const std::string& path, const std::vector<int64_t>& shape, const float* data);

hattn::TensorView view(hattn::npy::Array& a);

// Fails with the status's code and message unless it is ok.
void check(const hattn::Status& s);

// Options every `run <variant>` takes.
struct CommonRunArgs {
  std::string kernel;
  bool check_finite = false, verbose = false;
  int threads = 0, repeat = 1;
};
void add_common_run_options(CLI::App* run, CommonRunArgs* a);
// The options every call shares (hattn::CallOptions): --kernel and --check-finite.
void set_common(const CommonRunArgs& a, hattn::CallOptions* o);
// --scale given (!= 0): use it; else the variant's default (1/sqrt(D), el: 1/sqrt(Dm / H)).
void set_scale(double scale, hattn::ScaledOptions* o);

// Calls `call` `repeat` times (each returning the Status of one kernel call) and returns the
// median seconds; dies on the first failure.
double median_seconds(int repeat, const std::function<hattn::Status()>& call);

// Query-key pairs visible under the bottom-right causal mask (the work a dense kernel does).
double visible_pairs(int64_t lq, int64_t lk, bool causal);

// Registration of each command family (tools/cli_*.cpp). Each returns the function to run when
// its subcommand was parsed.
using Action = std::function<int()>;
Action add_run_attention(CLI::App* run);  // run dense, run topk
Action add_run_ffn(CLI::App* run);        // run topk-ffn
Action add_run_el(CLI::App* run);         // run el (tools/cli_el.cpp)
Action add_fidelity(CLI::App* app);       // fidelity topk
Action add_calibrate(CLI::App* app);      // calibrate loki (tools/cli_loki_prep.cpp)
Action add_rotate(CLI::App* app);         // rotate (Loki key-cache rotation)
Action add_run_sparsek(CLI::App* run);    // run sparsek, run sparsek-mask (tools/cli_sparsek.cpp)

}  // namespace hattn_cli
