#!/usr/bin/env bash
# Builds here everything a GPU machine needs to test and benchmark hattn's CUDA kernels, into
# build/gpu-bundle/ (the GPU machine needs no Halide, compiler or internet; PyTorch only for the
# benchmark). Then, on the GPU machine, from the repository root:
#   build/gpu-bundle/run.sh [--quick]
# runs the CUDA tests (and the CPU suite's dense tests) and bench/gpu_bench.py, writing
# build/gpu-bundle/out/ (or $OUT when set).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
build="${HATTN_BUILD_DIR:-$here/build}"
bundle="$build/gpu-bundle"
"$here/scripts/build.sh" -DHATTN_CUDA=ON -DHATTN_BUILD_TESTS=ON
rm -rf "$bundle"
mkdir -p "$bundle"
cp "$build/tests/test_cuda" "$build/tests/test_dense" "$build/runtime/libhattn_c.so" "$bundle/"
cp "$here/bench/gpu_bench.py" "$bundle/"
cat > "$bundle/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine: CUDA tests, then the benchmark against PyTorch SDPA (same run).
set -uo pipefail
b="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$b/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
status=0
"$b/test_cuda" --gtest_output="json:$out/test_cuda.json" 2>&1 | tee "$out/test_cuda.txt" || status=1
"$b/test_dense" --gtest_brief=1 2>&1 | tail -5 | tee "$out/test_dense.txt" || status=1
python3 "$b/gpu_bench.py" --lib "$b/libhattn_c.so" --json "$out/gpu_bench.json" "$@" 2>&1 |
  tee "$out/gpu_bench.txt" || status=1
exit $status
RUN
chmod +x "$bundle/run.sh"
du -sh "$bundle"
echo "[gpu_bundle] carry $bundle to the GPU machine and run build/gpu-bundle/run.sh there"
