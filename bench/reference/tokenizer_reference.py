"""The Python `tokenizers` package (Hugging Face, Rust) on the text and files of
bench/tokenizer_bench.cc: encode MB/s (input bytes) and decode MB/s (output bytes),
single-threaded, for comparison with Strata's numbers on the same machine.

  RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python bench/reference/tokenizer_reference.py
  build/release/bench/tokenizer_bench --benchmark_filter='^(encode|decode)/'

Texts: the 1 MB mixed text of the tokenizer parity tests (record_tokenizer_corpus.py, seed 2026)
and the same English-like prose as the C++ benchmark (same xorshift64 over the same words).
Each figure is the best of --repeat runs (after one warm-up run, so the word cache is warm as
in the C++ "encode/" cases).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "tools"))
import record_tokenizer_corpus as corpus  # noqa: E402

WORDS = ["the", "little", "dog", "ran", "to", "park", "and", "she", "said", "happy", "Once", "upon",
         "a", "time", "there", "was", "girl", "named", "Lily", "who", "loved", "play", "with", "ball"]


def prose():
    out, size, s = [], 0, 88172645463325252
    while size < (1 << 20):
        s ^= (s << 13) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 7
        s ^= (s << 17) & 0xFFFFFFFFFFFFFFFF
        w = WORDS[s % 24]
        k = (s >> 40)
        sep = ". " if k % 11 == 0 else ", " if k % 7 == 0 else " "
        out.append(w + sep)
        size += len(w) + len(sep)
    return "".join(out)


def tokenizer_files():
    real = os.path.join(ROOT, "tests", "fixtures", "text", "tokenizers")
    files = {n: os.path.join(real, f"{n}.tokenizer.json") for n in ("gpt2", "mistral", "phi3")}
    files["stories260K"] = os.path.join(ROOT, "models", "stories260K", "tokenizer.json")
    trained = os.path.join(ROOT, "tests", "fixtures", "text", "trained")
    for n in ("llama3", "qwen2", "gemma3", "metaspace"):
        p = os.path.join(trained, n, "tokenizer.json")
        if os.path.exists(p):
            files[n] = p
    return files


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    texts = {"mixed": corpus.mixed_text(corpus.MIXED_SEED, corpus.MIXED_BYTES), "prose": prose()}
    print(f"{'case':32} {'encode MB/s':>12} {'decode MB/s':>12}")
    for name, path in tokenizer_files().items():
        tok = Tokenizer.from_file(path)
        for label, text in texts.items():
            n_in = len(text.encode("utf-8"))
            ids = tok.encode(text, add_special_tokens=False).ids
            n_out = len(tok.decode(ids).encode("utf-8"))
            t_enc = best(lambda: tok.encode(text, add_special_tokens=False), args.repeat)
            t_dec = best(lambda: tok.decode(ids), args.repeat)
            print(f"{name + '/' + label:32} {n_in / t_enc / 1e6:12.2f} {n_out / t_dec / 1e6:12.2f}")


if __name__ == "__main__":
    main()
