#!/usr/bin/env bash
# Configures and builds hattn with the CMake from the project's virtual environment (Halide 21's
# CMake package needs CMake >= 3.28; Debian 12 ships 3.25). Extra arguments go to the configure step.
#   scripts/build.sh [-DHATTN_BUILD_BENCH=OFF ...]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cmake="$here/.venv/bin/cmake"
[ -x "$cmake" ] || { echo "build.sh: $cmake not found; run scripts/setup.sh first" >&2; exit 1; }
build="${HATTN_BUILD_DIR:-$here/build}"
"$cmake" -S "$here" -B "$build" -G Ninja "$@"
"$cmake" --build "$build" -j "${HATTN_JOBS:-$(nproc)}"
