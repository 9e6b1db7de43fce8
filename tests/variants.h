// Every variant as one table entry: its tensors (roles in call order), how to call it, its
// reference (or the invariants its result must satisfy) and which output rows read which input
// element. The reliability tests (test_hostile, test_determinism, test_threads' mixed-variant
// test, test_error_paths) cover a variant as soon as it has an entry here, and so does the fuzz
// target tests/fuzz/fuzz_api.cpp, which builds its cases from the same entries.
//
// To cover a new variant: add one Variant to the table in variants.cpp (build()).
// Knob-limit cases (k, r, heads, beam, window, budget at and beyond their limits) are part of the
// entry (Variant::knob_cases); the fuzz target draws its knobs itself and calls the entry's call.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "reference.h"
#include "test_support.h"

namespace hattn_test {

// The sizes of one call: an attention shape and what some variants read besides it. An
// AttnShape converts to it with the defaults (el: Dm = el_model_dim, one beam).
struct Dims : AttnShape {
  Dims() = default;
  Dims(const AttnShape& s) : AttnShape(s) {}  // implicit: the tests pass AttnShapes
  int64_t model_dim = 0;                      // el: Dm (0: el_model_dim of the shape)
  int64_t beam = 1;  // el: x has batch * beam rows; sparsek_mask: rows of width Lk*group*beam
  int64_t lead = 1;  // loki's optional k_lead: its leading channels
};

// The knobs of every variant (each reads the ones it has). The defaults are the options'.
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
  bool check_finite = false;
  bool check_basis = true;  // loki
  // sparsek_mask (drawn by its `prepare`): the lengths, passed when has_lengths, and what each
  // row of z holds (its `verify` prints it).
  bool has_lengths = false;
  std::vector<int64_t> lengths;
  std::vector<std::string> row_kind;
};

// One knob setting at or beyond a limit, and what the call must do with it.
struct KnobCase {
  std::string label;
  Knobs knobs;
  bool accepted = true;
  std::string phrase;  // refused: the message must contain it
};

// The tensors of a call as a reference reads them: views in role order (a test's host tensors at
// their own rank, or the fuzz target's views at the call's ranks).
struct CallTensors {
  CallTensors(const std::vector<hattn::TensorView>& views) : v(views) {}
  CallTensors(const std::vector<HostTensor>& t);
  const hattn::TensorView& operator[](size_t i) const { return v[i]; }
  size_t size() const { return v.size(); }
  std::vector<hattn::TensorView> v;
};

// Where a variant's own draws (Variant::prepare) come from: the fuzz target's input.
class Draws {
 public:
  virtual ~Draws() = default;
  virtual int64_t in_range(int64_t lo, int64_t hi) = 0;  // inclusive
  virtual uint64_t any_u64() = 0;
  int64_t pick(std::initializer_list<int64_t> values) {
    return values.begin()[in_range(0, static_cast<int64_t>(values.size()) - 1)];
  }
};

// A tensor the call takes only when given, after the roles (dense's lse output, loki's k_lead).
// The reliability tests never pass one; the fuzz target makes a case with each.
struct OptionalRole {
  std::string name;
  bool written = false;
  std::function<std::vector<int64_t>(const Dims&)> shape;  // also the view's
};

struct Variant {
  std::string name;
  std::vector<std::string> roles;  // tensor names in call order, e.g. q, k, v, out
  std::vector<bool> written;       // per role: an output
  int result = 0;                  // the role compared with the reference
  // Attention variants map Dims to [B, H, L, D] tensors; topk_ffn reads T = lq tokens,
  // d_ff = lk hidden units and D = head_dim; el reads T = lq, N = lk, Dm = Dims::model_dim and
  // x's B * beam rows; sparsek_mask rows = B * Lq of width m = Lk * (Hq / Hkv) * beam.
  // Host tensors have rank 3 or 4: a matrix is [1, rows, cols], a vector [1, 1, n].
  std::function<std::vector<std::vector<int64_t>>(const Dims&)> shapes;
  // Per role, the rank of the view the call takes (leading unit dimensions of the host tensor
  // dropped: a weight matrix is rank 2, a bias rank 1); empty: the host tensor's own rank.
  std::vector<int> view_ranks;
  // Optional tensors, each appended to the roles' views when given (call and reference see them
  // by the number of views).
  std::vector<OptionalRole> optional;
  // Per role: may be given as a rank-0 view, i.e. left out (el's biases: zero); empty: none.
  std::vector<bool> may_be_absent;
  std::function<hattn::Status(const std::vector<hattn::TensorView>&, const Knobs&,
                              hattn::Dispatch*)>
      call;
  // Optional: the call's validation and dispatch alone, touching no tensor's memory (dense's
  // plan_attention).
  std::function<hattn::Status(const std::vector<hattn::TensorView>&, const Knobs&,
                              hattn::Dispatch*)>
      plan;
  // The double-precision result of roles[result]; gap (per output row, may stay empty) as in
  // reference_topk_attention. Leaves `out` empty where it has none (loki with k_lead).
  std::function<void(const CallTensors&, const Dims&, const Knobs&, std::vector<double>* out,
                     std::vector<double>* gap)>
      reference;
  // Optional, for a result that is not an elementwise function of a reference (the SparseK
  // operator), instead of `reference`: checks an accepted call's views against the invariants
  // ("" when they hold, else what is wrong). Arguments it should have refused are checked
  // whatever the inputs; the values only when `finite` (no non-finite input).
  std::function<std::string(const std::vector<hattn::TensorView>&, const Knobs&, bool finite)>
      verify;
  // Optional: the variant's own input draws, made after the inputs are filled with noise. It may
  // rewrite the values of the views marked `writable` and set its knobs.
  std::function<void(Draws&, const Dims&, const std::vector<hattn::TensorView>&,
                     const std::vector<bool>& writable, Knobs*)>
      prepare;
  // Whether output row `row` (row-major over all but the last dimension) may depend on the
  // input element at `index` of role `role` (README "Guarantees": which rows a non-finite input
  // may reach).
  std::function<bool(int role, const std::vector<int64_t>& index, int64_t row, const AttnShape& s,
                     bool causal)>
      reads;
  // Per role: read by every output row (weights), so a non-finite value in it may reach them all
  // (empty: no such role).
  std::vector<bool> shared;
  // Standard deviation of each input role's random values (empty: 1 for every role); the fuzz
  // target fills uniform values of about this size.
  std::function<float(size_t role, const Dims&)> stddev;
  bool has_causal = true;        // takes a causal mask (fully masked rows exist)
  bool masked_rows_zero = true;  // a row that sees no key is zero (el: its output bias)
  Knobs defaults;                // knobs for an ordinary call (k, r set)
  std::function<std::vector<KnobCase>(const AttnShape&)> knob_cases;
  // Only the fuzz target takes it (the SparseK operator: checked by `verify`; it has no
  // reference, reads or knob cases for the reliability tests, and test_sparsek covers it).
  bool fuzz_only = false;
};

// Every entry in table order (the fuzz corpus picks entries by this order): the variants of
// all_variants(), then the fuzz_only ones.
const std::vector<Variant>& variant_table();
// The entries the reliability tests cover: variant_table() without the fuzz_only ones.
const std::vector<Variant>& all_variants();
// el's model width for an AttnShape: H * D rounded up to a multiple of 16, at least 64 (what
// el_attention takes).
int64_t el_model_dim(const AttnShape& s);
const Variant& variant_named(const std::string& name);  // any entry of variant_table()

// The shapes of the call's views for `s`: shapes(s) with the leading dimensions that view_ranks
// drops.
std::vector<std::vector<int64_t>> view_shapes(const Variant& v, const Dims& s);

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
