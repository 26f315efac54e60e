#!/usr/bin/env bash
# One-phase vs two-phase search, side by side in one run on this machine:
# the same tree (4 shards, 2 parents, result cache off) with the root in one
# phase (`one_phase = true`: leaves fill titles and snippets for their own
# top-k) and in two (the default: ids and scores from the tree, then titles
# and snippets fetched for the global top-k only). For each top-k, each mode:
# peak throughput (closed loop, 8 workers) and latency at a fixed rate (open
# loop). Modes alternate, so drift on the machine hits both alike.
# Writes the bench reports and a table (results.md) to the output directory.
#
# Usage: scripts/bench_two_phase.sh [--quick] [--out DIR] [--input FILE.jsonl[.gz] | --input-dir DIR]
#            [--rate R] [--top-k "10 50"] [--queries FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

quick=0
out="bench-results/two-phase-$(date -u +%Y%m%dT%H%M%SZ)"
input="corpus-tools/data/wiki-summaries.jsonl.gz"
input_flag="--input"
rate=200
top_ks="10 50"
queries=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    --input) input="$2"; input_flag="--input"; shift ;;
    --input-dir) input="$2"; input_flag="--input-dir"; shift ;;
    --rate) rate="$2"; shift ;;
    --queries) queries=(--queries "$(realpath "$2")"); shift ;;
    --top-k) top_ks="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then duration=4s; warmup=1s; else duration=15s; warmup=3s; fi

cargo build --release --quiet -p searchtree -p searchtree-leaf -p searchtree-parent -p searchtree-root
mkdir -p "$out/bin"
# A copy of the binaries: a rebuild during the run must not change them.
cp target/release/searchtree target/release/searchtree-leaf target/release/searchtree-parent \
  target/release/searchtree-root "$out/bin/"
bin="$(realpath "$out/bin")"
echo "writing to $out"

"$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --out "$out/index" 2> "$out/build.log"
topo="$out/index/topology.toml"
# `build` writes its own choice of phases into the topology; each mode's
# topology replaces it.
without_cache "$topo" "$out/index/nocache.toml"
for mode in one two; do
  awk -v phase="$([ "$mode" = one ] && echo true || echo false)" \
    '!/^one_phase = / { print } /^\[root\]$/ { print "one_phase = " phase }' \
    "$out/index/nocache.toml" > "$out/index/$mode.toml"
done

# start_tree TOPOLOGY LOG: runs the tree; sets root (see scripts/lib.sh).
start_tree() {
  start_up "$bin" "$1" "$2" || { echo "the tree did not start, see $2" >&2; exit 1; }
}

bench() { "$bin/searchtree" bench --warmup "$warmup" "${queries[@]}" "$@" 2>> "$out/bench.log"; }

for k in $top_ks; do
  for mode in two one; do
    start_tree "$out/index/$mode.toml" "$out/$mode-k$k.log"
    bench --root "$root" --max --connections 8 --duration "$duration" --top-k "$k" \
      --budget-ms 1000 --json "$out/$mode-k$k-max.json" > /dev/null
    bench --root "$root" --rate "$rate" --duration "$duration" --top-k "$k" \
      --budget-ms 1000 --json "$out/$mode-k$k-rate.json" > /dev/null
    nodes=$(grep -oE 'node=[a-z0-9-]+ addr=[0-9.:]+' "$out/$mode-k$k.log" | sed 's/.*addr=/--addr /' | tr '\n' ' ')
    # shellcheck disable=SC2086
    "$bin/searchtree" stats $nodes > "$out/$mode-k$k-stats.json"
    stop_up
    echo "  k=$k $mode done"
  done
done

python3 - "$out" "$rate" "$top_ks" > "$out/results.md" <<'EOF'
import json, sys
out, rate, top_ks = sys.argv[1], sys.argv[2], sys.argv[3].split()
def load(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)
print(f"| top-k | mode | peak (closed loop, 8 workers) q/s | p50 at {rate}/s ms | p99 at {rate}/s ms | partial | unfetched answers (root) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for k in top_ks:
    for mode, label in (("one", "one phase"), ("two", "two phases")):
        peak, at = load(f"{mode}-k{k}-max"), load(f"{mode}-k{k}-rate")
        lat = at["latency_us"]
        try:
            stats = load(f"{mode}-k{k}-stats")
            roots = [n for n in stats["nodes"].values() if n.get("role") == "root"]
            unfetched = roots[0]["counters"].get("answers_unfetched", 0) if roots else "?"
        except (OSError, ValueError, KeyError):
            unfetched = "?"
        print(f"| {k} | {label} | {peak['rate_achieved']:.0f} | {lat['p50']/1000:.2f} | {lat['p99']/1000:.2f} "
              f"| {at['partial_fraction']:.3f} | {unfetched} |")
EOF
cat "$out/results.md"
