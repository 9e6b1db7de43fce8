// hattn::loki_attention: validate (tensors, basis, r and k), choose a kernel, call it, report.
#include <algorithm>
#include <cmath>
#include <string>

#include "dispatch.h"
#include "halide_glue.h"
#include "hattn/loki_prep.h"
#include "paged_internal.h"
#include "validate.h"

namespace hattn {

int64_t loki_count(double fraction, int64_t n) {
  return std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n)));
}

namespace {

// r from options: absolute, or d_f * D. Refuses values outside [1, D].
Status resolve_rank(const LokiOptions& o, int64_t head_dim, int64_t* rank) {
  if (o.rank != 0 && o.rank_fraction != 0) {
    return invalid("give the Loki rank as rank or as rank_fraction, not both");
  }
  if (o.rank == 0) {
    if (!(o.rank_fraction > 0 && o.rank_fraction <= 1)) {
      return invalid(
          "Loki rank: set rank in [1, D] or rank_fraction in (0, 1], got rank=0 and "
          "rank_fraction=" +
          std::to_string(o.rank_fraction));
    }
    *rank = loki_count(o.rank_fraction, head_dim);
    return Status::success();
  }
  if (o.rank < 1 || o.rank > head_dim) {
    return invalid("Loki rank r=" + std::to_string(o.rank) +
                   " is outside [1, D=" + std::to_string(head_dim) + "]");
  }
  *rank = o.rank;
  return Status::success();
}

// k from options: absolute, or k_f * Lk. Refuses k < 1.
Status resolve_k(const LokiOptions& o, int64_t lk, int64_t* k) {
  if (o.k != 0 && o.k_fraction != 0) {
    return invalid("give the Loki top-k count as k or as k_fraction, not both");
  }
  if (o.k == 0 && o.k_fraction != 0) {
    if (!(o.k_fraction > 0 && o.k_fraction <= 1)) {
      return invalid("Loki k_fraction must be in (0, 1], got " + std::to_string(o.k_fraction));
    }
    *k = loki_count(o.k_fraction, lk);
    return Status::success();
  }
  Status s = check_k(o.k, "keys");
  if (s.ok()) *k = o.k;
  return s;
}

Status check_basis_tensor(const TensorView& basis, const AttentionShape& shape) {
  static const char* const kDims[3] = {"Hkv", "D", "D"};
  Status s = check_tensor(basis, "basis", 3, kDims, false, /*any_dtype=*/true);
  if (s.ok() && basis.dtype != DType::f32) {
    return invalid(std::string("basis has dtype ") + to_string(basis.dtype) +
                   "; the basis is float32 in every dtype (the query's rotation is fp32)");
  }
  if (!s.ok()) return s;
  if (basis.shape[0] != shape.kv_heads || basis.shape[1] != shape.head_dim ||
      basis.shape[2] != shape.head_dim) {
    return invalid("basis must be [Hkv, D, D] = [" + std::to_string(shape.kv_heads) + ", " +
                   std::to_string(shape.head_dim) + ", " + std::to_string(shape.head_dim) +
                   "], got " + basis.describe());
  }
  if (basis.device != Device::cpu) {
    return Status{StatusCode::unsupported, "loki attention has CPU kernels only; basis is on " +
                                               std::string(to_string(basis.device))};
  }
  return Status::success();
}

// The optional narrow copy of the leading channels of `keys` (k_rot [B, Hkv, Lk, D], or a paged
// cache's k_pages [P, Hkv, S, D]): the same outer dims `dims`, R channels with r <= R <= D.
Status check_lead(const TensorView* lead, const TensorView& keys, const char* keys_name,
                  const char* const* dims, int64_t rank, const TensorView& out) {
  if (lead == nullptr) return Status::success();
  Status s = check_tensor(*lead, "k_lead", 4, dims, false, /*any_dtype=*/true);
  if (!s.ok()) return s;
  if (lead->dtype != keys.dtype) {
    return invalid(std::string("k_lead has dtype ") + to_string(lead->dtype) + " but " + keys_name +
                   " has " + to_string(keys.dtype) +
                   "; the leading-channel copy shares the cache's dtype");
  }
  if (lead->device != Device::cpu) {
    return Status{StatusCode::unsupported, "k_lead must be in host (cpu) memory"};
  }
  for (int d = 0; d < 3; ++d) {
    if (lead->shape[d] != keys.shape[d]) {
      return invalid(std::string("k_lead must be [") + dims[0] + ", " + dims[1] + ", " + dims[2] +
                     ", R] with " + keys_name + "'s " + dims[0] + ", " + dims[1] + ", " + dims[2] +
                     " (" + keys_name + " is " + keys.describe() + "), got " + lead->describe());
    }
  }
  if (lead->shape[3] < rank || lead->shape[3] > keys.shape[3]) {
    return invalid("k_lead holds R=" + std::to_string(lead->shape[3]) + " channels; it needs r=" +
                   std::to_string(rank) + " <= R <= D=" + std::to_string(keys.shape[3]));
  }
  if (tensors_overlap(out, *lead)) return invalid("out overlaps k_lead in memory");
  return Status::success();
}

// What both entry points check past the tensors: the basis, r, k (resolved against `lk`), the
// basis' orthonormality when asked, the leading-channel copy of `keys`.
Status check_loki_call(const TensorView& basis, const AttentionShape& shape, const TensorView& out,
                       const LokiOptions& options, const TensorView& keys, const char* keys_name,
                       const char* const* lead_dims, int64_t lk, int64_t* rank, int64_t* k) {
  Status s = check_basis_tensor(basis, shape);
  if (!s.ok()) {
    return s;
  }
  if (tensors_overlap(out, basis)) {
    return invalid("out overlaps basis in memory");
  }
  s = resolve_rank(options, shape.head_dim, rank);
  if (s.ok()) {
    s = resolve_k(options, lk, k);
  }
  if (!s.ok()) {
    return s;
  }
  if (options.check_basis) {
    s = loki_check_basis(basis, options.basis_tolerance);
    if (!s.ok()) {
      return invalid(s.message + " (the basis must be orthonormal; LokiOptions::check_basis)");
    }
  }
  return check_lead(options.k_lead, keys, keys_name, lead_dims, *rank, out);
}

}  // namespace

Status paged_loki_attention(const TensorView& q, const PagedKvCache& cache, const TensorView& basis,
                            const TensorView& out, const LokiOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  Status s = check_paged_call(q, cache, out, paged_options(options, options.causal), &shape);
  if (!s.ok()) {
    return s;
  }
  static const char* const kPagedLeadDims[4] = {"P", "Hkv", "S", "R"};
  int64_t rank = 0, k = 0;
  // k is resolved per sequence below; here against the longest, to check the fields.
  s = check_loki_call(basis, shape, out, options, cache.k_pages, "k_pages", kPagedLeadDims,
                      std::max<int64_t>(shape.lk, 1), &rank, &k);
  if (!s.ok()) {
    return s;
  }
  if (options.check_finite) {
    s = check_finite_paged(q, cache);
    if (s.ok()) {
      s = check_finite(basis, "basis");
    }
    if (!s.ok()) {
      return s;
    }
  }
  // The paged decode kernel where one takes the call; else (prefill, a head dim without a paged
  // kernel, a contiguous kernel forced) each sequence's pages (and leading channels) gathered for
  // loki_attention.
  Kernel<hattn_loki_paged_fn> kernel;
  std::string reason, gather_why;
  s = choose_paged_kernel(shape, options.causal, options.kernel, &kernel, &reason, &gather_why);
  if (!s.ok()) {
    return s;
  }
  if (!gather_why.empty()) {
    LokiOptions o = options;
    o.check_finite = false;  // checked above, for the whole batch
    o.check_basis = false;   // likewise
    std::vector<const TensorView*> pages = {&cache.k_pages, &cache.v_pages};
    if (options.k_lead != nullptr) {
      pages.push_back(options.k_lead);
    }
    return run_gathered(q, cache, pages, out, gather_why, chosen,
                        [&](const TensorView& q_b, const std::vector<TensorView>& g,
                            const TensorView& out_b, Dispatch* d) {
                          LokiOptions ob = o;
                          ob.k_lead = g.size() > 2 ? &g[2] : nullptr;
                          return loki_attention(q_b, g[0], g[1], basis, out_b, ob, d);
                        });
  }
  reason += "; r=" + std::to_string(rank) + " of D=" + std::to_string(shape.head_dim) +
            ", per sequence k=" +
            (options.k != 0 ? std::to_string(options.k)
                            : std::to_string(options.k_fraction) + " x its length") +
            ", clamped to its length";
  if (chosen != nullptr) {
    *chosen = Dispatch{kernel.name(), reason, 1};
  }
  // Without a leading-channel copy the approximate scores read the rotated keys' own leading
  // channels.
  const float scale = resolve_scale(options, shape.head_dim);
  HalideBuffer kb(cache.k_pages), lb(options.k_lead ? *options.k_lead : cache.k_pages),
      vb(cache.v_pages), pb(basis);
  return run_per_sequence(q, cache, out,
                          [&](HalideBuffer& qb, HalideBuffer& table, HalideBuffer& length,
                              HalideBuffer& ob, int64_t len) {
                            int64_t k_b = 0;
                            Status r = resolve_k(options, len, &k_b);
                            if (!r.ok()) {
                              return r;
                            }
                            return kernel.call(qb, kb, lb, vb, table, length, pb, scale,
                                               static_cast<int32_t>(rank),
                                               static_cast<int32_t>(std::min(k_b, len)), ob);
                          });
}

Status loki_attention(const TensorView& q, const TensorView& k_rot, const TensorView& v,
                      const TensorView& basis, const TensorView& out, const LokiOptions& options,
                      Dispatch* chosen) {
  AttentionShape shape;
  static const char* const kNames[4] = {"q", "k_rot", "v", "out"};
  // bf16 and f16 go on to the dispatch: decode kernels exist in every dtype, prefill ones too
  // (the generic-D kernels).
  Status s = validate_cpu_attention("loki", q, k_rot, v, out, options.causal, options, &shape,
                                    kNames, /*sixteen_bit=*/true);
  if (!s.ok()) return s;
  static const char* const kLeadDims[4] = {"B", "Hkv", "Lk", "R"};
  int64_t rank = 0, k = 0;
  s = check_loki_call(basis, shape, out, options, k_rot, "k_rot", kLeadDims, shape.lk, &rank, &k);
  if (!s.ok()) return s;
  Kernel<hattn_loki_fn> kernel;
  std::string reason;
  s = choose_kernel(attention_request(shape, options.causal, options.kernel), &kernel, &reason);
  if (!s.ok()) return s;
  const int64_t k_used = std::min<int64_t>(k, shape.lk);
  reason += "; r=" + std::to_string(rank) + " of D=" + std::to_string(shape.head_dim) +
            ", k=" + std::to_string(k_used);
  if (k_used < k) {
    reason += " (k=" + std::to_string(k) + " clamped to Lk: exact dense attention)";
  }
  if (chosen != nullptr) *chosen = Dispatch{kernel.name(), reason, 1};
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k_rot, &v, &basis};
    const char* names[] = {"q", "k_rot", "v", "basis"};
    s = finite_or_refuse(views, names, 4);
    if (s.ok() && options.k_lead != nullptr) s = check_finite(*options.k_lead, "k_lead");
    if (!s.ok()) return s;
  }
  // Without a narrow copy the approximate scores read k_rot's own leading channels.
  HalideBuffer qb(q), kb(k_rot), lb(options.k_lead ? *options.k_lead : k_rot), vb(v), pb(basis),
      ob(out);
  return kernel.call(qb, kb, lb, vb, pb, resolve_scale(options, shape.head_dim),
                     static_cast<int32_t>(rank), static_cast<int32_t>(k_used), ob);
}

}  // namespace hattn
