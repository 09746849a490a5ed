#!/usr/bin/env python3
"""The reference side of the CPU-only decode benchmark: transformers loads a checkpoint on the
CPU in bfloat16 and decodes greedily, one token at a time with the KV cache, on all cores (as
`strata run --device-map cpu_map.json` does). No GPU is used.
Prints one JSON line: {"load_s", "prefill_s", "per_token_s", "tokens", "threads"}.

Usage: hf_cpu_decode.py MODEL_DIR [--prompt 1,2,...] [--new-tokens 4] [--threads N]
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
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

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
    print(json.dumps({
        "load_s": load_s,
        "prefill_s": prefill_s,
        "per_token_s": sum(steps) / len(steps) if steps else None,
        "tokens": tokens,
        "threads": torch.get_num_threads(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
