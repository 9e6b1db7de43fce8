// Every attention variant as one table entry, so that the reliability tests (test_hostile,
// test_determinism, test_threads' mixed-variant test, test_error_paths) cover a variant as soon
// as it has an entry here: its tensors (roles in call order), how to call it, its reference and
// which output rows read which input element.
//
// To cover a new variant: add one Variant to the list in variants.cpp (all_variants()).
// Knob-limit cases (k, r, heads, beam, window, budget at and beyond their limits) are part of the
// entry (Variant::knob_cases).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "reference.h"
#include "test_support.h"

namespace hattn_test {

// The knobs of every variant (each reads the ones it has).
struct Knobs {
  bool causal = false;
  int64_t k = 0;                // keys / hidden units kept (topk, topk_ffn, loki), budget (sparsek)
  int64_t window = 0;           // sparsek
  float slope = 0.f;            // sparsek
  bool logit = false;           // sparsek: SparsekGate::logit
  int64_t heads = 0, beam = 1;  // el
  int64_t rank = 0;
  double rank_fraction = 0, k_fraction = 0;
  int decode_splits = 0;
  bool has_scale = false;
  float scale = 0.f;
  std::string kernel;
};

// One knob setting at or beyond a limit, and what the call must do with it.
struct KnobCase {
  std::string label;
  Knobs knobs;
  bool accepted = true;
  std::string phrase;  // refused: the message must contain it
};

struct Variant {
  std::string name;
  std::vector<std::string> roles;  // tensor names in call order, e.g. q, k, v, out
  std::vector<bool> written;       // per role: an output
  int result = 0;                  // the role compared with the reference
  // Attention variants map AttnShape to [B, H, L, D] tensors; topk_ffn reads T = lq tokens,
  // d_ff = lk hidden units and D = head_dim; el reads T = lq, N = lk and Dm = el_model_dim(s).
  // Host tensors have rank 3 or 4: a matrix is [1, rows, cols], a vector [1, 1, n].
  std::function<std::vector<std::vector<int64_t>>(const AttnShape&)> shapes;
  // Per role, the rank of the view the call takes (leading unit dimensions of the host tensor
  // dropped: a weight matrix is rank 2, a bias rank 1); empty: the host tensor's own rank.
  std::vector<int> view_ranks;
  std::function<hattn::Status(const std::vector<hattn::TensorView>&, const Knobs&,
                              hattn::Dispatch*)>
      call;
  // The double-precision result of roles[result]; gap (per output row, may stay empty) as in
  // reference_topk_attention.
  std::function<void(const std::vector<HostTensor>&, const AttnShape&, const Knobs&,
                     std::vector<double>* out, std::vector<double>* gap)>
      reference;
  // Whether output row `row` (row-major over all but the last dimension) may depend on the
  // input element at `index` of role `role` (README "Guarantees": which rows a non-finite input
  // may reach).
  std::function<bool(int role, const std::vector<int64_t>& index, int64_t row,
                     const AttnShape& s, bool causal)>
      reads;
  // Per role: read by every output row (weights), so a non-finite value in it may reach them all
  // (empty: no such role).
  std::vector<bool> shared;
  // Standard deviation of each input role's random values (empty: 1 for every role).
  std::function<float(size_t role, const AttnShape&)> stddev;
  bool has_causal = true;        // takes a causal mask (fully masked rows exist)
  bool masked_rows_zero = true;  // a row that sees no key is zero (el: its output bias)
  Knobs defaults;          // knobs for an ordinary call (k, r set)
  std::function<std::vector<KnobCase>(const AttnShape&)> knob_cases;
};

const std::vector<Variant>& all_variants();
// el's model width for an AttnShape: H * D rounded up to a multiple of 16, at least 64 (what
// el_attention takes).
int64_t el_model_dim(const AttnShape& s);
const Variant& variant_named(const std::string& name);

// Tensors of a call: inputs filled (Loki's basis orthonormal), outputs poisoned and snapshot.
std::vector<HostTensor> make_tensors(const Variant& v, const AttnShape& s, TestRng& rng,
                                     Layout layout = Layout::kContiguous);
std::vector<hattn::TensorView> views_of(const Variant& v, const std::vector<HostTensor>& t);

// Runs the call on `t` (outputs re-poisoned first) and compares roles[result] with the
// reference ("" when it matches; rows near a selection tie are left out as in compare_rows).
std::string run_and_compare(const Variant& v, std::vector<HostTensor>* t, const AttnShape& s,
                            const Knobs& k, hattn::Dispatch* d = nullptr);

// The same call's result, for bitwise comparisons (status message on failure, in *error).
std::vector<float> run_result(const Variant& v, std::vector<HostTensor>* t, const Knobs& k,
                              std::string* error);

}  // namespace hattn_test
