#!/usr/bin/env python3
"""Compares the single-thread CpuKernel medians of two attention_bench JSON
runs (e.g. two commits run back to back on one machine):

    python3 bench/compare.py before.json after.json > comparison.md
"""
import re
import sys

NAME = re.compile(r"attention/cpu/(?P<type>[^/]+)/(?P<shape>\d+/\d+/\d+)/len:(?P<len>\d+)/threads:1")


def medians(path):
    import json
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        m = NAME.match(b.get("run_name", ""))
        if m and b.get("aggregate_name") == "median":
            out[(m["type"], m["shape"], int(m["len"]))] = b
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before, after = medians(sys.argv[1]), medians(sys.argv[2])
    types = ["float", "half", "bfloat16"]
    shapes = ["32/8/128", "8/8/64", "64/8/128"]
    print("| K/V | shape (q/kv/dim) | tokens | before µs | after µs | × faster | roofline before → after |")
    print("|---|---|---:|---:|---:|---:|---|")
    for key in sorted(set(before) & set(after), key=lambda k: (types.index(k[0]), shapes.index(k[1]), k[2])):
        b, a = before[key], after[key]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {b['real_time']:.1f} | {a['real_time']:.1f} | "
              f"{b['real_time'] / a['real_time']:.2f} | {b['roofline']:.2f} → {a['roofline']:.2f} |")


if __name__ == "__main__":
    main()
