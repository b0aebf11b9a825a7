#!/usr/bin/env bash
# Reproduces the tables of docs/performance.md: builds the benchmarks twice
# (a generic build, as distributions ship, and -march=native), runs them
# with repetitions, and prints Markdown (also kept as JSON in the output
# directory).
#
#   bench/run_tables.sh [build-dir] [out-dir]
# Environment: REPS (default 5), MIN_TIME seconds (default 0.1), MAX_TOKENS
# for the streaming table (default 100000; 4000000 takes about 2 hours with
# the toy model on a 2-core Zen 5 VM), ROUNDS of the generic-vs-native
# comparison (default 3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build="${1:-$root/build-bench}"
out="${2:-$build/tables}"
reps="${REPS:-5}"
min_time="${MIN_TIME:-0.1}"
max_tokens="${MAX_TOKENS:-100000}"
rounds="${ROUNDS:-3}"
mkdir -p "$out"

# The generic build is the one the tables come from: since the kernel picks
# its instruction set at run time, it runs the same code as a native build
# (the comparison below checks that).
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKKV_BUILD_TESTS=OFF \
  -DSINKKV_BUILD_EXAMPLES=ON -DSINKKV_NATIVE=OFF > "$out/cmake.log"
ninja -C "$build" -j2 attention_bench cache_bench e2e_bench > "$out/build.log"
cmake -S "$root" -B "$build-native" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKKV_BUILD_TESTS=OFF \
  -DSINKKV_BUILD_EXAMPLES=OFF -DSINKKV_NATIVE=ON >> "$out/cmake.log"
ninja -C "$build-native" -j2 attention_bench >> "$out/build.log"

{ lscpu; echo; uptime; echo; g++ --version | head -1; } > "$out/machine.txt"
common=(--benchmark_repetitions="$reps" --benchmark_min_time="$min_time" --benchmark_format=json)
"$build/bench/attention_bench" "${common[@]}" > "$out/attention.json"
"$build/bench/cache_bench" "${common[@]}" > "$out/cache.json"
"$build/bench/e2e_bench" --max-tokens "$max_tokens" > "$out/e2e.md"

# Generic vs native build, same machine, interleaved rounds.
filter='attention/cpu/(float|half|bfloat16)/(32/8/128|64/8/128|8/8/64)/len:(1024|4096)/threads:1'
for round in $(seq "$rounds"); do
  for flavour in generic native; do
    binary="$build/bench/attention_bench"
    [ "$flavour" = native ] && binary="$build-native/bench/attention_bench"
    "$binary" --benchmark_filter="$filter" --benchmark_repetitions=3 --benchmark_min_time="$min_time" \
      --benchmark_format=json > "$out/$flavour.$round.json"
  done
done

python3 "$here/report.py" "$out/attention.json" "$out/cache.json" > "$out/tables.md"
python3 "$here/compare.py" "generic build=$out/generic.*.json" "native build=$out/native.*.json" \
  > "$out/generic_vs_native.md"
cat "$out/tables.md" "$out/generic_vs_native.md" "$out/e2e.md"
