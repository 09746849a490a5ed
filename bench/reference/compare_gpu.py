#!/usr/bin/env python3
"""Issue 14's GPU benchmark in one command: `strata bench` and transformers (SDPA, Accelerate's
device_map={"": 0}; bench/reference/hf_gpu_bench.py) on the same GPU, one after the other, with
the same tests: prefill of the given prompt lengths, decode of N tokens at each batch size over a
context of D tokens. Prints one table with both sides, Strata's speedup, and the shares of the
limits `strata bench` measured in the same run (HBM read for decode, cuBLAS bf16 GEMM for the
linear layers of prefill).

Usage: compare_gpu.py STRATA_BINARY MODEL_DIR [-p 512,2048] [-n 128] [-d 0] [-b 1]
                      [-r 3] [--json-out FILE]
Run it once for prefill + batch-1 decode and once with -p 0 -d 1024 -b 1,4,16,64 for batched
decode over 1k-token contexts.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout)
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("strata")
    parser.add_argument("model_dir")
    parser.add_argument("-p", "--prompt-tokens", default="512,2048")
    parser.add_argument("-n", "--decode-tokens", type=int, default=128)
    parser.add_argument("-d", "--depth", type=int, default=0)
    parser.add_argument("-b", "--batch", default="1")
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    common = ["-p", args.prompt_tokens, "-n", str(args.decode_tokens), "-d", str(args.depth),
              "-b", args.batch, "-r", str(args.repetitions)]

    strata = run_json([args.strata, "bench", args.model_dir, "--max-memory",
                       "cuda:0=75GiB,cpu=0GiB", "--dtype", "bf16", "--json", *common])
    reference = run_json([sys.executable, os.path.join(HERE, "hf_gpu_bench.py"), args.model_dir,
                          *common])
    ref = {(t["test"], t["batch"]): t for t in reference["tests"]}

    limits = strata.get("limits") or {}
    print()
    print(f"weights {strata['weight_bytes'] / 1e9:.2f} GB; limits measured now: GPU memory "
          f"{limits.get('hbm_gb_s') or 0:.0f} GB/s, bf16 GEMM "
          f"{limits.get('gemm_bf16_tflops') or 0:.0f} TFLOP/s; load Strata "
          f"{strata['load_seconds']:.2f} s, transformers {reference['load_s']:.2f} s")
    header = (f"{'test':<12}{'batch':>6}{'Strata tok/s':>14}{'transformers':>14}{'speedup':>9}"
              f"{'Strata ms/step':>16}{'share of limit':>16}")
    print(header)
    print("-" * len(header))
    rows = []
    for t in strata["tests"]:
        r = ref.get((t["test"], t["batch"]))
        share = t.get("share_of_memory_limit", t.get("share_of_gemm_peak"))
        speedup = t["tokens_per_second"] / r["tokens_per_second"] if r else None
        rows.append({"strata": t, "reference": r, "speedup": speedup})
        print(f"{t['test']:<12}{t['batch']:>6}{t['tokens_per_second']:>14.1f}"
              f"{r['tokens_per_second'] if r else float('nan'):>14.1f}"
              f"{speedup or float('nan'):>8.2f}x"
              f"{t.get('ms_per_step', float('nan')):>16.3f}"
              f"{'' if share is None else f'{100 * share:.0f}%':>16}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"strata": strata, "reference": reference, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
