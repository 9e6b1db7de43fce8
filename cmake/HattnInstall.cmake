# `cmake --install <build> --prefix <p>` installs what a project needs to generate hattn kernels in
# its own build and link them (find_package(hattn), then hattn_add_kernels(); README.md, "Use
# hattn in your project"):
#   lib/libhattn_runtime.a           the runtime, without kernels (hattn::runtime)
#   include/hattn/                   hattn.h, and kernel_registry.h for the generated registration
#   libexec/hattn/hattn_generators   the generator executable (runs on the build machine; it needs
#                                    Halide's libHalide at build time, found as hattn was built)
#   share/hattn/schedules/           the schedule tables (<family>/<isa>.table)
#   lib/cmake/hattn/                 hattnConfig.cmake, its version file, HattnKernels.cmake
#   bin/hattn                        the command line (with hattn's own kernel set)
# An aarch64 build (scripts/build_arm.sh) installs the aarch64 runtime and CLI with the host
# generator it imported, so that one prefix serves a cross-compiling consumer.
# Everything but the CLI is the `dev` component (cmake --install <build> --component dev installs
# only what hattn_add_kernels() needs, without building hattn's own kernel set first).
set(CMAKE_INSTALL_DEFAULT_COMPONENT_NAME dev)
include(CMakePackageConfigHelpers)

set(HATTN_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/hattn")

set_target_properties(hattn_runtime PROPERTIES EXPORT_NAME runtime)
install(TARGETS hattn_runtime EXPORT hattnTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES runtime/include/hattn/hattn.h runtime/include/hattn/kernel_registry.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hattn)
install(EXPORT hattnTargets NAMESPACE hattn:: DESTINATION ${HATTN_INSTALL_CMAKEDIR})

# (The generator executable is installed by generators/CMakeLists.txt, where a cross build's
# imported generator target is visible.)
if (TARGET hattn_cli)
  install(TARGETS hattn_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)
endif ()
# The tables the build used (HATTN_SCHEDULES, or the source tree's).
install(DIRECTORY "${HATTN_SCHEDULES_DIR}/" DESTINATION ${CMAKE_INSTALL_DATADIR}/hattn/schedules
        FILES_MATCHING PATTERN "*.table")

set(HATTN_INSTALL_SCHEDULES "${CMAKE_INSTALL_DATADIR}/hattn/schedules")
set(HATTN_INSTALL_GENERATOR "${CMAKE_INSTALL_LIBEXECDIR}/hattn/hattn_generators")
configure_package_config_file(cmake/hattnConfig.cmake.in
                              "${CMAKE_BINARY_DIR}/cmake/hattnConfig.cmake"
                              INSTALL_DESTINATION ${HATTN_INSTALL_CMAKEDIR}
                              PATH_VARS HATTN_INSTALL_SCHEDULES HATTN_INSTALL_GENERATOR)
# 0.x: a minor version may change the API, so only the same 0.MINOR is compatible.
write_basic_package_version_file("${CMAKE_BINARY_DIR}/cmake/hattnConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_BINARY_DIR}/cmake/hattnConfig.cmake"
              "${CMAKE_BINARY_DIR}/cmake/hattnConfigVersion.cmake" cmake/HattnKernels.cmake
        DESTINATION ${HATTN_INSTALL_CMAKEDIR})
