#!/usr/bin/env python3
"""transformers + Accelerate on a MoE checkpoint with device_map="auto" and the same budgets as
the Strata run: prefill of PROMPT tokens, then greedy decode of N tokens; prints one JSON line
{"prefill_tokens_per_s", "decode_tokens_per_s", "load_s"}.

Usage: hf_moe_decode.py MODEL_DIR [--gpu-gib 24] [--cpu-gib 100] [--prompt 512] [--decode 8]
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--gpu-gib", type=float, default=24)
    parser.add_argument("--cpu-gib", type=float, default=100)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--decode", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=torch.bfloat16, device_map="auto",
        max_memory={0: int(args.gpu_gib * 2**30), "cpu": int(args.cpu_gib * 2**30)}).eval()
    load_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt), generator=gen).cuda()
    with torch.no_grad():
        model(input_ids=ids[:, :16])  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        torch.cuda.synchronize()
        prefill_s = time.perf_counter() - t0
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(args.decode):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        decode_s = time.perf_counter() - t0
    print(json.dumps({"impl": "transformers+accelerate", "load_s": round(load_s, 1),
                      "prefill_tokens_per_s": round(args.prompt / prefill_s, 2),
                      "decode_tokens_per_s": round(args.decode / decode_s, 3),
                      "device_map_devices": sorted({str(v) for v in model.hf_device_map.values()})}),
          flush=True)


if __name__ == "__main__":
    main()
