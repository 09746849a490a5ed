#!/usr/bin/env python3
"""Throughput of `strata serve` with continuous batching: generated tokens/s for 1, 4, 16 and 64
concurrent clients, next to the same requests run one at a time, for each placement given.

Usage (on the GPU machine, with a 7B-shaped checkpoint from bench/reference/make_random_llama.py):

  python3 bench/reference/make_random_llama.py /tmp/llama7b
  python3 bench/serve_bench.py --strata build/tools/strata/strata --model /tmp/llama7b \\
      --placement gpu= --placement offload=cuda:0=5GiB,cpu=100GiB --output serve_bench.json

Each --placement is NAME=MAX_MEMORY (empty: measured budgets, i.e. everything on the GPU when it
fits). The GPU budget covers the KV cache pool too (--max-sequences x --ctx-size tokens, 512 KiB
per token for Llama-2-7B in bf16: 64 x 64 tokens = 2 GiB), so "3 GiB of weights on the GPU" is
cuda:0=5GiB with the defaults. A checkpoint without tokenizer.json (the random one) gets a synthetic one (--write-tokenizer,
on by default): a BPE vocabulary with one token per model id, so every id decodes; prompts are sent
as token ids. Greedy decoding (temperature 0) of random weights may end early on an end token:
tokens/s counts the tokens the server reports (usage.completion_tokens).

Standard library only. The goal the issue sets: at 16 clients, offloaded throughput at least 10x
the single-stream rate.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request


def write_synthetic_tokenizer(model_dir):
    """tokenizer.json + tokenizer_config.json with one token per id of config.json's vocab."""
    path = os.path.join(model_dir, "tokenizer.json")
    if os.path.exists(path):
        return False
    with open(os.path.join(model_dir, "config.json")) as f:
        vocab_size = json.load(f)["vocab_size"]
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for i in range(len(specials), vocab_size):
        vocab[f" t{i}"] = i
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }
    with open(path, "w") as f:
        json.dump(tokenizer, f)
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": False}, f)
    return True


def start_server(strata, model, max_memory, args):
    cmd = [strata, "serve", model, "--port", "0", "--served-model-name", "bench",
           "--max-sequences", str(args.max_sequences),
           "--max-queue", str(4 * args.max_sequences), "--ctx-size", str(args.ctx_size)]
    if max_memory:
        cmd += ["--max-memory", max_memory]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"strata serve exited: {proc.stderr.read()}")
        print("  " + line.rstrip(), file=sys.stderr)
        m = re.search(r"listening on (http://[0-9.]+:\d+)", line)
        if m:
            return proc, m.group(1)


def complete(base, prompt_ids, max_tokens):
    body = json.dumps({"model": "bench", "prompt": prompt_ids, "max_tokens": max_tokens,
                       "temperature": 0}).encode()
    request = urllib.request.Request(base + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as response:
        return json.load(response)["usage"]["completion_tokens"]


def run_clients(base, prompts, clients, max_tokens):
    """`clients` threads share the request list; returns (tokens, seconds)."""
    lock = threading.Lock()
    queue = list(prompts)
    total = [0]

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                prompt = queue.pop()
            tokens = complete(base, prompt, max_tokens)
            with lock:
                total[0] += tokens

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total[0], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strata", required=True, help="the strata binary")
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--placement", action="append", default=[],
                        help="NAME=MAX_MEMORY, e.g. gpu= or offload=cuda:0=3GiB,cpu=100GiB")
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--sequential-requests", type=int, default=2,
                        help="requests run one at a time for the single-stream rate")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-sequences", type=int,
                        help="KV cache slots (default: the most clients)")
    parser.add_argument("--ctx-size", type=int,
                        help="tokens per sequence (default: prompt + max tokens)")
    parser.add_argument("--no-write-tokenizer", action="store_true")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    if not args.no_write_tokenizer and write_synthetic_tokenizer(args.model):
        print(f"wrote a synthetic tokenizer.json into {args.model}", file=sys.stderr)
    with open(os.path.join(args.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    placements = args.placement or ["default="]
    client_counts = [int(c) for c in args.clients.split(",")]
    # The KV cache pool (max_sequences x ctx_size tokens) is held back on the GPU before weights
    # are placed: a GPU budget covers both (strata serve prints the pool's size).
    args.max_sequences = args.max_sequences or max(client_counts)
    args.ctx_size = args.ctx_size or args.prompt_tokens + args.max_tokens
    rng = random.Random(0)

    def prompts(n):
        return [[rng.randrange(3, vocab) for _ in range(args.prompt_tokens)] for _ in range(n)]

    results = []
    for placement in placements:
        name, _, max_memory = placement.partition("=")
        print(f"== {name} (max memory: {max_memory or 'measured'})", file=sys.stderr)
        proc, base = start_server(args.strata, args.model, max_memory, args)
        try:
            for prompt in prompts(2):  # warm-up: first forwards, allocator, caches
                complete(base, prompt, args.max_tokens)
            tokens, seconds = run_clients(base, prompts(args.sequential_requests), 1,
                                          args.max_tokens)
            single = tokens / seconds
            row = {"placement": name, "max_memory": max_memory, "single_stream_tok_s": single,
                   "concurrent": []}
            print(f"{name:>10}  one at a time: {single:9.2f} tok/s", flush=True)
            for clients in client_counts:
                tokens, seconds = run_clients(base, prompts(clients * args.requests_per_client),
                                              clients, args.max_tokens)
                rate = tokens / seconds
                row["concurrent"].append({"clients": clients, "tokens": tokens,
                                          "seconds": seconds, "tok_s": rate,
                                          "speedup": rate / single})
                print(f"{name:>10}  {clients:3d} clients: {rate:9.2f} tok/s "
                      f"({rate / single:5.1f}x one at a time)", flush=True)
            results.append(row)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"model": args.model, "max_tokens": args.max_tokens,
                       "prompt_tokens": args.prompt_tokens, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
