#!/usr/bin/env python3
"""Issue 7's side-by-side offload benchmark: Strata (bench/cuda_offload_bench) and Hugging Face
Accelerate on the same shapes, in one run, on the same GPU.

A stack of bf16 Linear(dim, dim, bias=False) blocks (60 x 8192^2 x 2 bytes = 8.05 GB by default):
  (a) cpu_offload to cuda:0;
  (b) about 2 GiB of blocks on cuda:0, the rest on the cpu (dispatch_model);
  (c) the same, the rest on disk (an offload folder, page cache warm after the first forward).
Prints seconds per forward, GB/s of weights streamed per forward, the ratio to the pinned
host-to-device bandwidth measured by the Strata bench in the same run, and Strata's speedup.

Usage: compare_offload.py PATH/TO/cuda_offload_bench [--blocks 60] [--dim 8192] [--forwards 3]
                          [--reference-forwards 2] [--workdir /tmp] [--json-out FILE]
Needs torch and accelerate (the device machine has both).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def run_strata(bench, args, offload_dir):
    cmd = [bench, "--blocks", str(args.blocks), "--dim", str(args.dim), "--forwards",
           str(args.forwards), "--gpu-gib", str(args.gpu_gib), "--offload-dir", offload_dir,
           "--json"]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            entry = json.loads(line[len("RESULT "):])
            results[entry["key"]] = entry
        else:
            print("  strata:", line)
    return results


def make_stack(blocks, dim):
    import torch
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = torch.nn.Sequential(
            *[torch.nn.Linear(dim, dim, bias=False, dtype=torch.bfloat16) for _ in range(blocks)])
    # Real CPU memory, touched once (values do not change the timing; zeros keep it finite).
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.001)
    return model


def time_forwards(model, x, forwards):
    import torch

    with torch.no_grad():
        model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(forwards):
            model(x)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / forwards


def run_accelerate(args, resident, offload_dir):
    import torch
    import accelerate
    from accelerate import cpu_offload, dispatch_model

    print(f"accelerate {accelerate.__version__}, torch {torch.__version__}", flush=True)
    x = torch.full((1, args.dim), 0.01, dtype=torch.bfloat16)
    results = {}

    model = make_stack(args.blocks, args.dim)
    cpu_offload(model, execution_device=torch.device("cuda:0"))
    results["a_cpu_offload"] = time_forwards(model, x.to("cuda:0"), args.reference_forwards)
    print(f"  accelerate (a): {results['a_cpu_offload'] * 1e3:.1f} ms/forward", flush=True)
    del model

    for key, tier in (("b_gpu_plus_cpu", "cpu"), ("c_gpu_plus_disk", "disk")):
        model = make_stack(args.blocks, args.dim)
        device_map = {str(i): (0 if i < resident else tier) for i in range(args.blocks)}
        if tier == "disk":
            shutil.rmtree(offload_dir, ignore_errors=True)
            model = dispatch_model(model, device_map=device_map, offload_dir=offload_dir)
        else:
            model = dispatch_model(model, device_map=device_map)
        results[key] = time_forwards(model, x.to("cuda:0"), args.reference_forwards)
        print(f"  accelerate ({key[0]}): {results[key] * 1e3:.1f} ms/forward", flush=True)
        del model
        torch.cuda.empty_cache()
    shutil.rmtree(offload_dir, ignore_errors=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench", help="path to the built cuda_offload_bench")
    parser.add_argument("--blocks", type=int, default=60)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--forwards", type=int, default=5)
    parser.add_argument("--reference-forwards", type=int, default=2)
    parser.add_argument("--gpu-gib", type=float, default=2.0)
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    strata = run_strata(args.bench, args, os.path.join(args.workdir, "strata_offload"))
    setup = strata["setup"]
    reference = run_accelerate(args, setup["resident_blocks"],
                               os.path.join(args.workdir, "accelerate_offload"))

    limit = setup["pinned_h2d_gbps"]
    block_bytes = args.dim * args.dim * 2
    streamed = {"a_cpu_offload": args.blocks * block_bytes,
                "b_gpu_plus_cpu": (args.blocks - setup["resident_blocks"]) * block_bytes,
                "c_gpu_plus_disk": (args.blocks - setup["resident_blocks"]) * block_bytes}
    names = {"a_cpu_offload": "(a) cpu_offload",
             "b_gpu_plus_cpu": "(b) 2 GiB GPU + rest cpu",
             "c_gpu_plus_disk": "(c) 2 GiB GPU + rest disk"}
    print()
    print(f"{args.blocks} x bf16 Linear({args.dim}, {args.dim}) = {setup['weight_bytes'] / 1e9:.2f} "
          f"GB; pinned H2D measured in this run: {limit:.1f} GB/s")
    header = (f"{'placement':<28}{'Strata s/fwd':>14}{'GB/s':>8}{'% H2D':>8}"
              f"{'Accel. s/fwd':>14}{'GB/s':>8}{'% H2D':>8}{'speedup':>9}")
    print(header)
    print("-" * len(header))
    table = []
    for key, name in names.items():
        s = strata[key]["seconds_per_forward"]
        r = reference[key]
        s_gbps = streamed[key] / s / 1e9
        r_gbps = streamed[key] / r / 1e9
        print(f"{name:<28}{s:>14.3f}{s_gbps:>8.1f}{100 * s_gbps / limit:>7.1f}%"
              f"{r:>14.3f}{r_gbps:>8.1f}{100 * r_gbps / limit:>7.1f}%{r / s:>8.1f}x")
        table.append({"placement": key, "strata_s": s, "strata_gbps": s_gbps,
                      "accelerate_s": r, "accelerate_gbps": r_gbps, "pinned_h2d_gbps": limit,
                      "speedup": r / s, "streamed_bytes": streamed[key]})
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(table, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
