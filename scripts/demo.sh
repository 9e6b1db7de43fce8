#!/usr/bin/env bash
# The main job on a fresh machine: set up, build (generates every kernel), run the CLI on example
# inputs it creates, check the result against NumPy, and print a short benchmark table.
#   scripts/demo.sh [--no-bench]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bench=1
[ "${1:-}" = "--no-bench" ] && bench=0
"$here/scripts/setup.sh"
"$here/scripts/build.sh"
hattn="$here/build/tools/hattn"
py="$here/.venv/bin/python"
ex="$here/examples/out"

echo "== compiled kernels"
"$hattn" list
echo "== example inputs"
"$py" "$here/examples/make_inputs.py" --out-dir "$ex" --q-heads 8 --kv-heads 2 --lq 1024 --lk 1024
echo "== hattn run dense (GQA 8:2, causal)"
"$hattn" run dense --q "$ex/q.npy" --k "$ex/k.npy" --v "$ex/v.npy" --out "$ex/o.npy" --causal --repeat 5
"$py" "$here/examples/check_output.py" --dir "$ex" --out "$ex/o.npy" --causal
if [ "$bench" = 1 ]; then
  echo "== benchmark (quick set; scripts/bench.sh runs the full one)"
  "$here/scripts/bench.sh" --quick
fi
