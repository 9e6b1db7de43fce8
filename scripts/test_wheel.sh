#!/usr/bin/env bash
# `pip install ./python` as a user runs it, into a fresh virtual environment, then the package's
# tests against the installed wheel (not the build tree). It builds every kernel for this machine
# again (about 7 minutes on 2 cores), so CI does not run it: CI tests the same module target in
# the main build (ctest python_package). Run it after changing python/pyproject.toml or
# python/CMakeLists.txt.
#   scripts/test_wheel.sh [venv folder, default build-wheel/venv]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$here/build-wheel/venv}"
rm -rf "$venv"
python3 -m venv "$venv"
echo "[wheel] pip install ./python into $venv (builds the kernels: minutes)"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install "$here/python" pytest
echo "[wheel] the package's tests against the installed wheel"
cd "$venv"  # not the checkout: import the installed hattn, not python/hattn
"$venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$here/python/tests"
