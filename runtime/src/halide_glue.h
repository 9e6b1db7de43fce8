// The boundary with Halide's runtime: buffer descriptors from TensorViews, per-call error capture
// (via user_context, so concurrent calls never mix messages) and the thread pool size.
#pragma once

#include <string>

#include "HalideRuntime.h"
#include "hattn/hattn.h"

namespace hattn {

// Passed as the kernel's user_context; Halide's error handler appends to `error`.
struct CallContext {
  std::string error;
  void* cuda_context = nullptr;  // AttentionOptions::cuda_context (CUDA kernels only)
  void* cuda_stream = nullptr;   // AttentionOptions::cuda_stream
};

// Routes Halide errors into CallContext (installed once, idempotent).
void install_halide_handlers();

// A Halide buffer over a view (dims reversed: Halide is innermost first).
struct HalideBuffer {
  halide_buffer_t buf{};
  halide_dimension_t dims[4]{};
  explicit HalideBuffer(const TensorView& t);
  HalideBuffer(const HalideBuffer&) = delete;
  HalideBuffer& operator=(const HalideBuffer&) = delete;
  halide_buffer_t* get() { return &buf; }
};

int worker_threads();

// The Status of a kernel call that returned rc != 0, with Halide's message from ctx.
Status kernel_failed(const std::string& kernel, int rc, const CallContext& ctx);

}  // namespace hattn
