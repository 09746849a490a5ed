#!/usr/bin/env python3
"""The MoE benchmark's random checkpoint routes random tokens near uniformly.

Issue 17's benchmark (bench/reference/run_moe_bench.sh) reads its expert cache hit rate and its
plan-vs-measured ratio on the routing stream of make_random_qwen3_moe.py's checkpoint; strata
plan assumes uniform routing. In session 8 the stream had concentrated on a fifth of the experts
(the attention's output swamped the token embedding in the residual stream), which made both
numbers meaningless. This writes the generator's --small shape (8 layers, same structure as
Qwen3-30B-A3B, routed experts as file holes), runs `strata bench --decode-input random` on the
cpu and checks the distinct experts per block against uniform routing's expectation,
E * (1 - (1 - k/E)^N) for N tokens choosing k of E experts each. With the attention at full
scale (--o-proj-shift 0) the same check fails (tg16: 32.6 of 64 experts a block, expected 63.3).

Usage: moe_bench_routing_test.py STRATA_BINARY SOURCE_DIR [--o-proj-shift N]
Prints PASSED or FAIL lines (CTest matches them).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def expected_distinct(experts, top_k, tokens):
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("strata")
    parser.add_argument("source_dir")
    parser.add_argument("--o-proj-shift", type=int, default=None)
    args = parser.parse_args()
    generator = Path(args.source_dir) / "bench" / "reference" / "make_random_qwen3_moe.py"
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        make = [sys.executable, str(generator), str(model), "--small", "--layers", "8",
                "--sparse-experts"]
        if args.o_proj_shift is not None:
            make += ["--o-proj-shift", str(args.o_proj_shift)]
        subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
        config = json.loads((model / "config.json").read_text())
        experts, top_k = config["num_experts"], config["num_experts_per_tok"]
        prompt, decode = 16, 16
        run = subprocess.run(
            [args.strata, "bench", str(model), "--dtype", "bf16", "-p", str(prompt), "-n",
             str(decode), "--decode-input", "random", "-r", "1", "--no-limits", "--json"],
            check=True, capture_output=True, text=True)
        report = json.loads(run.stdout)
        for test in report["tests"]:
            e = test.get("experts")
            if not e:
                failures.append(f"{test['test']}: no routing reported")
                continue
            steps = e["block_steps"] // e["blocks"]
            # pp: every run (warm-up and timed) feeds the same prompt, so its tokens are the
            # prompt's; tg: every step of every run draws a new token.
            tokens = prompt if test["test"].startswith("pp") else steps
            want = expected_distinct(experts, top_k, tokens)
            got = e["distinct_per_block"]
            line = (f"{test['test']}: {got:.1f} distinct experts of {experts} per block, "
                    f"uniform routing {want:.1f} ({tokens} tokens)")
            print(line)
            if got < 0.9 * want:
                failures.append(line)
    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print("PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
