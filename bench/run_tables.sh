#!/usr/bin/env bash
# Reproduces the tables of docs/performance.md: builds the benchmarks for this
# CPU, runs them with repetitions, and prints Markdown (also kept as JSON in
# the output directory).
#
#   bench/run_tables.sh [build-dir] [out-dir]
# Environment: REPS (default 7), MIN_TIME seconds (default 0.1), MAX_TOKENS
# for the streaming table (default 100000; 4000000 takes about 2 hours with
# the toy model on a 2-core Zen 5 VM).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="${1:-$root/build-bench}"
out="${2:-$build/tables}"
reps="${REPS:-7}"
min_time="${MIN_TIME:-0.1}"
max_tokens="${MAX_TOKENS:-100000}"
mkdir -p "$out"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKKV_BUILD_TESTS=OFF \
  -DSINKKV_BUILD_EXAMPLES=ON -DSINKKV_NATIVE=ON > "$out/cmake.log"
ninja -C "$build" -j2 attention_bench cache_bench e2e_bench > "$out/build.log"

{ lscpu; echo; uptime; echo; g++ --version | head -1; } > "$out/machine.txt"
common=(--benchmark_repetitions="$reps" --benchmark_min_time="$min_time" --benchmark_format=json)
"$build/bench/attention_bench" "${common[@]}" > "$out/attention.json"
"$build/bench/cache_bench" "${common[@]}" > "$out/cache.json"
"$build/bench/e2e_bench" --max-tokens "$max_tokens" > "$out/e2e.md"
python3 "$here/report.py" "$out/attention.json" "$out/cache.json" > "$out/tables.md"
cat "$out/tables.md" "$out/e2e.md"
