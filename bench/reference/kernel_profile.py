#!/usr/bin/env python3
"""Where a `strata bench` test spends its GPU time, by kernel family, from Nsight Compute's
per-kernel durations (`ncu --clock-control none`: the GPU keeps its normal clocks, so durations
are what the test sees; ncu serialises kernels, so gaps between them are not counted).

For prefill (pp<N>) it prints the matrix products' own rate: 2 x (linear-layer parameters) x
tokens / (time in GEMM kernels), next to the cuBLAS bf16 GEMM peak `strata bench` measures; that
is the issue's "linear layers at >= 70% of the GEMM peak", separated from attention and the
elementwise work around them.

Usage: kernel_profile.py STRATA_BINARY MODEL_DIR [-p 512] [-n 0] [-b 1] [--ncu PATH]
"""

import argparse
import collections
import csv
import io
import json
import os
import re
import struct
import subprocess
import sys

FAMILIES = [  # first match wins
    ("gemm", re.compile(r"nvjet|gemm|cutlass|xmma|cublas", re.I)),
    ("gemv", re.compile(r"matvec|gemv", re.I)),
    ("attention", re.compile(r"attention|flash", re.I)),
    ("norm", re.compile(r"norm", re.I)),
    ("rotary", re.compile(r"rotary", re.I)),
    ("copy/convert", re.compile(r"convert|copy", re.I)),
    ("elementwise", re.compile(r"unary|binary|bias|silu|mul|add", re.I)),
    ("sampling", re.compile(r"select|sampl|argmax|topk", re.I)),
]


def family(name):
    for label, pattern in FAMILIES:
        if pattern.search(name):
            return label
    return "other"


def linear_parameters(model_dir):
    """Elements of the 2-D weights under model.layers (the decoder's matrix products)."""
    total = 0
    for file in sorted(os.listdir(model_dir)):
        if not file.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, file), "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name.startswith("model.layers.") and len(entry.get("shape", [])) == 2:
                total += entry["shape"][0] * entry["shape"][1]
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("strata")
    parser.add_argument("model_dir")
    parser.add_argument("-p", "--prompt-tokens", type=int, default=512)
    parser.add_argument("-n", "--decode-tokens", type=int, default=0)
    parser.add_argument("-b", "--batch", type=int, default=1)
    parser.add_argument("--ncu", default="/usr/local/cuda/bin/ncu")
    args = parser.parse_args()
    runs = 2  # strata bench -r 1: one warm-up and one timed run
    cmd = [args.ncu, "--clock-control", "none", "--metrics", "gpu__time_duration.sum", "--csv",
           args.strata, "bench", args.model_dir, "-p", str(args.prompt_tokens), "-n",
           str(args.decode_tokens), "-b", str(args.batch), "-r", "1", "--no-limits"]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"ncu failed ({proc.returncode})")
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    per_family = collections.defaultdict(lambda: [0, 0.0])
    per_kernel = collections.defaultdict(lambda: [0, 0.0])
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        scale = {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3,
                 "msecond": 1e-3}[row["Metric Unit"]]
        seconds = float(row["Metric Value"].replace(",", "")) * scale / runs
        name = row["Kernel Name"]
        per_family[family(name)][0] += 1
        per_family[family(name)][1] += seconds
        per_kernel[name[:100]][0] += 1
        per_kernel[name[:100]][1] += seconds
    total = sum(s for _, s in per_family.values())
    print(f"\nGPU time per run (kernels only): {total * 1e3:.3f} ms")
    for label, (count, seconds) in sorted(per_family.items(), key=lambda x: -x[1][1]):
        print(f"  {label:<14}{seconds * 1e3:>10.3f} ms {100 * seconds / total:>5.1f}%"
              f"  ({count // runs} launches)")
    print("top kernels:")
    for name, (count, seconds) in sorted(per_kernel.items(), key=lambda x: -x[1][1])[:12]:
        print(f"  {seconds * 1e3:>9.3f} ms {count // runs:>5} x {seconds / count * runs * 1e6:>8.1f} us"
              f"  {name}")
    if args.prompt_tokens > 0 and per_family["gemm"][1] > 0:
        flops = 2.0 * linear_parameters(args.model_dir) * args.prompt_tokens * args.batch
        print(f"\nlinear layers: {flops / 1e12:.2f} TFLOP in {per_family['gemm'][1] * 1e3:.3f} ms of "
              f"GEMM kernels = {flops / per_family['gemm'][1] / 1e12:.1f} TFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
