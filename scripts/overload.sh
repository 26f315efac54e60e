#!/usr/bin/env bash
# Overload: the tree's capacity C from a closed loop, then open loop at 1x,
# 2x, 3x and 4x C with a 100 ms budget, with admission control on and off,
# one fresh tree per run; after each run, one query shows whether the tree is
# back to normal, and the nodes' RSS idle and at peak. Then the same C
# stepped 0.5x to 4x in one run per mode (`bench --step-load`), with a chart
# of goodput and p99 against offered load.
# Usage: [INPUT=FILE.jsonl[.gz] | INPUT=DIR] [QUERIES=FILE] scripts/overload.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
bin=target/release
export SEARCHTREE_BIN_DIR="$PWD/$bin"
out="${1:-bench-results/overload-$(date -u +%Y%m%dT%H%M%SZ)}"; mkdir -p "$out"
input="${INPUT:-corpus-tools/data/wiki-summaries.jsonl.gz}"
input_flag="--input"; [ -d "$input" ] && input_flag="--input-dir"
queries=(); [ -n "${QUERIES:-}" ] && queries=(--queries "$(realpath "$QUERIES")")
"$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --out "$out/idx" 2> "$out/build.log"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start_tree() {
  local topology="$1" log="$2"
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  "$bin/searchtree" up --topology "$topology" > "$fifo" 2> "$log" &
  tree_pid=$!; pids+=("$tree_pid")
  local line; read -r line < "$fifo"; rm -f "$fifo"
  root="${line#READY root=}"
}
# RSS of the tree's node processes (the children of `up`), KiB, as NAME=RSS
# lines (pid for a name); sampled idle and then every 0.5 s under load.
rss_of_nodes() { for p in $(pgrep -P "$tree_pid"); do echo "$p $(ps -o rss= -p "$p" 2>/dev/null || echo 0)"; done; }
sample_rss() { # $1: file to write peak RSS per pid into, until $2 (a pid) exits
  while kill -0 "$2" 2>/dev/null; do rss_of_nodes >> "$1"; sleep 0.5; done
}
rss_ratio() { # idle file, samples file -> "max peak/idle over nodes"
  python3 -c "
import sys, collections
idle = {l.split()[0]: int(l.split()[1]) for l in open(sys.argv[1]) if l.split()}
peak = collections.defaultdict(int)
for l in open(sys.argv[2]):
    p, r = l.split(); peak[p] = max(peak[p], int(r))
ratios = [peak[p] / idle[p] for p in idle if idle[p] and p in peak]
print('RSS: idle %.0f-%.0f MiB per node, peak %.0f MiB, max peak/idle %.2f' % (min(idle.values())/1024, max(idle.values())/1024, max(peak.values() or [0])/1024, max(ratios or [0])))" "$1" "$2"; }
summ() { python3 -c "
import json,sys; r=json.load(open(sys.argv[1])); l=r['latency_us']; o=r.get('latency_ok_us',{})
print('%-14s sent %6d achieved %7.0f/s goodput %7.0f/s rejected %6d other-err %5d partial %5.1f%% p50 %7.1f p99 %7.1f ms | answers p99 %7.1f ms | loadgen %.2f' % (sys.argv[2], r['sent'], r['rate_achieved'], r.get('goodput',0), r.get('rejected',0), sum(r['errors'].values())-r.get('rejected',0), 100*r['partial_fraction'], l['p50']/1e3, l['p99']/1e3, o.get('p99',0)/1e3, r.get('loadgen_cpu',0)))" "$1" "$2"; }
# capacity
start_tree "$out/idx/topology.toml" "$out/cap.log"
"$bin/searchtree" bench "${queries[@]}" --root "$root" --max --connections 8 --duration 10s --warmup 2s --budget-ms 100 --json "$out/cap.json" > /dev/null 2>>"$out/bench.log"
kill "$tree_pid"; wait "$tree_pid" 2>/dev/null || true
C=$(python3 -c "import json; print(int(json.load(open('$out/cap.json'))['rate_achieved']))")
echo "capacity C = $C q/s (closed loop, 8 workers)"
awk '{ print } /^\[root\]$/ { print "admission = false" }' "$out/idx/topology.toml" > "$out/idx/noadm.toml"
# ROOT_EXTRA: more [root] keys for the admission-on runs, e.g.
# ROOT_EXTRA='admission_min_limit = 4'.
if [ -n "${ROOT_EXTRA:-}" ]; then
  awk -v extra="$ROOT_EXTRA" '{ print } /^\[root\]$/ { print extra }' "$out/idx/topology.toml" > "$out/idx/adm.toml"
  mv "$out/idx/adm.toml" "$out/idx/topology.toml"
fi
for mode in on off; do
  topo="$out/idx/topology.toml"; [ "$mode" = off ] && topo="$out/idx/noadm.toml"
  for x in 1 2 3 4; do
    start_tree "$topo" "$out/$mode-$x.log"
    rate=$((C * x))
    "$bin/searchtree" query --root "$root" paris > /dev/null 2>&1 || true
    rss_of_nodes > "$out/$mode-$x.rss-idle"
    "$bin/searchtree" bench "${queries[@]}" --root "$root" --rate "$rate" --duration 10s --warmup 1s --budget-ms 100 --json "$out/$mode-$x.json" > /dev/null 2>>"$out/bench.log" &
    bench_pid=$!
    : > "$out/$mode-$x.rss"
    sample_rss "$out/$mode-$x.rss" "$bench_pid"
    wait "$bench_pid" || true
    # back to normal within a second?
    after=$("$bin/searchtree" query --root "$root" --budget-ms 100 -k 3 paris 2>&1 | tail -1)
    kill "$tree_pid"; wait "$tree_pid" 2>/dev/null || true
    summ "$out/$mode-$x.json" "adm $mode ${x}xC"
    echo "   right after: $after"
    echo "   $(rss_ratio "$out/$mode-$x.rss-idle" "$out/$mode-$x.rss")"
  done
done
for mode in on off; do
  topo="$out/idx/topology.toml"; [ "$mode" = off ] && topo="$out/idx/noadm.toml"
  start_tree "$topo" "$out/steps-$mode.log"
  echo "step load, admission $mode:"
  "$bin/searchtree" bench "${queries[@]}" --root "$root" --step-load --capacity "$C" --duration 10s --warmup 1s --budget-ms 100 \
    --label "admission $mode" --json "$out/steps-$mode.json" --plot "$out/steps-$mode.svg" 2>>"$out/bench.log" || true
  kill "$tree_pid"; wait "$tree_pid" 2>/dev/null || true
done
