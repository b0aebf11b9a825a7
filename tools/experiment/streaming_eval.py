#!/usr/bin/python3
"""The attention-sink experiment on the committed models (issue 5).

Runs sinkkv-eval on the first --tokens ids of each model's held-out split for
every cache size and sink count, and writes docs/experiment.md (the tables),
docs/experiment/<model>_L<size>.svg (the plots) and docs/experiment/*.csv.
Needs only the standard library and a built sinkkv-eval:

  cmake --build build --target sinkkv-eval
  /usr/bin/python3 tools/experiment/streaming_eval.py --eval build/examples/toy_transformer/sinkkv-eval
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUMMARY = re.compile(r"^(\S+)\s+(\d+)\s+([0-9.]+|inf|nan)\s+([0-9.]+|inf|nan)\s+([0-9.]+)\s+(\d+)\s*$")


def run_eval(binary, model_dir, tokens_path, limit_tokens, cache_size, sinks, policies, out_dir, threads,
             mass_range=None):
    """Runs sinkkv-eval once; returns {policy: mean NLL} and its stdout."""
    cmd = [os.path.abspath(binary), "--checkpoint", os.path.relpath(os.path.join(model_dir, "model.bin"), ROOT),
           "--tokens", tokens_path,
           "--cache-size", str(cache_size), "--sinks", str(sinks), "--policies", ",".join(policies),
           "--threads", str(threads), "--out", out_dir, "--progress-every", "0", "--chunk", "1024",
           "--smooth", "256"]
    if mass_range:
        cmd += ["--mass-range", mass_range]
    started = time.time()
    result = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    nll = {}
    for line in result.stdout.splitlines():
        match = SUMMARY.match(line)
        if match and match.group(1) != "policy":
            nll[match.group(1)] = float(match.group(4))
    missing = [p for p in policies if p not in nll]
    if missing:
        sys.exit(f"streaming_eval: no summary line for {missing} in:\n{result.stdout}")
    print(f"  L={cache_size} S={sinks} {','.join(policies)}: {time.time() - started:.1f} s", file=sys.stderr)
    return nll, result.stdout


def truncated_tokens(model_dir, count, work):
    """The first `count` ids of heldout.i32, as a file of their own."""
    source = os.path.join(model_dir, "heldout.i32")
    with open(source, "rb") as f:
        data = f.read(4 * count)
    if len(data) < 4 * count:
        sys.exit(f"streaming_eval: {source} has fewer than {count} tokens")
    path = os.path.join(work, os.path.basename(model_dir) + ".i32")
    with open(path, "wb") as f:
        f.write(data)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", required=True, help="path of the sinkkv-eval binary")
    parser.add_argument("--models", nargs="+", default=["vanilla", "sink_token"])
    parser.add_argument("--tokens", type=int, default=8192, help="held-out tokens to stream (>= 8x training length)")
    parser.add_argument("--cache-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--sinks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = parser.parse_args()

    figures = os.path.join(args.out, "experiment")
    work = os.path.join(figures, "work")
    os.makedirs(work, exist_ok=True)
    results = {}  # model -> {"dense": nll, L: {column: nll}}
    mass_tables = {}
    for model in args.models:
        model_dir = os.path.join(ROOT, "models", model)
        info = json.load(open(os.path.join(model_dir, "heldout.json")))
        tokens = truncated_tokens(model_dir, args.tokens, work)
        print(f"{model}: {args.tokens} held-out tokens", file=sys.stderr)
        results[model] = {"chars_per_token": info.get("chars_per_token")}
        for size in args.cache_sizes:
            row = {}
            base = [p for p in ["dense", "window", "sink", "recompute", "sink-stream"] if p != "dense" or size == args.cache_sizes[0]]
            run_dir = os.path.join(work, f"{model}_L{size}")
            mass = f"{args.tokens // 2}:{args.tokens // 2 + 256}" if size == args.cache_sizes[-1] else None
            nll, stdout = run_eval(args.eval, model_dir, tokens, args.tokens, size, 4, base, run_dir, args.threads, mass)
            if "dense" in nll:
                results[model]["dense"] = nll["dense"]
            row["window"] = nll["window"]
            row["sink 4"] = nll["sink"]
            row["recompute"] = nll["recompute"]
            row["sink 4, stream positions"] = nll["sink-stream"]
            shutil.copy(os.path.join(run_dir, "plot.svg"), os.path.join(figures, f"{model}_L{size}.svg"))
            shutil.copy(os.path.join(run_dir, "chunks.csv"), os.path.join(figures, f"{model}_L{size}_chunks.csv"))
            if mass:
                shutil.copy(os.path.join(run_dir, "attention_mass.csv"),
                            os.path.join(figures, f"{model}_L{size}_attention_mass.csv"))
                mass_tables[model] = (mass, size, stdout[stdout.index("attention mass"):].split("\nwrote")[0])
            for sinks in args.sinks:
                if sinks == 4:
                    continue
                nll_s, _ = run_eval(args.eval, model_dir, tokens, args.tokens, size, sinks, ["sink"],
                                    os.path.join(work, f"{model}_L{size}_S{sinks}"), args.threads)
                row[f"sink {sinks}"] = nll_s["sink"]
            results[model][size] = row
    shutil.rmtree(work)
    with open(os.path.join(figures, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(args, results, mass_tables)


def write_markdown(args, results, mass_tables):
    columns = ["window"] + [f"sink {s}" for s in sorted(args.sinks)] + ["recompute", "sink 4, stream positions"]
    lines = ["# The attention-sink experiment", "",
             f"Generated by `tools/experiment/streaming_eval.py` (sinkkv-eval on the first {args.tokens} tokens",
             "of each model's held-out split; training windows are 256 tokens). Numbers are perplexity per",
             "token (exp of the mean NLL over every prediction of the stream); `window` keeps the last L tokens,",
             "`sink S` keeps S initial tokens plus the last L-S, both with cache-relative positions (the library);",
             "`recompute` re-runs the last L tokens from scratch for every token (the paper's gold standard);",
             "`dense` keeps every token at stream positions (far past the training length).", ""]
    for model, data in results.items():
        cpt = data.get("chars_per_token")
        lines += [f"## {model}", "", f"dense (all {args.tokens} tokens): perplexity {math.exp(data['dense']):.2f}", ""]
        lines.append("| L | " + " | ".join(columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for size in args.cache_sizes:
            row = data[size]
            cells = [f"{math.exp(row[c]):.2f}" for c in columns]
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        if cpt:
            lines += ["", f"(bits per character = ln(perplexity) / ln 2 / {cpt:.3f} characters per token)"]
        lines.append("")
        if model in mass_tables:
            mass, size, table = mass_tables[model]
            lines += [f"Attention mass, sink policy with 4 sinks at L = {size}, queries at stream positions {mass}:", "",
                      "```", table.strip(), "```", ""]
        lines += [f"![moving-average NLL, {model}, L = {args.cache_sizes[-1]}](experiment/{model}_L{args.cache_sizes[-1]}.svg)", ""]
    with open(os.path.join(args.out, "experiment.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
