#!/usr/bin/env python3
"""Issue 15's CPU-only acceptance run: greedy decode of a Llama-2-7B-shaped random bf16
checkpoint (bench/reference/make_random_llama.py) entirely on the CPU with `strata run` (a device
map putting every module on "cpu"), next to the host read bandwidth measured in the same run
(`cpu_gemv_bench --read-only`, before and after) and, unless --no-reference, transformers on the
CPU (bench/reference/hf_cpu_decode.py, bf16, same checkpoint, a few tokens).

Bytes per token = every weight except the input embedding table (decode gathers one row of it)
plus the KV cache read by attention at the mean context length of the timed steps. Share of
bandwidth = (bytes per token / time per token) / host read bandwidth.

Usage: compare_cpu_decode.py STRATA_BINARY CPU_GEMV_BENCH MODEL_DIR [--strata-tokens 16]
                             [--reference-tokens 4] [--no-reference] [--json-out FILE]
"""

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

PROMPT = "1,450,4996,17354,1701,1067,432,975"
HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n")
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return proc.stdout, proc.stderr


def tensor_bytes(model_dir):
    """{name: bytes} from the safetensors headers of every shard."""
    sizes = {}
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for tensor, info in header.items():
            if tensor != "__metadata__":
                begin, end = info["data_offsets"]
                sizes[tensor] = end - begin
    return sizes


def read_bandwidth(bench):
    out, _ = run([bench, "--read-only", "--seconds", "2"])
    print(out, end="")
    match = re.search(r"host read bandwidth: ([0-9.]+) GB/s", out)
    if not match:
        raise SystemExit("cpu_gemv_bench printed no read bandwidth")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("strata")
    parser.add_argument("bench")
    parser.add_argument("model_dir")
    parser.add_argument("--strata-tokens", type=int, default=16)
    parser.add_argument("--reference-tokens", type=int, default=4)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    config = json.load(open(os.path.join(args.model_dir, "config.json")))
    sizes = tensor_bytes(args.model_dir)
    weight_bytes = sum(b for n, b in sizes.items() if not n.endswith("embed_tokens.weight"))
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", config["num_attention_heads"])
    kv_bytes_per_position = 2 * config["num_hidden_layers"] * kv_heads * head_dim * 2  # K+V bf16
    prompt_len = len(PROMPT.split(","))
    # Step i (1-based) of the timed decode steps attends over prompt_len + i positions.
    mean_context = prompt_len + (args.strata_tokens) / 2
    bytes_per_token = weight_bytes + kv_bytes_per_position * mean_context

    read_before = read_bandwidth(args.bench)
    with tempfile.TemporaryDirectory() as tmp:
        device_map = os.path.join(tmp, "cpu_map.json")
        with open(device_map, "w") as f:
            json.dump({"": "cpu"}, f)
        out, err = run([args.strata, "run", args.model_dir, "--token-ids", PROMPT,
                        "--max-new-tokens", str(args.strata_tokens), "--dtype", "bf16",
                        "--device-map", device_map])
    print(err, end="")
    match = re.search(r"prefill ([0-9.]+) ms .*per token ([0-9.]+) ms", err)
    if not match:
        raise SystemExit("strata run printed no per-token time")
    strata_prefill_ms, strata_ms = float(match.group(1)), float(match.group(2))
    read_after = read_bandwidth(args.bench)
    read = (read_before + read_after) / 2

    reference = None
    if not args.no_reference:
        out, _ = run([sys.executable, os.path.join(HERE, "hf_cpu_decode.py"), args.model_dir,
                      "--prompt", PROMPT, "--new-tokens", str(args.reference_tokens)])
        reference = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(reference))

    strata_gbps = bytes_per_token / (strata_ms * 1e-3) / 1e9
    print()
    print(f"host read bandwidth: {read:.1f} GB/s (before {read_before:.1f}, after {read_after:.1f})")
    print(f"bytes per token: {bytes_per_token / 1e9:.2f} GB (weights without the embedding "
          f"{weight_bytes / 1e9:.2f} GB + KV cache at {mean_context:.0f} positions)")
    print(f"{'':<28}{'ms/token':>10}{'GB/s':>8}{'of read':>9}")
    print(f"{'strata run, cpu only':<28}{strata_ms:>10.1f}{strata_gbps:>8.1f}"
          f"{100 * strata_gbps / read:>8.0f}%")
    result = {"read_gbps": read, "read_before_gbps": read_before, "read_after_gbps": read_after,
              "bytes_per_token": bytes_per_token, "strata_ms_per_token": strata_ms,
              "strata_prefill_ms": strata_prefill_ms, "strata_share_of_read": strata_gbps / read}
    if reference and reference.get("per_token_s"):
        ref_ms = reference["per_token_s"] * 1e3
        ref_gbps = bytes_per_token / reference["per_token_s"] / 1e9
        print(f"{'transformers, cpu bf16':<28}{ref_ms:>10.1f}{ref_gbps:>8.1f}"
              f"{100 * ref_gbps / read:>8.0f}%")
        print(f"speedup: {ref_ms / strata_ms:.1f}x")
        result.update({"transformers_ms_per_token": ref_ms,
                       "transformers_threads": reference.get("threads")})
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
