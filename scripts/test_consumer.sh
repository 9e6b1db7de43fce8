#!/usr/bin/env bash
# The consumer workflow end to end (README.md, "Use hattn in your project"): installs hattn into a
# prefix, builds examples/consumer against that prefix alone (its kernels are generated at its
# own build time) and runs it; then the same for aarch64 (the build-arm/ install, the example
# cross-compiled and run under qemu-aarch64). Also checks that `hattn --version` reports the
# package's version and that mismatched targets are refused at configure time with a message.
# Needs build/ (and build-arm/) already built: scripts/test.sh runs it after the builds.
#   scripts/test_consumer.sh            x86 and aarch64
#   scripts/test_consumer.sh --no-arm   x86 only
#   scripts/test_consumer.sh --no-x86   aarch64 only
# Every step is bounded (HATTN_CONSUMER_TIMEOUT seconds, default 900).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
arm=1
x86=1
for a in "$@"; do
  case "$a" in
    --no-arm) arm=0 ;;
    --no-x86) x86=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "test_consumer.sh: unknown option '$a'" >&2; exit 2 ;;
  esac
done
cmake="$here/.venv/bin/cmake"
[ -x "$cmake" ] || { echo "test_consumer.sh: $cmake not found; run scripts/setup.sh first" >&2; exit 1; }
host_build="${HATTN_BUILD_DIR:-$here/build}"
arm_build="${HATTN_ARM_BUILD_DIR:-$here/build-arm}"
work="${HATTN_CONSUMER_DIR:-$here/build-consumer}"
jobs="${HATTN_JOBS:-$(nproc)}"
limit="${HATTN_CONSUMER_TIMEOUT:-900}"
bounded() { timeout --foreground "$limit" "$@"; }
fail() { echo "[test_consumer] FAIL: $*" >&2; exit 1; }
version="$(sed -n 's/^project(hattn .*VERSION \([0-9.]*\).*/\1/p' "$here/CMakeLists.txt")"

# Installs build dir $1 into prefix $2, builds the example in $3 with extra configure args, and
# prints how long the example's configure + build (kernel generation included) took.
install_and_build() {
  local build="$1" prefix="$2" example="$3"
  shift 3
  [ -f "$build/CMakeCache.txt" ] || fail "$build is not configured (build it first)"
  bounded "$cmake" --build "$build" -j "$jobs"
  rm -rf "$prefix" "$example"
  bounded "$cmake" --install "$build" --prefix "$prefix" >/dev/null
  local t0=$SECONDS
  bounded "$cmake" -S "$here/examples/consumer" -B "$example" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" "$@" >/dev/null
  bounded "$cmake" --build "$example" -j "$jobs"
  echo "[test_consumer] example configured and built in $((SECONDS - t0)) s (kernels generated in its build)"
}

# A configure of the example that must fail with a message containing $1.
expect_refused() {
  local want="$1" log="$work/refused.log"
  shift
  rm -rf "$work/refused"
  if bounded "$cmake" -S "$here/examples/consumer" -B "$work/refused" -G Ninja "$@" >"$log" 2>&1; then
    fail "configure with $* succeeded; expected a refusal mentioning '$want'"
  fi
  # CMake wraps its messages: compare with the lines joined.
  tr -s ' \n' '  ' <"$log" | grep -qF "$want" ||
    { cat "$log" >&2; fail "the refusal does not mention '$want'"; }
  echo "[test_consumer] refused as expected: $(tr -s ' \n' '  ' <"$log" | grep -oF "$want")"
}

if [ "$x86" = 1 ]; then
  echo "[test_consumer] x86: install $host_build, build examples/consumer against it"
  install_and_build "$host_build" "$work/prefix-x86" "$work/example-x86"
  "$work/example-x86/consumer_example" | tee "$work/example-x86.out" || fail "x86 consumer example"
  grep -qF "no CUDA kernels were generated" "$work/example-x86.out" ||
    fail "a kernel set without CUDA kernels does not say so"
  # With CUDA kernels too: the set's Halide runtime has CUDA and the registration supplies it (no
  # GPU needed: without one, the example's CUDA line names the missing driver or device instead).
  echo "[test_consumer] x86 + cuda: the example with TARGETS host cuda"
  t0=$SECONDS
  rm -rf "$work/example-x86-cuda"
  bounded "$cmake" -S "$here/examples/consumer" -B "$work/example-x86-cuda" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix-x86" \
    "-DHATTN_EXAMPLE_TARGETS=host;cuda" >/dev/null
  bounded "$cmake" --build "$work/example-x86-cuda" -j "$jobs"
  echo "[test_consumer] example with CUDA kernels configured and built in $((SECONDS - t0)) s"
  "$work/example-x86-cuda/consumer_example" | tee "$work/example-x86-cuda.out" ||
    fail "x86 + cuda consumer example"
  if grep -qF "no CUDA kernels were generated" "$work/example-x86-cuda.out"; then
    fail "TARGETS host cuda generated no CUDA kernels"
  fi
  got="$("$work/prefix-x86/bin/hattn" --version)"
  echo "[test_consumer] hattn --version: $got"
  case "$got" in *"hattn $version"*) ;; *) fail "hattn --version does not say $version" ;; esac
  expect_refused "target 'arm-64-linux' is for arm" -DCMAKE_PREFIX_PATH="$work/prefix-x86" \
    -DHATTN_EXAMPLE_TARGETS=arm-64-linux
fi

if [ "$arm" = 1 ]; then
  command -v qemu-aarch64 >/dev/null || fail "qemu-aarch64 not found; run scripts/setup.sh first"
  echo "[test_consumer] aarch64: install $arm_build, cross-build examples/consumer, run under qemu"
  install_and_build "$arm_build" "$work/prefix-arm" "$work/example-arm" \
    -DCMAKE_TOOLCHAIN_FILE="$here/cmake/toolchains/aarch64-linux-gnu.cmake"
  readelf -h "$work/example-arm/consumer_example" | grep -q AArch64 ||
    fail "the example is not an aarch64 binary"
  bounded qemu-aarch64 -L /usr/aarch64-linux-gnu "$work/example-arm/consumer_example" ||
    fail "aarch64 consumer example under qemu"
  expect_refused "was built for aarch64" -DCMAKE_PREFIX_PATH="$work/prefix-arm"
fi
echo "[test_consumer] all consumer checks passed"
