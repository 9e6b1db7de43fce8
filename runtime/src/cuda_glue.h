// CUDA support in the runtime: loading the driver, the caller's context and stream, and Halide
// buffers over device pointers. Halide's CUDA entry points come from the kernel set linked into
// the program (hattn/kernel_registry.h); without CUDA kernels cuda_ready() refuses every call
// with a clear reason.
#pragma once

#include <string>

#include "HalideRuntime.h"
#include "hattn/hattn.h"

namespace hattn {

// Whether CUDA kernels can run now: the library was built with them, the driver loads
// (libcuda.so.1, then libcuda.so), initializes and reports at least one device. On failure,
// `why` says which step failed. Cheap after the first call.
bool cuda_ready(std::string* why);

// Installs hattn's context/stream hooks into Halide's CUDA runtime (idempotent): a call uses
// AttentionOptions::cuda_context/cuda_stream when given, else the context current on the calling
// thread, else device 0's primary context (the one the CUDA runtime API and PyTorch use), and
// the legacy default stream.
void install_cuda_hooks();

// Halide's CUDA device interface (null without CUDA kernels).
const halide_device_interface_t* cuda_interface();

// Points a Halide buffer at device memory (host pointer null) and detaches it when destroyed.
void wrap_device_buffer(void* user_context, halide_buffer_t* buf, void* device_ptr);
void detach_device_buffer(void* user_context, halide_buffer_t* buf);

}  // namespace hattn
