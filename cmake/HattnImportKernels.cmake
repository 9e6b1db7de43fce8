# Links the generated kernels of an existing host build (HATTN_KERNELS_FROM) instead of generating
# them: the kernels are Halide's objects either way, so a second build of the same tree (the
# sanitizer build, the fuzz build) would spend minutes of CI time regenerating identical code.
# Defines each kernel's library as an imported target, the Halide runtime's, HATTN_KERNEL_LIBS
# and HATTN_REGISTRY_SOURCE, as generators/CMakeLists.txt does when it generates them; the
# build follows the host build's HATTN_CUDA, since its registry names the CUDA kernels it made.
if (CMAKE_CROSSCOMPILING)
  message(FATAL_ERROR "HATTN_KERNELS_FROM: a cross build generates its own kernels (it imports "
                      "only the host generator: scripts/build_arm.sh)")
endif ()
get_filename_component(HATTN_KERNELS_FROM "${HATTN_KERNELS_FROM}" ABSOLUTE)
set(_manifest "${HATTN_KERNELS_FROM}/generated/hattn_kernels.inc")
if (NOT EXISTS "${_manifest}" OR NOT EXISTS "${HATTN_KERNELS_FROM}/generators/libhattn_halide_runtime.a")
  message(FATAL_ERROR "HATTN_KERNELS_FROM=${HATTN_KERNELS_FROM}: no built kernels there (build "
                      "that tree first with scripts/build.sh, or point HATTN_KERNELS_FROM at one)")
endif ()
load_cache("${HATTN_KERNELS_FROM}" READ_WITH_PREFIX _host_ HATTN_CUDA)
if (DEFINED HATTN_CUDA AND NOT "${HATTN_CUDA}" STREQUAL "${_host_HATTN_CUDA}")
  message(STATUS "hattn: HATTN_CUDA=${_host_HATTN_CUDA} as in ${HATTN_KERNELS_FROM}, whose "
                 "kernel registry this build links (HATTN_CUDA=${HATTN_CUDA} ignored)")
endif ()
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
message(STATUS "hattn: ${_count} kernels linked from ${HATTN_KERNELS_FROM} (not generated here)")
