#!/usr/bin/env bash
# Issue 17's MoE benchmark on the device machine, from the repository root (after the GPU build:
# build/gpu/tools/strata/strata): the issue's model, a Qwen3-30B-A3B-shaped random bf16
# checkpoint of 48 layers (make_random_qwen3_moe.py: 61 GB apparent; with SPARSE=1, the default,
# its routed experts are file holes that read as zeros, so it takes 3.2 GB of disk: the device
# has ~27 GB free; timings do not depend on the experts' values), a 24 GiB GPU budget (scaled
# with LAYERS < 48 so the GPU holds the same share of the experts as 24 GiB does for 48 layers;
# GPU_GIB overrides), then in one command:
#   strata plan (predicted decode ms/step and prefill tokens/s, expected expert cache hit rate),
#   strata bench --experts cpu (every routed expert in cpu RAM: selected experts computed on the
#     cpu at decode, streamed alone at prefill, the GPU expert cache in the spare budget),
#     (under --offload-policy auto, then forced to cpu),
#   strata bench --experts auto (the experts the budget holds stay on the GPU, the rest as above),
#   transformers + Accelerate (device_map="auto", the same budgets: hf_moe_decode.py),
# and a summary of decode/prefill tokens/s, cache hit rate, distinct experts per block, the host
# read rate measured in the same run and plan-vs-measured (with fewer layers, the decode rate
# extrapolated to 48: every layer has the same shapes and the same share of its experts on the
# GPU, so 48 / LAYERS times the measured step is an upper bound of the 48-layer step).
# The decode steps feed pseudo-random token ids (DECODE_INPUT=random, strata bench
# --decode-input, as llama-bench does): a random model's greedy decode repeats one token and its
# experts (session 7 measured a 96.8% cache hit rate on that). Random tokens are a pessimistic
# stream for the expert cache: real text reuses experts more. Transformers + Accelerate runs last,
# in its own process (Strata with every expert in cpu RAM holds ~58 GB, Accelerate as much).
# Each step has a time cap and no step starts after TOTAL_S seconds (default 290).
#
# Usage: bash bench/reference/run_moe_bench.sh [MODEL_DIR (/tmp/qwen3moe)]
#   LAYERS (48), SPARSE (1), GPU_GIB (24 scaled), CPU_GIB (100), PROMPT_TOKENS (512),
#   DECODE_TOKENS (32), DECODE_INPUT (random), STEPS ("model plan bench hf"), HF_DECODE (8),
#   OUT (/tmp/moe_bench), EXPERT_CACHE (auto), CACHE_POLICY (lru), TOTAL_S (290),
#   RUNS ("cpu:auto cpu:cpu auto:auto": the strata bench runs, --experts MODE:--offload-policy P,
#   optionally :VAR=VALUE,... for that run's environment, e.g. cpu:auto:STRATA_MOE_OVERLAP=1)
set -uo pipefail
model=${1:-/tmp/qwen3moe}
out=${OUT:-/tmp/moe_bench}
steps=${STEPS:-model plan bench hf}
layers=${LAYERS:-48}
cpu=${CPU_GIB:-100} prompt=${PROMPT_TOKENS:-512} decode=${DECODE_TOKENS:-32}
total=${TOTAL_S:-290}
cache=${EXPERT_CACHE:-auto} policy=${CACHE_POLICY:-lru}
decode_input=${DECODE_INPUT:-random}
sparse=${SPARSE:-1}
# The GPU budget holding the same share of the experts as 24 GiB for the 48-layer model:
# embeddings + head 1.245 GB, 38.3 MB of attention and router per layer, 1.208 GB of experts.
gpu=${GPU_GIB:-$(python3 -c "
L=$layers; emb=2*151936*2048*2; dense=38.3e6; exp=128*3*768*2048*2
share=(24*2**30-emb-48*dense)/(48*exp)
print(round((emb+L*dense+share*L*exp)/2**30,1))")}
mkdir -p "$out"
budget="cuda:0=${gpu}GiB,cpu=${cpu}GiB"
has() { [[ " $steps " == *" $1 "* ]]; }
strata=${STRATA:-build/gpu/tools/strata/strata}
start=$(date +%s)
left() { local l=$(( total - ($(date +%s) - start) )); echo $(( l < 1 ? 1 : (l < $1 ? l : $1) )); }
echo "== Qwen3-30B-A3B shape, $layers of 48 layers, budget $budget (24 GiB for 48 layers)"

if has model && [ ! -f "$model/config.json" ]; then
  sparse_flag=""; [ "$sparse" = 1 ] && sparse_flag="--sparse-experts"
  timeout "$(left 120)" python3 bench/reference/make_random_qwen3_moe.py "$model" --layers "$layers" \
    $sparse_flag >"$out/make_model.log" 2>&1 || { tail -5 "$out/make_model.log"; exit 1; }
  echo "model: $(tail -1 "$out/make_model.log") ($(du -sh "$model" | cut -f1) on disk${sparse_flag:+, experts as holes}) in $(( $(date +%s) - start )) s"
fi
if has plan; then
  timeout "$(left 30)" "$strata" calibrate >"$out/calibrate.txt" 2>&1
  for mode in cpu auto; do
    timeout "$(left 20)" "$strata" plan "$model" --max-memory "$budget" --experts "$mode" \
      --dtype bf16 --prefill-tokens "$prompt" --expert-cache "$cache" --json \
      >"$out/plan_$mode.json" 2>"$out/plan_$mode.err"
    timeout "$(left 20)" "$strata" plan "$model" --max-memory "$budget" --experts "$mode" \
      --dtype bf16 --prefill-tokens "$prompt" --expert-cache "$cache" >"$out/plan_$mode.txt" 2>&1
    echo "== strata plan --experts $mode"
    grep -E "^(device|cuda|cpu|disk|total)|prefill|decode|routed experts" "$out/plan_$mode.txt" | head -12
  done
fi
if has bench; then
  # --experts cpu under the default policy (auto: the cost model picks cpu or streaming per
  # expert and step) and forced to the cpu; --experts auto (experts filling the GPU budget).
  # The first run also measures the limits the rates are compared with (host read, PCIe, HBM).
  limits=""
  for run in ${RUNS:-cpu:auto cpu:cpu auto:auto}; do
    # MODE:POLICY[:VAR=VALUE,...]: the environment of this run only (an A/B of a switch).
    IFS=: read -r mode offload envs <<<"$run"
    name=${mode}_${offload}${envs:+_$(printf %s "$envs" | tr -c 'A-Za-z0-9' '_')}
    t=$(left 100); [ "$t" -lt 20 ] && { echo "no time left for bench $name"; continue; }
    # shellcheck disable=SC2086
    timeout "$t" env ${envs//,/ } "$strata" bench "$model" --max-memory "$budget" --experts "$mode" --dtype bf16 \
      --offload-policy "$offload" --expert-cache "$cache" --expert-cache-policy "$policy" \
      --decode-input "$decode_input" -p "$prompt" -n "$decode" -b 1 -r 1 $limits --json \
      >"$out/bench_$name.json" 2>"$out/bench_$name.err"
    rc=$?
    limits="--no-limits"
    echo "== strata bench --experts $mode --offload-policy $offload${envs:+ ($envs)}: rc $rc after $(( $(date +%s) - start )) s"
    free -g | head -2 >"$out/free_$name.txt"
    grep -E "experts:|tokens/s|loaded" "$out/bench_$name.err" | head -8
  done
fi
if has hf; then
  t=$(left 200)
  if [ "$t" -lt 40 ]; then
    echo "no time left for transformers"
  else
    echo "== transformers + Accelerate, device_map=auto, max_memory {0: ${gpu}GiB, cpu: ${cpu}GiB}"
    timeout "$t" python3 bench/reference/hf_moe_decode.py "$model" --gpu-gib "$gpu" \
      --cpu-gib "$cpu" --prompt "$prompt" --decode "${HF_DECODE:-8}" 2>"$out/hf.err" | tee "$out/hf.json"
    tail -2 "$out/hf.err"
  fi
fi
python3 - "$out" "$layers" "$model" "$prompt" <<'PY'
import json, os, sys
out, layers, model, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
try:
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    experts, top_k = config["num_experts"], config["num_experts_per_tok"]
except Exception:
    experts = top_k = None
def uniform_distinct(tokens):
    """Distinct experts a block runs for `tokens` tokens routed uniformly at random: the stream
    strata plan assumes (session 8's generator fell far short of it)."""
    return experts * (1 - (1 - top_k / experts) ** tokens) if experts else None
def find_rate(tree, key):
    """A rate of the machine constants file, wherever its layout nests it (0: absent)."""
    if isinstance(tree, dict):
        if isinstance(tree.get(key), (int, float)):
            return tree[key]
        return next((r for r in map(lambda v: find_rate(v, key), tree.values()) if r), 0)
    return 0
def at_run_rate(plan, planned, run_host):
    """The plan's decode with its cpu experts' rate scaled by the host read rate measured in the
    same run against the calibration's (a shared host's memory rate moves between calls and
    within one: session 12 calibrated 97 GB/s and ran at 61). None without the numbers."""
    p = plan.get("predictions") or {}
    try:
        with open(p["machine_constants"]) as f:
            constants = json.load(f)
    except Exception:
        return None
    expert, host = find_rate(constants, "cpu_expert_gbps"), find_rate(constants, "host_read_gbps")
    moved = (p.get("experts") or {}).get("decode_bytes_outside_cache")
    if not (expert and host and moved and run_host):
        return None
    return planned + moved / 1e6 * (1 / (expert * run_host / host) - 1 / expert), host
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1] if name == "hf.json" else f.read())
    except Exception:
        return None
print(f"== summary ({layers} of 48 layers" +
      (f"; a 48-layer model reads {48 / layers:g}x the experts per token)" if layers < 48 else ")"))
names = sorted((f[len("bench_"):-len(".json")] for f in os.listdir(out)
                if f.startswith("bench_") and f.endswith(".json")),
               key=lambda n: (n.split("_")[0] != "cpu", n))
first = next((b for b in map(lambda n: load(f"bench_{n}.json"), names)
              if b and b.get("limits")), {})
if first.get("limits"):
    print(f"host read rate (same run): {first['limits']['host_read_gb_s']:.1f} GB/s;"
          f" decode inputs: {first.get('decode_input', '?')}")
rows = []
for name in names:
    mode, offload, *switch = name.split("_", 2)
    bench, plan = load(f"bench_{name}.json"), load(f"plan_{mode}.json")
    mode = f"{mode} --offload-policy {offload}" + (f" ({switch[0]})" if switch else "")
    if not bench:
        print(f"--experts {mode}: no bench result"); continue
    for t in bench["tests"]:
        e = t.get("experts") or {}
        c = e.get("cache") or {}
        hit = f", cache hit rate {100 * c['hit_rate']:.1f}%" if c else ""
        at48 = ""
        if t["test"].startswith("tg") and t.get("ms_per_step") and layers < 48:
            at48 = f"; 48 layers >= {1000 / (t['ms_per_step'] * 48 / layers):.2f} tokens/s"
        distinct = (f", {e['distinct_per_block']:.1f} distinct experts per block"
                    if "distinct_per_block" in e else "")
        if distinct and e.get("block_steps"):
            # pp: every run feeds the same prompt; tg: every step draws a new token.
            tokens = prompt if t["test"].startswith("pp") else e["block_steps"] // layers
            want = uniform_distinct(tokens)
            if want:
                distinct += f" (uniform routing: {want:.1f})"
        print(f"--experts {mode} {t['test']}: {t['tokens_per_second']:.2f} tokens/s"
              f" (experts cpu {e.get('cpu', 0)}, streamed {e.get('streamed', 0)},"
              f" cached {e.get('cached', 0)}{hit}{distinct}{at48})")
        if t["test"].startswith("tg") and e.get("block_steps"):
            # Host time per decode step by phase (warm-up run included in the counters).
            steps = e["block_steps"] / layers
            per = lambda key: e.get(key, 0) / steps
            cpu_gbps = e["cpu_bytes"] / (e["cpu_ms"] * 1e6) if e.get("cpu_ms") else 0
            print(f"  per step: {t['ms_per_step']:.2f} ms = routing {per('route_ms'):.2f}"
                  f" (waits for the attention) + experts {per('experts_ms'):.2f} (cpu products"
                  f" {per('cpu_ms'):.2f} at {cpu_gbps:.1f} GB/s, device experts' calls"
                  f" {per('device_ms'):.2f}, choosing {per('decide_ms'):.2f}, after the cpu products"
                  f" {per('tail_ms'):.2f}, rest {per('experts_ms') - per('cpu_ms') - per('device_ms') - per('decide_ms') - per('tail_ms'):.2f})"
                  f" + outside the blocks {t['ms_per_step'] - per('route_ms') - per('experts_ms'):.2f};"
                  f" per block: {1000 * (per('experts_ms') - per('cpu_ms')) / layers:.0f} us beside the cpu products")
    p = (plan or {}).get("predictions") or {}
    if p.get("available"):
        tg = [t for t in bench["tests"] if t["test"].startswith("tg")]
        pp = [t for t in bench["tests"] if t["test"].startswith("pp")]
        # The plan of the policy the run used: forced to the cpu, or the best per unit (auto).
        key = "cpu_ms_per_step" if offload == "cpu" else "best_ms_per_step"
        planned = p["decode"][key]
        line = f"  plan: decode {planned:.1f} ms/step ({key.split('_')[0]})"
        rescaled = None
        if tg:
            measured = tg[0]["ms_per_step"]
            line += f" vs measured {measured:.1f} ({measured / planned:.2f}x)"
            run_host = (first.get("limits") or {}).get("host_read_gb_s")
            scaled = at_run_rate(plan, planned, run_host)
            if scaled:
                rescaled = scaled[0]
                line += (f"; at this run's host read rate ({run_host:.0f} GB/s, calibrated"
                         f" {scaled[1]:.0f}) {rescaled:.1f} ms/step ({measured / rescaled:.2f}x)")
            e = tg[0].get("experts") or {}
            c = e.get("cache") or {}
            rows.append((mode, tg[0]["tokens_per_second"], c.get("hit_rate"),
                         e.get("distinct_per_block"), planned, measured, rescaled))
        line += f"; prefill {p['prefill']['best_tokens_per_second']:.0f} tokens/s"
        if pp:
            line += f" vs measured {pp[0]['tokens_per_second']:.0f}"
        ex = p.get("experts") or {}
        if ex:
            line += f"; expected cache hit rate {100 * ex['expected_hit_rate']:.1f}%"
        print(line)
if rows:
    rate = f"{first['limits']['host_read_gb_s']:.1f}" if first.get("limits") else "-"
    print("| run | tg tokens/s | cache hit rate | distinct experts / block | plan ms/step |"
          " measured ms/step | measured / plan | host read GB/s | plan at that rate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, tps, hit, distinct, planned, measured, rescaled in rows:
        hit_text = f"{100 * hit:.1f}%" if hit is not None else "-"
        distinct_text = f"{distinct:.1f}" if distinct is not None else "-"
        scaled_text = f"{rescaled:.1f} ({measured / rescaled:.2f}x)" if rescaled else "-"
        print(f"| --experts {mode} | {tps:.2f} | {hit_text} | {distinct_text} | {planned:.1f} |"
              f" {measured:.1f} | {measured / planned:.2f}x | {rate} | {scaled_text} |")
hf = load("hf.json")
if hf:
    steps = hf.get("decode_tokens")
    decode = (f"{hf['decode_tokens_per_s']} tokens/s over {steps} steps" if steps else
              "no decode step finished in the time left")
    print(f"transformers+accelerate: prefill {hf['prefill_tokens_per_s']} tokens/s, decode "
          f"{decode}, load {hf['load_s']} s")
PY
echo "total $(( $(date +%s) - start )) s"
