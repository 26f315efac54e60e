#!/usr/bin/env bash
# Overload: the tree's capacity C from a closed loop, then open loop at 1x,
# 2x, 3x and 4x C with a 100 ms budget, with admission control on and off,
# one fresh tree per run; after each run, one query shows whether the tree is
# back to normal, and the nodes' memory idle and at peak: anonymous (heap,
# queues, stacks) and file-backed (mostly the index's mmap'd pages) apart. Then the same C
# stepped 0.5x to 4x in one run per mode (`bench --step-load`), with a chart
# of goodput and p99 against offered load.
# Usage: [INPUT=FILE.jsonl[.gz] | INPUT=DIR] [QUERIES=FILE] scripts/overload.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --workspace --quiet
bin="$PWD/target/release"
out="${1:-bench-results/overload-$(date -u +%Y%m%dT%H%M%SZ)}"; mkdir -p "$out"
input="${INPUT:-corpus-tools/data/wiki-summaries.jsonl.gz}"
input_flag="--input"; [ -d "$input" ] && input_flag="--input-dir"
queries=(); [ -n "${QUERIES:-}" ] && queries=(--queries "$(realpath "$QUERIES")")
"$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --out "$out/idx" 2> "$out/build.log"
# The result cache off at the root and the parents: the bundled queries
# repeat, and overload is about what the search path can take.
without_cache "$out/idx/topology.toml" "$out/idx/t.toml"
mv "$out/idx/t.toml" "$out/idx/topology.toml"
# start_tree TOPOLOGY LOG: runs the tree; sets root and up_pid (scripts/lib.sh).
start_tree() {
  start_up "$bin" "$1" "$2" || { echo "the tree did not start, see $2" >&2; exit 1; }
}
# Memory of the tree's node processes (the children of `up`), KiB, as
# "PID RSS_ANON RSS_FILE" lines from /proc/PID/status; sampled idle and then
# every 0.5 s under load. Total RSS would mix the two: file-backed pages are
# the index's mmap'd files, which grow with the pages queries touch and say
# nothing about heap or queues; anonymous memory is what load can pile up.
mem_of_nodes() {
  for p in $(pgrep -P "$up_pid"); do
    awk -v p="$p" '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { if (a != "") print p, a, f + 0 }' "/proc/$p/status" 2>/dev/null || true
  done
}
sample_mem() { # $1: file to append samples to, until $2 (a pid) exits
  while kill -0 "$2" 2>/dev/null; do mem_of_nodes >> "$1"; sleep 0.5; done
}
mem_ratio() { # idle file, samples file -> idle and peak per kind; the 2x check is on RssAnon
  python3 -c "
import sys, collections
def load(path):
    return [l.split() for l in open(path) if len(l.split()) == 3]
idle = {p: (int(a), int(f)) for p, a, f in load(sys.argv[1])}
peak = collections.defaultdict(lambda: (0, 0))
for p, a, f in load(sys.argv[2]):
    peak[p] = (max(peak[p][0], int(a)), max(peak[p][1], int(f)))
def kind(i, name):
    ratios = [peak[p][i] / idle[p][i] for p in idle if idle[p][i] and p in peak]
    return '%s idle %.1f-%.1f MiB per node, peak %.1f MiB, max peak/idle %.2f' % (
        name, min(v[i] for v in idle.values()) / 1024, max(v[i] for v in idle.values()) / 1024,
        max([v[i] for v in peak.values()] or [0]) / 1024, max(ratios or [0]))
if not idle:
    print('memory: no samples'); sys.exit()
anon = max([peak[p][0] / idle[p][0] for p in idle if idle[p][0] and p in peak] or [0])
print('memory: %s; %s; RssAnon within 2x idle: %s' % (kind(0, 'RssAnon'), kind(1, 'RssFile'), 'yes' if anon <= 2 else 'NO'))" "$1" "$2"; }
summ() { python3 -c "
import json,sys; r=json.load(open(sys.argv[1])); l=r['latency_us']; o=r.get('latency_ok_us',{})
print('%-14s sent %6d achieved %7.0f/s goodput %7.0f/s rejected %6d other-err %5d partial %5.1f%% p50 %7.1f p99 %7.1f ms | answers p99 %7.1f ms | loadgen %.2f' % (sys.argv[2], r['sent'], r['rate_achieved'], r.get('goodput',0), r.get('rejected',0), sum(r['errors'].values())-r.get('rejected',0), 100*r['partial_fraction'], l['p50']/1e3, l['p99']/1e3, o.get('p99',0)/1e3, r.get('loadgen_cpu',0)))" "$1" "$2"; }
# capacity
start_tree "$out/idx/topology.toml" "$out/cap.log"
"$bin/searchtree" bench "${queries[@]}" --root "$root" --max --connections 8 --duration 10s --warmup 2s --budget-ms 100 --json "$out/cap.json" > /dev/null 2>>"$out/bench.log"
stop_up
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
    mem_of_nodes > "$out/$mode-$x.mem-idle"
    "$bin/searchtree" bench "${queries[@]}" --root "$root" --rate "$rate" --duration 10s --warmup 1s --budget-ms 100 --json "$out/$mode-$x.json" > /dev/null 2>>"$out/bench.log" &
    bench_pid=$!
    : > "$out/$mode-$x.mem"
    sample_mem "$out/$mode-$x.mem" "$bench_pid"
    wait "$bench_pid" || true
    # back to normal within a second?
    after=$("$bin/searchtree" query --root "$root" --budget-ms 100 -k 3 paris 2>&1 | tail -1)
    stop_up
    summ "$out/$mode-$x.json" "adm $mode ${x}xC"
    echo "   right after: $after"
    echo "   $(mem_ratio "$out/$mode-$x.mem-idle" "$out/$mode-$x.mem")"
  done
done
for mode in on off; do
  topo="$out/idx/topology.toml"; [ "$mode" = off ] && topo="$out/idx/noadm.toml"
  start_tree "$topo" "$out/steps-$mode.log"
  echo "step load, admission $mode:"
  "$bin/searchtree" bench "${queries[@]}" --root "$root" --step-load --capacity "$C" --duration 10s --warmup 1s --budget-ms 100 \
    --label "admission $mode" --json "$out/steps-$mode.json" --plot "$out/steps-$mode.svg" 2>>"$out/bench.log" || true
  stop_up
done
