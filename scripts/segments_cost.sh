#!/usr/bin/env bash
# What several segments per shard cost a query. Two trees over the same
# bundled corpus (4 shards, 2 parents, result caches off), so they give the
# same answers:
#   multi: built from its first 3,033 documents, then loaded with the rest
#          in 7 publishes of 1,000 new documents each — a publish keeps the
#          segments a load did not touch, so each shard gains segments,
#          up to the bound (leaf/src/corpus/segments.rs);
#   one:   built from all of them at once, one segment a shard.
# Then, twice, the trees alternating: p50/p99 at 100/s (open loop, 15 s)
# and the closed-loop peak (8 workers, 10 s).
# Usage: scripts/segments_cost.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --workspace --quiet
bin="$PWD/target/release"
out="${1:-bench-results/segments-$(date -u +%Y%m%dT%H%M%SZ)}"; mkdir -p "$out"
python3 - "$out" <<'PY'
import gzip, sys
out = sys.argv[1]
lines = [l for l in gzip.open("corpus-tools/data/wiki-summaries.jsonl.gz", "rt") if l.strip()]
open(f"{out}/all.jsonl", "w").writelines(lines)
open(f"{out}/seed.jsonl", "w").writelines(lines[:3033])
for i in range(7):
    open(f"{out}/chunk{i}.jsonl", "w").writelines(lines[3033 + i * 1000: 3033 + (i + 1) * 1000])
PY
"$bin/searchtree" build --input "$out/seed.jsonl" --shards 4 --parents 2 --out "$out/multi" 2> "$out/build.log"
"$bin/searchtree" build --input "$out/all.jsonl" --shards 4 --parents 2 --out "$out/one" 2>> "$out/build.log"
for t in multi one; do
  without_cache "$out/$t/topology.toml" "$out/$t/t.toml"; mv "$out/$t/t.toml" "$out/$t/topology.toml"
done
# The leaves' data directories keep the published versions across restarts.
start_up "$bin" "$out/multi/topology.toml" "$out/up-multi-0.log" \
  || { echo "the tree did not start, see $out/up-multi-0.log" >&2; exit 1; }
for i in $(seq 0 6); do
  "$bin/searchtree" load --root "$root" --input "$out/chunk$i.jsonl" >> "$out/load.txt" 2>> "$out/load.log"
done
stop_up
for r in 1 2; do
  for t in multi one; do
    start_up "$bin" "$out/$t/topology.toml" "$out/up-$t-$r.log" \
      || { echo "the tree did not start, see $out/up-$t-$r.log" >&2; exit 1; }
    "$bin/searchtree" bench --root "$root" --rate 100 --duration 15s --warmup 2s --json "$out/$t-open-$r.json" > "$out/$t-open-$r.txt" 2>> "$out/bench.log"
    "$bin/searchtree" bench --root "$root" --max --connections 8 --duration 10s --warmup 2s --json "$out/$t-max-$r.json" > "$out/$t-max-$r.txt" 2>> "$out/bench.log"
    stop_up
  done
done
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, re, sys
out = sys.argv[1]
log = open(f"{out}/up-multi-0.log").read()
last = re.findall(r"candidate written.*version=(\d+) kept=(\d+) merged=(\d+)", log)[-4:]
print("multi's last publish, per leaf: " + ", ".join(
    f"{k} kept + {'1 merged' if int(m) else 'none merged'}" for _, k, m in last))
peaks = {}
for t in ("multi", "one"):
    for r in (1, 2):
        o = json.load(open(f"{out}/{t}-open-{r}.json"))["latency_us"]
        m = json.load(open(f"{out}/{t}-max-{r}.json"))["rate_achieved"]
        peaks.setdefault(t, []).append(m)
        print(f"{t:5} run {r}: p50 {o['p50'] / 1000:.2f} ms, p99 {o['p99'] / 1000:.2f} ms at 100/s; peak {m:.0f}/s")
print(f"peak multi / one: {sum(peaks['multi']) / sum(peaks['one']):.2f}")
PY
