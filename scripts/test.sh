#!/usr/bin/env bash
# Builds everything (library tests, examples, benchmarks) and runs the test
# suite. On a fresh Debian 12 machine, run as root, it installs what it needs.
#
#   scripts/test.sh                          default suite (everything but "long")
#   SINKKV_TEST_LABELS=all scripts/test.sh   every suite
#   SINKKV_BUILD_DIR=/tmp/b scripts/test.sh  another build folder
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/packages.sh
source "$root/scripts/lib/packages.sh"
ensure_packages cmake g++ clang ninja-build libeigen3-dev libgtest-dev libbenchmark-dev

build=${SINKKV_BUILD_DIR:-$root/build}
jobs=$(nproc)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$jobs"

cd "$build"
if [ "${SINKKV_TEST_LABELS:-default}" = "all" ]; then
  ctest --output-on-failure -j"$jobs"
else
  ctest --output-on-failure -j"$jobs" -LE long
fi
