// hattn::attention: validate, choose a kernel, call it, report.
#include <cmath>
#include <vector>

#include "cuda_glue.h"
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
  std::string why;
  if (shape->device == Device::cuda && !cuda_ready(&why)) {
    return Status{StatusCode::no_device, "cannot run on CUDA: " + why};
  }
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

// A CUDA call: buffers over device pointers, the caller's context and stream, lse scratch in
// device memory (Halide allocates it; the kernels always write lse) when none was passed.
int run_cuda(const KernelEntry* kernel, const TensorView& q, const TensorView& k,
             const TensorView& v, const TensorView& out, const AttentionOptions& options,
             const AttentionShape& shape, float scale, int splits, CallContext* ctx) {
  install_cuda_hooks();
  ctx->cuda_context = options.cuda_context;
  ctx->cuda_stream = options.cuda_stream;
  TensorView lse_view;
  const bool own_lse = options.lse == nullptr;
  if (own_lse) {
    static float placeholder;
    lse_view = TensorView::contiguous(&placeholder, {shape.batch, shape.q_heads, shape.lq});
  } else {
    lse_view = *options.lse;
  }
  HalideBuffer qb(q), kb(k), vb(v), ob(out), lb(lse_view);
  halide_buffer_t* device_bufs[] = {qb.get(), kb.get(), vb.get(), ob.get()};
  const TensorView* views[] = {&q, &k, &v, &out};
  for (int n = 0; n < 4; ++n) wrap_device_buffer(ctx, device_bufs[n], views[n]->data);
  if (own_lse) {
    lb.get()->host = nullptr;  // Halide allocates it on the device
    halide_device_malloc(ctx, lb.get(), cuda_interface());
  } else {
    wrap_device_buffer(ctx, lb.get(), options.lse->data);
  }
  int rc = kernel->as<DenseKernelFn>()(ctx, qb.get(), kb.get(), vb.get(), scale, splits, ob.get(),
                                       lb.get());
  for (int n = 0; n < 4; ++n) detach_device_buffer(ctx, device_bufs[n]);
  if (own_lse) {
    halide_device_free(ctx, lb.get());
  } else {
    detach_device_buffer(ctx, lb.get());
  }
  return rc;
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

  const float scale = resolve_scale(options.has_scale, options.scale, shape.head_dim);
  install_halide_handlers();
  CallContext ctx;
  int rc = 0;
  if (shape.device == Device::cuda) {
    rc = run_cuda(kernel, q, k, v, out, options, shape, scale, d.decode_splits, &ctx);
  } else {
    // The kernels always produce lse; without a caller buffer it goes to scratch.
    std::vector<float> lse_scratch;
    TensorView lse_view;
    if (options.lse != nullptr) {
      lse_view = *options.lse;
    } else {
      lse_scratch.resize(static_cast<size_t>(shape.batch * shape.q_heads * shape.lq));
      lse_view = TensorView::contiguous(lse_scratch.data(), {shape.batch, shape.q_heads, shape.lq});
    }
    HalideBuffer qb(q), kb(k), vb(v), ob(out), lb(lse_view);
    rc = kernel->as<DenseKernelFn>()(&ctx, qb.get(), kb.get(), vb.get(), scale, d.decode_splits,
                                     ob.get(), lb.get());
  }
  if (rc != 0) return kernel_failed(d.kernel, rc, ctx);
  return Status::success();
}

}  // namespace hattn
