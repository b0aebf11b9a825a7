#!/bin/sh
# toy_transformer --serve against the program's own single-stream mode: every
# served request prints the tokens that `--seed SEED+i --random-prompt P
# --tokens G` generates alone (the independent reference: a Decoder over a
# SinkKVCache, one matrix-vector pass per token).
#   serve_matches_alone.sh TOY_TRANSFORMER
set -eu
bin=$1
seed=7
served=$("$bin" --serve 3 --requests 7 --serve-tokens 5:40 --serve-prompt 0:9 --seed $seed --sinks 2 --window 14 \
  --progress-every 0 2>/dev/null)
echo "$served" | while IFS= read -r line; do
  index=$(echo "$line" | sed -n 's/^\[request \([0-9]*\): .*/\1/p')
  prompt=$(echo "$line" | sed -n 's/^\[request [0-9]*: \([0-9]*\) prompt.*/\1/p')
  tokens=$(echo "$line" | sed -n 's/^\[request [0-9]*: [0-9]* prompt + \([0-9]*\) tokens\].*/\1/p')
  [ -n "$index" ] && [ -n "$prompt" ] && [ -n "$tokens" ] || { echo "unexpected line: $line"; exit 1; }
  if [ "$prompt" -gt 0 ]; then prompt_flag="--random-prompt $prompt"; else prompt_flag=""; fi
  # shellcheck disable=SC2086
  alone=$("$bin" --seed $((seed + index)) --start-token 1 $prompt_flag --tokens "$tokens" --sinks 2 --window 14 \
    --prefill-chunk 16 --progress-every 0 2>/dev/null | tr -s ' \n' '  ' | sed 's/ *$//')
  got=$(echo "$line" | sed 's/^\[[^]]*\] //' | sed 's/ *$//')
  if [ "$got" != "$alone" ]; then
    echo "request $index ($prompt prompt tokens, $tokens generated): served '$got', alone '$alone'"
    exit 1
  fi
  echo "request $index: $tokens tokens as decoded alone"
done
echo "$served" | grep -c '^\[request ' | grep -qx 7 || { echo "expected 7 requests, got: $served"; exit 1; }
