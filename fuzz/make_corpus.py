#!/usr/bin/env python3
"""Writes the committed fuzz seed corpus (fuzz/corpus/) from the io fixtures and from
hand-made damaged variants, one per class of damage the tests cover. Standard library only.

Usage: python3 fuzz/make_corpus.py     (rewrites fuzz/corpus/safetensors_header and index)
"""

import json
import shutil
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "io"


def st(header, data=b""):
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw)) + raw + data


VALID = ('{"__metadata__":{"format":"pt"},'
         '"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},'
         '"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}')


def safetensors_seeds():
    seeds = {
        "valid": st(VALID, bytes(32)),
        "scalar_and_empty": st('{"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},'
                               '"e":{"dtype":"F8_E4M3","shape":[0,3],"data_offsets":[8,8]}}',
                               bytes(8)),
        "truncated": st(VALID, bytes(20)),
        "header_len_past_end": struct.pack("<Q", 1 << 20) + VALID.encode(),
        "invalid_json": st(VALID.replace('"b":', '"b";'), bytes(32)),
        "unknown_dtype": st(VALID.replace('"BF16"', '"F4"'), bytes(32)),
        "shape_mismatch": st(VALID.replace("[2,3]", "[2,4]"), bytes(32)),
        "overlap": st(VALID.replace("[24,32]", "[20,28]"), bytes(32)),
        "out_of_range": st(VALID.replace("[24,32]", "[32,40]"), bytes(32)),
        "duplicate": st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                        '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)),
        "bad_metadata": st(VALID.replace('"pt"', "1"), bytes(32)),
        "bad_utf8": st(VALID.encode().replace(b'"b"', b'"\xff"'), bytes(32)),
    }
    for name in ("strata_written.safetensors", "reference/torch_all_dtypes.safetensors"):
        path = FIXTURES / name
        if path.exists():
            seeds[path.stem] = path.read_bytes()
    return seeds


def index_seeds():
    seeds = {
        "weight_map": json.dumps({"metadata": {"total_size": 64},
                                  "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                 "b.weight": "model-00002-of-00002.safetensors"}}),
        "bare_map": json.dumps({"linear1.weight": "checkpoint_part1.bin"}),
        "escaping_shard": json.dumps({"weight_map": {"w": "../x.safetensors"}}),
        "offload_st_entry": json.dumps({"w": {"safetensors_file": "/m/model.safetensors",
                                              "weight_name": "model.w", "dtype": "float16"}}),
        "duplicate_key": '{"weight_map": {"w": "a", "w": "b"}}',
        "deep": "[" * 80 + "]" * 80,
    }
    for name in ("strata_offload/index.json", "reference/accelerate_offload/index.json",
                 "reference/sharded/model.safetensors.index.json",
                 "reference/configs/llama3/config.json", "reference/configs/gpt2/config.json"):
        path = FIXTURES / name
        if path.exists():
            seeds[path.parent.name + "_" + path.stem] = path.read_text()
    return {k: v.encode() for k, v in seeds.items()}


def main():
    for corpus, seeds in (("safetensors_header", safetensors_seeds()), ("index", index_seeds())):
        folder = HERE / "corpus" / corpus
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in sorted(seeds.items()):
            (folder / name).write_bytes(data)
        print(f"{corpus}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
