#!/usr/bin/env bash
# openmla as a library other projects consume, the three documented ways (CI runs this from
# scripts/test-all.sh after the release build):
#   1. `cmake --install` into a temporary prefix; the CLI runs from <prefix>/bin;
#   2. examples/cxx with find_package(openmla) against that prefix;
#   3. pkg-config --cflags --libs openmla against that prefix: compile, link, run main.cpp with
#      no LD_LIBRARY_PATH (the .pc's Libs carry an rpath to the prefix's lib/);
#   4. examples/cxx with add_subdirectory(<this repo>) (build-example/, reused between runs): it
#      must not build openmla's tests or CLI.
#
#   bash scripts/test-install.sh [BUILD_DIR]    # default build/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build}"
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

echo "-- cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
env -u LD_LIBRARY_PATH "$prefix/bin/openmla" --version

echo "-- examples/cxx with find_package(openmla)"
cmake -S examples/cxx -B "$tmp/find" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/find" >/dev/null
env -u LD_LIBRARY_PATH "$tmp/find/openmla_example"

echo "-- pkg-config --cflags --libs openmla"
flags="$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs openmla)"
echo "   $flags"
# shellcheck disable=SC2086  # the flags are words
"${CXX:-c++}" -std=c++17 examples/cxx/main.cpp $flags -o "$tmp/pkgconfig_example"
env -u LD_LIBRARY_PATH "$tmp/pkgconfig_example"

echo "-- examples/cxx with add_subdirectory(openmla)"
cmake -S examples/cxx -B build-example -G Ninja -DOPENMLA_SOURCE_DIR="$PWD" >/dev/null
if grep -q 'openmla_tests\|openmla_cli' build-example/build.ninja; then
  echo "test-install: add_subdirectory(openmla) defined openmla's tests or CLI" >&2
  exit 1
fi
cmake --build build-example -j "$jobs" >/dev/null
./build-example/openmla_example
echo "-- install, find_package, pkg-config and add_subdirectory: ok"
