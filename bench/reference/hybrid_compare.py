#!/usr/bin/env python3
"""Issue 15's whole comparison in one command, on one machine (docs/hybrid-execution.md):
the Llama-2-7B-shaped bf16 checkpoint (make_random_llama.py) decoded by

  Strata, --gpu-gib on the GPU + the rest in cpu RAM   (strata bench, per offload policy)
  Strata, --gpu-gib on the GPU + the rest on disk       (the offload folder, in the page cache)
  Strata, cpu only                                      (no GPU used)
  transformers + Accelerate with the same budgets       (hf_decode.py, a few tokens: ~2 s each)
  transformers on the cpu                               (hf_cpu_decode.py)

with the host's read rate measured before and after (cpu_gemv_bench --read-only: the CPU-only
decode is compared with it) and `strata plan`'s prediction next to every measured Strata value
(the plan of the same map, on the machine constants `strata calibrate --force` measured at the
start). Strata's rows run with `strata bench -p PROMPT -n DECODE` (a warm-up, then REPS timed runs,
the median); each test also reports how many unit forwards computed on the cpu, were issued
(copied) or prefetched, and the minor page faults of its process.

Usage: hybrid_compare.py STRATA MODEL_DIR [--cpu-gemv-bench BIN] [--workdir DIR] [--gpu-gib 3]
                         [--prompt 512] [--decode 8] [--reps 2] [--reference-tokens 3]
                         [--budget-s 230] [--json-out FILE]
Steps that would start after --budget-s seconds are skipped (and say so). Writes its logs, the
plans, maps and bench JSON under --workdir and prints the table last.
"""

import argparse
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT_IDS = "1,450,4996,17354,1701,1067,432,975"
START = time.monotonic()


def elapsed():
    return time.monotonic() - START


def run(cmd, timeout, log=None):
    """Runs cmd; returns (rc, stdout, stderr, minor faults, seconds). Never raises on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    began = time.monotonic()
    print(f"[{elapsed():5.0f} s] $ {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, e.stdout or "", (e.stderr or "") + f"\ntimed out after {timeout} s"
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    seconds = time.monotonic() - began
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    if log:
        with open(log, "w") as f:
            f.write(f"$ {' '.join(cmd)}\nrc {rc}, {seconds:.1f} s, minor faults {faults}\n")
            f.write(out + "\n---- stderr\n" + err)
    if rc != 0:
        print(f"  rc {rc}: {err.strip()[-600:]}", flush=True)
    return rc, out, err, faults, seconds


class Compare:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        self.rows = []  # the table
        self.plans = {}
        self.skipped = []
        os.makedirs(self.work, exist_ok=True)

    def time_left(self, needs):
        if elapsed() + needs > self.args.budget_s:
            return False
        return True

    def step(self, name, needs):
        if name in self.args.skip:
            self.skipped.append(name)
            print(f"[{elapsed():5.0f} s] skipped {name}: --skip", flush=True)
            return False
        if self.time_left(needs):
            return True
        self.skipped.append(name)
        print(f"[{elapsed():5.0f} s] skipped {name}: would pass --budget-s", flush=True)
        return False

    # ---- measurements ---------------------------------------------------------------------

    def host_read(self, tag):
        if not self.args.cpu_gemv_bench or not os.path.exists(self.args.cpu_gemv_bench):
            return None
        rc, out, _, _, _ = run([self.args.cpu_gemv_bench, "--read-only", "--seconds", "2"], 30,
                               os.path.join(self.work, f"host_read_{tag}.txt"))
        m = re.search(r"host read bandwidth: ([0-9.]+) GB/s", out)
        return float(m.group(1)) if rc == 0 and m else None

    def calibrate(self):
        s = self.args.strata
        run([s, "calibrate", "--force"], 60, os.path.join(self.work, "calibrate.txt"))
        rc, out, _, _, _ = run([s, "calibrate", "--json"], 30)
        if rc == 0:
            with open(os.path.join(self.work, "machine.json"), "w") as f:
                f.write(out)
            try:
                self.machine = json.loads(out)
            except ValueError:
                self.machine = None

    def plan(self, tier, budget):
        s, w = self.args.strata, self.work
        map_path = os.path.join(w, f"map_{tier}.json")
        rc, out, _, _, _ = run([s, "plan", self.args.model_dir, "--max-memory", budget,
                                "--prefill-tokens", str(self.args.prompt), "--json", "--output",
                                map_path], 60, os.path.join(w, f"plan_{tier}.log"))
        if rc == 0:
            with open(os.path.join(w, f"plan_{tier}.json"), "w") as f:
                f.write(out)
            try:
                self.plans[tier] = json.loads(out).get("predictions") or {}
            except ValueError:
                self.plans[tier] = {}
        return map_path if rc == 0 else None

    def bench(self, tier, map_path, policy, unit, prompt, decode, reps, extra=(), label=None,
              timeout=90):
        label = label or f"{tier}_{policy}_{unit}"
        cmd = [self.args.strata, "bench", self.args.model_dir, "--device-map", map_path,
               "--offload-policy", policy, "--offload-unit", unit, "-p", str(prompt), "-n",
               str(decode), "-b", "1", "-r", str(reps), "--no-limits", "--json", *extra]
        rc, out, err, faults, seconds = run(cmd, timeout, os.path.join(self.work,
                                                                       f"bench_{label}.log"))
        result = {"tier": tier, "policy": policy, "unit": unit, "label": label, "rc": rc,
                  "minor_faults": faults, "wall_s": round(seconds, 1)}
        try:
            report = json.loads(out)
            with open(os.path.join(self.work, f"bench_{label}.json"), "w") as f:
                json.dump(report, f, indent=2)
            result["load_s"] = report.get("load_seconds")
            for t in report["tests"]:
                key = "tg" if t["test"].startswith("tg") else "pp"
                result[key] = t
        except (ValueError, KeyError):
            pass
        self.rows.append(result)
        tg, pp = result.get("tg", {}), result.get("pp", {})
        print(f"  {label}: decode {tg.get('ms_per_step', float('nan')):.1f} ms/token, prefill "
              f"{pp.get('tokens_per_second', float('nan')):.0f} tok/s, load "
              f"{result.get('load_s') or float('nan'):.2f} s, minor faults {faults}, "
              f"units tg {tg.get('offloaded_units')}, pp {pp.get('offloaded_units')}", flush=True)
        return result

    def strata_tokens(self, budget):
        """Greedy tokens of the placement Accelerate also runs (strata run, layer units)."""
        rc, out, err, _, _ = run([self.args.strata, "run", self.args.model_dir, "--token-ids",
                                  PROMPT_IDS, "--max-new-tokens",
                                  str(self.args.reference_tokens), "--dtype", "bf16",
                                  "--max-memory", budget, "--offload-unit", "layer"], 60,
                                 os.path.join(self.work, "strata_run_cpu.log"))
        try:
            return [int(t) for t in out.strip().split(",")] if rc == 0 else None
        except ValueError:
            return None

    def reference(self, script, name, extra, timeout):
        folder = os.path.join(self.work, "hf_offload")
        shutil.rmtree(folder, ignore_errors=True)
        rc, out, err, _, seconds = run([sys.executable, os.path.join(HERE, script),
                                        self.args.model_dir, "--prompt", PROMPT_IDS, *extra],
                                       timeout, os.path.join(self.work, f"{name}.log"))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            result = json.loads(out.strip().splitlines()[-1]) if rc == 0 else None
        except (ValueError, IndexError):
            result = None
        print(f"  {name}: {result}", flush=True)
        return result


def tensor_bytes(model_dir):
    """{tensor name: bytes} from the safetensors headers."""
    sizes = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            with open(os.path.join(model_dir, name), "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            for tensor, info in header.items():
                if tensor != "__metadata__":
                    sizes[tensor] = info["data_offsets"][1] - info["data_offsets"][0]
    return sizes


def plan_value(plans, tier, phase, key):
    try:
        return plans[tier][phase][key]
    except (KeyError, TypeError):
        return None


def ratio(measured, predicted):
    return measured / predicted if measured and predicted else None


def fmt(value, digits=1, width=9):
    return f"{value:>{width}.{digits}f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("strata")
    parser.add_argument("model_dir")
    parser.add_argument("--cpu-gemv-bench", default="")
    parser.add_argument("--workdir", default="/tmp/hybrid_compare")
    parser.add_argument("--gpu-gib", type=float, default=3.0)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--decode", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--reference-tokens", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=230)
    parser.add_argument("--json-out")
    parser.add_argument("--skip", default="",
                        help="comma-separated optional steps to leave out (names as printed when "
                        "skipped, e.g. 'cpu forced split,disk stream'), for a shorter device call")
    args = parser.parse_args()
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    c = Compare(args)
    gpu = f"cuda:0={args.gpu_gib:g}GiB"
    p, n, r = args.prompt, args.decode, args.reps

    read_before = c.host_read("before")
    c.calibrate()

    # 3 GiB on the GPU, the rest in cpu RAM.
    cpu_budget = f"{gpu},cpu=200GiB"
    cpu_map = c.plan("cpu", cpu_budget)
    if cpu_map:
        c.bench("cpu", cpu_map, "auto", "layer", p, n, r)
        c.bench("cpu", cpu_map, "stream", "layer", p, n, r)
        if c.step("cpu forced cpu", 10):
            c.bench("cpu", cpu_map, "cpu", "layer", 0, n, r)
        if c.step("cpu forced split", 12):
            c.bench("cpu", cpu_map, "split", "layer", 0, n, r)
        if c.step("cpu auto module units", 12):
            c.bench("cpu", cpu_map, "auto", "module", p, n, r)

    # The same with the rest on disk: the offload folder, served from the page cache.
    folder = os.path.join(c.work, "offload")
    shutil.rmtree(folder, ignore_errors=True)
    disk_map = c.plan("disk", f"{gpu},cpu=0GiB")
    if disk_map and c.step("disk", 20):
        c.bench("disk", disk_map, "auto", "layer", p, n, r + 1, ["--offload-folder", folder])
        if c.step("disk forced cpu", 10):
            c.bench("disk", disk_map, "cpu", "layer", 0, n, r, ["--offload-folder", folder])
        if c.step("disk stream", 25):
            c.bench("disk", disk_map, "stream", "layer", p, n, 1, ["--offload-folder", folder])
        if c.step("disk auto module units", 12):
            c.bench("disk", disk_map, "auto", "module", 0, n, r, ["--offload-folder", folder])
    shutil.rmtree(folder, ignore_errors=True)

    # The cpu alone.
    cpu_only_map = c.plan("cpu_only", "cpu=200GiB")
    if cpu_only_map and c.step("cpu only", 15):
        c.bench("cpu_only", cpu_only_map, "auto", "layer", 0, n, r)
    read_after = c.host_read("after")

    # The references, quickest first.
    hf_cpu = accel_cpu = accel_disk = strata_tokens = None
    if c.step("transformers cpu", 25):
        hf_cpu = c.reference("hf_cpu_decode.py", "transformers_cpu",
                             ["--new-tokens", str(args.reference_tokens)], 60)
    if c.step("strata run tokens", 8):
        strata_tokens = c.strata_tokens(cpu_budget)
    if c.step("accelerate cpu", 25):
        accel_cpu = c.reference("hf_decode.py", "accelerate_cpu",
                                ["--placement", "cpu", "--gpu-gib", str(args.gpu_gib),
                                 "--new-tokens", str(args.reference_tokens), "--offload-folder",
                                 os.path.join(c.work, "hf_offload")], 90)
    if c.step("accelerate disk", 30):
        accel_disk = c.reference("hf_decode.py", "accelerate_disk",
                                 ["--placement", "disk", "--gpu-gib", str(args.gpu_gib),
                                  "--new-tokens", "2", "--offload-folder",
                                  os.path.join(c.work, "hf_offload")],
                                 max(10, int(args.budget_s - elapsed())))

    # ---- the table ------------------------------------------------------------------------
    reads = [x for x in (read_before, read_after) if x]
    read = sum(reads) / len(reads) if reads else None
    # A decode step reads every weight but the embedding (one row of it).
    decode_bytes = sum(b for name, b in tensor_bytes(args.model_dir).items()
                       if not name.endswith("embed_tokens.weight"))
    plan_key = {"auto": "best", "stream": "stream", "cpu": "cpu", "split": "split"}
    print()
    print(f"host read (cpu_gemv_bench): before {read_before}, after {read_after} GB/s; "
          f"elapsed {elapsed():.0f} s; skipped: {', '.join(c.skipped) or 'nothing'}")
    m = getattr(c, "machine", None) or {}
    print("machine constants: " + ", ".join(
        f"{k} {m[k]:.1f}" for k in ("cpu_gemv_layer_gbps", "split_cpu_gemv_gbps", "split_h2d_gbps",
                                    "h2d_gbps", "page_cache_read_gbps", "host_read_gbps")
        if isinstance(m.get(k), (int, float))))
    header = (f"{'placement':<9} {'policy':<7} {'unit':<7} {'decode ms':>9} {'plan ms':>9} "
              f"{'ratio':>6} {'pp tok/s':>9} {'plan':>9} {'ratio':>6} {'tg faults':>9}  units tg")
    print(header)
    print("-" * len(header))
    table = []
    for row in c.rows:
        tier, policy, unit = row["tier"], row["policy"], row["unit"]
        tg, pp = row.get("tg", {}), row.get("pp", {})
        ms = tg.get("ms_per_step")
        rate = pp.get("tokens_per_second")
        key = plan_key[policy]
        pred_ms = plan_value(c.plans, tier, "decode", f"{key}_ms_per_step") if unit == "layer" else None
        pp_key = "best" if policy == "auto" else "stream"
        pred_pp = (plan_value(c.plans, tier, "prefill", f"{pp_key}_tokens_per_second")
                   if policy in ("auto", "stream") and unit == "layer" else None)
        entry = {"placement": tier, "policy": policy, "unit": unit, "decode_ms": ms,
                 "plan_decode_ms": pred_ms, "decode_ratio": ratio(ms, pred_ms),
                 "prefill_tokens_per_s": rate, "plan_prefill_tokens_per_s": pred_pp,
                 "prefill_ratio": ratio(rate, pred_pp), "process_minor_faults": row["minor_faults"],
                 "tg_timed_minor_faults": tg.get("minor_faults"),
                 "units_tg": tg.get("offloaded_units"), "units_pp": pp.get("offloaded_units")}
        if tier == "cpu_only" and ms and read:
            gbps = decode_bytes / (ms * 1e-3) / 1e9
            entry.update({"weight_gb_per_s": gbps, "share_of_host_read": gbps / read})
        table.append(entry)
        print(f"{tier:<9} {policy:<7} {unit:<7} {fmt(ms)} {fmt(pred_ms)} "
              f"{fmt(ratio(ms, pred_ms), 2, 6)} {fmt(rate, 0)} {fmt(pred_pp, 0)} "
              f"{fmt(ratio(rate, pred_pp), 2, 6)} {tg.get('minor_faults', '-'):>9}  "
              f"{json.dumps(tg.get('offloaded_units'))}")
    for entry in table:
        if "share_of_host_read" in entry:
            print(f"cpu only: {entry['weight_gb_per_s']:.1f} GB/s of weights per token = "
                  f"{100 * entry['share_of_host_read']:.0f}% of the host read rate {read:.1f} GB/s")
    refs = {"transformers_cpu": hf_cpu, "accelerate_cpu": accel_cpu,
            "accelerate_disk": accel_disk}
    for name, ref in refs.items():
        if ref and ref.get("per_token_s"):
            print(f"{name:<17} {ref['per_token_s'] * 1e3:9.1f} ms/token (load {ref['load_s']:.1f} s, "
                  f"prefill {ref['prefill_s']:.2f} s, tokens {ref['tokens']})")
        else:
            print(f"{name:<17} no result")
    if strata_tokens and accel_cpu:
        k = min(len(strata_tokens), len(accel_cpu["tokens"]))
        print(f"greedy tokens, strata run (cpu placement, layer units) vs Accelerate: "
              f"{strata_tokens[:k] == accel_cpu['tokens'][:k]} ({strata_tokens} vs "
              f"{accel_cpu['tokens']})")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"host_read_gbps": {"before": read_before, "after": read_after},
                       "machine": getattr(c, "machine", None), "plans": c.plans, "rows": table,
                       "references": refs, "strata_tokens": strata_tokens,
                       "skipped": c.skipped, "elapsed_s": elapsed()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
