#!/usr/bin/env bash
# How well `searchtree simulate` predicts the real tree: the bundled corpus
# in 4 shards under 2 parents (result caches off), one of its leaves
# benched alone at the rate to save its latency distribution, the whole
# tree benched at the same rate, then the same shape simulated (4 leaves,
# fan-out 2) drawing leaf latencies from what was saved. Prints both
# p50/p99 and the simulation's error.
#
# Usage: scripts/simulate_vs_tree.sh [--rate R] [--duration 30s] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

rate=100
duration=30s
out="bench-results/simulate-vs-tree-$(date -u +%Y%m%dT%H%M%SZ)"
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
cargo build --release --workspace -q
bin="$PWD/target/release"

"$bin/searchtree" build --input corpus-tools/data/wiki-summaries.jsonl.gz \
  --shards 4 --parents 2 --out "$out/index" >/dev/null
without_cache "$out/index/topology.toml" "$out/index/nocache.toml"

start_up "$bin" "$out/index/nocache.toml" "$out/up.log" --nodes-file "$out/nodes.json" \
  || { echo "the tree did not start, see $out/up.log" >&2; exit 1; }
leaf=$(python3 -c "import json,sys; n=json.load(open('$out/nodes.json'))['nodes']; print(next(x['grpc'] for x in n if x['role']=='leaf'))")

# A leaf answers the same Search API: bench it alone, the same queries.
"$bin/searchtree" bench --root "$leaf" --rate "$rate" --duration "$duration" \
  --json "$out/leaf.json" --save-latency "$out/leaf-latency.txt" >/dev/null
"$bin/searchtree" bench --root "$root" --rate "$rate" --duration "$duration" \
  --json "$out/tree.json" >/dev/null
queries=$(python3 -c "import json; print(json.load(open('$out/tree.json'))['sent'])")
"$bin/searchtree" simulate --leaves 4 --fanout 2 --leaf-latency "$out/leaf-latency.txt" \
  --rate "$rate" --queries "$queries" --budget-ms 100 --json "$out/sim.json" >/dev/null

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
tree = json.load(open(f"{out}/tree.json"))["latency_us"]
sim = json.load(open(f"{out}/sim.json"))["latency_us"]
leaf = json.load(open(f"{out}/leaf.json"))["latency_us"]
print(f"{'':10} {'leaf alone':>11} {'tree':>9} {'simulated':>10} {'error':>8}")
for p in ("p50", "p90", "p99"):
    err = (sim[p] - tree[p]) / tree[p] * 100
    print(f"{p:10} {leaf[p]/1000:>9.2f}ms {tree[p]/1000:>7.2f}ms {sim[p]/1000:>8.2f}ms {err:>+7.0f}%")
PY
