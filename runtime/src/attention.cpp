// hattn::attention: validate, choose a kernel, call it, report.
#include <cmath>
#include <vector>

#include "cuda_glue.h"
#include "dispatch.h"
#include "halide_glue.h"
#include "validate.h"

namespace hattn {
namespace {

using DenseKernel = Kernel<hattn_dense_fn>;

Status plan(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
            const AttentionOptions& options, AttentionShape* shape, DenseKernel* kernel,
            Dispatch* chosen) {
  Status s = validate_attention(q, k, v, out, options, shape);
  if (!s.ok()) return s;
  std::string why;
  if (shape->device == Device::cuda && !cuda_ready(&why)) {
    return Status{StatusCode::no_device, "cannot run on CUDA: " + why};
  }
  KernelRequest request = attention_request(*shape, options.causal, options.kernel);
  request.lse = options.lse != nullptr;
  std::string reason;
  s = choose_kernel(request, kernel, &reason);
  if (!s.ok()) return s;
  chosen->kernel = kernel->name();
  chosen->reason = reason;
  chosen->decode_splits =
      kernel->info().phase == "decode" ? choose_decode_splits(*shape, options.decode_splits) : 1;
  return Status::success();
}

// A CUDA call: buffers over device pointers, the caller's context and stream, lse scratch in
// device memory (Halide allocates it; the kernels always write lse) when none was passed.
Status run_cuda(const DenseKernel& kernel, const TensorView& q, const TensorView& k,
                const TensorView& v, const TensorView& out, const AttentionOptions& options,
                const AttentionShape& shape, float scale, int32_t splits) {
  install_cuda_hooks();
  CallContext ctx;
  ctx.cuda_context = options.cuda_context;
  ctx.cuda_stream = options.cuda_stream;
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
  for (int n = 0; n < 4; ++n) wrap_device_buffer(&ctx, device_bufs[n], views[n]->data);
  if (own_lse) {
    lb.get()->host = nullptr;  // Halide allocates it on the device
    halide_device_malloc(&ctx, lb.get(), cuda_interface());
  } else {
    wrap_device_buffer(&ctx, lb.get(), options.lse->data);
  }
  const Status s = kernel.call(ctx, qb, kb, vb, scale, splits, ob, lb);
  for (int n = 0; n < 4; ++n) detach_device_buffer(&ctx, device_bufs[n]);
  if (own_lse) {
    halide_device_free(&ctx, lb.get());
  } else {
    detach_device_buffer(&ctx, lb.get());
  }
  return s;
}

}  // namespace

Status plan_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const AttentionOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  DenseKernel kernel;
  Dispatch local;
  return plan(q, k, v, out, options, &shape, &kernel, chosen ? chosen : &local);
}

Status attention(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const AttentionOptions& options, Dispatch* chosen) {
  AttentionShape shape;
  DenseKernel kernel;
  Dispatch d;
  Status s = plan(q, k, v, out, options, &shape, &kernel, &d);
  if (chosen != nullptr) *chosen = d;
  if (!s.ok()) return s;
  if (options.check_finite) {
    const TensorView* views[] = {&q, &k, &v};
    const char* names[] = {"q", "k", "v"};
    s = finite_or_refuse(views, names, 3);
    if (!s.ok()) return s;
  }

  const float scale = resolve_scale(options, shape.head_dim);
  const int32_t splits = d.decode_splits;
  if (shape.device == Device::cuda) {
    return run_cuda(kernel, q, k, v, out, options, shape, scale, splits);
  }
  // The kernels always produce lse; without a caller buffer it goes to scratch.
  const TensorView lse_view = lse_or_scratch(options, shape);
  HalideBuffer qb(q), kb(k), vb(v), ob(out), lb(lse_view);
  CallContext ctx;
  ctx.serial =
      kernel.info().phase == "decode" && decode_runs_serially(shape, shape.batch * shape.lk);
  return kernel.call(ctx, qb, kb, vb, scale, splits, ob, lb);
}

}  // namespace hattn
