#!/usr/bin/env bash
# Builds the aarch64 tests (scripts/build_arm.sh) and runs every one of them under qemu-aarch64:
# on qemu's "max" CPU, and test_dense/test_targets again on a Cortex-A53 (ARMv8.0, NEON only).
# About 3 minutes on 2 cores.
#   scripts/test_arm.sh [ctest arguments, e.g. -R Dense]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
arm_build="${HATTN_ARM_BUILD_DIR:-$here/build-arm}"
case "${1:-}" in -h|--help) sed -n '2,5p' "$0"; exit 0 ;; esac
command -v qemu-aarch64 >/dev/null ||
  { echo "test_arm.sh: qemu-aarch64 not found; run scripts/setup.sh first" >&2; exit 1; }
"$here/scripts/build_arm.sh"
echo "[test_arm] qemu-aarch64 $(qemu-aarch64 --version | head -1)"
"$here/.venv/bin/ctest" --test-dir "$arm_build" --output-on-failure -j "${HATTN_JOBS:-$(nproc)}" "$@"
