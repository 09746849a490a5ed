#!/usr/bin/env python3
"""The reference side of issue 14's GPU benchmark: transformers (SDPA attention) with the whole
model on cuda:0 through Accelerate's device_map={"": 0}, measured the way `strata bench` measures:

  pp<N>        one forward over [batch, N] prompt tokens with the cache on, logits of the last
               position only (logits_to_keep=1, as Strata's prefill), median of repetitions
  tg<N>@d<D>   a prompt of D tokens (its prefill not timed), then N single-token steps with the
               KV cache, each waiting for its argmax (a host sync, as Strata's steps do)

Token ids are pseudo-random and fixed, so every repetition does the same work. Prints one JSON
object: {"load_s", "tests": [{"test", "batch", "tokens", "seconds", "tokens_per_second",
"ms_per_step"?}]}.

Usage: hf_gpu_bench.py MODEL_DIR [-p 512,2048] [-n 128] [-d 0] [-b 1] [-r 3]
"""

import argparse
import json
import statistics
import sys
import time


def counts(text):
    return [int(x) for x in text.split(",") if x.strip() and int(x) > 0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("-p", "--prompt-tokens", default="512,2048")
    parser.add_argument("-n", "--decode-tokens", type=int, default=128)
    parser.add_argument("-d", "--depth", type=int, default=0)
    parser.add_argument("-b", "--batch", default="1")
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16,
                                                 device_map={"": 0}, attn_implementation="sdpa")
    model.eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(1234)

    def ids(batch, length):
        return torch.randint(0, vocab, (batch, length), generator=generator).to("cuda:0")

    def repeat(measure):
        measure()  # warm-up: cuBLAS handles, the caching allocator, lazy kernel set-up
        return statistics.median(measure() for _ in range(args.repetitions))

    tests = []
    with torch.no_grad():
        for batch in counts(args.batch):
            for length in counts(args.prompt_tokens):
                prompt = ids(batch, length)

                def prefill():
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    out = model(prompt, use_cache=True, logits_to_keep=1)
                    out.logits[:, -1].argmax(-1).cpu()
                    return time.perf_counter() - t0

                seconds = repeat(prefill)
                tests.append({"test": f"pp{length}", "batch": batch, "tokens": length,
                              "seconds": seconds, "tokens_per_second": batch * length / seconds})
                print(f"  pp{length} batch {batch}: {batch * length / seconds:.1f} tokens/s",
                      file=sys.stderr, flush=True)
            if args.decode_tokens > 0:
                prompt = ids(batch, max(args.depth, 1))

                def generate():
                    out = model(prompt, use_cache=True, logits_to_keep=1)
                    past = out.past_key_values
                    next_id = out.logits[:, -1].argmax(-1, keepdim=True)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(args.decode_tokens):
                        out = model(next_id, past_key_values=past, use_cache=True)
                        past = out.past_key_values
                        next_id = out.logits[:, -1].argmax(-1, keepdim=True)
                        next_id.cpu()  # the host waits for the token, as generation does
                    return time.perf_counter() - t0

                seconds = repeat(generate)
                name = (f"tg{args.decode_tokens}@d{args.depth}" if args.depth > 0
                        else f"tg{args.decode_tokens}")
                tests.append({"test": name, "batch": batch, "tokens": args.decode_tokens,
                              "seconds": seconds,
                              "tokens_per_second": batch * args.decode_tokens / seconds,
                              "ms_per_step": seconds / args.decode_tokens * 1e3})
                print(f"  {name} batch {batch}: {batch * args.decode_tokens / seconds:.1f} "
                      "tokens/s", file=sys.stderr, flush=True)
    print(json.dumps({"load_s": load_s, "tests": tests}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
