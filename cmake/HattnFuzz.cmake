# HATTN_FUZZ=ON: a clang build of the runtime and the libFuzzer targets (tests/fuzz/) that links
# the generated kernels of an existing normal build (HATTN_KERNELS_FROM) instead of generating
# them again: the kernels are Halide's objects either way, and regenerating them would cost
# minutes of CI time for identical code. scripts/fuzz.sh configures it in build-fuzz/.
if (NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "HATTN_FUZZ needs clang (libFuzzer): configure with "
                      "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang (scripts/fuzz.sh does)")
endif ()
set(HATTN_KERNELS_FROM "${CMAKE_SOURCE_DIR}/build" CACHE PATH
    "A normal (Release) build whose generated kernels the fuzz build links")
set(_manifest "${HATTN_KERNELS_FROM}/generated/hattn_kernels.inc")
if (NOT EXISTS "${_manifest}" OR NOT EXISTS "${HATTN_KERNELS_FROM}/generators/libhattn_halide_runtime.a")
  message(FATAL_ERROR "HATTN_FUZZ: no built kernels in ${HATTN_KERNELS_FROM} (build it first: "
                      "scripts/build.sh, or set HATTN_KERNELS_FROM)")
endif ()
load_cache("${HATTN_KERNELS_FROM}" READ_WITH_PREFIX _host_ HATTN_CUDA)
set(HATTN_CUDA ${_host_HATTN_CUDA} CACHE BOOL "" FORCE)

add_library(hattn_halide_runtime STATIC IMPORTED GLOBAL)
set_target_properties(hattn_halide_runtime PROPERTIES
                      IMPORTED_LOCATION "${HATTN_KERNELS_FROM}/generators/libhattn_halide_runtime.a")
file(STRINGS "${_manifest}" _lines REGEX "^HATTN_KERNEL\\(")
set(_libs "")
foreach (_line IN LISTS _lines)
  string(REGEX MATCH "^HATTN_KERNEL\\(([A-Za-z0-9_]+)," _m "${_line}")
  set(_name "${CMAKE_MATCH_1}")
  add_library(${_name} STATIC IMPORTED GLOBAL)
  set_target_properties(${_name} PROPERTIES
                        IMPORTED_LOCATION "${HATTN_KERNELS_FROM}/generators/lib${_name}.a"
                        INTERFACE_INCLUDE_DIRECTORIES "${HATTN_KERNELS_FROM}/generators"
                        INTERFACE_LINK_LIBRARIES hattn_halide_runtime)
  list(APPEND _libs ${_name})
endforeach ()
set_property(GLOBAL PROPERTY HATTN_KERNEL_LIBS "${_libs}")
foreach (_f IN ITEMS hattn_kernels.inc hattn_kernel_headers.h hattn_kernel_registry.cpp)
  configure_file("${HATTN_KERNELS_FROM}/generated/${_f}" "${CMAKE_BINARY_DIR}/generated/${_f}" COPYONLY)
endforeach ()
# The kernel set's registration source is the runtime's dispatch table (runtime/CMakeLists.txt).
set_property(GLOBAL PROPERTY HATTN_REGISTRY_SOURCE
             "${CMAKE_BINARY_DIR}/generated/hattn_kernel_registry.cpp")
list(LENGTH _libs _count)
message(STATUS "hattn: fuzz build over ${_count} kernels from ${HATTN_KERNELS_FROM}")

# Coverage instrumentation and sanitizers for hattn's own code; the fuzz targets link libFuzzer.
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g
                    -fsanitize-coverage-ignorelist=${CMAKE_SOURCE_DIR}/cmake/fuzz-coverage-ignorelist.txt)
add_link_options(-fsanitize=address,undefined)
