#!/usr/bin/env bash
# Issue 15's acceptance numbers, on the device machine (docs/hybrid-execution.md): the
# Llama-2-7B-shaped random checkpoint (bench/reference/make_random_llama.py) with 3 GiB on the GPU
# and the rest in cpu RAM, then the rest on disk (the page cache), each under the offload policies
# auto, stream, split and cpu (POLICIES), next to `strata plan`'s predictions for the same
# placements and machine constants (auto: best, stream, split, cpu: the plan's decode under that
# policy); then the cpu alone. Every number comes from one run of this script.
#
# Usage: bench/reference/hybrid_decode.sh STRATA_BINARY MODEL_DIR OUT_DIR
#   GPU_GIB (default 3), DECODE_TOKENS (16), PROMPT_TOKENS (512), REPETITIONS (2),
#   POLICIES ("auto stream split cpu")
# Writes OUT_DIR/{machine.json, plan_<tier>.json, map_<tier>.json, bench_<tier>_<policy>.json,
# summary.txt}. About 5 minutes after the checkpoint exists (make_random_llama.py: 13.5 GB).
set -u
strata=$1 model=$2 out=$3
gpu_gib=${GPU_GIB:-3} decode=${DECODE_TOKENS:-16} prompt=${PROMPT_TOKENS:-512}
reps=${REPETITIONS:-2} policies=${POLICIES:-auto stream split cpu}
mkdir -p "$out"

echo "== calibrate (measured now, cached for the runs below)"
"$strata" calibrate --force || exit 1
"$strata" calibrate --json >"$out/machine.json"

run_tier() {  # tier max_memory [extra placement options...]
  local tier=$1 budget=$2
  shift 2
  echo "== $tier: --max-memory $budget"
  # The runs use the planned map itself (strata plan holds back no prefetch staging slot, the
  # loader's own planning does: the predictions must be for the map that runs).
  "$strata" plan "$model" --max-memory "$budget" --prefill-tokens "$prompt" --json \
    --output "$out/map_$tier.json" >"$out/plan_$tier.json" || echo "plan failed"
  "$strata" plan "$model" --max-memory "$budget" --prefill-tokens "$prompt" |
    sed -n '/^predictions/,/^$/p'
  for policy in $policies; do
    [ "$tier" = cpu_only ] && [ "$policy" != auto ] && continue
    echo "-- $tier, --offload-policy $policy"
    timeout 300 "$strata" bench "$model" --device-map "$out/map_$tier.json" "$@" \
      --offload-policy "$policy" \
      -p "$prompt" -n "$decode" -b 1 -r "$reps" --json >"$out/bench_${tier}_$policy.json" ||
      echo "bench failed (rc $?)"
    python3 - "$out/bench_${tier}_$policy.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
for t in r["tests"]:
    print("   ", t.get("test"), {k: v for k, v in t.items() if k != "test"})
PY
  done
}

run_tier cpu "cuda:0=${gpu_gib}GiB,cpu=200GiB"
run_tier disk "cuda:0=${gpu_gib}GiB,cpu=0GiB" --offload-folder "$out/offload"
run_tier cpu_only "cpu=200GiB"

python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
print(f"{'placement':<10} {'policy':<7} {'decode ms/step':>15} {'predicted':>10} {'ratio':>6} "
      f"{'pp tok/s':>10} {'predicted':>10}")
for tier in ("cpu", "disk", "cpu_only"):
    try:
        plan = json.load(open(f"{out}/plan_{tier}.json"))["predictions"]
    except Exception as e:
        print(tier, "no plan:", e); continue
    for policy in ("auto", "stream", "split", "cpu"):
        path = f"{out}/bench_{tier}_{policy}.json"
        if not os.path.exists(path):
            continue
        try:
            tests = {t["test"]: t for t in json.load(open(path))["tests"]}
        except Exception as e:
            print(tier, policy, "no result:", e); continue
        tg = next((t for n, t in tests.items() if n.startswith("tg")), None)
        pp = next((t for n, t in tests.items() if n.startswith("pp")), None)
        key = "best" if policy == "auto" else policy
        pp_key = "best" if policy == "auto" else "stream"
        available = plan.get("available") and f"{key}_ms_per_step" in plan["decode"]
        pred_ms = plan["decode"][f"{key}_ms_per_step"] if available else float("nan")
        pred_pp = (plan["prefill"][f"{pp_key}_tokens_per_second"] if plan.get("available")
                   else float("nan"))
        ms = tg.get("ms_per_step", float("nan")) if tg else float("nan")
        pp_rate = pp.get("tokens_per_second", float("nan")) if pp else float("nan")
        print(f"{tier:<10} {policy:<7} {ms:15.2f} {pred_ms:10.2f} {ms / pred_ms:6.2f} "
              f"{pp_rate:10.1f} {pred_pp:10.1f}")
PY
