// hattn::sparsek_attention(_scored): SPARSEK over whole sequences. The selections of every query
// row come from the per-prefix mask sweep (sparsek_sweep.h), one kv head per task; then one
// call of the sparsek kernel attends over each row's window and selection.
#include <algorithm>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "halide_glue.h"
#include "sparsek_internal.h"
#include "sparsek_sweep.h"

namespace hattn {

Status choose_sparsek(const SparsekOptions& o, const AttentionShape& shape, SparsekKernel* kernel,
                      std::string* reason) {
  KernelRequest request = attention_request(shape, true, o.kernel);
  request.has_phases = false;  // prefill and decode steps are the same kernel
  return choose_kernel(request, kernel, reason);
}

Status run_sparsek_kernel(const SparsekKernel& kernel, const TensorView& q, const TensorView& k,
                          const TensorView& v, const TensorView& out, Selections& sel,
                          const AttentionShape& shape, const SparsekOptions& o,
                          const SparsekKeys& keys) {
  const int64_t b = shape.batch, h = shape.kv_heads, rows = shape.lq;
  HalideBuffer qb(q), kb(k), vb(v), ob(out);
  HalideBuffer ib(sel.index.data(), {b, h, rows, sel.slots});
  HalideBuffer gb(sel.gate.data(), {b, h, rows, sel.slots});
  HalideBuffer cb(sel.count.data(), {b, h, rows});
  const auto window =
      static_cast<int32_t>(std::min<int64_t>(o.window, std::numeric_limits<int32_t>::max()));
  return kernel.call(qb, kb, vb, ib, gb, cb, resolve_scale(o, shape.head_dim), window,
                     static_cast<int32_t>(keys.q_pos0), static_cast<int32_t>(keys.ring),
                     static_cast<int32_t>(o.gate == SparsekGate::logit ? 1 : 0), ob);
}

namespace {

// The selections of every query row of a whole-sequence call. `u_of(b, h, u)` fills a kv head's
// Lk scores.
template <typename ScoreFn>
void sweep_all(const AttentionShape& sh, const SparsekOptions& o, ScoreFn&& u_of, Selections* sel) {
  sel->slots = std::max<int64_t>(1, std::min(o.k, sh.lk));
  const int64_t heads = sh.batch * sh.kv_heads;
  sel->index.assign(static_cast<size_t>(heads * sh.lq * sel->slots), 0);
  sel->gate.assign(sel->index.size(), 0.f);
  sel->count.assign(static_cast<size_t>(heads * sh.lq), 0);
  parallel_for(heads, [&](int64_t t) {
    const int64_t b = t / sh.kv_heads, h = t % sh.kv_heads;
    std::vector<float> u(static_cast<size_t>(sh.lk));
    u_of(b, h, u.data());
    // A budget beyond Lk keeps every candidate, as Lk itself does (p is all ones either way).
    SparsekSweep sweep(std::min(o.k, sh.lk));
    int64_t pushed = 0;
    for (int64_t i = 0; i < sh.lq; ++i) {
      const int64_t candidates = std::min(sh.lk, i + (sh.lk - sh.lq) - o.window + 1);
      for (; pushed < candidates; ++pushed) sweep.push(u[static_cast<size_t>(pushed)], pushed);
      const size_t row = static_cast<size_t>(t * sh.lq + i);
      sel->count[row] = o.k > 0
                            ? sweep.select(&sel->index[row * static_cast<size_t>(sel->slots)],
                                           &sel->gate[row * static_cast<size_t>(sel->slots)], false)
                            : 0;
    }
  });
}

// The common path of sparsek_attention(_scored).
template <typename ScoreFn>
Status attention_common(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const AttentionShape& shape,
                        const SparsekOptions& options, ScoreFn&& u_of, Dispatch* chosen) {
  SparsekKernel kernel;
  std::string reason;
  Status s = choose_sparsek(options, shape, &kernel, &reason);
  if (!s.ok()) return s;
  reason += "; k=" + std::to_string(options.k) + ", w=" + std::to_string(options.window) +
            ", gate " + (options.gate == SparsekGate::value ? "value" : "logit");
  if (chosen != nullptr) *chosen = Dispatch{kernel.name(), reason, 1};
  Selections sel;
  try {
    sweep_all(shape, options, u_of, &sel);
  } catch (const std::bad_alloc&) {
    return invalid("sparsek: the selections of " + std::to_string(shape.lq) + " rows x " +
                   std::to_string(std::min(options.k, shape.lk)) +
                   " keys per kv head do not fit in memory");
  }
  return run_sparsek_kernel(kernel, q, k, v, out, sel, shape, options,
                            SparsekKeys{shape.lk - shape.lq, 0});
}

}  // namespace

Status sparsek_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& x, const TensorView& w_score, const TensorView& out,
                         const SparsekOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  Status s = validate_cpu_attention("sparsek", q, k, v, out, true, options, &shape, nullptr,
                                    /*sixteen_bit=*/true);
  if (s.ok()) s = check_sparsek_options(options);
  if (s.ok()) s = check_scoring(x, w_score, shape.batch, shape.lk, shape.kv_heads);
  if (!s.ok()) return s;
  if (tensors_overlap(out, x)) return invalid("out overlaps x in memory");
  if (tensors_overlap(out, w_score)) return invalid("out overlaps w_score in memory");
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v, &x, &w_score};
    const char* names[] = {"q", "k", "v", "x", "w_score"};
    s = finite_or_refuse(views, names, 5);
    if (!s.ok()) return s;
  }
  auto u_of = [&](int64_t b, int64_t h, float* u) {
    score_rows(x, w_score, options.slope, b, h, 0, shape.lk, u);
  };
  return attention_common(q, k, v, out, shape, options, u_of, chosen);
}

Status sparsek_attention_scored(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& u, const TensorView& out,
                                const SparsekOptions& options, Dispatch* chosen) {
  static const char* const kU[3] = {"B", "Hkv", "Lk"};
  AttentionShape shape;
  Status s = validate_cpu_attention("sparsek", q, k, v, out, true, options, &shape, nullptr,
                                    /*sixteen_bit=*/true);
  if (s.ok()) s = check_sparsek_options(options);
  if (s.ok()) s = check_tensor(u, "u", 3, kU, false);
  if (s.ok()) s = check_sparsek_host(u, "u");
  if (!s.ok()) return s;
  if (u.shape[0] != shape.batch || u.shape[1] != shape.kv_heads || u.shape[2] != shape.lk) {
    return invalid("u must be [B, Hkv, Lk] = [" + std::to_string(shape.batch) + ", " +
                   std::to_string(shape.kv_heads) + ", " + std::to_string(shape.lk) + "], got " +
                   shape_str(u));
  }
  if (tensors_overlap(out, u)) return invalid("out overlaps u in memory");
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v, &u};
    const char* names[] = {"q", "k", "v", "u"};
    s = finite_or_refuse(views, names, 4);
    if (!s.ok()) return s;
  }
  auto u_of = [&](int64_t b, int64_t h, float* dst) {
    const float* src = static_cast<const float*>(u.data) + b * u.strides[0] + h * u.strides[1];
    for (int64_t j = 0; j < shape.lk; ++j) dst[j] = src[j * u.strides[2]];
  };
  return attention_common(q, k, v, out, shape, options, u_of, chosen);
}

}  // namespace hattn
