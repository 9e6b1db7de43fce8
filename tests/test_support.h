// Shared helpers for the dense-attention tests: seeded random inputs, tensors in several memory
// layouts (padded and interleaved views inside bigger, poisoned buffers), poisoned outputs, and
// comparison against the double-precision reference (reference.h).
//
// Seeds: every TestRng mixes a base seed (HATTN_SEED, else kDefaultSeed) with the running test's
// full name and a label, and prints both; `HATTN_SEED=<base> ./test_x --gtest_filter=<name>`
// replays exactly the same inputs.
//
// The run/compare helpers below make no gtest assertions and are safe to call from any thread:
// they return a message (empty on success) that the caller turns into a test failure.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "reference.h"

namespace hattn_test {

constexpr uint64_t kDefaultSeed = 20240611;

// HATTN_SEED (decimal or 0x-hex) if set, else kDefaultSeed.
uint64_t base_seed();

class TestRng {
 public:
  // Seeded from base_seed(), the current gtest test name (if any) and `label`. Prints the seed.
  explicit TestRng(const std::string& label = "");

  std::mt19937_64& engine() { return engine_; }
  uint64_t seed() const { return seed_; }
  // "HATTN_SEED=<base> test=<suite.name> label=<label> seed=<derived>": put it in SCOPED_TRACE.
  const std::string& description() const { return description_; }

  float normal(float stddev = 1.f);
  float uniform(float lo, float hi);
  int64_t uniform_int(int64_t lo, int64_t hi);  // inclusive

 private:
  std::mt19937_64 engine_;
  uint64_t seed_ = 0;
  std::string description_;
};

// Memory layouts for a logical [B, H, L, D] tensor (D always has stride 1).
enum class Layout {
  kContiguous,  // dense row-major, alone in its buffer
  kPadded,      // B, H and L strides padded, view starts past the buffer start (unaligned)
  kBLHD,        // one head-slice of a bigger [B, L, H + 2, D] buffer (packed projections)
  kHBLD,        // heads outermost in memory: [H, B, L, D] read as [B, H, L, D]
};
const char* to_string(Layout layout);

// A float tensor of rank 3 or 4 viewed inside a buffer that may be bigger than the view. Every
// buffer element outside the view ("padding") starts as a distinctive NaN, so a kernel that reads
// padding produces NaN and one that writes padding is caught by padding_unchanged().
class HostTensor {
 public:
  HostTensor() = default;
  // Rank-3 tensors support kContiguous and kPadded only.
  HostTensor(const std::vector<int64_t>& shape, Layout layout);

  int rank() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  Layout layout() const { return layout_; }
  int64_t numel() const;

  // Pointer to logical element 0 (inside the buffer, past any leading padding).
  float* data() { return buffer_.data() + offset_; }
  const float* data() const { return buffer_.data() + offset_; }
  hattn::TensorView view() const;
  std::array<int64_t, 4> strides4() const;  // strides padded with 1s to rank 4

  // Buffer offset (from data()) of the element with row-major logical index `flat`.
  int64_t offset_of_flat(int64_t flat) const;
  float& at_flat(int64_t flat) { return data()[offset_of_flat(flat)]; }
  float at_flat(int64_t flat) const { return data()[offset_of_flat(flat)]; }
  std::vector<int64_t> index_of_flat(int64_t flat) const;

  void fill_normal(TestRng& rng, float stddev = 1.f);
  // Logical elements := a distinctive NaN; padding keeps its own (different) NaN.
  void poison();
  void fill(float value);  // logical elements only

  // Remember the whole buffer, then later check that nothing (or no padding) changed, bitwise.
  void snapshot();
  std::string changed_since_snapshot(bool padding_only) const;  // "" if unchanged

  std::vector<float> to_dense() const;  // logical elements in row-major order
  std::string describe() const;         // "[1, 8, 7, 64] padded strides [...]"

 private:
  std::vector<int64_t> shape_, strides_;
  Layout layout_ = Layout::kContiguous;
  int64_t offset_ = 0;
  std::vector<float> buffer_;
  std::vector<uint8_t> in_view_;  // per buffer element: 1 if some logical index maps to it
  std::vector<float> snapshot_;
};

std::string index_string(const std::vector<int64_t>& index);

// |got - ref| <= atol + rtol * |ref| elementwise. The default allows fp32 accumulation over a few
// thousand keys with unit-variance inputs and scale 1/sqrt(D) (observed errors stay below 4e-6).
struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-4;
};

// Compares every logical element of `got` with the dense reference `ref`. Non-finite reference
// values (lse of rows that see no key) must be matched exactly; a non-finite result where the
// reference is finite always fails. Returns "" when everything matches, else a message with the
// number of mismatches, the worst element (index, got, ref) and the largest absolute error.
std::string compare_to_reference(const HostTensor& got, const std::vector<double>& ref,
                                 const Tolerance& tol, const std::string& what,
                                 double* max_abs_error = nullptr);

// Bitwise comparison of the logical elements of two tensors of the same shape.
std::string compare_bitwise(const HostTensor& a, const HostTensor& b, const std::string& what);

// One dense attention call to test.
struct DenseCase {
  std::string name;  // [A-Za-z0-9_] only: used for parameterized test names
  AttnShape shape;
  bool causal = false;
  bool has_scale = false;
  float scale = 0.f;
  Layout q_layout = Layout::kContiguous;
  Layout k_layout = Layout::kContiguous;
  Layout v_layout = Layout::kContiguous;
  Layout out_layout = Layout::kContiguous;
  bool with_lse = true;
  Layout lse_layout = Layout::kContiguous;  // kContiguous or kPadded
  std::string kernel;                       // forced kernel, empty: dispatcher's choice
  int decode_splits = 0;
  float input_stddev = 1.f;
  Tolerance tol;

  std::string describe() const;
};
std::string describe_shape(const AttnShape& s);
DenseCase make_case(const std::string& name, AttnShape shape, bool causal);
void PrintTo(const DenseCase& c, std::ostream* os);  // gtest prints parameters with this

// Inputs of a case (random, fresh from the rng) and the double-precision reference result.
struct DenseProblem {
  DenseCase c;
  HostTensor q, k, v;
  double scale = 0.0;  // the scale the reference used (1/sqrt(D) unless the case sets one)
  std::vector<double> ref_out, ref_lse;
};

// Builds q, k, v in the case's layouts, fills them from `rng`, snapshots them and computes the
// reference.
DenseProblem make_problem(const DenseCase& c, TestRng& rng);

// Recomputes the reference from the problem's current q, k, v (after editing them by hand).
void recompute_reference(DenseProblem* p);

hattn::AttentionOptions options_for(const DenseCase& c, const hattn::TensorView* lse);

struct RunOutput {
  hattn::Status status;
  hattn::Dispatch dispatch;
  HostTensor out, lse;
  std::string problems;  // inputs modified or output padding written (empty if none)
};

// Allocates out (and lse) in the case's layouts, poisons them, calls hattn::attention and checks
// that q, k, v are bitwise unchanged and that no padding of out/lse was written.
// What run_attention() calls; the default is hattn::attention on the host tensors. The CUDA tests
// install one that copies the views to device memory, runs there and copies the outputs back.
using AttentionRunner = std::function<hattn::Status(
    const hattn::TensorView& q, const hattn::TensorView& k, const hattn::TensorView& v,
    const hattn::TensorView& out, const hattn::AttentionOptions& options, hattn::Dispatch* chosen)>;
void set_attention_runner(AttentionRunner runner);  // empty: the default

RunOutput run_attention(const DenseProblem& p);
RunOutput run_attention(const DenseProblem& p, const DenseCase& c);  // case overrides options

// run_attention + status ok + out (and lse) against the reference. "" on success.
std::string run_and_check(const DenseProblem& p, hattn::Dispatch* dispatch = nullptr);
std::string run_and_check(const DenseProblem& p, const DenseCase& c,
                          hattn::Dispatch* dispatch = nullptr);

// Names of the fp32 CPU kernels (x86 or arm) of a variant (the 16-bit ones have tests of their
// own), and of the CUDA kernels of one dtype ("f32", "bf16", "bf16kv", ...) compiled into the
// library.
std::vector<std::string> kernel_names(const std::string& variant = "dense");
std::vector<std::string> cuda_kernel_names(const std::string& dtype = "f32");
// The CPU family this test binary was built for ("x86" or "arm"): the suffix of its kernel names.
std::string cpu_family();
const hattn::KernelInfo* find_kernel(const std::string& name);

// Prints max errors of passing comparisons when HATTN_TEST_VERBOSE is set.
bool verbose();

// The stated tolerance of a 16-bit dense output against the float64 reference on the rounded
// inputs: half an ulp of the dtype relative to |ref| (out is rounded once, last), plus for bf16
// the probabilities rounded to bf16 before P.V by the AVX512-BF16 builds (each within 2^-8 of
// itself, so the output within 2^-8 of `ref_abs`, the row's attention over |v|), plus fp32
// accumulation noise.
double sixteen_bit_tolerance(hattn::DType t, double ref, double ref_abs);
// The same without the probabilities' rounding: a kernel whose softmax and V sum are fp32 and
// whose only 16-bit rounding is the output's (topk).
double sixteen_bit_output_tolerance(hattn::DType t, double ref);

// ISA restriction for the kernels' multi-target dispatch, so that the AVX-512, AVX2 and SSE4.1
// builds of every kernel can be tested on a machine that would pick a better one: with
// HATTN_TEST_ISA=avx512 (avx2, sse41; neon on aarch64) the test binaries set hattn::limit_isa()
// to it before any test runs. Empty or "native": no restriction. A value the runtime refuses is
// reported by isa_restriction_error().
std::string isa_restriction();        // "native", "avx512", "avx2", "sse41" or "neon"
std::string isa_restriction_error();  // "" unless HATTN_TEST_ISA has an unknown value
int64_t isa_refusals();               // builds the cap passed over so far

// Compares `got` with the dense reference `ref` row by row (rows of row_len elements), leaving
// out rows whose gap (when given) is below kMinGap, counted in *left_out; fails when more than
// 1 + rows/20 rows are left out (the test would check too little). Returns "" when all match.
std::string compare_rows(const HostTensor& got, const std::vector<double>& ref,
                         const std::vector<double>* gap, int64_t row_len, int* left_out);

// "{1, 4, 7}": a list of indices for a failure message.
std::string index_list(const std::vector<int64_t>& idx);

// One query row's output over one-hot values (v_j = e_j, so out[j] is key j's weight) against
// the expected selection of scores scale * values[j]: the stable-sort top k of values[0, visible)
// (stable_sort_topk) with a double softmax over them; every other key exactly 0, each weight
// within 1e-5 relative. "" when right, else the selected and expected sets and the wrong keys.
std::string check_selected_weights(const float* out, int64_t d, const std::vector<double>& values,
                                   int64_t visible, int64_t k, double scale);

// 16-bit values for the tests, converted in double arithmetic (the nearest value of the format,
// ties to even, then its fields), independent of the runtime's bit-level conversions.
uint16_t ref_to_16bit(hattn::DType t, float x);
float ref_from_16bit(hattn::DType t, uint16_t bits);

struct Sixteen {
  std::vector<uint16_t> bits;  // what the kernel reads or writes
  std::vector<float> values;   // the same values in fp32, for the reference
};
// n normal values rounded to the dtype.
Sixteen draw_16bit(hattn::DType t, int64_t n, TestRng& rng);

// One dense call over 16-bit tensors in contiguous buffers, through the attention runner (the
// CUDA tests run it on the device): q, k, v and out in `t`, or with fp32_query an fp32 q and out
// over a 16-bit k and v (the kv kernels). Inputs drawn from `rng`, out and lse poisoned, compared
// with the float64 reference on the rounded inputs: out within sixteen_bit_tolerance (fp32 q and
// out: Tolerance{}), lse within 1e-5 relative, rows that see no key exactly 0 with lse -inf.
// "" when right, else the first differences; *dispatch gets the call's report.
std::string check_16bit_attention(hattn::DType t, const AttnShape& a, bool causal, bool with_lse,
                                  bool fp32_query, TestRng& rng, hattn::Dispatch* dispatch);

// compare_rows for a dense 16-bit output of a selecting variant (topk, Loki): each element within
// sixteen_bit_output_tolerance of `ref`, rows whose gap is below kMinGap left out (counted in
// *left_out; more than 1 + rows / 20 fails). "" when right, else the first differences.
std::string compare_16bit_rows(hattn::DType t, const std::vector<uint16_t>& got,
                               const std::vector<double>& ref, const std::vector<double>& gap,
                               int64_t row_len, int* left_out);

// The CPU kernels of `variant` in a 16-bit dtype that are not in `used`: each should have run.
std::vector<std::string> sixteen_bit_kernels_not_run(const std::string& variant,
                                                     const std::set<std::string>& used);

}  // namespace hattn_test
