# Cross-compiling hattn for aarch64 Linux with Debian's g++-aarch64-linux-gnu; tests run under
# qemu-aarch64 (ctest and gtest discovery use CMAKE_CROSSCOMPILING_EMULATOR).
# Used by scripts/build_arm.sh, which also points the build at the host build's generator.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(HATTN_AARCH64_SYSROOT /usr/aarch64-linux-gnu CACHE PATH "aarch64 libraries for qemu's -L")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${HATTN_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH ${HATTN_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
