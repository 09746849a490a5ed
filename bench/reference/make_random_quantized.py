#!/usr/bin/env python3
"""Writes Llama-2-7B-shaped checkpoints with random quantized weights, one folder per format, in
the layouts of docs/quantization.md (what each producer stores), for bench/quant_linear_bench and
`strata bench` next to the bf16 checkpoint of make_random_llama.py:

  fp8    FineGrainedFP8 / DeepSeek-V3: weight float8_e4m3fn [N, K] + weight_scale_inv float32
         per 128x128 block                                             (~7.0 GB)
  awq    AutoAWQ GEMM, 4-bit, group 128: qweight [K, N/8], qzeros, scales float16   (~3.9 GB)
  gptq   AutoGPTQ v1, 4-bit sym, group 128: qweight [K/8, N], qzeros, scales, g_idx (~3.9 GB)
  ct     compressed-tensors pack-quantized int4 sym group 128: weight_packed [N, K/8],
         weight_scale bfloat16, weight_shape                          (~3.9 GB)

Every decoder-layer projection is quantized; embeddings, norms and lm_head stay bf16 (as the
producers keep them). The codes are random (uniform nibbles) and the scales are chosen so the
dequantised weights have a standard deviation near 0.02, like make_random_llama.py's: decoding is
numerically sane, the tokens mean nothing. FP8 weights are normal(0, 0.02) quantised per block.

Usage: make_random_quantized.py OUT_DIR [--formats fp8,awq,gptq,ct] [--layers 32] [--seed 0]
       (writes OUT_DIR/<format>/). Needs torch and safetensors; uses the GPU when there is one.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_random_llama import LLAMA2_7B  # noqa: E402

GROUP = 128
PROJECTIONS = {  # name -> (out, in) for Llama-2-7B
    "self_attn.q_proj": (4096, 4096), "self_attn.k_proj": (4096, 4096),
    "self_attn.v_proj": (4096, 4096), "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (11008, 4096), "mlp.up_proj": (11008, 4096), "mlp.down_proj": (4096, 11008),
}

CONFIGS = {
    "fp8": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
            "weight_block_size": [128, 128]},
    "awq": {"quant_method": "awq", "bits": 4, "group_size": GROUP, "version": "gemm",
            "zero_point": True},
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False,
             "sym": True, "checkpoint_format": "gptq"},
    "ct": {"quant_method": "compressed-tensors", "format": "pack-quantized",
           "quantization_status": "compressed", "ignore": ["lm_head"],
           "config_groups": {"group_0": {
               "targets": ["Linear"], "format": "pack-quantized", "input_activations": None,
               "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                           "group_size": GROUP, "actorder": None, "dynamic": False}}}},
}


def quantized_tensors(fmt, n, k, gen, device):
    import torch

    def words(*shape):  # random 32-bit words: 8 uniform nibbles each
        return torch.randint(-2**31, 2**31 - 1, shape, generator=gen, device=device,
                             dtype=torch.int64).to(torch.int32).cpu()

    def scales(shape, std_codes, dtype):
        s = torch.full(shape, 0.02 / std_codes, device=device)
        s = s * (1 + 0.1 * torch.rand(shape, generator=gen, device=device))
        return s.to(dtype).cpu()

    groups = k // GROUP
    if fmt == "fp8":
        w = torch.randn(n, k, generator=gen, device=device) * 0.02
        bo, bi = -(-n // 128), -(-k // 128)
        pad = torch.zeros(bo * 128, bi * 128, device=device)
        pad[:n, :k] = w
        blocks = pad.reshape(bo, 128, bi, 128)
        scale = (blocks.abs().amax(dim=(1, 3)) / 448.0).clamp(min=1e-12)
        q = (blocks / scale[:, None, :, None]).clamp(-448, 448).reshape(bo * 128, bi * 128)
        return {"weight": q[:n, :k].to(torch.float8_e4m3fn).cpu(),
                "weight_scale_inv": scale.float().cpu()}
    if fmt == "awq":  # (q - z) with q, z uniform 0..15: std ~6.5
        return {"qweight": words(k, n // 8), "qzeros": words(groups, n // 8),
                "scales": scales((groups, n), 6.5, torch.float16)}
    if fmt == "gptq":  # symmetric: stored zero 7 (reads as 8) in every field
        zeros = torch.full((groups, n // 8), 0x77777777, dtype=torch.int64).to(torch.int32)
        return {"qweight": words(k // 8, n), "qzeros": zeros,
                "scales": scales((groups, n), 4.6, torch.float16),
                "g_idx": (torch.arange(k) // GROUP).to(torch.int32)}
    if fmt == "ct":  # symmetric int4: q - 8 in [-8, 7], std ~4.6
        return {"weight_packed": words(n, k // 8),
                "weight_scale": scales((n, groups), 4.6, torch.bfloat16),
                "weight_shape": torch.tensor([n, k], dtype=torch.int64)}
    raise ValueError(fmt)


def write_format(fmt, out_dir, layers, seed):
    import torch
    from safetensors.torch import save_file

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    cfg = dict(LLAMA2_7B, num_hidden_layers=layers, quantization_config=CONFIGS[fmt])
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]

    def dense(*shape):
        return (torch.randn(shape, generator=gen, device=device) * 0.02).to(torch.bfloat16).cpu()

    shards, weight_map, total = [], {}, 0
    head = {"model.embed_tokens.weight": dense(vocab, hidden),
            "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            "lm_head.weight": dense(vocab, hidden)}
    shards.append(head)
    for layer in range(layers):
        shard = {}
        prefix = f"model.layers.{layer}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            shard[prefix + norm + ".weight"] = torch.ones(hidden, dtype=torch.bfloat16)
        for proj, (n, k) in PROJECTIONS.items():
            for local, t in quantized_tensors(fmt, n, k, gen, device).items():
                shard[f"{prefix}{proj}.{local}"] = t.contiguous()
        shards.append(shard)
    # One shard per 8 layers keeps files near 1-2 GB.
    merged = [shards[0]]
    for i in range(1, len(shards), 8):
        merged.append({k: v for s in shards[i:i + 8] for k, v in s.items()})
    for i, shard in enumerate(merged):
        name = f"model-{i + 1:05d}-of-{len(merged):05d}.safetensors"
        tmp = os.path.join(out_dir, name + ".tmp")
        save_file(shard, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(out_dir, name))
        for key, t in shard.items():
            weight_map[key] = name
            total += t.numel() * t.element_size()
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{fmt}: {out_dir}: {total / 1e9:.2f} GB in {len(merged)} shards", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--formats", default="fp8,awq,gptq,ct")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for fmt in args.formats.split(","):
        if fmt not in CONFIGS:
            sys.exit(f"unknown format {fmt!r}; known: {', '.join(CONFIGS)}")
        write_format(fmt, os.path.join(args.out_dir, fmt), args.layers, args.seed)


if __name__ == "__main__":
    main()
