#!/usr/bin/env python3
"""Tabulates a quant_linear_bench sweep (the device script's logs: one bench_<variant>.txt per
STRATA_QUANT_GEMV variant, each run with --graph) as markdown: per format, shape and batch, the
share of the HBM copy rate of each variant, host-queued calls / inside a CUDA graph, and the
7B-token lines; then the strata bench decode_*.json results beside them.

Usage: quant_sweep_table.py LOG_DIR [--mode graph|call|both]
"""

import argparse
import glob
import json
import os
import re
import sys

ROW = re.compile(
    r"^(\S+)\s+(\d+x\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)%"
    r"(?:\s+([\d.]+)\s+(\d+)\s+(\d+)%)?")
TOKEN = re.compile(r"^7B token( graph)?, (\S+) projections \(batch 1\): .*= (\d+)%")


def parse(path):
    rows, tokens = {}, {}
    with open(path) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                fmt, shape, batch = m.group(1), m.group(2), int(m.group(3))
                call = int(m.group(7))
                graph = int(m.group(10)) if m.group(10) else None
                rows[(fmt, shape, batch)] = (call, graph)
                continue
            m = TOKEN.match(line)
            if m:
                tokens[(m.group(2), "graph" if m.group(1) else "call")] = int(m.group(3))
    return rows, tokens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log_dir")
    parser.add_argument("--mode", default="both", choices=["graph", "call", "both"])
    args = parser.parse_args()
    runs = {}
    for path in sorted(glob.glob(os.path.join(args.log_dir, "bench_*.txt"))):
        name = os.path.basename(path)[len("bench_"):-len(".txt")]
        runs[name] = parse(path)
    if not runs:
        sys.exit(f"no bench_*.txt under {args.log_dir}")
    names = list(runs)
    keys = sorted({k for rows, _ in runs.values() for k in rows},
                  key=lambda k: (k[0], k[2], k[1]))

    def cell(value):
        call, graph = value
        if args.mode == "call" or graph is None:
            return f"{call}%"
        if args.mode == "graph":
            return f"{graph}%"
        return f"{call} / {graph}%"

    print("| format | shape | batch | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for key in keys:
        cells = [cell(runs[n][0][key]) if key in runs[n][0] else "" for n in names]
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    print()
    fmts = sorted({f for _, tokens in runs.values() for f, _ in tokens})
    print("| 7B token, batch 1 | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for f in fmts:
        cells = []
        for n in names:
            tokens = runs[n][1]
            if (f, "call") not in tokens:
                cells.append("")
            elif (f, "graph") in tokens and args.mode != "call":
                cells.append(f"{tokens[(f, 'call')]} / {tokens[(f, 'graph')]}%"
                             if args.mode == "both" else f"{tokens[(f, 'graph')]}%")
            else:
                cells.append(f"{tokens[(f, 'call')]}%")
        print(f"| {f} | " + " | ".join(cells) + " |")
    decodes = sorted(glob.glob(os.path.join(args.log_dir, "decode_*.json")))
    if decodes:
        print()
        print("| decode (strata bench) | weight GB | ms/token | weight GB/s | of the HBM rate |")
        print("|---|---|---|---|---|")
    for path in decodes:
        try:
            with open(path) as f:
                d = json.load(f)
            t = d["tests"][0]
            share = t.get("share_of_memory_limit")
            print(f"| {os.path.basename(path)[len('decode_'):-len('.json')]} | "
                  f"{d['weight_bytes'] / 1e9:.2f} | {t['ms_per_step']:.3f} | "
                  f"{t['weight_read_gb_per_s']:.0f} | "
                  f"{'' if share is None else f'{100 * share:.0f}%'} |")
        except (OSError, ValueError, KeyError, IndexError):
            print(f"| {os.path.basename(path)} | (no result) | | | |")


if __name__ == "__main__":
    main()
