#!/usr/bin/env bash
# Per-head windows vs uniform policies at equal memory, on the committed
# trained models (docs/experiment.md, "Per-head windows at equal memory").
#
# Each mix gives K of the 12 KV heads a long window and the others a short
# one, with as many token slots in all as a uniform cache of L per head. The
# K long heads are chosen three ways, on a calibration slice of held-out text
# (tokens 8192-12288, not scored below):
#   far      the heads whose attention reaches farthest: sinkkv-eval's
#            attention report (sink cache at the 256-token training length,
#            queries 2048-4095) measures each head's weight on tokens beyond
#            the short window, sinks left out; --suggest-mix picks the top K;
#   control  the K heads that reach least far (the opposite choice);
#   ablation the K heads whose own cut to the short window (all other heads
#            at the training length) raises calibration perplexity most, a
#            cheap stand-in for DuoAttention's optimised head gates.
# Every mix is scored on the first 8,192 held-out tokens next to the uniform
# window and sink caches of the same memory.
#
#   examples/toy_transformer/head_window_experiment.sh [sinkkv-eval] [out-dir]
# Prints a Markdown table (also out-dir/table.md); about 4 minutes on one core.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
eval_bin="${1:-$root/build/examples/toy_transformer/sinkkv-eval}"
out="${2:-$root/build/head-window-experiment}"
mkdir -p "$out"

# L, K long heads, long capacity, short capacity (sinks + window):
# K x long + (12 - K) x short = 12 x L
mixes=(
  "32 3 80 16"
  "64 3 160 32"
  "64 6 96 32"
  "128 3 224 96"
)
layers=6
kv_heads=2

# The range table's row of a policy: its perplexity on the first and second range.
row() { awk -v name="$1" '$1 == name { print $(NF-2), $(NF-1) }' "$2"; }
score() {  # score POLICY-FILE TOKENS RANGES OUT -> the mixed row's second range
  "$eval_bin" --checkpoint "$model_bin" --tokens "$2" --policies mixed --head-policies-file "$1" \
    --cache-size 256 --sinks "$sinks" --ranges "$3" --out "$4" --progress-every 0 > "$4.txt" 2>&1
  row mixed "$4.txt" | awk '{ print $2 }'
}

{
  echo "| model | L | mix: K heads long + the others | window | sink | far heads long | control | ablation |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|"
} > "$out/table.md"
for model in vanilla sink_token; do
  model_bin="$root/models/$model/model.bin"
  heldout="$root/models/$model/heldout.i32"
  calibration="$out/$model-calibration.i32"
  # 4,097 tokens (4,096 predictions); the sink_token model sees its <sink> (id 767) first, as in heldout.i32.
  case "$model" in
    vanilla) sinks=4; skip=8192; length=4097; : > "$calibration" ;;
    sink_token) sinks=1; skip=8193; length=4096; printf '\xff\x02\x00\x00' > "$calibration" ;;
  esac
  dd if="$heldout" bs=4 skip="$skip" count="$length" status=none >> "$calibration"

  for mix in "${mixes[@]}"; do
    read -r budget count long short <<<"$mix"
    far_policy="$sinks+$((long - sinks))"
    near_policy="$sinks+$((short - sinks))"
    tag="$model-L$budget-$count"

    # far / control: from the attention report on the calibration slice.
    "$eval_bin" --checkpoint "$model_bin" --tokens "$calibration" --policies sink --cache-size 256 \
      --sinks "$sinks" --mass-range 2048:4096 --mass-far "$((short - sinks))" \
      --suggest-mix "$count:$far_policy:$near_policy" --out "$out/$tag-mass" --progress-every 0 \
      > "$out/$tag-mass.txt" 2>&1

    # ablation: each KV head alone cut to the short policy (once per short policy).
    ranking="$out/$model-ablation-$short.txt"
    if [ ! -f "$ranking" ]; then
      for ((l = 0; l < layers; ++l)); do
        for ((h = 0; h < kv_heads; ++h)); do
          printf 'all: %s\nlayer %d heads %d: %s\n' "$sinks+$((256 - sinks))" "$l" "$h" "$near_policy" \
            > "$out/$model-cut-$short-$l-$h.policy"
          ppl="$(score "$out/$model-cut-$short-$l-$h.policy" "$calibration" 1-256,257-4096 \
            "$out/$model-cut-$short-$l-$h")"
          echo "$ppl $l $h"
        done
      done | sort -g -r > "$ranking"
      if grep -qv '^[0-9]' "$ranking"; then
        echo "head_window_experiment: a calibration run scored nothing (see $out/$model-cut-*.txt)" >&2
        exit 1
      fi
    fi
    {
      echo "# the $count KV heads whose cut to $near_policy raises calibration perplexity most keep $far_policy"
      echo "all: $near_policy"
      head -n "$count" "$ranking" | awk -v p="$far_policy" '{ print "layer " $2 " heads " $3 ": " p }'
    } > "$out/$tag-ablation.policy"

    results=()
    for name in far control ablation; do
      case "$name" in
        far) policy="$out/$tag-mass/head_policies.txt" ;;
        control) policy="$out/$tag-mass/head_policies_control.txt" ;;
        ablation) policy="$out/$tag-ablation.policy" ;;
      esac
      "$eval_bin" --checkpoint "$model_bin" --tokens "$heldout" --first 8193 --policies window,sink,mixed \
        --head-policies-file "$policy" --sinks "$sinks" --ranges 1-256,257-8192 \
        --out "$out/$tag-$name-eval" --progress-every 0 > "$out/$tag-$name-eval.txt" 2>&1
      read -r _ mixed <<<"$(row mixed "$out/$tag-$name-eval.txt")"
      results+=("$mixed")
    done
    read -r _ window <<<"$(row window "$out/$tag-far-eval.txt")"
    read -r _ sink <<<"$(row sink "$out/$tag-far-eval.txt")"
    echo "| $model | $budget | $count x $far_policy + $near_policy | $window | $sink | ${results[0]} | ${results[1]}" \
      "| ${results[2]} |" >> "$out/table.md"
  done
done
cat "$out/table.md"
echo
echo "(perplexity on held-out positions 257-8192; every policy of a row holds the same K/V memory, 12 x L token"
echo " slots; logs, attention reports, ablation rankings and the head policies in $out)"
