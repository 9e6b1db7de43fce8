# The kernel matrix: one helper instantiates a (variant, phase, mask, head dim) kernel for a target
# family with add_halide_library, and records it in a generated manifest that the runtime's
# dispatch table is built from. A kernel's name is its configuration key:
#   dense_prefill_causal_d64_f32_x86
# and the same name is the C symbol, the manifest entry, `hattn list`'s row and benchmark labels.
# Kernels that also return the log-sum-exp carry `_lse` after the mask.
#
# This file is used by hattn's own build and installed with the CMake package: a consumer project
# calls hattn_add_kernels() (below) after find_package(hattn), which runs the installed generator
# at the consumer's build time through the same hattn_add_kernel/hattn_write_manifest.
#
# A kernel set is the kernels one program links: "hattn" for hattn's own build, or the name given
# to hattn_add_kernels(). Its manifest becomes a registration source (hattn/kernel_registry.h)
# compiled next to the kernels, so the runtime's dispatch table is exactly the generated kernels.

# Where the schedule tables are (<dir>/<family>/<isa>.table) and which generator executable runs:
# hattn's source tree here; hattnConfig.cmake sets both to the installed copies before including.
if (NOT DEFINED HATTN_SCHEDULES_DIR)
  get_filename_component(HATTN_SCHEDULES_DIR "${CMAKE_CURRENT_LIST_DIR}/../schedules" ABSOLUTE)
endif ()
set_property(GLOBAL PROPERTY HATTN_SCHEDULES_DIR "${HATTN_SCHEDULES_DIR}")
set_property(GLOBAL PROPERTY HATTN_GENERATOR hattn::halide_generators::hattn_generators)

# Target families. Each kernel library holds one or more builds of the same pipeline, best first;
# Halide's multi-target wrapper picks one at run time from the CPU's features
# (runtime/src/target_select.cpp reports which). Every target also carries user_context (added
# below) so errors are routed to the calling thread's status.
#
# x86: AVX-512 (Skylake-X and later, Zen 4), AVX2+FMA (Haswell, Zen 1-3), SSE4.1 (anything else).
set(HATTN_X86_TARGETS
    "x86-64-linux-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41;x86-64-linux-avx-avx2-f16c-fma-sse41;x86-64-linux-sse41"
    CACHE STRING "Halide targets for x86 kernels, best first (multi-target dispatch)")
# Some bf16 kernels also get an AVX512-BF16 build, first: their products
# run as vdpbf16ps pair dot products on Zen 4 and Sapphire Rapids (2x the fp32 FMA rate per
# instruction, and no conversions of K and V); other CPUs take the builds above. Added only where
# a kernel asked for the default x86 builds, and only for the kernels that write pair dot
# products (dense prefill with a fixed head dim, topk prefill's q.k, the top-k FFN's x W1^T;
# elsewhere the build would be the AVX-512 one again).
set(HATTN_X86_BF16_TARGET
    "x86-64-linux-avx-avx2-avx512-avx512_skylake-avx512_cannonlake-avx512_zen4-f16c-fma-sse41"
    CACHE STRING "Halide target of the AVX512-BF16 build of bf16 kernels")
# aarch64: NEON, which every ARMv8-A core has. No dot-product build: no kernel has an int8 path.
set(HATTN_ARM_TARGETS "arm-64-linux"
    CACHE STRING "Halide targets for aarch64 kernels, best first (multi-target dispatch)")
# f16 kernels (f16, f16kv) also get an arm_fp16 build (ARMv8.2-A FP16: Cortex-A55/A75 and later,
# Neoverse, Apple M), first. Their arithmetic stays fp32 (nothing accumulates in f16); what the
# feature changes is the conversions: Halide converts f16 <-> f32 with fcvtl/fcvtn only under
# arm_fp16 and emulates them with integer shifts, compares and selects otherwise (dense decode
# f16, D = 128: 15.8k lines of assembly against 9.9k, with stack spills in the emulated q.k).
# bf16 needs no such build: its conversion is a shift either way. Cores without FP16 (Cortex-A53,
# A72) run the NEON build.
set(HATTN_ARM_F16_TARGET "arm-64-linux-arm_fp16"
    CACHE STRING "Halide target of the FP16 build of f16 kernels on aarch64")
# CUDA: PTX for compute capability 8.0 (Ampere), which the driver JIT-compiles for newer GPUs
# (Hopper included). Halide 21 knows capabilities up to 8.6, which adds nothing for fp32 on the
# FMA units, so 8.0 is the one build. The host part only launches kernels: baseline x86-64.
set(HATTN_CUDA_TARGETS "x86-64-linux-cuda-cuda_capability_80"
    CACHE STRING "Halide targets for CUDA kernels")

# --- The variants, one declaration each ------------------------------------------------------
#
#   hattn_declare_variant(<variant> [DTYPES <dtype>...] [CUDA_DTYPES <dtype>...]
#                         [HEAD_DIMS <d>...] CPU <form>... [CUDA <form>...])
#
# says which kernels of a variant exist, for CPU families (x86, arm) and for CUDA, in hattn's own
# build and in consumers' alike (HEAD_DIMS: the head dims hattn's own build generates, 0 for the
# generic kernel; a consumer asks for its own). A form is one family of kernels:
#   <generator>/<phases>/<masks>/<lse>/<dims>
#   generator  the Halide generator, which is also the kernel's variant in the manifest: the
#              variant's own, or a companion its API calls (el's linear layer, sparsek's operator)
#   phases     prefill,decode | prefill | decode | -    (-: one kernel for every Lq)
#   masks      0,1 | 0 | 1 | -                           (1: causal; -: the mask is a run-time argument)
#   lse        0,1 | 0 | 1 | -                           (1: also returns the log-sum-exp)
#   dims       each (every head dim asked, 0 = any D) | generic (the any-D kernel, when asked) |
#              fixed (the compiled-in head dims asked, not the any-D one) | -
#   dtypes     optional: the form's kernels only for these of the variant's DTYPES (f32,bf16);
#              without it, every dtype the variant declares
# Each axis that is not - is a generator parameter and a part of the kernel's name, which is its
# configuration key everywhere:
#   <generator>[_<phase>][_causal|_noncausal][_lse]_<d64|dany>_<dtype>_<family>
# DTYPES (CPU forms) and CUDA_DTYPES (CUDA forms): the element types of the tensors each kernel
# is built for (the name's <dtype>: f32, bf16, f16; bf16kv and f16kv: fp32 q and out over a
# K/V cache of bf16 or f16), f32 when not given. A variant that gives DTYPES has generators that
# take the `dtype` parameter (float32, bfloat16, float16; the kv dtypes add fp32_query=true) for
# their 16-bit kernels; the others are fp32 only and are not passed one. HATTN_DTYPES (hattn's own build) and
# hattn_add_kernels(DTYPES) choose which of the declared dtypes are built.
# HATTN_VARIANTS (and the global property HATTN_VARIANT_LIST) lists the declared variants.
set_property(GLOBAL PROPERTY HATTN_VARIANT_LIST "")
function(hattn_declare_variant variant)
  cmake_parse_arguments(D "" "" "DTYPES;CUDA_DTYPES;HEAD_DIMS;CPU;CUDA" ${ARGN})
  if (D_UNPARSED_ARGUMENTS OR NOT D_CPU)
    message(FATAL_ERROR "hattn_declare_variant(${variant}): give CPU <form>... [CUDA <form>...] "
                        "[DTYPES <dtype>...] [HEAD_DIMS <d>...] (got ${ARGN})")
  endif ()
  set(dtype_param 0)
  if (D_DTYPES)
    set(dtype_param 1)
  else ()
    set(D_DTYPES f32)
  endif ()
  if (NOT D_CUDA_DTYPES)
    set(D_CUDA_DTYPES f32)
  endif ()
  foreach (t IN LISTS D_DTYPES D_CUDA_DTYPES)
    if (NOT t MATCHES "^(f32|bf16|f16|bf16kv|f16kv)$")
      message(FATAL_ERROR "hattn_declare_variant(${variant}): unknown dtype '${t}' "
                          "(f32, bf16, f16, bf16kv, f16kv)")
    endif ()
  endforeach ()
  foreach (form IN LISTS D_CPU D_CUDA)
    if (NOT form MATCHES "^[a-z_]+/(prefill,decode|prefill|decode|-)/(0,1|0|1|-)/(0,1|0|1|-)/(each|generic|fixed|-)(/[a-z0-9]+(,[a-z0-9]+)*)?$")
      message(FATAL_ERROR "hattn_declare_variant(${variant}): bad form '${form}' "
                          "(<generator>/<phases>/<masks>/<lse>/<dims>[/<dtypes>])")
    endif ()
  endforeach ()
  set_property(GLOBAL PROPERTY HATTN_VARIANT_${variant}_CPU "${D_CPU}")
  set_property(GLOBAL PROPERTY HATTN_VARIANT_${variant}_CUDA "${D_CUDA}")
  set_property(GLOBAL PROPERTY HATTN_VARIANT_${variant}_DTYPES "${D_DTYPES}")
  set_property(GLOBAL PROPERTY HATTN_VARIANT_${variant}_CUDA_DTYPES "${D_CUDA_DTYPES}")
  set_property(GLOBAL PROPERTY HATTN_VARIANT_${variant}_DTYPE_PARAM ${dtype_param})
  set_property(GLOBAL PROPERTY HATTN_VARIANT_${variant}_HEAD_DIMS "${D_HEAD_DIMS}")
  set_property(GLOBAL APPEND PROPERTY HATTN_VARIANT_LIST ${variant})
  get_property(all GLOBAL PROPERTY HATTN_VARIANT_LIST)
  set(HATTN_VARIANTS ${all} PARENT_SCOPE)
endfunction()

# Prefill with and without lse (without, `out` is written inside each task and no buffer of final
# states is needed); decode always returns it (its merge is at root). CUDA: every kernel returns
# lse (its final states are a root buffer either way). 16-bit tensors on CPUs and CUDA (fp32
# arithmetic; CUDA's bf16 converted by bit operations, generators/dtype_casts.h).
# dense_paged: decode over a batch of paged (or ragged) KV caches, the dense decode stages with
# keys read through a page table (paged_attention); CPU only so far.
# Decode also takes fp32 q and out over a bf16 or f16 cache (bf16kv, f16kv: as engines keep it).
hattn_declare_variant(dense HEAD_DIMS 64 128 0 DTYPES f32 bf16 f16 bf16kv f16kv
  CUDA_DTYPES f32 bf16 f16 bf16kv f16kv
  CPU  dense/prefill/0,1/0,1/each/f32,bf16,f16 dense/decode/0,1/1/each
       dense_paged/decode/0,1/1/each/f32,bf16,f16
  CUDA dense/prefill/0,1/1/each/f32,bf16,f16 dense/decode/0,1/1/each)
# topk: decode in every dtype (a 16-bit KV cache halves the bytes its q.k pass streams); prefill
# in fp32 per head dim, and in 16 bits with the generic-D kernels only, which keeps the default
# build within its 10 minutes (the specialized ones would be 8 more kernels of about 15 s each
# per dtype; prefill is compute-bound on its scores either way).
# topk_paged: decode over a batch of paged KV caches (paged_topk_attention), the topk decode
# stages with keys read through a page table, for the compiled-in head dims only: a generic-D
# decode is 1.8-2.6x slower than the d128 one (contiguous, batch of 32, bf16 and fp32), and any
# other D gathers each sequence's pages for the contiguous generic kernel, costing about what a
# generic paged kernel would.
hattn_declare_variant(topk HEAD_DIMS 64 128 0 DTYPES f32 bf16 f16
  CPU topk/prefill/0,1/-/each/f32 topk/prefill/0,1/-/generic/bf16,f16 topk/decode/0,1/-/each
      topk_paged/decode/0,1/-/fixed)
# The FFN has no head dim, phase or mask: one kernel per dtype (bf16 or f16 weights halve the
# bytes of each token's selected rows).
hattn_declare_variant(topk_ffn DTYPES f32 bf16 f16 CPU topk_ffn/-/-/-/-)
# Decode is where Loki pays (each head dim asked; hattn's build: D=128, as in the models it
# targets, and any D); prefill (full-sequence) is for fidelity evaluation, generic D only, built
# when the generic kernel is asked for. Every dtype (a 16-bit rotated cache and leading-channel
# copy, read widened to fp32; the basis stays fp32). loki_paged: decode over a batch of paged
# caches (paged_loki_attention: rotated keys, leading channels and values in the pool's pages),
# compiled-in head dims only, as topk_paged.
hattn_declare_variant(loki HEAD_DIMS 128 0 DTYPES f32 bf16 f16
  CPU loki/decode/0,1/-/each loki/prefill/0,1/-/generic loki_paged/decode/0,1/-/fixed)
# EL-attention (phase and mask at run time, any Dm) and the linear layer it and the standard
# multi-head path are built from; each in fp32, and over bf16 or f16 weights and memory with fp32
# activations (bf16kv, f16kv: the queries, the per-head outputs and the projections stay fp32).
hattn_declare_variant(el DTYPES f32 bf16kv f16kv CPU el/-/-/-/- linear/-/-/-/-)
# Causal attention over window + selected keys (prefill and decode steps over the bounded cache
# are one kernel) per head dim, in every dtype (q, k, v and out; the gates and scores are fp32),
# and the SparseK operator, which works on fp32 scores.
hattn_declare_variant(sparsek HEAD_DIMS 128 0 DTYPES f32 bf16 f16
  CPU sparsek/prefill/1/-/each sparsek_mask/-/-/-/-/f32)

# Adds one kernel to kernel set SET (default: hattn): GENERATOR with the axes of one form's entry
# (PHASE, CAUSAL, LSE, HEAD_DIM: a value, or - where the form has no such axis) and DTYPE,
# compiled with add_halide_library for TARGETS (best first) with the tables in SCHEDULES
# (default: hattn's), linked against the set's Halide runtime <SET>_halide_runtime, which the
# caller creates with add_halide_runtime. The kernel's record (hattn_write_manifest reads it by
# field name) is the global property HATTN_KERNEL_<SET>_<name>.
function(hattn_add_kernel)
  cmake_parse_arguments(K "" "GENERATOR;PHASE;CAUSAL;HEAD_DIM;LSE;DTYPE;DTYPE_PARAM;FAMILY;SET;SCHEDULES" "TARGETS" ${ARGN})
  if (NOT K_SET)
    set(K_SET hattn)
  endif ()
  if (NOT K_SCHEDULES)
    get_property(K_SCHEDULES GLOBAL PROPERTY HATTN_SCHEDULES_DIR)
  endif ()
  get_property(generator GLOBAL PROPERTY HATTN_GENERATOR)
  set(name ${K_GENERATOR})
  set(gen_params "")
  # The manifest's fields for a kernel without the axis: prefill, non-causal, no lse, any D.
  set(phase prefill)
  set(causal 0)
  set(lse 0)
  set(head_dim 0)
  if (NOT K_PHASE STREQUAL "-")
    set(phase ${K_PHASE})
    string(APPEND name _${phase})
    list(APPEND gen_params phase=${phase})
  endif ()
  if (NOT K_CAUSAL STREQUAL "-")
    set(causal ${K_CAUSAL})
    if (causal)
      string(APPEND name _causal)
      list(APPEND gen_params causal=true)
    else ()
      string(APPEND name _noncausal)
      list(APPEND gen_params causal=false)
    endif ()
  endif ()
  if (NOT K_LSE STREQUAL "-")
    set(lse ${K_LSE})
    if (lse)
      string(APPEND name _lse)
      list(APPEND gen_params with_lse=true)
    else ()
      list(APPEND gen_params with_lse=false)
    endif ()
  endif ()
  if (NOT K_HEAD_DIM STREQUAL "-")
    set(head_dim ${K_HEAD_DIM})
    list(APPEND gen_params head_dim=${head_dim})
  endif ()
  # A generator that takes `dtype` defaults to float32, so f32 kernels are not passed it: a variant
  # with 16-bit kernels may keep an fp32-only companion generator (sparsek's operator).
  if (K_DTYPE_PARAM AND NOT K_DTYPE STREQUAL "f32")
    set(halide_type_bf16 bfloat16)
    set(halide_type_f16 float16)
    set(halide_type_bf16kv bfloat16)
    set(halide_type_f16kv float16)
    list(APPEND gen_params dtype=${halide_type_${K_DTYPE}})
    if (K_DTYPE MATCHES "kv$")  # fp32 q and out over a K/V cache of the dtype
      list(APPEND gen_params fp32_query=true)
    endif ()
  endif ()
  if (head_dim EQUAL 0)
    string(APPEND name _dany)
  else ()
    string(APPEND name _d${head_dim})
  endif ()
  string(APPEND name _${K_DTYPE}_${K_FAMILY})

  if (K_FAMILY STREQUAL "x86" AND K_DTYPE STREQUAL "bf16"
      AND ((K_GENERATOR STREQUAL "dense" AND K_PHASE STREQUAL "prefill" AND NOT head_dim EQUAL 0)
           OR (K_GENERATOR STREQUAL "topk" AND K_PHASE STREQUAL "prefill")
           OR K_GENERATOR STREQUAL "topk_ffn")
      AND "${K_TARGETS}" STREQUAL "${HATTN_X86_TARGETS}")
    list(PREPEND K_TARGETS "${HATTN_X86_BF16_TARGET}")
  endif ()
  if (K_FAMILY STREQUAL "arm" AND K_DTYPE MATCHES "^f16"
      AND "${K_TARGETS}" STREQUAL "${HATTN_ARM_TARGETS}")
    list(PREPEND K_TARGETS "${HATTN_ARM_F16_TARGET}")
  endif ()
  set(targets "")
  foreach (t IN LISTS K_TARGETS)
    list(APPEND targets "${t}-user_context")
  endforeach ()
  file(GLOB tables CONFIGURE_DEPENDS "${K_SCHEDULES}/${K_FAMILY}/*.table")

  # The library target (and its header, <target>.h) is the kernel's name in hattn's own set and
  # <set>_<name> in a consumer's, so that two sets can live in one project (not in one program:
  # the C symbols are the kernels' names).
  if (K_SET STREQUAL "hattn")
    set(lib ${name})
  else ()
    set(lib ${K_SET}_${name})
  endif ()
  add_halide_library(${lib}
                     FROM ${generator}
                     GENERATOR ${K_GENERATOR}
                     FUNCTION_NAME ${name}
                     TARGETS ${targets}
                     USE_RUNTIME ${K_SET}_halide_runtime
                     PARAMS ${gen_params} tables=${K_SCHEDULES}
                     DEPENDS ${tables})

  string(REPLACE ";" "," target_list "${K_TARGETS}")
  set_property(GLOBAL APPEND PROPERTY HATTN_KERNELS_${K_SET} ${name})
  set_property(GLOBAL PROPERTY HATTN_KERNEL_${K_SET}_${name}
               VARIANT ${K_GENERATOR} PHASE ${phase} CAUSAL ${causal} HEAD_DIM ${head_dim}
               DTYPE ${K_DTYPE} FAMILY ${K_FAMILY} TARGETS ${target_list} LSE ${lse} LIB ${lib})
endfunction()

# Every kernel of one variant for one family, as its declaration (above) says. HEAD_DIMS: the
# head dims asked for, 0 for the generic kernel (any D). DTYPES: the dtypes wanted (default f32),
# of which those the variant declares for the family are built.
function(hattn_add_variant_kernels)
  cmake_parse_arguments(V "" "VARIANT;FAMILY;SET;SCHEDULES" "HEAD_DIMS;TARGETS;DTYPES" ${ARGN})
  if (NOT V_DTYPES)
    set(V_DTYPES f32)
  endif ()
  get_property(known GLOBAL PROPERTY HATTN_VARIANT_LIST)
  if (NOT V_VARIANT IN_LIST known)
    message(FATAL_ERROR "hattn: unknown variant '${V_VARIANT}' (known: ${known})")
  endif ()
  if (V_FAMILY STREQUAL "cuda")
    get_property(forms GLOBAL PROPERTY HATTN_VARIANT_${V_VARIANT}_CUDA)
    if (NOT forms)
      message(FATAL_ERROR "hattn: variant ${V_VARIANT} has no CUDA schedule yet (CPU targets only); "
                          "only dense runs on cuda")
    endif ()
  else ()
    get_property(forms GLOBAL PROPERTY HATTN_VARIANT_${V_VARIANT}_CPU)
  endif ()
  if (V_FAMILY STREQUAL "cuda")
    get_property(declared GLOBAL PROPERTY HATTN_VARIANT_${V_VARIANT}_CUDA_DTYPES)
  else ()
    get_property(declared GLOBAL PROPERTY HATTN_VARIANT_${V_VARIANT}_DTYPES)
  endif ()
  # Those asked for and declared (the declaration's order).
  string(REPLACE ";" "|" asked "${V_DTYPES}")
  set(dtypes ${declared})
  list(FILTER dtypes INCLUDE REGEX "^(${asked})$")
  get_property(dtype_param GLOBAL PROPERTY HATTN_VARIANT_${V_VARIANT}_DTYPE_PARAM)
  set(common FAMILY ${V_FAMILY} TARGETS ${V_TARGETS} SET ${V_SET} SCHEDULES ${V_SCHEDULES}
             DTYPE_PARAM ${dtype_param})
  foreach (form IN LISTS forms)
    string(REPLACE "/" ";" f "${form}")
    list(GET f 0 gen)
    list(GET f 1 phases)
    list(GET f 2 masks)
    list(GET f 3 lses)
    list(GET f 4 dims)
    set(form_dtypes ${dtypes})
    list(LENGTH f nf)
    if (nf EQUAL 6)  # the form's own dtypes, of those
      list(GET f 5 only)
      string(REPLACE "," "|" only "${only}")
      list(FILTER form_dtypes INCLUDE REGEX "^(${only})$")
    endif ()
    string(REPLACE "," ";" phases "${phases}")
    string(REPLACE "," ";" masks "${masks}")
    string(REPLACE "," ";" lses "${lses}")
    if (dims STREQUAL "each")
      set(dims ${V_HEAD_DIMS})
    elseif (dims STREQUAL "fixed")
      set(dims ${V_HEAD_DIMS})
      list(REMOVE_ITEM dims 0)
    elseif (dims STREQUAL "generic")
      set(dims "")
      if (0 IN_LIST V_HEAD_DIMS)
        set(dims 0)
      endif ()
    endif ()
    foreach (dtype IN LISTS form_dtypes)
      foreach (mask IN LISTS masks)
        foreach (d IN LISTS dims)
          foreach (phase IN LISTS phases)
            foreach (lse IN LISTS lses)
              hattn_add_kernel(GENERATOR ${gen} PHASE ${phase} CAUSAL ${mask} LSE ${lse}
                               HEAD_DIM ${d} DTYPE ${dtype} ${common})
            endforeach ()
          endforeach ()
        endforeach ()
      endforeach ()
    endforeach ()
  endforeach ()
endfunction()

# Writes the manifest of kernel set SET (default: hattn) into <build>/generated (hattn's set) or
# <current build dir>/<set>_generated: hattn_kernels.inc (an X-macro list of every kernel),
# hattn_kernel_headers.h (their generated headers) and <set>_kernel_registry.cpp, the
# registration source (hattn/kernel_registry.h) to compile next to the kernels. REQUESTED says
# what the set was asked for (the runtime quotes it when it refuses a call). Sets
# HATTN_KERNEL_LIBS_<set> (and HATTN_KERNEL_LIBS for hattn's set) and, with OUT_SOURCE, the
# registration source's path.
function(hattn_write_manifest)
  cmake_parse_arguments(M "" "SET;REQUESTED;OUT_SOURCE" "" ${ARGN})
  if (NOT M_SET)
    set(M_SET hattn)
  endif ()
  if (NOT M_REQUESTED)
    set(M_REQUESTED "hattn's own build")
  endif ()
  get_property(kernels GLOBAL PROPERTY HATTN_KERNELS_${M_SET})
  if (NOT kernels)
    message(FATAL_ERROR "hattn: kernel set '${M_SET}' has no kernels")
  endif ()
  set(inc "// Generated by cmake/HattnKernels.cmake: every compiled kernel. Do not edit.\n")
  set(hdr "// Generated by cmake/HattnKernels.cmake. Do not edit.\n#pragma once\n")
  set(records "")
  set(checks "")
  set(libs "")
  set(has_cuda 0)
  foreach (name IN LISTS kernels)
    get_property(record GLOBAL PROPERTY HATTN_KERNEL_${M_SET}_${name})
    cmake_parse_arguments(R "" "VARIANT;PHASE;CAUSAL;HEAD_DIM;DTYPE;FAMILY;TARGETS;LSE;LIB" "" ${record})
    set(variant ${R_VARIANT})
    set(phase ${R_PHASE})
    set(causal ${R_CAUSAL})
    set(hd ${R_HEAD_DIM})
    set(dtype ${R_DTYPE})
    set(family ${R_FAMILY})
    set(tl ${R_TARGETS})
    set(lse ${R_LSE})
    set(lib ${R_LIB})
    string(APPEND inc "HATTN_KERNEL(${name}, \"${variant}\", \"${phase}\", ${causal}, ${hd}, \"${dtype}\", \"${family}\", \"${tl}\", ${lse})\n")
    string(APPEND hdr "#include \"${lib}.h\"\n")
    # Each kernel's generated declaration against its variant's type (hattn/kernel_registry.h):
    # a kernel that differs does not compile, and the message names it.
    string(APPEND checks "static_assert(std::is_same<decltype(&${name}), hattn_${variant}_fn>::value,\n"
           "              \"${name}: its generated signature is not hattn_${variant}_fn (hattn/kernel_registry.h)\");\n")
    string(APPEND records "    {\"${name}\", \"${variant}\", \"${phase}\", ${causal}, ${hd}, \"${dtype}\", \"${family}\", \"${tl}\", ${lse},\n"
           "     reinterpret_cast<void (*)(void)>(&${name}), &${name}_metadata,\n"
           "     HATTN_ARGS_${variant}},\n")
    list(APPEND libs ${lib})
    if (family STREQUAL "cuda")
      set(has_cuda 1)
    endif ()
  endforeach ()

  string(REPLACE "\\" "\\\\" requested "${M_REQUESTED}")
  string(REPLACE "\"" "\\\"" requested "${requested}")
  set(reg "// Generated by cmake/HattnKernels.cmake for kernel set '${M_SET}'. Do not edit.\n")
  string(APPEND reg "// Registers the kernels below with libhattn_runtime (hattn/kernel_registry.h).\n")
  string(APPEND reg "#include <type_traits>\n\n#include \"hattn/kernel_registry.h\"\n#include \"hattn_kernel_headers.h\"\n\n${checks}\nnamespace {\n\n")
  string(APPEND reg "const hattn_kernel_record kKernels[] = {\n${records}};\n\n")
  if (has_cuda)
    string(APPEND reg "const hattn_cuda_runtime kCuda = {\n"
           "    &halide_set_cuda_acquire_context, &halide_set_cuda_release_context,\n"
           "    &halide_set_cuda_get_stream,      &halide_cuda_device_interface,\n"
           "    &halide_cuda_wrap_device_ptr,     &halide_cuda_detach_device_ptr};\n\n")
    set(cuda_ptr "&kCuda")
  else ()
    set(cuda_ptr "nullptr")
  endif ()
  string(APPEND reg "const hattn_kernel_registry kRegistry = {\"${M_SET}\", \"${requested}\", kKernels,\n"
         "                                         sizeof(kKernels) / sizeof(kKernels[0]), ${cuda_ptr}};\n\n"
         "}  // namespace\n\n"
         "extern \"C\" const hattn_kernel_registry* hattn_registered_kernels(void) { return &kRegistry; }\n")

  if (M_SET STREQUAL "hattn")
    set(dir "${CMAKE_BINARY_DIR}/generated")
    set_property(GLOBAL PROPERTY HATTN_KERNEL_LIBS "${libs}")
  else ()
    set(dir "${CMAKE_CURRENT_BINARY_DIR}/${M_SET}_generated")
  endif ()
  file(MAKE_DIRECTORY "${dir}")
  file(CONFIGURE OUTPUT "${dir}/hattn_kernels.inc" CONTENT "${inc}")
  file(CONFIGURE OUTPUT "${dir}/hattn_kernel_headers.h" CONTENT "${hdr}")
  file(CONFIGURE OUTPUT "${dir}/${M_SET}_kernel_registry.cpp" CONTENT "${reg}")
  set_property(GLOBAL PROPERTY HATTN_KERNEL_LIBS_${M_SET} "${libs}")
  if (M_OUT_SOURCE)
    set(${M_OUT_SOURCE} "${dir}/${M_SET}_kernel_registry.cpp" PARENT_SCOPE)
  endif ()
endfunction()

# For projects that use hattn (after find_package(hattn)):
#
#   hattn_add_kernels(<name> VARIANTS <variant>... [HEAD_DIMS <d|any>...] [TARGETS <target>...]
#                     [DTYPES <f32|bf16|f16|bf16kv|f16kv>...] [SCHEDULES <dir>])
#
# generates, at this project's build time, the kernels of each variant for each head dim and
# target, and defines the target <name> to link: the kernels, their registration with the runtime
# (the dispatch table is exactly these kernels; any other call is refused with a status naming what
# was built and what was asked), libhattn_runtime and Halide's runtime.
#   VARIANTS   any of the declared variants, HATTN_VARIANTS (dense topk topk_ffn loki el sparsek)
#   HEAD_DIMS  specialized head dims, and `any` for the generic kernel (default: any)
#   TARGETS    host (default: this build's CPU: x86 with its three ISA builds, or arm when
#              cross-compiling for aarch64), x86, arm, cuda, or Halide target strings
#              (x86-64-linux-avx2-fma, arm-64-linux, ...); at most one CPU family, the one this
#              build compiles for, plus cuda (dense only, x86-64 hosts)
#   DTYPES     tensor element types to build kernels for (default: f32), each where the variant
#              has kernels of it (dense: f32, bf16, f16 on CPUs, and decode also bf16kv,
#              f16kv: fp32 q and out over a 16-bit K/V cache; topk and loki decode: f32,
#              bf16, f16; the others f32)
#   SCHEDULES  a folder laid out like hattn's schedules/ (<family>/<isa>.table) to tune with
# One kernel set per program (the kernels' C symbols are their names).
function(hattn_add_kernels name)
  cmake_parse_arguments(A "" "SCHEDULES" "VARIANTS;HEAD_DIMS;TARGETS;DTYPES" ${ARGN})
  get_property(HATTN_VARIANTS GLOBAL PROPERTY HATTN_VARIANT_LIST)
  if (A_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "hattn_add_kernels(${name}): unexpected arguments: ${A_UNPARSED_ARGUMENTS}")
  endif ()
  if (NOT A_VARIANTS)
    message(FATAL_ERROR "hattn_add_kernels(${name}): VARIANTS is required (any of: ${HATTN_VARIANTS})")
  endif ()
  foreach (v IN LISTS A_VARIANTS)
    if (NOT v IN_LIST HATTN_VARIANTS)
      message(FATAL_ERROR "hattn_add_kernels(${name}): unknown variant '${v}' (known: ${HATTN_VARIANTS})")
    endif ()
  endforeach ()
  if (NOT A_HEAD_DIMS)
    set(A_HEAD_DIMS any)
  endif ()
  if (NOT A_DTYPES)
    set(A_DTYPES f32)
  endif ()
  foreach (t IN LISTS A_DTYPES)
    if (NOT t MATCHES "^(f32|bf16|f16|bf16kv|f16kv)$")
      message(FATAL_ERROR "hattn_add_kernels(${name}): unknown dtype '${t}' "
                          "(f32, bf16, f16, bf16kv, f16kv)")
    endif ()
  endforeach ()
  set(dims "")
  foreach (d IN LISTS A_HEAD_DIMS)
    if (d STREQUAL "any")
      list(APPEND dims 0)
    elseif (d MATCHES "^[1-9][0-9]*$")
      list(APPEND dims ${d})
    else ()
      message(FATAL_ERROR "hattn_add_kernels(${name}): HEAD_DIMS '${d}' is neither a positive integer nor 'any'")
    endif ()
  endforeach ()
  list(REMOVE_DUPLICATES dims)
  if (NOT A_TARGETS)
    set(A_TARGETS host)
  endif ()
  if (NOT A_SCHEDULES)
    get_property(A_SCHEDULES GLOBAL PROPERTY HATTN_SCHEDULES_DIR)
  endif ()
  get_filename_component(A_SCHEDULES "${A_SCHEDULES}" ABSOLUTE)
  if (NOT IS_DIRECTORY "${A_SCHEDULES}")
    message(FATAL_ERROR "hattn_add_kernels(${name}): SCHEDULES '${A_SCHEDULES}' is not a folder")
  endif ()

  # The family this build compiles for: kernels for another CPU cannot be linked here.
  if (CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
    set(build_family arm)
  elseif (CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(build_family x86)
  else ()
    message(FATAL_ERROR "hattn_add_kernels(${name}): no kernels for processor ${CMAKE_SYSTEM_PROCESSOR}")
  endif ()
  set(cpu_family "")
  set(cpu_targets "")
  set(cuda 0)
  foreach (t IN LISTS A_TARGETS)
    if (t STREQUAL "host")
      set(family ${build_family})
      string(TOUPPER ${family} F)
      set(halide_targets ${HATTN_${F}_TARGETS})
    elseif (t STREQUAL "x86" OR t STREQUAL "arm")
      set(family ${t})
      string(TOUPPER ${family} F)
      set(halide_targets ${HATTN_${F}_TARGETS})
    elseif (t STREQUAL "cuda" OR t MATCHES "-cuda")
      set(cuda 1)
      if (t STREQUAL "cuda")
        set(cuda_targets ${HATTN_CUDA_TARGETS})
      else ()
        set(cuda_targets ${t})
      endif ()
      continue()
    elseif (t MATCHES "^x86-64-")
      set(family x86)
      set(halide_targets ${t})
    elseif (t MATCHES "^arm-64-")
      set(family arm)
      set(halide_targets ${t})
    else ()
      message(FATAL_ERROR "hattn_add_kernels(${name}): unknown target '${t}' (host, x86, arm, cuda, "
                          "or a Halide target such as x86-64-linux-avx2-fma or arm-64-linux)")
    endif ()
    if (NOT family STREQUAL build_family)
      message(FATAL_ERROR "hattn_add_kernels(${name}): target '${t}' is for ${family}, but this build "
                          "compiles for ${CMAKE_SYSTEM_PROCESSOR} (${build_family}); build ${family} "
                          "kernels in a build for that processor (for aarch64: a cross build with "
                          "hattn's installed aarch64 package)")
    endif ()
    set(cpu_family ${family})
    list(APPEND cpu_targets ${halide_targets})
  endforeach ()
  list(REMOVE_DUPLICATES cpu_targets)
  if (cuda AND NOT build_family STREQUAL "x86")
    message(FATAL_ERROR "hattn_add_kernels(${name}): CUDA kernels are built for x86-64 hosts only")
  endif ()

  if (NOT TARGET ${name}_halide_runtime)
    add_halide_runtime(${name}_halide_runtime)
  endif ()
  foreach (v IN LISTS A_VARIANTS)
    if (cpu_family)
      hattn_add_variant_kernels(VARIANT ${v} HEAD_DIMS ${dims} FAMILY ${cpu_family}
                                TARGETS ${cpu_targets} SET ${name} SCHEDULES ${A_SCHEDULES}
                                DTYPES ${A_DTYPES})
    endif ()
    if (cuda)
      hattn_add_variant_kernels(VARIANT ${v} HEAD_DIMS ${dims} FAMILY cuda
                                TARGETS ${cuda_targets} SET ${name} SCHEDULES ${A_SCHEDULES}
                                DTYPES ${A_DTYPES})
    endif ()
  endforeach ()

  string(JOIN " " requested VARIANTS ${A_VARIANTS} HEAD_DIMS ${A_HEAD_DIMS} TARGETS ${A_TARGETS}
         DTYPES ${A_DTYPES})
  hattn_write_manifest(SET ${name} REQUESTED "hattn_add_kernels ${requested}" OUT_SOURCE registry)
  get_property(libs GLOBAL PROPERTY HATTN_KERNEL_LIBS_${name})

  add_library(${name}_kernel_registry OBJECT ${registry})
  target_include_directories(${name}_kernel_registry PRIVATE "${CMAKE_CURRENT_BINARY_DIR}/${name}_generated")
  target_link_libraries(${name}_kernel_registry PRIVATE ${libs} hattn::runtime)
  # The registration object goes on the link line itself (an archive member would never be pulled
  # in: nothing but libhattn_runtime, which comes after it, refers to it), then the kernels, the
  # runtime and Halide's runtime, which the kernels and libhattn_runtime both call.
  add_library(${name} INTERFACE)
  target_link_libraries(${name} INTERFACE $<TARGET_OBJECTS:${name}_kernel_registry> ${libs}
                                          hattn::runtime ${name}_halide_runtime)
endfunction()
