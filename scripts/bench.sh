#!/usr/bin/env bash
# Runs hattn's benchmarks with their baselines in one run and prints the ratio table.
#   scripts/bench.sh [--quick] [extra Google Benchmark args, e.g. --benchmark_filter=decode]
# JSON, the table and a PNG plot of it are kept in results/. PyTorch's SDPA joins when .venv-peer exists
# (scripts/setup.sh --peer); otherwise the peer is skipped, and the table says so.
# HATTN_BENCH_THREADS=n sets the threads (default 2); HATTN_BENCH_PEER=0 skips the peer.
# HATTN_BENCH_ISA=avx512|avx2|sse41 caps hattn's builds (hattn::limit_isa) and PyTorch's kernels
# (ATEN_CPU_CAPABILITY, oneDNN's and MKL's ISA limits) at that level: a lower x86 level timed on
# a machine that has a higher one, both sides alike.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
quick=0
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then quick=1; else args+=("$a"); fi
done
if [ ! -f "$here/build/build.ninja" ]; then
  "$here/.venv/bin/cmake" -S "$here" -B "$here/build" -G Ninja -DHATTN_BUILD_BENCH=ON
fi
"$here/.venv/bin/cmake" --build "$here/build" --target hattn_bench
mkdir -p "$here/results"
reps=5
filter=()
if [ "$quick" = 1 ]; then
  reps=3
  filter=(--benchmark_filter='L:(512|2048)/|Lk:(4096|32768)/|array_read|machine_peak|square')
fi
"$here/build/bench/hattn_bench" --benchmark_out="$here/results/bench_dense.json" \
  --benchmark_out_format=json --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true "${filter[@]}" "${args[@]}"
peer_json=""
rm -f "$here/results/torch_sdpa.json"
peer_py="$here/.venv-peer/bin/python"
if [ "${HATTN_BENCH_PEER:-1}" = 0 ]; then
  echo "== PyTorch SDPA peer skipped (HATTN_BENCH_PEER=0)"
elif [ -x "$peer_py" ] && "$peer_py" -c "import torch" 2>/dev/null; then
  echo "== PyTorch SDPA peer"
  case "${HATTN_BENCH_ISA:-native}" in
    avx512) export ATEN_CPU_CAPABILITY=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE MKL_ENABLE_INSTRUCTIONS=AVX512 ;;
    avx2) export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ;;
    sse41) export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 ;;
  esac
  peer_args=(--out "$here/results/torch_sdpa.json" --dtypes f32,bf16,f16)
  if [ "$quick" = 1 ]; then peer_args+=(--quick); fi
  if "$peer_py" "$here/bench/torch_sdpa.py" "${peer_args[@]}"; then
    peer_json="$here/results/torch_sdpa.json"
  else
    echo "== PyTorch SDPA peer failed; the table goes on without it"
  fi
else
  echo "== PyTorch SDPA peer skipped: no torch in .venv-peer (scripts/setup.sh --peer installs it)"
fi
python3 "$here/bench/report.py" "$here/results/bench_dense.json" $peer_json | tee "$here/results/bench_dense.txt"
# The same run as a PNG (matplotlib, in .venv): prefill GFLOP/s and decode GB/s by shape.
"$here/.venv/bin/python" "$here/bench/plot.py" "$here/results/bench_dense.png" \
  "$here/results/bench_dense.json" $peer_json || echo "== no plot (see the line above)"
