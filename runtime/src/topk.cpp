// hattn::topk_attention and hattn::topk_ffn: validate, choose a kernel, call it, report.
#include <algorithm>
#include <cmath>
#include <string>

#include "dispatch.h"
#include "halide_glue.h"
#include "paged_internal.h"
#include "validate.h"

namespace hattn {

Status topk_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TopkOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  // bf16 and f16 go on to the dispatch, which finds their kernels (or refuses, listing what the
  // kernel set holds: a consumer's set may lack some).
  Status s = validate_cpu_attention("topk", q, k, v, out, options.causal, options, &shape, nullptr,
                                    /*sixteen_bit=*/true);
  if (!s.ok()) return s;
  s = check_k(options.k, "keys");
  if (!s.ok()) return s;
  Kernel<hattn_topk_fn> kernel;
  std::string reason;
  s = choose_kernel(attention_request(shape, options.causal, options.kernel), &kernel, &reason);
  if (!s.ok()) return s;
  const int64_t k_used = std::min<int64_t>(options.k, shape.lk);
  if (k_used < options.k) {
    reason += "; k=" + std::to_string(options.k) + " clamped to Lk=" + std::to_string(shape.lk) +
              " (exact dense attention)";
  }
  if (chosen != nullptr) *chosen = Dispatch{kernel.name(), reason, 1};
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v};
    const char* names[] = {"q", "k", "v"};
    s = finite_or_refuse(views, names, 3);
    if (!s.ok()) return s;
  }
  HalideBuffer qb(q), kb(k), vb(v), ob(out);
  return kernel.call(qb, kb, vb, resolve_scale(options, shape.head_dim),
                     static_cast<int32_t>(k_used), ob);
}

Status paged_topk_attention(const TensorView& q, const PagedKvCache& cache, const TensorView& out,
                            const TopkOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  Status s = check_paged_call(q, cache, out, paged_options(options, options.causal), &shape);
  if (!s.ok()) {
    return s;
  }
  s = check_k(options.k, "keys");
  if (!s.ok()) {
    return s;
  }
  if (options.check_finite) {
    s = check_finite_paged(q, cache);
    if (!s.ok()) {
      return s;
    }
  }
  // The paged decode kernel where one takes the call; else (prefill, a head dim without a paged
  // kernel, a contiguous kernel forced) each sequence's pages gathered for topk_attention.
  Kernel<hattn_topk_paged_fn> kernel;
  std::string reason, gather_why;
  s = choose_paged_kernel(shape, options.causal, options.kernel, &kernel, &reason, &gather_why);
  if (!s.ok()) {
    return s;
  }
  if (!gather_why.empty()) {
    TopkOptions o = options;
    o.check_finite = false;  // checked above, for the whole batch
    return run_gathered(
        q, cache, {&cache.k_pages, &cache.v_pages}, out, gather_why, chosen,
        [&](const TensorView& q_b, const std::vector<TensorView>& kv, const TensorView& out_b,
            Dispatch* d) { return topk_attention(q_b, kv[0], kv[1], out_b, o, d); });
  }
  reason += "; per sequence k=" + std::to_string(options.k) + ", clamped to its length";
  if (chosen != nullptr) {
    *chosen = Dispatch{kernel.name(), reason, 1};
  }
  const float scale = resolve_scale(options, shape.head_dim);
  HalideBuffer kb(cache.k_pages), vb(cache.v_pages);
  return run_per_sequence(q, cache, out,
                          [&](HalideBuffer& qb, HalideBuffer& table, HalideBuffer& length,
                              HalideBuffer& ob, int64_t len) {
                            return kernel.call(qb, kb, vb, table, length, scale,
                                               static_cast<int32_t>(std::min(options.k, len)), ob);
                          });
}

Status topk_ffn(const TensorView& x, const TensorView& w1, const TensorView& w2t,
                const TensorView& y, const TopkFfnOptions& options, Dispatch* chosen) {
  static const char* const kTokenDims[2] = {"T", "D"};
  static const char* const kWeightDims[2] = {"d_ff", "D"};
  // f32, bf16 or f16, one dtype for the four (the kernel's name says which).
  Status s = check_tensor(x, "x", 2, kTokenDims, false, /*any_dtype=*/true);
  if (s.ok()) s = check_tensor(w1, "w1", 2, kWeightDims, false, /*any_dtype=*/true);
  if (s.ok()) s = check_tensor(w2t, "w2t", 2, kWeightDims, false, /*any_dtype=*/true);
  if (s.ok()) s = check_tensor(y, "y", 2, kTokenDims, true, /*any_dtype=*/true);
  if (!s.ok()) return s;
  const TensorView* views[] = {&x, &w1, &w2t};
  const char* names[] = {"x", "w1", "w2t"};
  for (int i = 0; i < 3; ++i) {
    if (views[i]->dtype != y.dtype) {
      return invalid(std::string("topk_ffn takes one dtype for x, w1, w2t and y: ") + names[i] +
                     " is " + to_string(views[i]->dtype) + ", y is " + to_string(y.dtype));
    }
  }
  for (int i = 0; i < 3; ++i) {
    if (views[i]->device != Device::cpu || y.device != Device::cpu) {
      return Status{StatusCode::unsupported, "topk_ffn has CPU kernels only"};
    }
  }
  const int64_t d = x.shape[1], d_ff = w1.shape[0];
  if (w1.shape[1] != d || w2t.shape[1] != d) {
    return invalid("model dim D differs: x has D=" + std::to_string(d) + ", w1 [d_ff, D] = [" +
                   std::to_string(w1.shape[0]) + ", " + std::to_string(w1.shape[1]) +
                   "], w2t [d_ff, D] = [" + std::to_string(w2t.shape[0]) + ", " +
                   std::to_string(w2t.shape[1]) + "]");
  }
  if (w2t.shape[0] != d_ff) {
    return invalid("w1 and w2t must have the same d_ff, got " + std::to_string(d_ff) + " and " +
                   std::to_string(w2t.shape[0]) + " (w2t is W2 transposed: [d_ff, D])");
  }
  if (y.shape[0] != x.shape[0] || y.shape[1] != d) {
    return invalid("y must have x's shape [" + std::to_string(x.shape[0]) + ", " +
                   std::to_string(d) + "]");
  }
  for (int i = 0; i < 3; ++i) {
    if (tensors_overlap(y, *views[i])) {
      return invalid(std::string("y overlaps ") + names[i] + " in memory");
    }
  }
  s = check_k(options.k, "hidden units");
  if (!s.ok()) return s;

  KernelRequest request;  // one kernel per family and dtype: no phase, mask or head dim
  request.forced = options.kernel;
  request.dtype = to_string(y.dtype);
  Kernel<hattn_topk_ffn_fn> kernel;
  std::string reason;
  s = choose_kernel(request, &kernel, &reason);
  if (!s.ok()) return s;
  const int64_t k_used = std::min<int64_t>(options.k, d_ff);
  reason = "T=" + std::to_string(x.shape[0]) + " D=" + std::to_string(d) +
           " d_ff=" + std::to_string(d_ff) + " k=" + std::to_string(k_used);
  if (k_used < options.k) {
    reason += " (k=" + std::to_string(options.k) + " clamped to d_ff: the dense FFN)";
  }
  if (chosen != nullptr) *chosen = Dispatch{kernel.name(), reason, 1};
  if (options.check_finite) {
    s = finite_or_refuse(views, names, 3);
    if (!s.ok()) return s;
  }
  HalideBuffer xb(x), w1b(w1), w2b(w2t), yb(y);
  return kernel.call(xb, w1b, w2b, static_cast<int32_t>(k_used), yb);
}

}  // namespace hattn
