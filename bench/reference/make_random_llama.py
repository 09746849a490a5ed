#!/usr/bin/env python3
"""Writes a Llama-2-7B-shaped checkpoint with random bfloat16 weights (13.5 GB), in the layout
Hugging Face uses: config.json, model-0000N-of-0000M.safetensors shards and
model.safetensors.index.json. Random normal(0, 0.02) matrices, norm weights of one, so decoding is
numerically sane (the tokens mean nothing).

Usage: make_random_llama.py OUT_DIR [--layers 32] [--shard-gb 5] [--seed 0]
Needs torch, safetensors and transformers (for the canonical tensor names and shapes).
"""

import argparse
import json
import os
import sys

LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--shard-gb", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM
    from accelerate import init_empty_weights

    config_dict = dict(LLAMA2_7B, num_hidden_layers=args.layers)
    os.makedirs(args.out_dir, exist_ok=True)
    with init_empty_weights():
        model = LlamaForCausalLM(LlamaConfig(**config_dict))
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device=device).manual_seed(args.seed)
    shard_limit = int(args.shard_gb * 1e9)
    shards, current, current_bytes = [], {}, 0
    for name, shape in shapes:
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = (torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
                      * 0.02).to(torch.bfloat16).cpu()
        nbytes = tensor.numel() * tensor.element_size()
        if current and current_bytes + nbytes > shard_limit:
            shards.append(current)
            current, current_bytes = {}, 0
        current[name] = tensor
        current_bytes += nbytes
    shards.append(current)

    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file_name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tmp = os.path.join(args.out_dir, file_name + ".tmp")
        save_file(shard, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(args.out_dir, file_name))
        for name, t in shard.items():
            weight_map[name] = file_name
            total += t.numel() * t.element_size()
        print(f"wrote {file_name}: {len(shard)} tensors", flush=True)
    with open(os.path.join(args.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2)
    print(f"{args.out_dir}: {total / 1e9:.2f} GB in {len(shards)} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
