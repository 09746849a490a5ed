#!/usr/bin/env python3
"""Table of run_quant_bench.sh `formats`: per format, GPU-resident decode (ms/token, GB/s of the
weights' stored -- packed -- bytes, share of the HBM copy rate measured by strata bench in the
same run) and decode with 1 GiB on the GPU (ms/token streamed and with the cpu computing its
layers, against the PCIe bound: bytes not on the GPU / pinned host-to-GPU rate).

Usage: quant_bench_table.py JSON_DIR   (the files <format>.gpu.json, <format>.offload_<policy>.json,
pcie.json that run_quant_bench.sh writes; <format>.gpu.<variant>.json for GPU_VARIANTS)."""

import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tg(report):
    for t in (report or {}).get("tests", []):
        if t.get("test", "").startswith("tg"):
            return t
    return None


UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def gpu_bytes(report):
    """Bytes on GPUs from strata bench's "weights": "cuda:0 1.00 GiB, cpu 11.5 GiB"."""
    total = 0.0
    for part in (report or {}).get("weights", "").split(", "):
        fields = part.split()
        if len(fields) == 3 and fields[0].startswith("cuda") and fields[2] in UNITS:
            total += float(fields[1]) * UNITS[fields[2]]
    return total


def gpu_decode(report):
    """ms/token, GB/s of the stored bytes and their share of the HBM rate of a GPU-resident run."""
    t = tg(report) or {}
    hbm = ((report or {}).get("limits") or {}).get("hbm_gb_s")
    gbs = t.get("weight_read_gb_per_s")
    share = f"{100 * gbs / hbm:5.0f}%" if gbs and hbm else "     -"
    return t.get("ms_per_step", float("nan")), gbs or float("nan"), share


def main():
    d = sys.argv[1]
    pcie = (load(os.path.join(d, "pcie.json")) or {}).get("pinned_h2d_gb_s")
    print(f"pinned host-to-GPU: {pcie:.1f} GB/s" if pcie else "pinned host-to-GPU: not measured")
    print(f"{'format':7} {'GB':>6} | {'gpu ms':>7} {'GB/s':>7} {'of HBM':>6} | "
          f"{'streamed GB':>11} {'PCIe ms':>8} {'stream ms':>9} {'cpu ms':>7}")
    for f in ["bf16", "fp8", "awq", "gptq", "ct"]:
        g = load(os.path.join(d, f"{f}.gpu.json"))
        if g is None:
            continue
        # GPU_VARIANTS' runs (<format>.gpu.<variant>.json): GPU-resident rows of their own.
        prefix = f"{f}.gpu."
        for name in sorted(os.listdir(d)):
            if name.startswith(prefix) and name.endswith(".json") and name != f"{f}.gpu.json":
                ms, gbs, share = gpu_decode(load(os.path.join(d, name)))
                print(f"{f} {name[len(prefix):-5]}: {ms:7.3f} ms, {gbs:7.0f} GB/s, {share} of HBM")
        size = g.get("weight_bytes", 0) / 1e9
        ms, gbs, share = gpu_decode(g)
        row = f"{f:7} {size:6.2f} | {ms:7.2f} {gbs:7.0f} {share} | "
        s = load(os.path.join(d, f"{f}.offload_stream.json"))
        c = load(os.path.join(d, f"{f}.offload_cpu.json"))
        streamed = (s.get("weight_bytes", 0) - gpu_bytes(s)) / 1e9 if s else float("nan")
        bound = 1e3 * streamed / pcie if pcie and s else float("nan")
        row += f"{streamed:11.2f} {bound:8.1f} {(tg(s) or {}).get('ms_per_step', float('nan')):9.1f} "
        row += f"{(tg(c) or {}).get('ms_per_step', float('nan')):7.1f}"
        print(row)


if __name__ == "__main__":
    main()
