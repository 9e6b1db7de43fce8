# HATTN_FUZZ=ON: a clang build of the runtime and the libFuzzer targets (tests/fuzz/) that links
# the generated kernels of an existing normal build (HATTN_KERNELS_FROM, cmake/HattnImportKernels.cmake)
# instead of generating them again. scripts/fuzz.sh configures it in build-fuzz/.
if (NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "HATTN_FUZZ needs clang (libFuzzer): configure with "
                      "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang (scripts/fuzz.sh does)")
endif ()
set(HATTN_KERNELS_FROM "${CMAKE_SOURCE_DIR}/build" CACHE PATH
    "A normal (Release) build whose generated kernels the fuzz build links")
include(cmake/HattnImportKernels.cmake)

# Coverage instrumentation and sanitizers for hattn's own code; the fuzz targets link libFuzzer.
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g
                    -fsanitize-coverage-ignorelist=${CMAKE_SOURCE_DIR}/cmake/fuzz-coverage-ignorelist.txt)
add_link_options(-fsanitize=address,undefined)
