// libFuzzer target: the public API's validation layer and the kernels behind it, driven by fuzzed
// shapes, strides, offsets, ranks, dtypes, devices, pointers and option knobs over small real
// buffers.
//
// Every tensor of a call lives inside one arena (so the fuzzer can make outputs overlap inputs).
// The harness only ever passes views that either lie inside the arena or that the library must
// refuse without reading them (a view hattn cannot check, e.g. a pointer to memory that is not
// there, is the caller's responsibility: README "Guarantees"). Per call it checks:
//   * refused: a non-empty message, and not one byte of the arena changed;
//   * accepted: the output's elements all written, nothing else in the arena changed, no output
//     overlapping an input, and (finite inputs, moderate scale) the result matches the
//     double-precision reference of tests/reference.cpp (or, for a variant whose result is not
//     an elementwise function of a reference, satisfies its invariants: `Variant::verify`).
// A finding aborts with a line saying what was wrong.
//
// Variants: the cases are the entries of tests/variants.cpp's table (hattn_test::variant_table(),
// the one the reliability tests use), in its order, each once as it is and once more with each of
// its optional tensors (dense with lse, loki with k_lead); an input picks its case by that index
// (the checked-in corpus relies on the order: dense, dense+lse, topk, topk_ffn, loki, loki+k_lead,
// el, sparsek, sparsek_mask). An entry gives the tensors, the call, the reference or invariants
// and, for the SparseK operator (sparsek_mask), its own draws (`Variant::prepare`: per-row
// lengths, rows built on the selection's boundaries). The knobs are drawn here, for every case
// alike.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "hattn/hattn.h"
#include "variants.h"

namespace {

using hattn::Status;
using hattn::TensorView;
using hattn_test::Dims;
using hattn_test::Knobs;
using hattn_test::Variant;

// The harness's own element loops (fills, copies, output scans) are bookkeeping, not code under
// test: without coverage instrumentation their comparisons are not traced (that tracing took
// half of the run time) and add no features that would steer the fuzzer.
#define HATTN_HARNESS_LOOP __attribute__((no_sanitize("coverage")))

constexpr size_t kArenaFloats = size_t{1} << 16;  // 256 KiB: every tensor of a call fits

[[noreturn]] void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_api finding: %s: %s\n", what, detail.c_str());
  std::abort();
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
constexpr uint32_t kPoison = 0x7fa5a5a5u;  // a NaN payload no input ever holds

// The fuzzer's input as draws (for the knobs here and a variant's own, Variant::prepare).
class FuzzDraws : public hattn_test::Draws {
 public:
  explicit FuzzDraws(FuzzedDataProvider& f) : f_(f) {}
  int64_t in_range(int64_t lo, int64_t hi) override {
    return f_.ConsumeIntegralInRange<int64_t>(lo, hi);
  }
  uint64_t any_u64() override { return f_.ConsumeIntegral<uint64_t>(); }

 private:
  FuzzedDataProvider& f_;
};

// One case: a table entry, with one of its optional tensors or none.
struct Case {
  const Variant* v;
  const hattn_test::OptionalRole* extra;  // appended after v->roles; null: none
  std::string name;
  std::vector<std::string> roles;
  std::vector<bool> written, may_be_absent;

  // The views' shapes (the call's ranks).
  std::vector<std::vector<int64_t>> shapes(const Dims& s) const {
    std::vector<std::vector<int64_t>> shapes = hattn_test::view_shapes(*v, s);
    if (extra != nullptr) shapes.push_back(extra->shape(s));
    return shapes;
  }
  // Inputs are uniform in [-2, 2) times this (the table's stddev; 1 for an optional tensor).
  float amplitude(size_t role, const Dims& s) const {
    return v->stddev && role < v->roles.size() ? v->stddev(role, s) : 1.f;
  }
};

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  for (const Variant& v : hattn_test::variant_table()) {
    Case c{&v, nullptr, v.name, v.roles, v.written, v.may_be_absent};
    c.may_be_absent.resize(v.roles.size(), false);
    cases.push_back(c);
    for (const hattn_test::OptionalRole& o : v.optional) {
      Case with = c;
      with.extra = &o;
      with.name = v.name + "+" + o.name;
      with.roles.push_back(o.name);
      with.written.push_back(o.written);
      with.may_be_absent.push_back(false);
      cases.push_back(with);
    }
  }
  return cases;
}

int64_t pick(FuzzedDataProvider& f, std::initializer_list<int64_t> values) {
  std::vector<int64_t> v(values);
  return v[f.ConsumeIntegralInRange<size_t>(0, v.size() - 1)];
}

// Hostile values for one shape entry or stride.
const std::initializer_list<int64_t> kHostileDims = {0,
                                                     -1,
                                                     -5,
                                                     int64_t{1} << 31,
                                                     (int64_t{1} << 31) - 1,
                                                     int64_t{1} << 32,
                                                     std::numeric_limits<int64_t>::max(),
                                                     std::numeric_limits<int64_t>::min()};
const std::initializer_list<int64_t> kHostileStrides = {-1,
                                                        0,
                                                        2,
                                                        (int64_t{1} << 31) - 1,
                                                        int64_t{1} << 31,
                                                        std::numeric_limits<int64_t>::max(),
                                                        std::numeric_limits<int64_t>::min()};

// The largest element offset of a view whose sizes are all >= 1 and strides >= 0, or -1 if it
// does not fit in 62 bits (such a view cannot lie in the arena).
int64_t max_offset(const TensorView& t) {
  __int128 last = 0;
  for (int i = 0; i < t.rank; ++i) last += static_cast<__int128>(t.shape[i] - 1) * t.strides[i];
  return last > (__int128{1} << 62) ? -1 : static_cast<int64_t>(last);
}

// Whether hattn could access memory through `t` (every property it checks looks sane), so
// the view must lie inside the arena for the call to be safe to make at all.
bool plausible(const TensorView& t) {
  if (t.rank < 1 || t.rank > 4 || t.data == nullptr) return false;
  for (int i = 0; i < t.rank; ++i) {
    if (t.shape[i] < 1 || t.strides[i] < 0) return false;
  }
  return true;
}

bool aligned(const TensorView& t) { return (reinterpret_cast<uintptr_t>(t.data) & 3) == 0; }

struct Span {
  int64_t lo, hi;  // element offsets in the arena, inclusive
};

class Harness {
 public:
  Harness() : arena_(kArenaFloats), before_(kArenaFloats), cases_(make_cases()) {}

  void run(FuzzedDataProvider& f) {
    const Case& var = cases_[f.ConsumeIntegralInRange<size_t>(0, cases_.size() - 1)];
    Dims s;
    s.batch = f.ConsumeIntegralInRange<int64_t>(1, 2);
    // Small enough that the double reference stays cheap (it dominates an accepted call); Lq
    // crosses the decode threshold (8), D covers the specializations (64, 128) and others.
    s.kv_heads = f.ConsumeIntegralInRange<int64_t>(1, 2);
    s.q_heads = s.kv_heads * f.ConsumeIntegralInRange<int64_t>(1, 2);
    s.lq = pick(f, {1, 2, 3, 5, 8, 9, 12});
    s.lk = pick(f, {1, 2, 3, 7, 16, 31, 33});
    s.head_dim = pick(f, {1, 2, 3, 8, 16, 24, 33, 64, 128});
    s.lead = std::max<int64_t>(
        1, std::min<int64_t>(s.head_dim, f.ConsumeIntegralInRange<int64_t>(1, 9)));
    // el: 64 and 80 are taken (Dm >= 64, a multiple of 16), the others refused.
    s.model_dim = pick(f, {64, 64, 80, 16, 33, 48});
    s.beam = f.ConsumeIntegralInRange<int64_t>(1, 2);
    Knobs k = knobs(f, s);

    // Views: consecutive in the arena by default, each then possibly bent out of shape.
    const std::vector<std::vector<int64_t>> shapes = var.shapes(s);
    const size_t n = shapes.size();
    std::vector<TensorView> t(n);
    int64_t next = f.ConsumeIntegralInRange<int64_t>(0, 8);
    for (size_t i = 0; i < n; ++i) {
      const std::vector<int64_t>& shape = shapes[i];
      TensorView& v = t[i];
      v.rank = static_cast<int>(shape.size());
      int64_t stride = 1;
      const int64_t pad = f.ConsumeBool() ? f.ConsumeIntegralInRange<int64_t>(0, 3) : 0;
      for (int d = v.rank - 1; d >= 0; --d) {
        v.shape[d] = shape[static_cast<size_t>(d)];
        v.strides[d] = stride;
        stride = stride * v.shape[d] + (d == v.rank - 1 ? 0 : pad);
      }
      int64_t offset = next;
      if (f.ConsumeIntegralInRange<int>(0, 7) == 0) {  // anywhere: may overlap another tensor
        offset = f.ConsumeIntegralInRange<int64_t>(0, static_cast<int64_t>(kArenaFloats) - 1);
      }
      v.data = arena_.data() + offset;
      next = offset + stride + f.ConsumeIntegralInRange<int64_t>(0, 4);
      if (next >= static_cast<int64_t>(kArenaFloats)) next = 0;
      bend(f, &v);
    }
    fill(f, var, s, t, &k);

    // Views hattn cannot check (plausible but outside the arena): only a variant with a plan
    // (dense) validates without touching memory.
    bool in_arena = true;
    for (const TensorView& v : t) {
      if (plausible(v) && spans_of(v).empty()) in_arena = false;
    }
    if (!in_arena) {
      if (var.v->plan) {
        hattn::Dispatch d;
        Status st = var.v->plan(t, k, &d);
        if (!st.ok() && st.message.empty()) finding("refusal without a message", var.name);
      }
      return;
    }

    // Outputs poisoned, then the whole arena remembered.
    for (size_t i = 0; i < n; ++i) {
      if (var.written[i] && plausible(t[i]) && aligned(t[i])) {
        for_each(t[i], [](float& x) { x = from_bits(kPoison); });
      }
    }
    before_ = arena_;
    Status st = var.v->call(t, k, nullptr);
    check(var, s, t, k, st);
  }

 private:
  Knobs knobs(FuzzedDataProvider& f, const Dims& s) {
    Knobs k;
    k.causal = f.ConsumeBool();
    if (f.ConsumeBool()) {
      k.has_scale = true;
      const float scales[] = {0.125f, 1.f, 0.f, -1.f, NAN, INFINITY, 1e-30f, 1e30f};
      k.scale = scales[f.ConsumeIntegralInRange<int>(0, 7)];
    }
    k.k = pick(f, {1, 2, 3, s.lk - 1, s.lk, s.lk + 1, 0, -1, std::numeric_limits<int64_t>::max(),
                   std::numeric_limits<int64_t>::min(), int64_t{1} << 31});
    k.rank = pick(f, {1, 2, s.head_dim / 2, s.head_dim, s.head_dim + 1, 0, -1,
                      std::numeric_limits<int64_t>::max()});
    if (f.ConsumeIntegralInRange<int>(0, 3) == 0) {
      const double fr[] = {0, 1e-9, 0.25, 1, 1.5, NAN, -0.5, INFINITY};
      k.rank_fraction = fr[f.ConsumeIntegralInRange<int>(0, 7)];
      if (f.ConsumeBool()) k.rank = 0;
    }
    if (f.ConsumeIntegralInRange<int>(0, 3) == 0) {
      const double fr[] = {0, 1e-300, 0.125, 1, 1.01, NAN, -1, INFINITY};
      k.k_fraction = fr[f.ConsumeIntegralInRange<int>(0, 7)];
      if (f.ConsumeBool()) k.k = 0;
    }
    k.decode_splits = static_cast<int>(pick(
        f, {0, 0, 1, 3, 64, -1, std::numeric_limits<int>::max(), std::numeric_limits<int>::min()}));
    const auto& kernels = hattn::list_kernels();
    switch (f.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        if (!kernels.empty()) {
          k.kernel = kernels[f.ConsumeIntegralInRange<size_t>(0, kernels.size() - 1)].name;
        }
        break;
      case 1:
        k.kernel = f.ConsumeRandomLengthString(40);
        break;
      default:
        break;
    }
    k.check_finite = f.ConsumeBool();
    k.check_basis = f.ConsumeBool();
    k.heads = pick(f, {1, 2, 4, 4, 16, 3, 0, -1, std::numeric_limits<int64_t>::max()});
    k.beam = f.ConsumeIntegralInRange<int>(0, 3) != 0 ? s.beam : pick(f, {0, -1, 3, s.beam + 1});
    k.window = pick(
        f, {0, 1, 2, s.lk, s.lk + 1, -1, int64_t{1} << 30, std::numeric_limits<int64_t>::min()});
    const float slopes[] = {0.f, 0.1f, -0.5f, NAN, INFINITY};
    k.slope = slopes[f.ConsumeIntegralInRange<int>(0, 4)];
    k.logit = f.ConsumeBool();
    return k;
  }

  // One property of a view made hostile, or none.
  void bend(FuzzedDataProvider& f, TensorView* v) {
    switch (f.ConsumeIntegralInRange<int>(0, 15)) {
      case 0:
        v->shape[f.ConsumeIntegralInRange<int>(0, v->rank - 1)] = pick(f, kHostileDims);
        break;
      case 1:
        v->strides[f.ConsumeIntegralInRange<int>(0, v->rank - 1)] = pick(f, kHostileStrides);
        break;
      case 2:
        v->strides[f.ConsumeIntegralInRange<int>(0, v->rank - 1)] =
            f.ConsumeIntegralInRange<int64_t>(-3, 200);
        break;
      case 3:
        v->rank = static_cast<int>(pick(f, {0, 1, 2, 3, 4, 5, -1, 1000}));
        break;
      case 4:
        v->dtype = static_cast<hattn::DType>(pick(f, {1, 2, 3, -1}));
        break;
      case 5:
        v->device = static_cast<hattn::Device>(pick(f, {1, 2, -1}));
        break;
      case 6:
        v->data = nullptr;
        break;
      case 7:  // misaligned: a pointer into the middle of a float
        v->data = static_cast<char*>(v->data) + f.ConsumeIntegralInRange<int>(1, 3);
        break;
      default:
        break;
    }
  }

  template <typename Fn>
  HATTN_HARNESS_LOOP static void for_each(const TensorView& t, Fn fn) {
    int64_t idx[4] = {0, 0, 0, 0};
    float* base = static_cast<float*>(t.data);
    for (;;) {
      int64_t off = 0;
      for (int i = 0; i < t.rank; ++i) off += idx[i] * t.strides[i];
      fn(base[off]);
      int i = t.rank - 1;
      while (i >= 0 && ++idx[i] == t.shape[i]) idx[i--] = 0;
      if (i < 0) break;
    }
  }

  // Input values: a seeded normal-ish fill (then the variant's own, `Variant::prepare`); a few
  // non-finite values when the fuzzer asks; the Loki basis orthonormal (a signed permutation)
  // unless the fuzzer asks for garbage.
  void fill(FuzzedDataProvider& f, const Case& var, const Dims& s, const std::vector<TensorView>& t,
            Knobs* k) {
    uint64_t state = f.ConsumeIntegral<uint64_t>() | 1;
    std::vector<Span> used;
    for (const TensorView& v : t) {
      for (Span sp : spans_of(v)) used.push_back(sp);
    }
    // Only the views' own elements (a strided view's span may cover most of the arena).
    for (size_t i = 0; i < t.size(); ++i) {
      const TensorView& v = t[i];
      if (spans_of(v).empty() || !aligned(v)) continue;
      const double amplitude = var.amplitude(i, s);
      for_each(v, [&](float& x) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        // Uniform in [-2, 2): close enough to a normal for attention scores.
        x = static_cast<float>((static_cast<double>(state >> 40) * (4.0 / 16777216.0) - 2.0) *
                               amplitude);
      });
    }
    if (var.v->prepare) {
      std::vector<bool> writable;
      for (const TensorView& v : t) writable.push_back(!spans_of(v).empty() && aligned(v));
      FuzzDraws draws(f);
      var.v->prepare(draws, s, t, writable, k);
    }
    non_finite_ = false;
    const int bad =
        f.ConsumeIntegralInRange<int>(0, 15) == 0 ? f.ConsumeIntegralInRange<int>(1, 3) : 0;
    for (int b = 0; b < bad && !used.empty(); ++b) {
      const float values[] = {NAN, INFINITY, -INFINITY};
      const Span sp = used[f.ConsumeIntegralInRange<size_t>(0, used.size() - 1)];
      arena_[static_cast<size_t>(f.ConsumeIntegralInRange<int64_t>(sp.lo, sp.hi))] =
          values[f.ConsumeIntegralInRange<int>(0, 2)];
      non_finite_ = true;
    }
    for (size_t i = 0; i < var.roles.size(); ++i) {
      const TensorView& p = t[i];
      if (var.roles[i] != "basis" || p.rank != 3 || spans_of(p).empty() || !aligned(p)) {
        continue;
      }
      if (f.ConsumeIntegralInRange<int>(0, 7) == 0) continue;  // leave garbage: must be refused
      const int64_t d = std::min(p.shape[1], p.shape[2]);
      // Column c of head h: +-e_perm(c); zeros elsewhere (written over the view's elements).
      for_each(p, [](float& x) { x = 0.f; });
      for (int64_t h = 0; h < p.shape[0]; ++h) {
        std::vector<int64_t> perm(static_cast<size_t>(d));
        for (int64_t c = 0; c < d; ++c) perm[static_cast<size_t>(c)] = c;
        for (int64_t c = d - 1; c > 0; --c) {
          std::swap(perm[static_cast<size_t>(c)],
                    perm[static_cast<size_t>(f.ConsumeIntegralInRange<int64_t>(0, c))]);
        }
        for (int64_t c = 0; c < d; ++c) {
          float* x = static_cast<float*>(p.data) + h * p.strides[0] +
                     perm[static_cast<size_t>(c)] * p.strides[1] + c * p.strides[2];
          *x = f.ConsumeBool() ? 1.f : -1.f;
        }
      }
    }
  }

  // The element span of a plausible view inside the arena (byte-exact for misaligned views:
  // lo and hi are rounded outwards), or nothing if it is not plausible or leaves the arena.
  std::vector<Span> spans_of(const TensorView& t) const {
    if (!plausible(t) || max_offset(t) < 0) return {};
    const auto base = reinterpret_cast<uintptr_t>(arena_.data());
    const auto at = reinterpret_cast<uintptr_t>(t.data);
    if (at < base) return {};
    const int64_t lo = static_cast<int64_t>((at - base) / 4);
    const int64_t hi = static_cast<int64_t>((at - base + 3) / 4) + max_offset(t);
    if (hi >= static_cast<int64_t>(kArenaFloats)) return {};
    return {{lo, hi}};
  }

  void check(const Case& var, const Dims& s, const std::vector<TensorView>& t, const Knobs& k,
             const Status& st) {
    const std::string what = var.name + ": " + hattn::to_string(st.code) + ": " + st.message;
    if (!st.ok()) {
      if (st.message.empty()) finding("refusal without a message", var.name);
      if (std::memcmp(arena_.data(), before_.data(), kArenaFloats * sizeof(float)) != 0) {
        finding("a refused call wrote memory", what);
      }
      return;
    }
    // Accepted 16-bit tensors: only dense (and its paged form), topk, loki, topk_ffn, sparsek and
    // el take them, q, k, v and out (loki's k_lead; topk_ffn's x, w1, w2t and y) of one dtype, or
    // for dense an fp32 q and out over a 16-bit k and v (lse and loki's basis stay fp32;
    // sparsek's scoring inputs x and w_score may have any dtype); el's weights and memory of one
    // dtype, x and y each fp32 or that one.
    // The element checks below read 4-byte floats, so such a call stops here; test_dense
    // compares 16-bit results with the reference.
    bool sixteen = false;
    for (const TensorView& v : t) {
      sixteen |= v.rank > 0 && (v.dtype == hattn::DType::bf16 || v.dtype == hattn::DType::f16);
    }
    if (sixteen) {
      const std::string& n = var.v->name;
      if (n != "dense" && n != "dense_paged" && n != "topk" && n != "topk_paged" && n != "loki" &&
          n != "loki_paged" && n != "topk_ffn" && n != "sparsek" && n != "el") {
        finding("accepted 16-bit tensors", what);
      }
      auto dtype_of = [&](const std::string& role) {
        for (size_t i = 0; i < t.size(); ++i) {
          if (var.roles[i] == role && t[i].rank > 0) return t[i].dtype;
        }
        return hattn::DType::f32;
      };
      if (n == "el") {
        const hattn::DType w = dtype_of("wq");
        for (size_t i = 0; i < t.size(); ++i) {
          const std::string& r = var.roles[i];
          const bool activation = r == "x" || r == "y";
          if (t[i].rank == 0 || (activation && t[i].dtype == hattn::DType::f32)) continue;
          if (t[i].dtype != w) finding("accepted tensors of different dtypes", what + " " + r);
        }
        return;
      }
      const hattn::DType q = dtype_of(n == "topk_ffn" ? "y" : "q"), kv = t[1].dtype;
      const bool mixed_kv = n == "dense" && q == hattn::DType::f32 && kv != hattn::DType::f32;
      for (size_t i = 0; i < t.size(); ++i) {
        const std::string& r = var.roles[i];
        if (r == "lse" || r == "basis" || t[i].rank == 0) continue;
        if (n == "sparsek" && (r == "x" || r == "w_score")) continue;
        const bool cache = r != "q" && r != "out";  // k, v, k_rot, k_lead, k_pages, v_pages
        if (t[i].dtype != (mixed_kv && cache ? kv : q)) {
          finding("accepted tensors of different dtypes", what + " " + r);
        }
      }
      return;
    }
    // Accepted: every view well-formed, and outputs overlapping nothing.
    for (size_t i = 0; i < t.size(); ++i) {
      const TensorView& v = t[i];
      if (v.rank == 0 && var.may_be_absent[i]) continue;  // an absent optional tensor
      if (!plausible(v) || !aligned(v) || v.dtype != hattn::DType::f32 ||
          v.device != hattn::Device::cpu || v.strides[v.rank - 1] != 1) {
        finding("accepted an invalid view", what + " " + var.roles[i] + " " + v.describe());
      }
    }
    // Every output element written; then, with the outputs copied into the snapshot, the
    // arena must equal it (one memcmp: nothing outside the outputs changed).
    for (size_t i = 0; i < t.size(); ++i) {
      if (!var.written[i]) continue;
      for (size_t j = 0; j < t.size(); ++j) {
        if (j == i) continue;
        for (Span a : spans_of(t[i]))
          for (Span b : spans_of(t[j]))
            if (a.lo <= b.hi && b.lo <= a.hi) finding("accepted overlapping tensors", what);
      }
      for_each(t[i], [&](float& x) {
        if (bits(x) == kPoison) finding("an output element was not written", what);
        before_[static_cast<size_t>(&x - arena_.data())] = x;
      });
    }
    if (std::memcmp(arena_.data(), before_.data(), kArenaFloats * sizeof(float)) != 0) {
      size_t e = 0;
      while (bits(arena_[e]) == bits(before_[e])) ++e;
      finding("memory outside the outputs changed",
              what + " at arena element " + std::to_string(e));
    }
    // The result against the variant's invariants, or against the reference when it is well
    // defined and numerically tame.
    if (var.v->verify) {
      const std::string wrong = var.v->verify(t, k, !non_finite_);
      if (!wrong.empty())
        finding("the result breaks the operator's invariants", what + ": " + wrong);
      return;
    }
    if (non_finite_ || (k.has_scale && k.scale > 100.f)) return;
    std::vector<double> ref, gap;
    var.v->reference(t, s, k, &ref, &gap);
    if (ref.empty()) return;
    const TensorView& o = t[static_cast<size_t>(var.v->result)];
    const int64_t row_len = o.shape[o.rank - 1];
    int64_t flat = 0;
    for_each(o, [&](float& x) {
      const size_t row = static_cast<size_t>(flat / row_len);
      const double r = ref[static_cast<size_t>(flat++)];
      // Rows whose k-th and (k+1)-th score are this close may legitimately select differently.
      if (!gap.empty() && !(gap[row] > 1e-3)) return;
      if (!(std::abs(x - r) <= 1e-4 + 1e-3 * std::abs(r))) {
        finding("result differs from the reference", what + " element " + std::to_string(flat - 1) +
                                                         " got " + std::to_string(x) + " ref " +
                                                         std::to_string(r));
      }
    });
  }

  std::vector<float> arena_, before_;
  const std::vector<Case> cases_;
  bool non_finite_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One worker: the kernels run on the fuzzing thread (threads are tested in tests/).
  hattn::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness* harness = new Harness();
  FuzzedDataProvider f(data, size);
  harness->run(f);
  return 0;
}
