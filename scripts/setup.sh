#!/usr/bin/env bash
# Installs everything hattn's build, tests and benchmarks need, from Debian's packages and PyPI.
# Idempotent; safe to re-run. Works as root on a fresh Debian 12 (uses sudo otherwise).
#   scripts/setup.sh            build + test + benchmark dependencies (no PyTorch)
#   scripts/setup.sh --peer     additionally PyTorch in .venv-peer, for the peer benchmark only
#                               (PyPI's torch wheel pulls gigabytes of CUDA libraries)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
HALIDE_VERSION="${HATTN_HALIDE_VERSION:-21.0.0}"   # newest on PyPI for Python 3.11 at the time of writing
TORCH_VERSION="${HATTN_TORCH_VERSION:-}"          # empty: newest

want_peer=0
for a in "$@"; do
  case "$a" in
    --peer) want_peer=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$a' (try --help)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

debs=(
  build-essential cmake ninja-build git pkg-config ca-certificates
  python3 python3-venv python3-pip python3-dev   # -dev: headers for the Python module
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libopenblas-dev
  liblapacke-dev                    # Loki calibration's eigensolver (hattn_loki_prep)
  libcli11-dev
  nlohmann-json3-dev                # the CLI's JSON reports (hattn fidelity, calibrate --report)
  clang-format clang-tidy
  clang                             # libFuzzer (scripts/fuzz.sh): clang-14 with its fuzzer runtime
  g++-aarch64-linux-gnu qemu-user   # the ARM build: cross-compiled here, its tests run under qemu
)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
echo "[setup] apt-get update"
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "[setup] Debian packages already installed"
fi

# Halide (libHalide + LLVM, headers, GenGen, autoschedulers, CMake package) and numpy in a
# project-local virtual environment.
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, numpy, matplotlib, nanobind, pytest, sys; sys.exit(0 if m.version('halide') == '$HALIDE_VERSION' and m.version('cmake') >= '3.28' else 1)" 2>/dev/null; then
  echo "[setup] pip install halide==$HALIDE_VERSION numpy matplotlib nanobind pytest"
  "$venv/bin/pip" install -q --upgrade pip
  # matplotlib: scripts/plot_fidelity.py draws `hattn fidelity activations --json` as a PNG.
  # nanobind and pytest: the Python module (python/) and its tests; scikit-build-core: the
  # backend of `pip install ./python`.
  "$venv/bin/pip" install -q "halide==$HALIDE_VERSION" numpy matplotlib "cmake>=3.28,<4" \
    "nanobind>=2.4" pytest scikit-build-core
else
  echo "[setup] halide $HALIDE_VERSION, numpy, matplotlib, nanobind and pytest already in $venv"
fi

if [ "$want_peer" = 1 ]; then
  peer="$here/.venv-peer"
  [ -x "$peer/bin/python" ] || python3 -m venv "$peer"
  if ! "$peer/bin/python" -c "import torch, numpy, pytest" 2>/dev/null; then
    echo "[setup] pip install torch into $peer (large download)"
    "$peer/bin/pip" install -q --upgrade pip
    "$peer/bin/pip" install -q numpy pytest matplotlib "torch${TORCH_VERSION:+==$TORCH_VERSION}"
  else
    echo "[setup] torch already in $peer"
  fi
fi
echo "[setup] done"
