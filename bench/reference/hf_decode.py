#!/usr/bin/env python3
"""The reference side of the decode benchmark: transformers + Accelerate load a checkpoint with a
device map and decode greedily, one token at a time with the KV cache, as `strata run` does.
Prints one JSON line: {"load_s", "prefill_s", "per_token_s", "tokens", "device_map_summary"}.

Placements (the issue's three):
  gpu   everything on cuda:0 (device_map={"": 0})
  cpu   --gpu-gib on cuda:0, the rest offloaded to the cpu (device_map="auto")
  disk  --gpu-gib on cuda:0, the rest offloaded to disk (cpu budget 0, --offload-folder)

Usage: hf_decode.py MODEL_DIR --placement gpu|cpu|disk [--gpu-gib 3] [--prompt 1,2,...]
                    [--new-tokens 8] [--offload-folder DIR]
"""

import argparse
import collections
import json
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--placement", choices=["gpu", "cpu", "disk"], required=True)
    parser.add_argument("--gpu-gib", type=float, default=3.0)
    parser.add_argument("--prompt", default="1,450,4996,17354,1701,1067,432,975")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--offload-folder", default="/tmp/hf_offload")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.bfloat16}
    if args.placement == "gpu":
        kwargs["device_map"] = {"": 0}
    else:
        kwargs["device_map"] = "auto"
        cpu_budget = "0GiB" if args.placement == "disk" else "200GiB"
        kwargs["max_memory"] = {0: f"{args.gpu_gib}GiB", "cpu": cpu_budget}
        kwargs["offload_folder"] = args.offload_folder
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, **kwargs)
    model.eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start

    placements = collections.Counter(str(v) for v in getattr(model, "hf_device_map", {"": 0}).values())
    ids = torch.tensor([[int(t) for t in args.prompt.split(",")]], device="cuda:0")
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
            out = model(next_id.to("cuda:0"), past_key_values=past, use_cache=True)
            past = out.past_key_values
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(int(next_id))  # a host sync, as strata's per-token time has
            steps.append(time.perf_counter() - start)
    print(json.dumps({
        "load_s": load_s,
        "prefill_s": prefill_s,
        "per_token_s": sum(steps) / len(steps) if steps else None,
        "tokens": tokens,
        "device_map_summary": dict(placements),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
