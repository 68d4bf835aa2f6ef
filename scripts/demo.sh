#!/usr/bin/env bash
# Quick start 1: install what is missing, build, run `openmla demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOPENMLA_BUILD_TESTS=OFF
cmake --build build --target openmla_cli
./build/openmla demo
