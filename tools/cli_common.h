// Pieces every `hattn` subcommand shares: the one-line error convention, loading .npy inputs with
// their expected rank, timing repeated calls, and the options common to every `run`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
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
// Writes `j` indented, or fails naming the path.
void write_json(const std::string& path, const nlohmann::json& j);

// An int32 .npy (or int64, converted with a range check) of rank `rank`: page tables, lengths,
// offsets.
struct Indices {
  std::vector<int64_t> shape;
  std::vector<int32_t> data;
};
Indices load_indices(const std::string& path, const char* name, size_t rank, const char* layout);

hattn::TensorView view(hattn::npy::Array& a);

// Rows of d explained-variance ratios (descending, as loki_calibrate writes them) as cumulative
// sums: the share of the calibration keys' variance the leading r axes hold, r = 1..d.
std::vector<float> cumulative_shares(const std::vector<float>& ratios, int64_t d);

// "[1, 8, 2048, 64]".
std::string shape_text(const std::vector<int64_t>& shape);

// A Loki basis as `hattn calibrate loki` writes it: [Hkv, D, D], or per layer [L, Hkv, D, D]
// with `layer` (>= 0) choosing one. `layer` < 0 means none was given: a per-layer basis is then
// refused with the range to choose from, as is a layer given for a one-layer basis.
struct LayerBasis {
  hattn::npy::Array file;
  hattn::TensorView view;  // [Hkv, D, D], into file
};
LayerBasis load_basis(const std::string& path, int64_t layer);

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

// --dtype f32|bf16|f16: the tensors' dtype in the call. Inputs are float32 or float16 .npy (read
// as float32, exactly), rounded to the dtype in memory (nearest even); the call runs on 16-bit
// tensors. f16 outputs are written as float16 .npy; NumPy has no bfloat16, so bf16 outputs are
// widened (exactly: every bf16 value is a float32) and written as float32. kv_forms: also
// bf16kv|f16kv, fp32 q and out over k and v rounded to bf16 or f16 (dense decode).
void add_dtype_option(CLI::App* c, std::string* dtype, bool kv_forms = false);
// "f32", "bf16" or "f16"; for "bf16kv" and "f16kv" the cache's dtype.
hattn::DType parse_dtype(const std::string& name);
// Whether `name` is a kv form ("bf16kv", "f16kv"): q and out stay f32.
bool fp32_query(const std::string& name);
// `a` as a tensor of `dtype`: a's own data for f32, else its values rounded into `bits`.
hattn::TensorView as_dtype(const hattn::npy::Array& a, hattn::DType dtype,
                           std::vector<uint16_t>* bits);
// A written tensor of `shape`: `out` (resized) itself for f32, else `bits` (16-bit), which
// widen() then copies into `out` after the call.
hattn::TensorView output_as(hattn::DType dtype, const std::vector<int64_t>& shape,
                            std::vector<float>* out, std::vector<uint16_t>* bits);
void widen(hattn::DType dtype, const std::vector<uint16_t>& bits, std::vector<float>* out);
// Writes a call's output: f16 natively as float16 .npy (from `bits`); f32, and bf16 widened into
// `out` (NumPy has no bfloat16), as float32 .npy.
void save_output(const std::string& path, hattn::DType dtype, const std::vector<int64_t>& shape,
                 const std::vector<uint16_t>& bits, std::vector<float>* out);
size_t dtype_bytes(hattn::DType dtype);  // 4 or 2

// Calls `call` `repeat` times (each returning the Status of one kernel call) and returns the
// median seconds; dies on the first failure.
double median_seconds(int repeat, const std::function<hattn::Status()>& call);

// "kernel: <name> (<reason>[, N key splits])" and "time: T ms (median of N), X GFLOP/s" (and
// ", Y GB/s" of `bytes` when > 0).
void print_timing(const hattn::Dispatch& chosen, double seconds, int repeat, double flops,
                  double bytes = 0);

// Query-key pairs visible under the bottom-right causal mask (the work a dense kernel does).
double visible_pairs(int64_t lq, int64_t lk, bool causal);

// Registration of each command family (tools/cli_*.cpp). Each returns the function to run when
// its subcommand was parsed.
using Action = std::function<int()>;
Action add_run_attention(CLI::App* run);  // run dense, run topk
Action add_run_ffn(CLI::App* run);        // run topk-ffn
Action add_run_el(CLI::App* run);         // run el (tools/cli_el.cpp)
Action add_fidelity(CLI::App* app);       // fidelity topk|loki|activations
// fidelity activations (tools/cli_fidelity_activations.cpp), under `fidelity`.
Action add_fidelity_activations(CLI::App* fidelity);
Action add_calibrate(CLI::App* app);    // calibrate loki (tools/cli_loki_prep.cpp)
Action add_rotate(CLI::App* app);       // rotate (Loki key-cache rotation)
Action add_run_sparsek(CLI::App* run);  // run sparsek, run sparsek-mask (tools/cli_sparsek.cpp)
Action add_run_batch(CLI::App* run);    // run paged, run ragged (tools/cli_batch.cpp)

}  // namespace hattn_cli
