#!/usr/bin/env bash
# Where a query's latency goes at low load, one hop at a time: the same
# open-loop rate (default 100/s) against shapes that add one thing each,
#   direct        one index searched in-process (`bench --direct`): no gRPC
#   ping          health checks of that index's leaf (`bench --ping`): one
#                 gRPC round trip, no search
#   leaf          that leaf searched directly: one hop + the whole corpus
#   root-1        a root over that leaf: two hops
#   root-4        a root over 4 leaves (quarter shards): two hops, four
#                 searches sharing the cores
#   root-2-4      a root over 2 parents over 4 leaves: three hops (the shape
#                 of BENCHMARKS.md's "one index vs the tree")
# Rounds alternate between the shapes so machine noise falls on all alike;
# results.md gives each shape's median p50/p99/p99.9 over the rounds and
# what each step adds to the median p50. Result caches are off.
#
# Usage: scripts/hops.sh [--out DIR] [--input FILE.jsonl[.gz] | --input-dir DIR]
#                        [--queries FILE] [--rate N] [--rounds N] [--duration SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

out="bench-results/hops-$(date -u +%Y%m%dT%H%M%SZ)"
input="corpus-tools/data/wiki-summaries.jsonl.gz"
input_flag="--input"
queries=()
rate=100
rounds=3
duration=15
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    --input) input="$2"; input_flag="--input"; shift ;;
    --input-dir) input="$2"; input_flag="--input-dir"; shift ;;
    --queries) queries=(--queries "$(realpath "$2")"); shift ;;
    --rate) rate="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

cargo build --release --workspace --quiet
bin="$PWD/target/release"
mkdir -p "$out"
out="$(realpath "$out")"
echo "writing to $out"

# build NAME ARGS...: a build, and its topology with the result cache off.
build() {
  local name="$1"; shift
  "$bin/searchtree" build "$input_flag" "$input" --out "$out/$name" "$@" 2> "$out/build-$name.log"
  without_cache "$out/$name/topology.toml" "$out/$name/nocache.toml"
}
# start NAME: runs NAME's tree; sets root (its root's address).
start() {
  start_up "$bin" "$out/$1/nocache.toml" "$out/tree-$1.log" \
    || { echo "$1: the tree did not start, see $out/tree-$1.log" >&2; exit 1; }
}

build one --shards 1
build flat --shards 4
build tree --shards 4 --parents 2
start one; root_one="$root"
leaf_one=$(grep -o 'node serving node=leaf-0 addr=[0-9.:]*' "$out/tree-one.log" | head -1 | sed 's/.*addr=//')
[ -n "$leaf_one" ] || { echo "no leaf address in $out/tree-one.log" >&2; exit 1; }
start flat; root_flat="$root"
start tree; root_tree="$root"

declare -A target=(
  [direct]="--direct $out/one/shards/shard-000"
  [ping]="--ping $leaf_one"
  [leaf]="--root $leaf_one"
  [root-1]="--root $root_one"
  [root-4]="--root $root_flat"
  [root-2-4]="--root $root_tree"
)
shapes=(direct ping leaf root-1 root-4 root-2-4)
for r in $(seq 1 "$rounds"); do
  for s in "${shapes[@]}"; do
    read -r -a t <<< "${target[$s]}"
    "$bin/searchtree" bench "${t[@]}" "${queries[@]}" --rate "$rate" --warmup 3s --duration "${duration}s" \
      --budget-ms 1000 --json "$out/$s-$r.json" > "$out/$s-$r.txt" 2>> "$out/bench.log"
  done
  echo "  round $r of $rounds done"
done

python3 - "$out" "$rounds" "$rate" "${shapes[@]}" > "$out/results.md" <<'EOF'
import json, os, platform, statistics, sys
from datetime import datetime, timezone
out, rounds, rate, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
what = {
    "direct": "one index in-process (no gRPC)",
    "ping": "health checks of the leaf (one gRPC round trip, no search)",
    "leaf": "the leaf over the whole corpus (one hop)",
    "root-1": "a root over that leaf (two hops)",
    "root-4": "a root over 4 leaves (two hops, 4 searches)",
    "root-2-4": "a root over 2 parents over 4 leaves (three hops)",
}
cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
print(f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), "
      f"{platform.system()} {platform.release()}; {rate}/s open loop, {rounds} alternating rounds, medians.\n")
print("| shape | p50 ms | p99 ms | p99.9 ms | p50 rounds | p99 rounds | errors | p50 over the row above |")
print("|---|---|---|---|---|---|---|---|")
prev = None
for s in shapes:
    runs = [json.load(open(os.path.join(out, f"{s}-{r}.json"))) for r in range(1, rounds + 1)]
    p = {q: statistics.median(x["latency_us"][q] for x in runs) / 1000 for q in ("p50", "p99", "p999")}
    errs = sum(sum(x["errors"].values()) for x in runs)
    rows = lambda q: ", ".join(f"{x['latency_us'][q] / 1000:.2f}" for x in runs)
    step = f"{p['p50'] - prev:+.2f}" if prev is not None else "–"
    print(f"| {what[s]} | {p['p50']:.2f} | {p['p99']:.2f} | {p['p999']:.2f} | {rows('p50')} | {rows('p99')} | {errs} | {step} |")
    prev = p["p50"]
EOF
cat "$out/results.md"
