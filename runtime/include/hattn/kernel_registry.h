// How a set of generated kernels registers itself with libhattn_runtime. Not for hand-written
// code: cmake/HattnKernels.cmake (hattn_write_manifest) writes one source per kernel set that
// defines hattn_registered_kernels(), and it is compiled next to the kernels in the build that
// generated them (hattn's own, or a consumer's hattn_add_kernels()). The runtime library itself
// holds no kernels, so the dispatch table is exactly the kernels a program was built with.
//
// Plain C structs of constants: the table is usable before any static constructor runs, and the
// layout does not depend on the C++ standard library a consumer compiles with.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "HalideRuntime.h"
#include "HalideRuntimeCuda.h"

#ifdef __cplusplus
extern "C" {
#endif

// Each variant's kernel signature, written once. The generated registration source checks every
// kernel's own declaration (its Halide header) against its variant's type at compile time, so a
// generator whose parameters change in type, count or order of types no longer builds; the
// runtime calls kernels through these types only. HATTN_ARGS_<variant> names the parameters in
// the same order (the generators' Input and Output names): the runtime compares it with each
// kernel's Halide metadata and refuses a kernel whose names differ (two buffers swapped keep
// the type), saying so.
typedef int (*hattn_dense_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                              struct halide_buffer_t*, float, int32_t, struct halide_buffer_t*,
                              struct halide_buffer_t*);
#define HATTN_ARGS_dense "q,k,v,scale,splits,out,lse"
typedef int (*hattn_dense_paged_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                                    struct halide_buffer_t*, struct halide_buffer_t*,
                                    struct halide_buffer_t*, float, int32_t,
                                    struct halide_buffer_t*, struct halide_buffer_t*);
#define HATTN_ARGS_dense_paged "q,k_pages,v_pages,page_table,lengths,scale,splits,out,lse"
typedef int (*hattn_topk_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                             struct halide_buffer_t*, float, int32_t, struct halide_buffer_t*);
#define HATTN_ARGS_topk "q,k,v,scale,topk,out"
typedef int (*hattn_topk_paged_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                                   struct halide_buffer_t*, struct halide_buffer_t*,
                                   struct halide_buffer_t*, float, int32_t,
                                   struct halide_buffer_t*);
#define HATTN_ARGS_topk_paged "q,k_pages,v_pages,page_table,lengths,scale,topk,out"
typedef int (*hattn_topk_ffn_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                                 struct halide_buffer_t*, int32_t, struct halide_buffer_t*);
#define HATTN_ARGS_topk_ffn "x,w1,w2t,topk,y"
typedef int (*hattn_loki_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                             struct halide_buffer_t*, struct halide_buffer_t*,
                             struct halide_buffer_t*, float, int32_t, int32_t,
                             struct halide_buffer_t*);
#define HATTN_ARGS_loki "q,k,k_lead,v,basis,scale,rank,topk,out"
typedef int (*hattn_loki_paged_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                                   struct halide_buffer_t*, struct halide_buffer_t*,
                                   struct halide_buffer_t*, struct halide_buffer_t*,
                                   struct halide_buffer_t*, float, int32_t, int32_t,
                                   struct halide_buffer_t*);
#define HATTN_ARGS_loki_paged \
  "q,k_pages,lead_pages,v_pages,page_table,lengths,basis,scale,rank,topk,out"
typedef int (*hattn_el_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                           struct halide_buffer_t*, struct halide_buffer_t*,
                           struct halide_buffer_t*, struct halide_buffer_t*, int32_t, int32_t, bool,
                           struct halide_buffer_t*);
#define HATTN_ARGS_el "q,hs,wk,wv,bv,lengths,heads,beam,causal,out"
typedef int (*hattn_linear_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                               struct halide_buffer_t*, float, struct halide_buffer_t*);
#define HATTN_ARGS_linear "x,w,bias,scale,y"
typedef int (*hattn_sparsek_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                                struct halide_buffer_t*, struct halide_buffer_t*,
                                struct halide_buffer_t*, struct halide_buffer_t*, float, int32_t,
                                int32_t, int32_t, int32_t, struct halide_buffer_t*);
#define HATTN_ARGS_sparsek \
  "q,k,v,sel_index,sel_gate,sel_count,scale,window,q_pos0,ring,gate_logit,out"
typedef int (*hattn_sparsek_mask_fn)(const void*, struct halide_buffer_t*, struct halide_buffer_t*,
                                     int32_t, struct halide_buffer_t*, struct halide_buffer_t*);
#define HATTN_ARGS_sparsek_mask "z,len,budget,mask,tau"

// Every variant with a signature above: X(variant) each (runtime/src/dispatch.h ties each
// signature to its variant's name with it).
#define HATTN_KERNEL_VARIANTS(X) \
  X(dense)                       \
  X(dense_paged)                 \
  X(topk)                        \
  X(topk_paged)                  \
  X(topk_ffn)                    \
  X(loki)                        \
  X(loki_paged)                  \
  X(el) X(linear) X(sparsek) X(sparsek_mask)

// One generated kernel: the manifest's fields and the kernel's entry point (cast back to the
// variant's signature above by runtime/src/dispatch.h before it is called).
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
  const struct halide_filter_metadata_t* (*metadata)(void);  // Halide's, names the arguments
  const char* args;  // HATTN_ARGS_<variant>: the names the runtime expects, comma-separated
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
  const char* set_name;   // the kernel set: "hattn" for hattn's own build, else the consumer's name
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
