#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds and runs the whole test suite: once in Release, then once
# more with AddressSanitizer + UndefinedBehaviorSanitizer over hattn's own code and tests.
#   scripts/test.sh                 everything (what CI runs)
#   scripts/test.sh --no-sanitize   skip the sanitizer build
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
sanitize=1
for a in "$@"; do
  case "$a" in
    --no-sanitize) sanitize=0 ;;
    *) echo "test.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
jobs="${HATTN_JOBS:-$(nproc)}"
"$here/scripts/setup.sh"
ctest="$here/.venv/bin/ctest"

echo "[test] Release build"
HATTN_BUILD_DIR="$here/build" "$here/scripts/build.sh" -DHATTN_BUILD_TESTS=ON
"$ctest" --test-dir "$here/build" -j "$jobs" --output-on-failure

if [ "$sanitize" = 1 ]; then
  echo "[test] ASan+UBSan build (hattn's runtime, CLI and tests; generated kernels are Halide's)"
  HATTN_BUILD_DIR="$here/build-sanitize" "$here/scripts/build.sh" -DHATTN_BUILD_TESTS=ON \
    -DHATTN_BUILD_BENCH=OFF -DHATTN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$ctest" --test-dir "$here/build-sanitize" -j "$jobs" --output-on-failure
fi
echo "[test] all tests passed"
