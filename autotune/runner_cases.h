// The variants hattn-tune-runner can time: for each, its inputs (random, from a seed), the call
// of a candidate's entry point and the double-precision oracle of one output row
// (tests/reference.cpp, the test suite's). runner.cpp holds what every variant shares: loading
// the candidate, poisoning the output, checking sampled rows and timing.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "HalideBuffer.h"
#include "hattn/hattn.h"

namespace hattn_tune {

using Buf = Halide::Runtime::Buffer<float>;

// A tensor's element type as the kernels store it; its 16-bit conversions are the runtime's
// (hattn::to_16bit, from_16bit: runtime/src/tensor.cpp, compiled into the runner).
using DType = hattn::DType;

// The command line's shape fields. Their meaning per variant is in make_case's comment.
struct Shape {
  int d = 0, b = 0, h = 0, hkv = 0, lq = 0, lk = 0;
  bool causal = false;
  int knob = 0, knob2 = 0;  // KNOB as `K` or `K/K2`; knob2 is 0 when not given
  // VARIANT's dtype suffix (dense.bf16: q, k, v and out in bf16; dense.bf16kv: k and v in bf16,
  // q and out fp32); fp32 without one.
  DType qo = DType::f32, kv = DType::f32;
};

// VARIANT as `variant[.dtype]` (the table's key: dense, dense.bf16, dense.f16kv, ...): the
// variant, with s->qo and s->kv set; false (and `why`) for an unknown dtype.
bool parse_variant(const std::string& text, std::string* variant, Shape* s, std::string* why);

class Case {
 public:
  virtual ~Case() = default;
  // Calls the candidate's entry point once (a CPU call, or an enqueued GPU one) through its
  // variant's signature in hattn/kernel_registry.h, user_context null; Halide's status.
  virtual int call(void* fn) = 0;
  // The output: rows of out().dim(0).extent() contiguous floats, rows() of them.
  virtual Buf& out() = 0;
  int64_t rows() {
    return static_cast<int64_t>(out().number_of_elements()) / out().dim(0).extent();
  }
  // Row `r` of the output in double. False: the row sits too close to a selection boundary
  // (a top-k tie, |u - tau| of SparseK) for fp32 and double to be compared; it is skipped.
  virtual bool reference_row(int64_t r, std::vector<double>* ref) = 0;
  // Poisons the output (NaN) where the kernel writes it; finish() brings a 16-bit output into
  // out() after a call.
  virtual void poison() { out().fill(NAN); }
  virtual void finish() {}
  // The normwise relative error the output may have against the reference: fp32's rounding of
  // sums, and a 16-bit output's rounding (the unit roundoff u, twice: the output once, bf16's
  // pair products round the probabilities too).
  virtual double tolerance() const { return 1e-4; }
};

// The case of `variant` with inputs drawn from `rng`, or null with `why` set.
//   dense, topk:  q [B, H, LQ, D], k and v [B, HKV, LK, D]; KNOB: decode splits (dense), k (topk);
//                 with a dtype (dense.bf16, topk.f16, dense.bf16kv, ...) the inputs are rounded to
//                 it and the kernel gets them stored in it
//   loki:         as topk, keys already in a random orthonormal basis; KNOB k/rank
//   sparsek:      causal; random scores u [B, HKV, LK] select k keys per row (the runtime's
//                 sweep); KNOB k/window
//   topk_ffn:     D = model dim, LQ = tokens, LK = d_ff (B = H = HKV = 1); KNOB k
//   el:           D = model dim, B samples, H heads, LQ = tokens, LK = hidden states per
//                 sample, HKV = 1; KNOB the beam (query rows per sample)
//   linear:       D = input features, LQ = rows, LK = output features (B = H = HKV = 1); KNOB
//                 unused (give 1)
//   sparsek_mask: LQ = rows of scores, LK = their length m (B = H = HKV = 1); KNOB k
std::unique_ptr<Case> make_case(const std::string& variant, const Shape& s, std::mt19937& rng,
                                std::string* why);

}  // namespace hattn_tune
