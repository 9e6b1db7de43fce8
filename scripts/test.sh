#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds and runs the whole test suite:
#   1. x86 Release build: every test (AVX-512/AVX2/SSE4.1 builds forced in turn where the CPU has
#      them; CUDA tests run if a GPU is usable, else skip and say why);
#   2. the PTX of every CUDA kernel assembled offline by ptxas for sm_80 and sm_90;
#   3. the aarch64 build, cross-compiled, every test under qemu-aarch64 (two CPU models);
#   4. the consumer workflow (scripts/test_consumer.sh): hattn installed to a prefix, the
#      standalone examples/consumer built against it and run, for x86 and aarch64 (qemu);
#   5. the x86 tests again under AddressSanitizer + UndefinedBehaviorSanitizer;
#   6. a bounded libFuzzer run of each fuzz target (scripts/fuzz.sh --smoke: about 1.5 min).
#   scripts/test.sh                 everything (what CI runs)
#   scripts/test.sh --no-sanitize   skip step 5
#   scripts/test.sh --no-arm        skip step 3 and the aarch64 half of step 4
#   scripts/test.sh --no-fuzz       skip step 6
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
sanitize=1
arm=1
fuzz=1
for a in "$@"; do
  case "$a" in
    --no-sanitize) sanitize=0 ;;
    --no-arm) arm=0 ;;
    --no-fuzz) fuzz=0 ;;
    *) echo "test.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
jobs="${HATTN_JOBS:-$(nproc)}"
"$here/scripts/setup.sh"
ctest="$here/.venv/bin/ctest"

echo "[test] Release build"
HATTN_BUILD_DIR="$here/build" "$here/scripts/build.sh" -DHATTN_BUILD_TESTS=ON
"$ctest" --test-dir "$here/build" -j "$jobs" --output-on-failure

echo "[test] ptxas over every CUDA kernel's PTX"
if command -v ptxas >/dev/null || [ -x /usr/local/cuda/bin/ptxas ]; then
  "$here/.venv/bin/python" "$here/scripts/check_ptx.py" --build "$here/build" --out "$here/build/ptx"
else
  echo "[test] SKIPPED: ptxas not found (no CUDA toolkit on this machine); PTX not validated"
fi

if [ "$arm" = 1 ]; then
  echo "[test] aarch64 build under qemu"
  "$here/scripts/test_arm.sh"
fi

echo "[test] consumer workflow: install, build examples/consumer against the install, run it"
if [ "$arm" = 1 ]; then
  "$here/scripts/test_consumer.sh"
else
  "$here/scripts/test_consumer.sh" --no-arm
fi

if [ "$sanitize" = 1 ]; then
  # The kernels are Halide's code, not instrumented: the sanitizer build links step 1's. -O1 with
  # line tables (-g1, enough for the reports' file:line) compiles in 4 min on 2 cores where
  # -O2 -g took 11; the tests then take 3 min either way (measured 2026-12-07).
  echo "[test] ASan+UBSan build (hattn's runtime, CLI and tests, over build/'s kernels)"
  HATTN_BUILD_DIR="$here/build-sanitize" "$here/scripts/build.sh" -DHATTN_BUILD_TESTS=ON \
    -DHATTN_BUILD_BENCH=OFF -DHATTN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" -DHATTN_KERNELS_FROM="$here/build"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$ctest" --test-dir "$here/build-sanitize" -j "$jobs" --output-on-failure
fi
if [ "$fuzz" = 1 ]; then
  echo "[test] libFuzzer smoke run (clang, ASan+UBSan, over build/'s kernels)"
  HATTN_BUILD_DIR="$here/build" "$here/scripts/fuzz.sh" --smoke
fi
echo "[test] all tests passed"
