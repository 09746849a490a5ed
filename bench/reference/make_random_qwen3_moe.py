#!/usr/bin/env python3
"""Writes a Qwen3-30B-A3B-shaped checkpoint with random bfloat16 weights (61 GB with 48 layers),
in the Hugging Face layout: config.json, model-0000N-of-0000M.safetensors shards (per-expert keys
mlp.experts.N.{gate,up,down}_proj.weight) and model.safetensors.index.json. Matrices are a random
normal(0, 0.02) block tiled over the tensor (values do not change timings; filling 61 GB with
fresh random numbers would take minutes), router weights fully random so routing varies per token,
norm weights one.

Usage: make_random_qwen3_moe.py OUT_DIR [--layers 48] [--shard-gb 5] [--seed 0]
Needs torch and safetensors. 48 layers need ~61 GB of disk; --layers 24 writes half.
"""

import argparse
import json
import os

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--shard-gb", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    cfg = dict(QWEN3_30B_A3B, num_hidden_layers=args.layers)
    os.makedirs(args.out_dir, exist_ok=True)
    block = (torch.randn(1 << 22) * 0.02).to(torch.bfloat16)  # 8 MB tiled into every matrix

    def make(name, shape):
        n = 1
        for s in shape:
            n *= s
        if len(shape) == 1:
            return torch.ones(shape, dtype=torch.bfloat16)
        if name.endswith("mlp.gate.weight"):
            return (torch.randn(shape) * 0.02).to(torch.bfloat16)
        reps = -(-n // block.numel())
        return block.repeat(reps)[:n].reshape(shape).clone()

    limit = int(args.shard_gb * 1e9)
    shards, current, size = [], {}, 0
    for name, shape in tensors(cfg):
        t = make(name, shape)
        current[name] = t
        size += t.numel() * 2
        if size >= limit:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(args.out_dir, file), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = file
            total += t.numel() * 2
        print(f"wrote {file} ({len(shard)} tensors)", flush=True)
    with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{total / 1e9:.1f} GB in {len(shards)} shards", flush=True)


if __name__ == "__main__":
    main()
