#!/usr/bin/env python3
"""Compares attention_bench runs side by side: the median time of every
benchmark present in all of them, and ratios against the first.

    python3 bench/compare.py before.json after.json > comparison.md
    python3 bench/compare.py "old generic=old_g.*.json" "old native=old_n.*.json" \\
        "generic=new_g.*.json" "native=new_n.*.json"

A plain path is labelled by its file name. A LABEL=GLOB argument pools the
repetitions of every matching file (e.g. several interleaved rounds of one
binary), so the median is over all of them. Only single-thread rows unless
--threads N. Times are real (wall-clock) microseconds, as the benchmark
reports them.
"""
import glob
import json
import re
import statistics
import sys

NAME = re.compile(r"attention/(?P<kernel>[^/]+)/(?P<type>[^/]+)/(?P<shape>\d+/\d+/\d+)/len:(?P<len>\d+)"
                  r"/threads:(?P<threads>\d+)")
TYPES = ["float", "half", "bfloat16"]


def times(paths, threads):
    """{(kernel, type, shape, len): [real_time of each repetition]}"""
    out = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data["benchmarks"]:
            if b.get("run_type") != "iteration":
                continue
            m = NAME.match(b.get("run_name", b["name"]))
            if not m or int(m["threads"]) != threads:
                continue
            key = (m["kernel"], m["type"], m["shape"], int(m["len"]))
            out.setdefault(key, []).append(b["real_time"])
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--threads")]
    threads = 1
    for a in sys.argv[1:]:
        if a.startswith("--threads="):
            threads = int(a.split("=", 1)[1])
    if len(args) < 2:
        sys.exit(__doc__)
    runs = []
    for arg in args:
        label, pattern = arg.split("=", 1) if "=" in arg else (arg.rsplit("/", 1)[-1], arg)
        paths = sorted(glob.glob(pattern))
        if not paths:
            sys.exit(f"no file matches {pattern}")
        runs.append((label, times(paths, threads)))
    keys = set(runs[0][1])
    for _, t in runs[1:]:
        keys &= set(t)

    def order(k):
        return (k[0], TYPES.index(k[1]) if k[1] in TYPES else 9, k[2], k[3])

    labels = [label for label, _ in runs]
    print("| kernel | K/V | shape (q/kv/dim) | tokens | " + " | ".join(f"{l} µs" for l in labels) + " | " +
          " | ".join(f"{labels[0]} ÷ {l}" for l in labels[1:]) + " |")
    print("|---|---|---|---:|" + "---:|" * (2 * len(labels) - 1))
    for key in sorted(keys, key=order):
        medians = [statistics.median(t[key]) for _, t in runs]
        cells = " | ".join(f"{m:,.1f}" for m in medians)
        ratios = " | ".join(f"{medians[0] / m:.2f}" for m in medians[1:])
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]:,} | {cells} | {ratios} |")


if __name__ == "__main__":
    main()
