#!/usr/bin/env bash
# Cross-compiles hattn for aarch64 Linux: the host build's generator (build/, built first if
# needed) emits NEON kernels, and g++-aarch64-linux-gnu compiles the runtime, CLI and tests into
# build-arm/. Extra arguments go to the configure step.
#   scripts/build_arm.sh [-DHATTN_BUILD_TESTS=OFF ...]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cmake="$here/.venv/bin/cmake"
[ -x "$cmake" ] || { echo "build_arm.sh: $cmake not found; run scripts/setup.sh first" >&2; exit 1; }
command -v aarch64-linux-gnu-g++ >/dev/null ||
  { echo "build_arm.sh: aarch64-linux-gnu-g++ not found; run scripts/setup.sh first" >&2; exit 1; }
host_build="${HATTN_BUILD_DIR:-$here/build}"
arm_build="${HATTN_ARM_BUILD_DIR:-$here/build-arm}"
jobs="${HATTN_JOBS:-$(nproc)}"

# The generator runs on this machine: configure the host build if needed and build only it.
if [ ! -f "$host_build/CMakeCache.txt" ]; then
  "$cmake" -S "$here" -B "$host_build" -G Ninja
fi
echo "[build_arm] host generator in $host_build"
"$cmake" --build "$host_build" --target hattn_generators hattn_sparsek_generators -j "$jobs"

echo "[build_arm] cross build in $arm_build"
"$cmake" -S "$here" -B "$arm_build" -G Ninja \
  -DCMAKE_TOOLCHAIN_FILE="$here/cmake/toolchains/aarch64-linux-gnu.cmake" \
  -Dhattn-halide_generators_ROOT="$host_build" \
  -Dhattn-sparsek_generators_ROOT="$host_build" \
  -DHATTN_BUILD_BENCH=OFF "$@"
"$cmake" --build "$arm_build" -j "$jobs"
