#!/usr/bin/env bash
# Issue 15's prefill point (docs/benchmarks.md): auto against stream on the same device map,
# alternating (stream, auto, stream, auto, ...) so neither always runs first after the checkpoint
# entered the page cache. STRATA (default build/gpu/tools/strata/strata), MODEL (default /tmp/llama7b: a 7B-shaped
# checkpoint from make_random_llama.py), L (log folder, default /tmp/lead); writes $L/ppab.txt.
# About 40 s on the H100 host.
set -uo pipefail
L=${L:-/tmp/lead}; mkdir -p $L; S=${STRATA:-build/gpu/tools/strata/strata}; M=${MODEL:-/tmp/llama7b}
$S calibrate > $L/ppab_calibrate.txt 2>&1
$S plan $M --max-memory cuda:0=3GiB,cpu=200GiB --prefill-tokens 512 --json --output /tmp/ppab_map.json > /dev/null 2>&1
for pair in 1 2 3; do
  for policy in stream auto; do
    $S bench $M --device-map /tmp/ppab_map.json --offload-policy $policy --offload-unit layer \
      -p 512 -n 0 -b 1 -r 3 --no-limits --json > /tmp/ppab_$policy$pair.json 2>/dev/null
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=d['tests'][0]; print(sys.argv[2], sys.argv[3], round(t['seconds']*1000,2), round(t['min_seconds']*1000,2), round(t['max_seconds']*1000,2), round(t['tokens_per_second']), t.get('offloaded_units'))" /tmp/ppab_$policy$pair.json $policy $pair | tee -a $L/ppab.txt
  done
done
python3 - $L/ppab.txt <<'PY' | tee -a $L/ppab.txt
import sys, statistics
rows = [l.split(None, 6) for l in open(sys.argv[1]) if l.startswith(("stream", "auto"))]
for p in ("stream", "auto"):
    ms = [float(r[2]) for r in rows if r[0] == p]
    print(f"{p}: median of {len(ms)} runs {statistics.median(ms):.2f} ms (runs {ms})")
PY
