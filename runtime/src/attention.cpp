// hattn::attention: validate, choose a kernel, call it, report.
#include <cmath>
#include <vector>

#include "dispatch.h"
#include "halide_glue.h"
#include "validate.h"

namespace hattn {
namespace {

Status plan(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
            const AttentionOptions& options, AttentionShape* shape, const KernelEntry** kernel,
            Dispatch* chosen) {
  Status s = validate_attention(q, k, v, out, options, shape);
  if (!s.ok()) return s;
  std::string reason;
  s = choose_dense_kernel(*shape, options, kernel, &reason);
  if (!s.ok()) return s;
  if (chosen != nullptr) {
    chosen->kernel = (*kernel)->info.name;
    chosen->reason = reason;
    chosen->decode_splits =
        (*kernel)->info.phase == "decode" ? choose_decode_splits(*shape, options.decode_splits) : 1;
  }
  return Status::success();
}

}  // namespace

Status plan_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const AttentionOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  const KernelEntry* kernel = nullptr;
  Dispatch local;
  return plan(q, k, v, out, options, &shape, &kernel, chosen ? chosen : &local);
}

Status attention(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const AttentionOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  const KernelEntry* kernel = nullptr;
  Dispatch d;
  Status s = plan(q, k, v, out, options, &shape, &kernel, &d);
  if (chosen != nullptr) *chosen = d;
  if (!s.ok()) return s;
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v};
    const char* names[] = {"q", "k", "v"};
    for (int n = 0; n < 3; ++n) {
      s = check_finite(*views[n], names[n]);
      if (!s.ok()) return s;
    }
  }

  // The kernels always produce lse; without a caller buffer it goes to scratch.
  std::vector<float> lse_scratch;
  TensorView lse_view;
  if (options.lse != nullptr) {
    lse_view = *options.lse;
  } else {
    lse_scratch.resize(static_cast<size_t>(shape.batch * shape.q_heads * shape.lq));
    lse_view = TensorView::contiguous(lse_scratch.data(), {shape.batch, shape.q_heads, shape.lq});
  }
  const float scale =
      options.has_scale ? options.scale : 1.f / std::sqrt(static_cast<float>(shape.head_dim));

  install_halide_handlers();
  HalideBuffer qb(q), kb(k), vb(v), ob(out), lb(lse_view);
  CallContext ctx;
  int rc =
      kernel->fn(&ctx, qb.get(), kb.get(), vb.get(), scale, d.decode_splits, ob.get(), lb.get());
  if (rc != 0) {
    return Status{StatusCode::kernel_error,
                  "kernel " + d.kernel + " failed (Halide error " + std::to_string(rc) +
                      "): " + (ctx.error.empty() ? "no message" : ctx.error)};
  }
  return Status::success();
}

}  // namespace hattn
