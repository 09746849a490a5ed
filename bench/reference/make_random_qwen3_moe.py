#!/usr/bin/env python3
"""Writes a Qwen3-30B-A3B-shaped checkpoint with random bfloat16 weights (61 GB with 48 layers),
in the Hugging Face layout: config.json, model-0000N-of-0000M.safetensors shards (per-expert keys
mlp.experts.N.{gate,up,down}_proj.weight) and model.safetensors.index.json. Matrices are a random
normal(0, 0.02) block of 8 MB tiled over the tensor, each tensor starting at its own random offset
in the block (filling 61 GB with fresh random numbers would take minutes), so no two matrices are
the same bytes: the experts of a layer differ, and the embedding's rows (151936 of 4 KB tiled
over 8 MB with a per-tensor start) are not a handful of repeated rows, which made every token
route to the same experts in session 7. Router weights are a random window of the block per
layer, norm weights one. The safetensors files are written here (header, then the bytes) at the
page cache's write rate: no torch, no copy of a shard in memory (safetensors' save_file took 30 s
for 3.7 GB on the device machine).

--sparse-experts writes the routed experts' bytes as holes in the files (the writer seeks past
them): they read as zeros, take no disk space, and the page cache serves them from RAM, so the
48-layer model (61 GB apparent, 58 GB of it experts) fits a disk with ~27 GB free; everything
else (embedding, head, attention, router, norms) is written as above. Routing then comes from
the token embeddings through the routers (the attention's output is scaled down: O_PROJ_SHIFT),
so random tokens route near uniformly with holes or without.
Timings do not depend on the experts' values: their products are bf16 matrix-vector and matrix
products with no data-dependent work (no sparsity shortcut, no zero skipping: zeros are not
subnormal), and the routing, which does decide the work, comes from the router's random weights.

Usage: make_random_qwen3_moe.py OUT_DIR [--layers 48] [--shard-gb 5] [--seed 0] [--sparse-experts]
                                [--small] [--o-proj-shift 8]
--small writes the same structure at hidden 512, 64 experts, vocabulary 8192 (the routing test,
tests/integration/moe_bench_routing_test.py); --o-proj-shift 0 writes o_proj at full scale.
Needs only Python. 48 layers need ~61 GB of disk (3.2 GB with --sparse-experts); --layers 24
writes half.
"""

import argparse
import array
import json
import math
import os
import random
import struct

BLOCK_VALUES = 1 << 22
PERIOD = BLOCK_VALUES - 1  # values; odd, so coprime with every power-of-two row width

QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "attention_bias": False,
    "use_sliding_window": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "torch_dtype": "bfloat16",
}

# --small: Qwen3-30B-A3B's structure (GQA 4:1, top-8 routing, normalised top-k) at a size a test
# writes and runs in seconds on a cpu.
SMALL = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "moe_intermediate_size": 128,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_experts": 64,
    "vocab_size": 8192,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def tensors(cfg):
    """(name, shape) in checkpoint order."""
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    heads, kv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    inter, experts = cfg["moe_intermediate_size"], cfg["num_experts"]
    yield "model.embed_tokens.weight", (v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (heads * d, h)
        yield p + "self_attn.k_proj.weight", (kv * d, h)
        yield p + "self_attn.v_proj.weight", (kv * d, h)
        yield p + "self_attn.o_proj.weight", (h, heads * d)
        yield p + "self_attn.q_norm.weight", (d,)
        yield p + "self_attn.k_norm.weight", (d,)
        yield p + "mlp.gate.weight", (experts, h)
        for e in range(experts):
            yield p + f"mlp.experts.{e}.gate_proj.weight", (inter, h)
            yield p + f"mlp.experts.{e}.up_proj.weight", (inter, h)
            yield p + f"mlp.experts.{e}.down_proj.weight", (h, inter)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (v, h)


def bf16_block(count, seed):
    """`count` bfloat16 values of normal(0, 0.02) as bytes (float32 truncated to its upper half)."""
    rng = random.Random(seed)
    f32 = array.array("f", (rng.gauss(0.0, 0.02) for _ in range(count))).tobytes()
    out = bytearray(2 * count)
    out[0::2] = f32[2::4]  # little endian: the float32's upper two bytes are its bfloat16
    out[1::2] = f32[3::4]
    return bytes(out)


ONE_BF16 = b"\x80\x3f"  # 1.0

# The attention's output projection is the block scaled by 2^-O_PROJ_SHIFT. With the full scale,
# every layer adds to the residual stream an attention output several times the token's own
# embedding, and that output is much the same for every token (a softmax average over the
# context); with zero experts (--sparse-experts) nothing else token-specific is added, so the
# routers of the deeper layers saw much the same input for every token: session 8 measured 25.5
# distinct experts of 128 per block over 33 random-token decode steps (uniform routing: ~112),
# and 26.6 over a 512-token prompt (uniform: 128). Scaled down, the residual stream is the
# token's embedding plus a little, so random tokens route near uniformly in every layer: the
# pessimistic stream for the expert cache (real text reuses experts more).
O_PROJ_SHIFT = 8


def scaled_bf16(data, shift):
    """bfloat16 bytes times 2^-shift, exactly (the exponent field lowered; values it would take
    below the normal range become zero)."""
    values = array.array("H")
    values.frombytes(data)
    step = shift << 7
    for i, x in enumerate(values):
        values[i] = x - step if (x & 0x7F80) > step else x & 0x8000
    return values.tobytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--shard-gb", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true",
                        help="a scaled-down shape (hidden 512, 64 experts, vocabulary 8192) for "
                             "tests of the routing on a cpu")
    parser.add_argument("--o-proj-shift", type=int, default=O_PROJ_SHIFT,
                        help="o_proj is the random block times 2^-N (0: at full scale)")
    parser.add_argument("--sparse-experts", action="store_true",
                        help="write the routed experts as file holes (zeros taking no disk space)")
    args = parser.parse_args()

    cfg = dict(QWEN3_30B_A3B, num_hidden_layers=args.layers)
    if args.small:
        cfg.update(SMALL)
    os.makedirs(args.out_dir, exist_ok=True)
    block = memoryview(bf16_block(BLOCK_VALUES, args.seed))  # 8 MB tiled into every matrix
    o_proj_block = memoryview(scaled_bf16(block, args.o_proj_shift))
    rng = random.Random(args.seed + 1)

    def write_data(f, name, shape):
        n = math.prod(shape)
        if len(shape) == 1:
            f.write(ONE_BF16 * n)
        elif name.endswith("mlp.gate.weight"):
            # The router: a window of the block at a random offset per layer, so its rows differ
            # and the routing varies per token and layer.
            at = 2 * rng.randrange(BLOCK_VALUES - n)
            f.write(block[at:at + 2 * n])
        elif args.sparse_experts and ".mlp.experts." in name:
            f.seek(2 * n, os.SEEK_CUR)  # a hole: zeros on read, no disk blocks
        else:
            # The tiling starts at the tensor's own random offset, so matrices differ from one
            # another; its period is an odd number of values (PERIOD), so a row of 2^k values
            # starts at a different place in the block than every other row of the tensor (up to
            # PERIOD rows): the embedding's 151936 rows all differ.
            source = o_proj_block if name.endswith("o_proj.weight") else block
            at = 2 * rng.randrange(PERIOD)
            left = 2 * n
            piece = source[at:2 * PERIOD]
            while left > 0:
                f.write(piece[:left])
                left -= min(left, len(piece))
                piece = source[:2 * PERIOD]

    limit = int(args.shard_gb * 1e9)
    shards, current, size = [], [], 0
    for name, shape in tensors(cfg):
        current.append((name, shape))
        size += 2 * math.prod(shape)
        if size >= limit:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in shard:
            nbytes = 2 * math.prod(shape)
            header[name] = {"dtype": "BF16", "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
        with open(os.path.join(args.out_dir, file), "wb", buffering=1 << 24) as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for name, shape in shard:
                write_data(f, name, shape)
                weight_map[name] = file
            f.truncate()  # a shard ending in a hole still gets its full length
        total += offset
        print(f"wrote {file} ({len(shard)} tensors)", flush=True)
    with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{total / 1e9:.1f} GB in {len(shards)} shards", flush=True)


if __name__ == "__main__":
    main()
