#!/usr/bin/env bash
# sinkkv demo: build the toy transformer example and stream a few thousand
# tokens through a 256-token attention-sink cache, with seeded random
# weights (nothing to download). Prints tokens generated, resident memory
# before and after (flat: the cache never grows), and tokens/s.
#
#   scripts/demo.sh                 # from anywhere in a clone
#   DEMO_TOKENS=100000 scripts/demo.sh
#
# On Debian as root, installs what is missing (cmake, g++, make,
# libeigen3-dev) with apt-get (scripts/lib/packages.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${DEMO_BUILD_DIR:-$root/build-demo}"
tokens="${DEMO_TOKENS:-20000}"
sinks=4
window=252

# ---- tools ----------------------------------------------------------------
# shellcheck source-path=SCRIPTDIR source=lib/packages.sh
source "$root/scripts/lib/packages.sh"
ensure_packages cmake g++ make libeigen3-dev

# ---- build only the example -------------------------------------------------
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  echo "demo: configuring $build"
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSINKKV_BUILD_TESTS=OFF \
    -DSINKKV_BUILD_BENCHMARKS=OFF -DSINKKV_BUILD_EXAMPLES=ON >"$build/demo-configure.log" 2>&1 ||
    { cat "$build/demo-configure.log" >&2; exit 1; }
fi
echo "demo: building toy_transformer (Release)"
cmake --build "$build" --target toy_transformer --parallel "${DEMO_JOBS:-2}" >"$build/demo-build.log" 2>&1 ||
  { cat "$build/demo-build.log" >&2; exit 1; }
binary="$(find "$build" -name toy_transformer -type f -perm -u+x | head -n 1)"

# ---- run ----------------------------------------------------------------------
echo "demo: generating $tokens tokens (random weights, $sinks sinks + $window window)"
log="$(mktemp)"
out="$(mktemp)"
trap 'rm -f "$log" "$out"' EXIT
"$binary" --tokens "$tokens" --sinks "$sinks" --window "$window" --seed 1 --progress-every 1 >"$out" 2>"$log" ||
  { cat "$log" >&2; exit 1; }
grep '^\[' "$log" | tail -n 3 | sed 's/^/  progress: /'

summary="$(grep '^generated ' "$log")"
# generated N tokens in S s: R tokens/s; cache C/C tokens; resident memory B MiB before, A MiB after
read -r generated seconds rate cache before after < <(
  sed -E 's/^generated ([0-9]+) tokens in ([0-9.]+) s: ([0-9]+) tokens\/s; cache ([0-9]+\/[0-9]+) tokens; resident memory ([0-9.]+) MiB before, ([0-9.]+) MiB after$/\1 \2 \3 \4 \5 \6/' <<<"$summary")
model="$(grep '^model: ' "$log" | sed 's/^model: //')"

cat <<EOF

sinkkv demo: toy transformer with an attention-sink KV cache
  model            : $model
  first tokens     : $(tr '\n' ' ' <"$out" | cut -d' ' -f1-16) ...
  tokens generated : $generated in $seconds s
  speed            : $rate tokens/s (one thread)
  cache            : $cache tokens held ($sinks sinks + $window most recent)
  resident memory  : $before MiB before generation, $after MiB after
EOF
