#!/usr/bin/env bash
# Shedding below the root: a tree of 4 shards, 2 replicas each, 2 parents,
# result caches off, offered RATE queries/s (open loop, Poisson) with a
# BUDGET ms budget — past what it can take, so that the root's admission
# and the leaves' own queues both refuse work. Counts, per run, the replicas
# taken out of rotation (the `ejected` lines of the nodes' logs, by a failed
# request or by health checks) beside the bench's outcome. With several
# --bin-dir sets, the runs alternate between them, each set with its own
# build of the corpus; a set's --routing adds lines to its topology's
# [routing] table (the same --bin-dir twice, with and without
# `retry_ratio = 1`, compares the retry budget with no budget). The
# parents' retries, sent and held back by the budget, are summed from their
# counters at the end of each run.
# --no-admission turns the root's admission control off, so that the
# leaves' own queues do all the shedding and the parents retry on siblings;
# --leaf-queue N lets N requests wait at each leaf before it refuses more.
# Usage: scripts/shedding.sh [--rounds N] [--rate R] [--budget-ms B] [--no-admission] [--leaf-queue N]
#          [--bin-dir DIR --label NAME [--routing 'KEY = VALUE']]... [OUT_DIR]
#        (default: target/release, label "now", after `cargo build --release --workspace`)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds=3 rate=3000 budget=50 admission=true leaf_queue="" out="" bins=() labels=() routings=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --budget-ms) budget="$2"; shift ;;
    --no-admission) admission=false ;;
    --leaf-queue) leaf_queue="$2"; shift ;;
    --bin-dir) bins+=("$(realpath "$2")"); routings+=(""); shift ;;
    --routing) routings[${#bins[@]}-1]="$2"; shift ;;
    --label) labels+=("$2"); shift ;;
    *) out="$1" ;;
  esac
  shift
done
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --workspace --quiet
  bins=("$PWD/target/release"); labels=("now"); routings=("")
fi
out="${out:-bench-results/shedding-$(date -u +%Y%m%dT%H%M%SZ)}"; mkdir -p "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
for i in "${!bins[@]}"; do
  dir="$out/${labels[$i]}"
  "${bins[$i]}/searchtree" build --input corpus-tools/data/wiki-summaries.jsonl.gz \
    --shards 4 --parents 2 --replicas 2 --out "$dir/idx" > "$dir.build.log" 2>&1
  without_cache "$dir/idx/topology.toml" "$dir/idx/t.toml"
  mv "$dir/idx/t.toml" "$dir/idx/topology.toml"
  if [ "$admission" = false ]; then
    awk '{ print } /^\[root\]$/ { print "admission = false" }' "$dir/idx/topology.toml" > "$dir/idx/t.toml"
    mv "$dir/idx/t.toml" "$dir/idx/topology.toml"
  fi
  if [ -n "$leaf_queue" ]; then
    awk -v n="$leaf_queue" '{ print } /^\[\[leaf\]\]$/ { print "max_queued_searches = " n }' \
      "$dir/idx/topology.toml" > "$dir/idx/t.toml"
    mv "$dir/idx/t.toml" "$dir/idx/topology.toml"
  fi
  if [ -n "${routings[$i]}" ]; then
    printf '\n[routing]\n%s\n' "${routings[$i]}" >> "$dir/idx/topology.toml"
  fi
done
# parent_counters LOG: the parents' retries and retries held back by the
# budget, summed, as "RETRIES THROTTLED".
parent_counters() {
  local addrs=()
  for a in $(grep -o 'node serving node=parent-[0-9]* addr=[0-9.:]*' "$1" | sed 's/.*addr=//'); do
    addrs+=(--addr "$a")
  done
  "$bin/searchtree" stats "${addrs[@]}" | python3 -c '
import json, sys
total = json.load(sys.stdin)["total"]
print(total["retries"], total["retries_throttled"])'
}
printf '| set | round | goodput/s | rejected | other errors | partial | replicas ejected (by request, by check) | retries (held back) |\n|---|---|---|---|---|---|---|---|\n'
for round in $(seq 1 "$rounds"); do
  for i in "${!bins[@]}"; do
    label="${labels[$i]}" dir="$out/${labels[$i]}"
    log="$dir/up-$round.log"
    start_up "${bins[$i]}" "$dir/idx/topology.toml" "$log" --state-dir "$dir/state-$round"
    sleep 3
    "${bins[$i]}/searchtree" bench --root "$root" --rate "$rate" --duration 8s --warmup 1s \
      --budget-ms "$budget" > "$dir/bench-$round.txt" 2>&1
    read -r retries throttled < <(bin="${bins[$i]}" parent_counters "$log")
    stop_up
    goodput=$(grep -o 'goodput [0-9.]*/s' "$dir/bench-$round.txt" | head -1 | cut -d' ' -f2)
    rejected=$(grep -o 'rejected (RESOURCE_EXHAUSTED) [0-9]*' "$dir/bench-$round.txt" | awk '{print $3}')
    other=$(grep -o 'other errors [0-9]*' "$dir/bench-$round.txt" | awk '{print $3}')
    partial=$(grep -o 'partial [0-9.]*%' "$dir/bench-$round.txt" | awk '{print $2}')
    by_request=$(grep -c 'ejected: request failed' "$log" || true)
    by_check=$(grep -c 'ejected: health check' "$log" || true)
    echo "| $label | $round | $goodput | $rejected | $other | $partial | $((by_request + by_check)) ($by_request, $by_check) | $retries ($throttled) |"
  done
done
