#!/usr/bin/env bash
# Benchmarks of searchtree, side by side in one run on this machine:
#   1. the floor vs the tree: one index in-process (`bench --direct`) and a tree
#      (4 shards, 2 parents) at the same open-loop rates, plus peak throughput
#      of each (closed loop);
#   2. the straggler scenario: every leaf delays 1% of its requests by 1 s;
#      the root's p99.9 with a 50 ms budget vs with a budget of 5 s (no cut-off).
# Writes every report (JSON, .hgrm, SVG) and a results table (results.md) to
# the output directory. See BENCHMARKS.md for the method.
#
# Usage: scripts/bench.sh [--quick] [--out DIR] [--input FILE.jsonl[.gz] | --input-dir DIR]
#   --quick      short runs (a smoke test, ~1 minute); numbers are noisy
#   --input      corpus to use (default: the bundled Wikipedia summaries)
#   --input-dir  a directory of text files instead, e.g. /usr/share/doc/linux-doc-6.1
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
out="bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
input="corpus-tools/data/wiki-summaries.jsonl.gz"
input_flag="--input"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    --input) input="$2"; input_flag="--input" ; shift ;;
    --input-dir) input="$2"; input_flag="--input-dir"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  duration=4s; warmup=1s; rates="100 400"; straggler_rate=100; straggler_duration=8s
else
  duration=20s; warmup=3s; rates="100 300 600 900"; straggler_rate=200; straggler_duration=60s
fi

cargo build --release --workspace --quiet
bin=target/release
export SEARCHTREE_BIN_DIR="$PWD/$bin"
mkdir -p "$out"
echo "writing to $out"

"$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --out "$out/tree-index" 2> "$out/build-tree.log"
"$bin/searchtree" build "$input_flag" "$input" --shards 1 --out "$out/one-index" 2> "$out/build-one.log"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts `searchtree up` on a topology; sets $root to the root's address and
# $tree_pid to the process to stop.
start_tree() {
  local topology="$1" log="$2"
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  "$bin/searchtree" up --topology "$topology" > "$fifo" 2> "$log" &
  tree_pid=$!
  pids+=("$tree_pid")
  local line; read -r line < "$fifo"; rm -f "$fifo"
  root="${line#READY root=}"
}

bench() { "$bin/searchtree" bench --warmup "$warmup" "$@" 2>> "$out/bench.log"; }

# 1. Floor vs tree.
start_tree "$out/tree-index/topology.toml" "$out/tree.log"
echo "tree up at $root"
for rate in $rates; do
  bench --direct "$out/one-index/shards/shard-000" --rate "$rate" --duration "$duration" \
    --budget-ms 1000 --json "$out/direct-$rate.json" --hgrm "$out/direct-$rate.hgrm" > /dev/null
  bench --root "$root" --rate "$rate" --duration "$duration" \
    --budget-ms 1000 --json "$out/tree-$rate.json" --hgrm "$out/tree-$rate.hgrm" \
    --plot "$out/tree-$rate.svg" --label "tree, $rate/s" > /dev/null
  echo "  rate $rate/s done"
done
bench --direct "$out/one-index/shards/shard-000" --max --connections 8 --duration "$duration" \
  --budget-ms 1000 --json "$out/direct-max.json" > /dev/null
bench --root "$root" --max --connections 8 --duration "$duration" \
  --budget-ms 1000 --json "$out/tree-max.json" > /dev/null
echo "  peak throughput done"
kill "$tree_pid"; wait "$tree_pid" 2>/dev/null || true

# 2. Stragglers: every leaf delays 1% of its requests by 1 s.
awk '{ print } /^shard = / { print "inject_delay_ms = 1000\ninject_delay_prob = 0.01" }' \
  "$out/tree-index/topology.toml" > "$out/tree-index/straggler.toml"
start_tree "$out/tree-index/straggler.toml" "$out/straggler.log"
echo "straggler tree up at $root"
bench --root "$root" --rate "$straggler_rate" --duration "$straggler_duration" --budget-ms 5000 \
  --json "$out/straggler-nobudget.json" --hgrm "$out/straggler-nobudget.hgrm" \
  --plot "$out/straggler-nobudget.svg" --label "1% stragglers, 5 s budget" > /dev/null
bench --root "$root" --rate "$straggler_rate" --duration "$straggler_duration" --budget-ms 50 \
  --json "$out/straggler-budget50.json" --hgrm "$out/straggler-budget50.hgrm" \
  --plot "$out/straggler-budget50.svg" --label "1% stragglers, 50 ms budget" > /dev/null
echo "  straggler runs done"

python3 scripts/bench_table.py "$out" > "$out/results.md"
cat "$out/results.md"
