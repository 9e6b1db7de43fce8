// The boundary with Halide's runtime, shared by every variant: buffer descriptors (one builder,
// for caller views and the runtime's own staging arrays), per-call error capture (via
// user_context, so concurrent calls never mix messages), the thread pool and its size.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>

#include "HalideRuntime.h"
#include "hattn/hattn.h"

namespace hattn {

// Passed as the kernel's user_context; Halide's error handler appends to `error`.
struct CallContext {
  std::string error;
  // Run the kernel's parallel loops on the calling thread (dispatch's decode_runs_serially).
  bool serial = false;
  void* cuda_context = nullptr;  // AttentionOptions::cuda_context (CUDA kernels only)
  void* cuda_stream = nullptr;   // AttentionOptions::cuda_stream
};

// Routes Halide errors into CallContext and its parallel loops through CallContext::serial
// (installed once, idempotent).
void install_halide_handlers();

// Halide's element type for a view's dtype.
halide_type_t halide_type_of(DType t);

// A Halide buffer descriptor over memory the caller owns: a view (its dtype, shape and strides),
// or a dense row-major array the runtime staged itself (int32 selections, key lengths). Dims are
// reversed: Halide's are innermost first.
class HalideBuffer {
 public:
  explicit HalideBuffer(const TensorView& t);
  HalideBuffer(int32_t* data, std::initializer_list<int64_t> shape);
  HalideBuffer(float* data, std::initializer_list<int64_t> shape);
  HalideBuffer(const HalideBuffer&) = delete;
  HalideBuffer& operator=(const HalideBuffer&) = delete;
  halide_buffer_t* get() { return &buf_; }

 private:
  void describe(void* data, halide_type_t type, int rank, const int64_t* shape,
                const int64_t* strides);
  void dense(void* data, halide_type_t type, std::initializer_list<int64_t> shape);
  halide_buffer_t buf_{};
  halide_dimension_t dims_[4]{};
};

int worker_threads();

// Runs body(i) for every i in [0, n), n < 2^31, as tasks of Halide's thread pool, the one the
// kernels run on, so set_num_threads() sizes it too; returns when all are done. The order of tasks
// is unspecified: give each its own outputs. An exception thrown by a task (std::bad_alloc) is
// rethrown here after the other tasks finish.
void parallel_for(int64_t n, const std::function<void(int64_t)>& body);

// The Status of a kernel call that returned rc != 0, with Halide's message from ctx.
Status kernel_failed(const std::string& kernel, int rc, const CallContext& ctx);

}  // namespace hattn
