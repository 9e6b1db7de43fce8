#!/usr/bin/env bash
# libFuzzer runs over hattn's input boundaries (tests/fuzz/): the .npy reader (fuzz_npy) and every
# variant's public entry point on fuzzed shapes, strides, dtypes and knobs (fuzz_api), built
# with clang -fsanitize=fuzzer,address,undefined in build-fuzz/ over the kernels of build/
# (scripts/build.sh first; the kernels are not regenerated).
#   scripts/fuzz.sh --smoke          CI: each target for a bounded time from the checked-in corpus
#                                    (HATTN_FUZZ_SMOKE_S seconds each, default 45)
#   scripts/fuzz.sh --long [RUNS]    each target for RUNS executions (default 10000000) with a
#                                    working corpus in build-fuzz/corpus/ (seeded from the checked-in
#                                    one); prints libFuzzer's final stats (executions, exec/s)
#   scripts/fuzz.sh --build          only build the targets
# A finding stops the run with a non-zero status; the crashing input is left in build-fuzz/
# (crash-*), reproduce with build-fuzz/tests/fuzz/fuzz_<t> build-fuzz/crash-<hash>.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:---smoke}"
runs="${2:-10000000}"
cmake="$here/.venv/bin/cmake"
host_build="${HATTN_BUILD_DIR:-$here/build}"
fuzz_build="${HATTN_FUZZ_BUILD_DIR:-$here/build-fuzz}"
jobs="${HATTN_JOBS:-$(nproc)}"
targets=(fuzz_npy fuzz_api)

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found; run scripts/setup.sh" >&2; exit 1; }
[ -f "$host_build/generated/hattn_kernels.inc" ] ||
  { echo "fuzz.sh: no kernels in $host_build; run scripts/build.sh first" >&2; exit 1; }
# Only the kernels (and the runtime archive) of the host build are needed.
"$cmake" --build "$host_build" --target hattn -j "$jobs" >/dev/null
"$cmake" -S "$here" -B "$fuzz_build" -G Ninja -DHATTN_FUZZ=ON -DHATTN_KERNELS_FROM="$host_build" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
"$cmake" --build "$fuzz_build" --target "${targets[@]}" -j "$jobs"
[ "$mode" = --build ] && exit 0

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
for t in "${targets[@]}"; do
  seed="$here/tests/fuzz/corpus/${t#fuzz_}"
  bin="$fuzz_build/tests/fuzz/$t"
  log="$fuzz_build/$t.log"
  case "$mode" in
    --smoke)
      secs="${HATTN_FUZZ_SMOKE_S:-45}"
      echo "[fuzz] $t: ${secs}s from $seed (read only)"
      # libFuzzer writes new units to its first corpus directory: a scratch one here.
      scratch="$fuzz_build/smoke-corpus/${t#fuzz_}"
      rm -rf "$scratch" && mkdir -p "$scratch"
      args=(-max_total_time="$secs" "$scratch" "$seed")
      ;;
    --long)
      work="$fuzz_build/corpus/${t#fuzz_}"
      mkdir -p "$work"
      echo "[fuzz] $t: $runs executions, corpus $work (seeded from $seed)"
      args=(-runs="$runs" "$work" "$seed")
      ;;
    *) echo "fuzz.sh: unknown mode '$mode' (--smoke, --long [RUNS], --build)" >&2; exit 2 ;;
  esac
  rc=0
  (cd "$fuzz_build" && "$bin" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 "${args[@]}") \
    >"$log" 2>&1 || rc=$?
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|DONE" "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log"
    echo "[fuzz] $t: FINDING (exit $rc); log $log, input in $fuzz_build/crash-* or oom-*/timeout-*" >&2
    exit 1
  fi
done
echo "[fuzz] no findings"
