#!/usr/bin/env bash
# Builds the aarch64 tests (scripts/build_arm.sh) and runs them under qemu-aarch64.
# Emulation is ~10-50x slower than native: by default the ARM subset is every test except the
# long multi-shape sweeps, which the x86 build runs natively (same generator, same algorithm).
#   scripts/test_arm.sh            the ARM subset (ctest label arm_subset)
#   scripts/test_arm.sh --all      every test, under emulation
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
arm_build="${HATTN_ARM_BUILD_DIR:-$here/build-arm}"
all=0
for a in "$@"; do
  case "$a" in
    --all) all=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "test_arm.sh: unknown option '$a' (try --help)" >&2; exit 2 ;;
  esac
done
command -v qemu-aarch64 >/dev/null ||
  { echo "test_arm.sh: qemu-aarch64 not found; run scripts/setup.sh first" >&2; exit 1; }
"$here/scripts/build_arm.sh"
echo "[test_arm] qemu-aarch64 $(qemu-aarch64 --version | head -1)"
args=(--test-dir "$arm_build" --output-on-failure -j "${HATTN_JOBS:-$(nproc)}")
[ "$all" = 1 ] || args+=(-L arm_subset)
"$here/.venv/bin/ctest" "${args[@]}"
