// How a set of generated kernels registers itself with libhattn_runtime. Not for hand-written
// code: cmake/HattnKernels.cmake (hattn_write_manifest) writes one source per kernel set that
// defines hattn_registered_kernels(), and it is compiled next to the kernels in the build that
// generated them (hattn's own, or a consumer's hattn_add_kernels()). The runtime library itself
// holds no kernels, so the dispatch table is exactly the kernels a program was built with.
//
// Plain C structs of constants: the table is usable before any static constructor runs, and the
// layout does not depend on the C++ standard library a consumer compiles with.
#pragma once

#include <stddef.h>

#include "HalideRuntime.h"
#include "HalideRuntimeCuda.h"

#ifdef __cplusplus
extern "C" {
#endif

// One generated kernel: the manifest's fields and the kernel's entry point (cast back to the
// variant's signature by runtime/src/dispatch.h before it is called).
struct hattn_kernel_record {
  const char* name;     // the configuration key, e.g. dense_prefill_causal_d64_f32_x86
  const char* variant;  // "dense", "topk", ...
  const char* phase;    // "prefill" | "decode"
  int causal;
  int head_dim;         // 0: any head dim
  const char* dtype;    // "f32"
  const char* family;   // "x86", "arm", "cuda"
  const char* targets;  // Halide targets, best first, comma-separated
  int lse;
  void (*fn)(void);
};

// The entry points of Halide's CUDA runtime that libhattn_runtime calls. They exist only in a
// Halide runtime compiled for a CUDA target, so the kernel set supplies them (null when it has
// no CUDA kernels): the same runtime library links with or without CUDA.
struct hattn_cuda_runtime {
  halide_cuda_acquire_context_t (*set_acquire_context)(halide_cuda_acquire_context_t);
  halide_cuda_release_context_t (*set_release_context)(halide_cuda_release_context_t);
  halide_cuda_get_stream_t (*set_get_stream)(halide_cuda_get_stream_t);
  const struct halide_device_interface_t* (*device_interface)(void);
  int (*wrap_device_ptr)(void*, struct halide_buffer_t*, uint64_t);
  int (*detach_device_ptr)(void*, struct halide_buffer_t*);
};

struct hattn_kernel_registry {
  const char* set_name;  // the kernel set: "hattn" for hattn's own build, else the consumer's name
  const char* requested;  // what the set was asked for, for refusals ("VARIANTS dense ...")
  const struct hattn_kernel_record* kernels;
  size_t count;
  const struct hattn_cuda_runtime* cuda;  // null: no CUDA kernels in this set
};

// Defined by the generated registration source of the one kernel set linked into the program.
const struct hattn_kernel_registry* hattn_registered_kernels(void);

#ifdef __cplusplus
}
#endif
