#!/usr/bin/env python3
"""Turns the JSON of attention_bench and cache_bench (run with
--benchmark_repetitions=N --benchmark_format=json) into the Markdown tables of
docs/performance.md. Medians are Google Benchmark's; "best" is the fastest of
the N repetitions (the "min"/"max" statistics every benchmark registers).

    python3 bench/report.py attention.json cache.json > tables.md
"""
import json
import re
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        return json.load(f)


def aggregates(data):
    """{run_name: {aggregate_name: entry}}"""
    out = defaultdict(dict)
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            out[b["run_name"]][b["aggregate_name"]] = b
    return out


NAME = re.compile(r"attention/(?P<kernel>[^/]+)/(?P<type>[^/]+)/(?P<shape>\d+/\d+/\d+)/len:(?P<len>\d+)/threads:(?P<threads>\d+)")


def attention_tables(data):
    agg = aggregates(data)
    rows = {}
    for run, stats in agg.items():
        m = NAME.match(run)
        if not m or "median" not in stats:
            continue
        key = (m["type"], m["shape"], int(m["len"]))
        rows.setdefault(key, {})[(m["kernel"], int(m["threads"]))] = stats
    out = []
    types = ["float", "half", "bfloat16"]
    shapes = ["32/8/128", "8/8/64", "64/8/128"]
    for t in types:
        out.append(f"\n#### {t} K/V\n")
        out.append("| shape (q/kv/dim) | tokens | K+V MiB | bound GB/s | bound µs | CpuKernel µs (median) | GB/s | **roofline median** | roofline best | Eigen µs | × vs Eigen | re-read µs | × vs re-read | 2 threads µs median / best | × 2 vs 1 thread |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for shape in shapes:
            for length in sorted({k[2] for k in rows if k[0] == t and k[1] == shape}):
                r = rows[(t, shape, length)]
                cpu = r.get(("cpu", 1))
                if cpu is None:
                    continue
                med = cpu["median"]
                best = cpu["max"]  # max of roofline = best repetition
                time = med["real_time"]
                mib = med["bytes_per_second"] * time * 1e-6 / 2**20
                eig = r.get(("eigen_gemv", 1))
                rer = r.get(("reread_per_head", 1))
                two = r.get(("cpu", 2))
                def t_of(x, agg="median"):
                    return x[agg]["real_time"] if x else float("nan")
                out.append(
                    f"| {shape} | {length} | {mib:.1f} | {med['probe_GBps']:.1f} | {med['bound_us']:.1f} | "
                    f"{time:.1f} | {med['bytes_per_second']/1e9:.1f} | **{med['roofline']:.2f}** | {best['roofline']:.2f} | "
                    f"{t_of(eig):.1f} | {t_of(eig)/time:.1f} | {t_of(rer):.1f} | {t_of(rer)/time:.1f} | "
                    f"{t_of(two):.1f} / {t_of(two, 'min'):.1f} | {time/t_of(two):.2f} |")
    dot = [(k, r[("cpu_bf16dot", 1)], r[("cpu", 1)]) for k, r in sorted(rows.items()) if ("cpu_bf16dot", 1) in r and ("cpu", 1) in r]
    if dot:
        out.append("\n#### bfloat16 K/V with `bfloat16_dot_products` (query rounded to bfloat16, VDPBF16PS scores)\n")
        out.append("| shape (q/kv/dim) | tokens | bound µs | CpuKernel µs (median) | **roofline median** | roofline best | × vs float-query CpuKernel |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        order = {s: i for i, s in enumerate(shapes)}
        for (t, shape, length), d, c in sorted(dot, key=lambda x: (order.get(x[0][1], 9), x[0][2])):
            med = d["median"]
            out.append(f"| {shape} | {length} | {med['bound_us']:.1f} | {med['real_time']:.1f} | **{med['roofline']:.2f}** | "
                       f"{d['max']['roofline']:.2f} | {c['median']['real_time']/med['real_time']:.2f} |")
    return "\n".join(out)


CHUNK = re.compile(r"chunk/(?P<kernel>[^/]+)/(?P<type>[^/]+)/(?P<shape>\d+/\d+/\d+)/cached:(?P<cached>\d+)/C:(?P<c>\d+)")


def chunk_tables(data):
    """Chunked attention: one chunk call vs C decode calls (CPU time, one thread)."""
    agg = aggregates(data)
    rows = defaultdict(dict)
    for run, stats in agg.items():
        m = CHUNK.match(run)
        if m and "median" in stats:
            rows[(m["type"], m["shape"], int(m["cached"]), int(m["c"]))][m["kernel"]] = stats
    if not rows:
        return ""
    peak = next((b["GFLOPs"] for b in data["benchmarks"] if b["name"].startswith("probe/fma_peak")), float("nan"))
    out = [f"\n#### Chunked attention, one thread (FMA peak of this run: {peak:.1f} GFLOP/s, thread CPU time)\n",
           "| K/V | shape (q/kv/dim) | cached | C | chunk ms (median) | GFLOP/s | **of FMA peak** (best) | "
           "C decode calls ms | GFLOP/s | **chunk ÷ decode calls** |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    types = ["float", "half", "bfloat16"]
    for key in sorted(rows, key=lambda k: (types.index(k[0]) if k[0] in types else 9, k[1], k[2], k[3])):
        r = rows[key]
        chunk, calls = r.get("cpu"), r.get("decode_calls")
        if not chunk or not calls:
            continue
        cm, dm = chunk["median"], calls["median"]
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cm['cpu_time']:.2f} | {cm['GFLOPs']:.1f} | "
                   f"**{cm['fma_fraction']:.2f}** ({chunk['max']['fma_fraction']:.2f}) | {dm['cpu_time']:.2f} | "
                   f"{dm['GFLOPs']:.1f} | **{dm['cpu_time'] / cm['cpu_time']:.2f}** |")
    return "\n".join(out)


LAYOUT = re.compile(r"layout/scores/(?P<layout>[^/]+)/float/(?P<shape>\d+/\d+/\d+)/len:(?P<len>\d+)")


def layout_table(data):
    """The key-layout experiment: score phase, row-major vs tiled keys."""
    agg = aggregates(data)
    rows = defaultdict(dict)
    for run, stats in agg.items():
        m = LAYOUT.match(run)
        if m and "median" in stats:
            rows[(m["shape"], int(m["len"]))][m["layout"]] = stats["median"]
    if not rows:
        return ""
    out = ["\n#### Key layout: the score phase (QK^T, all KV heads), float keys\n",
           "| shape (q/kv/dim) | tokens | row-major µs (median) | GFLOP/s | tiled K^T µs | GFLOP/s | **row-major ÷ tiled** |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for (shape, length) in sorted(rows):
        r = rows[(shape, length)]
        a, b = r.get("row_major"), r.get("tiled")
        if not a or not b:
            continue
        out.append(f"| {shape} | {length} | {a['real_time']:.1f} | {a['GFLOPs']:.1f} | {b['real_time']:.1f} | "
                   f"{b['GFLOPs']:.1f} | **{a['real_time'] / b['real_time']:.2f}** |")
    return "\n".join(out)


def probe_table(data):
    """Read-bandwidth probes of the run, and the envelope the bounds use
    (bench::bound_bandwidth: each size raised to the best of the larger ones)."""
    probes = {}
    for b in data["benchmarks"]:
        m = re.match(r"probe/read_bandwidth/(\d+)", b["name"])
        if m and "best_GBps" in b and b.get("run_type") != "aggregate":
            probes[int(m[1])] = b["best_GBps"]  # the same in every repetition (measured once)
    if not probes:
        return ""
    out = ["\n#### Read-bandwidth probes of this run\n",
           "| K+V MiB | probe GB/s (best pattern) | bound GB/s (envelope) |", "|---:|---:|---:|"]
    sizes = sorted(probes)
    for i, size in enumerate(sizes):
        envelope = max(probes[s] for s in sizes[i:])
        out.append(f"| {size / 2**20:g} | {probes[size]:.1f} | {envelope:.1f} |")
    return "\n".join(out)


def cache_tables(data):
    agg = aggregates(data)
    per = defaultdict(dict)
    fits = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") in ("BigO", "RMS"):
            fits.setdefault(b["run_name"].split("/real_time")[0].rsplit("/", 0)[0], {})[b["aggregate_name"]] = b
    for run, stats in agg.items():
        m = re.match(r"append_evict/(?P<impl>[^/]+)/(?P<type>[^/]+)/(?P<window>\d+)/real_time", run)
        if m and "median" in stats:
            per[(m["type"], int(m["window"]))][m["impl"]] = stats
    out = ["| K/V type | window | SinkKVCache ns/token median (best) | re-rotate window ns/token median (best) | × cheaper |",
           "|---|---:|---:|---:|---:|"]
    for (t, w) in sorted(per, key=lambda k: (["float", "half", "bfloat16"].index(k[0]), k[1])):
        s = per[(t, w)].get("sinkkv")
        r = per[(t, w)].get("rerotate_window")
        if not s or not r:
            continue
        sm, sb = s["median"]["real_time"], s["min"]["real_time"]
        rm, rb = r["median"]["real_time"], r["min"]["real_time"]
        out.append(f"| {t} | {w} | {sm:.0f} ({sb:.0f}) | {rm:.0f} ({rb:.0f}) | {rm/sm:.0f} |")
    out.append("")
    out.append("Complexity fits (Google Benchmark, real time):\n")
    out.append("| benchmark | fit | RMS |")
    out.append("|---|---|---|")
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "BigO" or b["name"].endswith("_BigO"):
            name = b["name"].replace("_BigO", "")
            rms = next((x for x in data["benchmarks"] if x["name"] == name + "_RMS"), None)
            coef = b.get("real_coefficient", float("nan"))
            big_o = b.get("big_o", "?")
            unit = b.get("time_unit", "ns")
            out.append(f"| {name} | {coef:.4g} {unit} × {big_o} | {rms['rms']*100 if rms else float('nan'):.0f} % |")
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 1
    for path in sys.argv[1:]:
        data = load(path)
        names = " ".join(b["name"] for b in data["benchmarks"])
        ctx = data["context"]
        print(f"<!-- {path}: {ctx.get('date')} host {ctx.get('host_name')}, {ctx.get('num_cpus')} CPUs @ {ctx.get('mhz_per_cpu')} MHz, "
              f"vector path {ctx.get('sinkkv_vector_path', '?')} -->")
        if "attention/" in names:
            print(attention_tables(data))
            print(probe_table(data))
        if "chunk/" in names:
            print(chunk_tables(data))
        if "layout/" in names:
            print(layout_table(data))
        if "append_evict" in names:
            print(cache_tables(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
