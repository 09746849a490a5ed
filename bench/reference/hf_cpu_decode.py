#!/usr/bin/env python3
"""The reference side of the CPU-only decode benchmark: transformers loads a checkpoint on the
CPU in bfloat16 and decodes greedily, one token at a time with the KV cache, on all cores (as
`strata run --device-map cpu_map.json` does). No GPU is used.

The first new token comes out of the prefill; every later one is a decode step of one token with
the cache, timed on its own (at least one, so --new-tokens must be 2 or more: the previous run
asked for one and reported no per-token time). per_token_s is the mean of those steps,
median_token_s their median (robust to a slow first step).
Prints one JSON line: {"load_s", "prefill_s", "per_token_s", "median_token_s", "step_s",
"decode_steps", "tokens", "threads"}.

Usage: hf_cpu_decode.py MODEL_DIR [--prompt 1,2,...] [--new-tokens 8] [--threads N]
"""

import argparse
import json
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--prompt", default="1,450,4996,17354,1701,1067,432,975")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.new_tokens < 2:
        parser.error(f"--new-tokens {args.new_tokens}: at least 2 (the first comes from the "
                     "prefill; the per-token time is measured on the ones after it)")

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16,
                                                 device_map={"": "cpu"})
    model.eval()
    load_s = time.perf_counter() - start

    ids = torch.tensor([[int(t) for t in args.prompt.split(",")]])
    tokens, steps = [], []
    with torch.no_grad():
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(int(next_id))
        prefill_s = time.perf_counter() - start
        past = out.past_key_values
        for _ in range(args.new_tokens - 1):
            start = time.perf_counter()
            out = model(next_id, past_key_values=past, use_cache=True)
            past = out.past_key_values
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(int(next_id))
            steps.append(time.perf_counter() - start)
    ordered = sorted(steps)
    median = (ordered[len(ordered) // 2] if len(ordered) % 2 else
              (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2)
    print(json.dumps({
        "load_s": load_s,
        "prefill_s": prefill_s,
        "per_token_s": sum(steps) / len(steps),
        "median_token_s": median,
        "step_s": steps,
        "decode_steps": len(steps),
        "tokens": tokens,
        "threads": torch.get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
