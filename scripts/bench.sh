#!/usr/bin/env bash
# Benchmarks of searchtree, side by side in one run on this machine:
#   1. the floor vs the tree: one index in-process (`bench --direct`) and a tree
#      (4 shards, 2 parents) at the same open-loop rates, plus peak throughput
#      of each (closed loop);
#   2. the straggler scenario: every leaf delays 1% of its requests by 1 s;
#      the root's p99.9 with a 50 ms budget vs with a budget of 5 s (no cut-off).
#   3. replicas (2 per shard): with 1% of leaf requests delayed 1 s, p99/p99.9
#      with hedging off vs on and the extra leaf requests hedging cost; and,
#      with one replica of every shard 3x slower, p99 under each policy.
#   4. canary requests: latency with canaries off, on, and on for every query.
#   5. the result cache: queries drawn by Zipf's law (s = 1), cache off vs on.
# Scenarios 1-4 measure the search path: the result cache (on by default)
# is turned off there, or it would answer the bundled queries as they repeat.
# Writes every report (JSON, .hgrm, SVG) and a results table (results.md) to
# the output directory. See BENCHMARKS.md for the method.
#
# Usage: scripts/bench.sh [--quick] [--out DIR] [--input FILE.jsonl[.gz] | --input-dir DIR] [--queries FILE]
#   --quick      short runs (a smoke test, ~1 minute); numbers are noisy
#   --input      corpus to use (default: the bundled Wikipedia summaries)
#   --input-dir  a directory of text files instead, e.g. /usr/share/doc/linux-doc-6.1/Documentation
#   --queries    the queries to send, one per line (default: the bundled ones)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

quick=0
out="bench-results/$(date -u +%Y%m%dT%H%M%SZ)"
input="corpus-tools/data/wiki-summaries.jsonl.gz"
input_flag="--input"
queries=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    --input) input="$2"; input_flag="--input" ; shift ;;
    --input-dir) input="$2"; input_flag="--input-dir"; shift ;;
    --queries) queries=(--queries "$(realpath "$2")"); shift ;;
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
bin="$PWD/target/release"
mkdir -p "$out"
echo "writing to $out"

"$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --out "$out/tree-index" 2> "$out/build-tree.log"
"$bin/searchtree" build "$input_flag" "$input" --shards 1 --out "$out/one-index" 2> "$out/build-one.log"

# The result cache off at the root and every parent (scenarios 1-4); the
# cached topology is kept for scenario 5.
cp "$out/tree-index/topology.toml" "$out/tree-index/topology.cached.toml"
without_cache "$out/tree-index/topology.cached.toml" "$out/tree-index/topology.toml"

# start_tree TOPOLOGY LOG: runs the tree; sets root (see scripts/lib.sh).
start_tree() {
  start_up "$bin" "$1" "$2" || { echo "the tree did not start, see $2" >&2; exit 1; }
}

bench() { "$bin/searchtree" bench --warmup "$warmup" "${queries[@]}" "$@" 2>> "$out/bench.log"; }

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
stop_up

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
stop_up

# 3. Replicas: 2 per shard.
"$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --replicas 2 \
  --out "$out/replica-index" 2> "$out/build-replicas.log"
mv "$out/replica-index/topology.toml" "$out/replica-index/cached.toml"
without_cache "$out/replica-index/cached.toml" "$out/replica-index/topology.toml"

# Runs the replicated tree with extra topology lines for leaves "leaf-S-1"
# ($1) and a [routing] table ($2); writes bench report $3 and the parents'
# counters $3-parents.json.
replica_run() {
  local leaf_extra="$1" routing="$2" name="$3" budget="$4" rate="$5" duration="$6"
  awk -v extra="$leaf_extra" '{ print } /^name = "leaf-[0-9]+-1"$/ { if (extra != "") print extra }' \
    "$out/replica-index/topology.toml" > "$out/replica-index/$name.toml"
  printf '\n[routing]\n%b\n' "$routing" >> "$out/replica-index/$name.toml"
  start_tree "$out/replica-index/$name.toml" "$out/$name.log"
  bench --root "$root" --rate "$rate" --duration "$duration" --budget-ms "$budget" \
    --json "$out/$name.json" --hgrm "$out/$name.hgrm" --plot "$out/$name.svg" --label "$name" > /dev/null
  local parents
  parents=$(grep -oE 'node=parent-[0-9]+ addr=[0-9.:]+' "$out/$name.log" | sed 's/.*addr=/--addr /' | tr '\n' ' ')
  # shellcheck disable=SC2086
  "$bin/searchtree" stats $parents > "$out/$name-parents.json"
  stop_up
}

if [ "$quick" = 1 ]; then hedge_duration=8s; policy_duration=4s; else hedge_duration=60s; policy_duration=20s; fi
# Hedging: every leaf delays 1% of its requests by 1 s; budget 1 s, so the
# budget does not hide the tail.
awk '{ print } /^shard = / { print "inject_delay_ms = 1000\ninject_delay_prob = 0.01" }' \
  "$out/replica-index/topology.toml" > "$out/replica-index/stragglers.toml"
cp "$out/replica-index/topology.toml" "$out/replica-index/topology.plain.toml"
cp "$out/replica-index/stragglers.toml" "$out/replica-index/topology.toml"
replica_run "" 'hedge_ratio = 0' hedge-off 1000 "$straggler_rate" "$hedge_duration"
replica_run "" 'hedge_ratio = 0.05' hedge-on 1000 "$straggler_rate" "$hedge_duration"
cp "$out/replica-index/topology.plain.toml" "$out/replica-index/topology.toml"
echo "  hedging runs done"
# Policies: one replica of every shard about 3x slower than its peer (+3 ms
# on a ~1.5 ms leaf round trip), hedging and probation off so the policy
# alone decides; then the defaults (latency_aware, probation on).
slow_replica='inject_delay_ms = 3\ninject_delay_prob = 1.0'
for policy in round_robin least_outstanding latency_aware; do
  replica_run "$slow_replica" "hedge_ratio = 0\nprobation_factor = 0\nreplica_policy = \"$policy\"" \
    "policy-$policy" 1000 "$straggler_rate" "$policy_duration"
done
replica_run "$slow_replica" 'hedge_ratio = 0' policy-defaults 1000 "$straggler_rate" "$policy_duration"
echo "  policy runs done"
# 4. Canaries: the latency they cost. The same tree with canaries off, on
# (queries repeat, so after the first pass most are seen), and on with no
# memory (every query is unseen: a canary before each fan-out, the worst case).
for mode in off on unseen; do
  case "$mode" in
    off) extra="" ;;
    on) extra="canary = true" ;;
    unseen) extra="canary = true\ncanary_remember_secs = 0" ;;
  esac
  awk -v extra="$extra" '{ print } /^\[root\]$/ { if (extra != "") print extra }' \
    "$out/tree-index/topology.toml" > "$out/tree-index/canary-$mode.toml"
  start_tree "$out/tree-index/canary-$mode.toml" "$out/canary-$mode.log"
  bench --root "$root" --rate "$straggler_rate" --duration "$duration" --budget-ms 1000 \
    --json "$out/canary-$mode.json" --hgrm "$out/canary-$mode.hgrm" > /dev/null
  stop_up
done
echo "  canary runs done"
# 5. The result cache: the same tree with its cache off and on (the
# defaults, 64 MiB and 60 s at the root and each parent), queries drawn by
# Zipf's law with s = 1 (a query log's repeats); open loop for latency,
# closed loop for throughput, then the root's and parents' cache counters.
for mode in off on; do
  topo="$out/tree-index/topology.toml"; [ "$mode" = on ] && topo="$out/tree-index/topology.cached.toml"
  start_tree "$topo" "$out/cache-$mode.log"
  bench --root "$root" --zipf 1 --rate "$straggler_rate" --duration "$duration" --budget-ms 1000 \
    --json "$out/cache-$mode.json" --hgrm "$out/cache-$mode.hgrm" > /dev/null
  bench --root "$root" --zipf 1 --max --connections 8 --duration "$duration" --budget-ms 1000 \
    --json "$out/cache-$mode-max.json" > /dev/null
  inner=$(grep -oE 'node=(root|parent-[0-9]+) addr=[0-9.:]+' "$out/cache-$mode.log" | sed 's/.*addr=/--addr /' | tr '\n' ' ')
  # shellcheck disable=SC2086
  "$bin/searchtree" stats $inner > "$out/cache-$mode-stats.json"
  stop_up
done
echo "  cache runs done"
python3 scripts/bench_table.py "$out" > "$out/results.md"
cat "$out/results.md"
