#!/usr/bin/env bash
# Builds everything (library tests, examples, benchmarks) and runs a test
# profile. On a fresh Debian 12 machine, run as root, it installs what the
# profile needs. Profiles (docs/testing.md has the labels and their times):
#
#   scripts/test.sh                            default: unit and toy tests, fuzz replays (~4 min on 2 cores)
#   SINKKV_TEST_LABELS=ci scripts/test.sh      what CI runs (.ci/run): default plus ASan+UBSan, TSan,
#                                              arm64 under qemu, no-SIMD x86 and 60 s of fuzzing per target
#   SINKKV_TEST_LABELS=all scripts/test.sh     ci plus the long tests
#   SINKKV_TEST_LABELS=asan scripts/test.sh    the tests whose label matches this CTest regex
#                                              (unit toy long asan tsan arm64 nosimd fuzz ci)
#   SINKKV_BUILD_DIR=/tmp/b scripts/test.sh    another build folder
#   SINKKV_FUZZ_SECONDS=600 scripts/test.sh    fuzz each target longer (with ci, all or fuzz)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/packages.sh
source "$root/scripts/lib/packages.sh"

profile=${SINKKV_TEST_LABELS:-default}
packages=(cmake g++ clang ninja-build libeigen3-dev libgtest-dev libbenchmark-dev)
if [ "$profile" != default ]; then
  # The test variants: cross compiler and emulator for arm64, GoogleTest's
  # sources to build for it, clang's sanitizer and libFuzzer runtimes.
  packages+=(g++-aarch64-linux-gnu qemu-user googletest libclang-rt-14-dev libfuzzer-14-dev)
fi
ensure_packages "${packages[@]}"

build=${SINKKV_BUILD_DIR:-$root/build}
jobs=$(nproc)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKKV_FUZZ_SECONDS="${SINKKV_FUZZ_SECONDS:-60}"
cmake --build "$build" -j"$jobs"

cd "$build"
case "$profile" in
  default) selection=(-LE '^(long|ci)$') ;;  # the variants all carry the label ci
  ci) selection=(-LE '^long$') ;;
  all) selection=() ;;
  *) selection=(-L "$profile") ;;
esac
ctest --output-on-failure -j"$jobs" "${selection[@]}"
