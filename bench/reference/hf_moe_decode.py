#!/usr/bin/env python3
"""transformers + Accelerate on a MoE checkpoint with device_map="auto" and the same budgets as
the Strata run: prefill of PROMPT tokens, then greedy decode of N tokens; prints a JSON line
{"prefill_tokens_per_s", "decode_tokens_per_s", "decode_tokens", "load_s"} after the prefill and
again after every decode step (the last line is the result): Accelerate streams every offloaded
layer whole at each step, seconds a step at 48 layers, so a run cut off by the caller's time
limit still leaves its prefill rate and the decode rate of the steps it finished.

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

        def report(steps, decode_s):
            print(json.dumps({
                "impl": "transformers+accelerate", "load_s": round(load_s, 1),
                "prefill_tokens_per_s": round(args.prompt / prefill_s, 2),
                "decode_tokens": steps,
                "decode_tokens_per_s": round(steps / decode_s, 3) if steps else None,
                "device_map_devices": sorted({str(v) for v in model.hf_device_map.values()})}),
                flush=True)

        report(0, 0.0)
        t0 = time.perf_counter()
        for step in range(1, args.decode + 1):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()  # argmax on the GPU: the step is over when it is
            report(step, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
