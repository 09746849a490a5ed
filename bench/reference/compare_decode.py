#!/usr/bin/env python3
"""Issue 8's decode benchmark: per-token greedy decode of a Llama-2-7B-shaped random bf16
checkpoint (bench/reference/make_random_llama.py, 13.5 GB) with `strata run` and with
transformers + Accelerate (bench/reference/hf_decode.py), in one run on the same GPU:
  gpu   everything on cuda:0
  cpu   3 GiB on cuda:0, the rest offloaded to the cpu
  disk  3 GiB on cuda:0, the rest on disk (served from the page cache: the checkpoint was just
        written, and the host has room for it)
Each side runs in its own process, one placement at a time. Prints a table with ms/token, the
weights streamed per token and their GB/s, and Strata's speedup.

Usage: compare_decode.py STRATA_BINARY MODEL_DIR [--placements gpu,cpu,disk] [--gpu-gib 3]
                         [--strata-tokens 16] [--reference-tokens gpu=16,cpu=4,disk=3]
                         [--workdir /tmp] [--json-out FILE]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

PROMPT = "1,450,4996,17354,1701,1067,432,975"
HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n")
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return proc.stdout, proc.stderr


def strata(binary, model_dir, placement, args):
    cmd = [binary, "run", model_dir, "--token-ids", PROMPT, "--max-new-tokens",
           str(args.strata_tokens), "--dtype", "bf16"]
    folder = os.path.join(args.workdir, "strata_decode_offload")
    if placement == "gpu":
        cmd += ["--max-memory", "cuda:0=70GiB,cpu=0GiB"]
    elif placement == "cpu":
        cmd += ["--max-memory", f"cuda:0={args.gpu_gib}GiB,cpu=200GiB"]
    else:
        shutil.rmtree(folder, ignore_errors=True)
        cmd += ["--max-memory", f"cuda:0={args.gpu_gib}GiB,cpu=0GiB", "--offload-folder", folder]
    out, err = run(cmd)
    print("  strata:", err.strip().replace("\n", "\n  strata: "), flush=True)
    load = re.search(r"load ([\d.]+) ms", err)
    timing = re.search(r"prefill ([\d.]+) ms .*per token ([\d.]+) ms", err)
    shutil.rmtree(folder, ignore_errors=True)
    return {"load_s": float(load.group(1)) / 1e3, "prefill_s": float(timing.group(1)) / 1e3,
            "per_token_s": float(timing.group(2)) / 1e3,
            "tokens": [int(t) for t in out.strip().split(",")]}


def reference(model_dir, placement, tokens, args):
    folder = os.path.join(args.workdir, "hf_decode_offload")
    shutil.rmtree(folder, ignore_errors=True)
    out, _ = run([sys.executable, os.path.join(HERE, "hf_decode.py"), model_dir, "--placement",
                  placement, "--gpu-gib", str(args.gpu_gib), "--prompt", PROMPT, "--new-tokens",
                  str(tokens), "--offload-folder", folder])
    shutil.rmtree(folder, ignore_errors=True)
    result = json.loads(out.strip().splitlines()[-1])
    print("  reference:", result, flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("strata")
    parser.add_argument("model_dir")
    parser.add_argument("--placements", default="gpu,cpu,disk")
    parser.add_argument("--gpu-gib", type=float, default=3.0)
    parser.add_argument("--strata-tokens", type=int, default=16)
    parser.add_argument("--reference-tokens", default="gpu=16,cpu=4,disk=3")
    parser.add_argument("--workdir", default="/tmp")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    ref_tokens = dict(item.split("=") for item in args.reference_tokens.split(","))

    total_bytes = json.load(open(os.path.join(args.model_dir, "model.safetensors.index.json")))[
        "metadata"]["total_size"]
    rows = []
    for placement in args.placements.split(","):
        s = strata(args.strata, args.model_dir, placement, args)
        r = reference(args.model_dir, placement, int(ref_tokens[placement]), args)
        n = min(len(s["tokens"]), len(r["tokens"]))
        rows.append({"placement": placement, "strata": s, "reference": r,
                     "same_tokens": s["tokens"][:n] == r["tokens"][:n]})

    print()
    print(f"checkpoint: {total_bytes / 1e9:.2f} GB bf16; GPU budget {args.gpu_gib} GiB for "
          "cpu and disk")
    header = (f"{'placement':<10}{'Strata ms/token':>17}{'Accel. ms/token':>17}{'speedup':>9}"
              f"{'Strata load s':>15}{'Accel. load s':>15}  same greedy tokens")
    print(header)
    print("-" * len(header))
    for row in rows:
        s, r = row["strata"], row["reference"]
        print(f"{row['placement']:<10}{s['per_token_s'] * 1e3:>17.2f}{r['per_token_s'] * 1e3:>17.2f}"
              f"{r['per_token_s'] / s['per_token_s']:>8.1f}x{s['load_s']:>15.1f}{r['load_s']:>15.1f}"
              f"  {row['same_tokens']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
