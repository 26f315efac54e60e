#!/usr/bin/env bash
# Capacity of the tree against one index, for one or more sets of binaries
# side by side in one run (e.g. before and after a change):
#   1. peak throughput (closed loop, 8 workers): one index in-process
#      (`bench --direct`) and the tree (4 shards, 2 parents); over the tree's
#      run, each node's CPU time from /proc/PID/stat, in CPU-ms per query by
#      role (root, parents, leaves): where the cost is;
#   2. open loop at 100/s and at 50% of that set's tree peak, direct and tree
#      at the same rate: p50/p99/p99.9 and tree ÷ direct p99;
#   3. bytes per query between levels over the tree's 100/s run, from the
#      kernel's per-socket TCP counters (scripts/socket_bytes.py), so any
#      binaries can be measured: root<->bench, root<->parents,
#      parents<->leaves, each way.
# Every set builds its own indexes with its own `searchtree build` (formats
# may differ) and runs its own `up` and `bench`. Runs alternate between sets
# scenario by scenario, so machine noise hits every set alike; every set's
# tree stays up (idle when not measured) for the whole run. The result cache
# is turned off where the binaries have one. Writes every report and a table
# (results.md) to the output directory. See BENCHMARKS.md, Method.
#
# Usage: scripts/capacity.sh [--quick] [--out DIR] [--input FILE.jsonl[.gz] | --input-dir DIR]
#                            [--queries FILE] [--bin-dir DIR --label NAME]...
#   --quick      short runs (a smoke test); numbers are noisy
#   --bin-dir    a directory holding searchtree and searchtree-{root,parent,leaf};
#                repeat with --label for each set, e.g.
#                --bin-dir /work/prof-target/release --label before --bin-dir target/release --label after
#                (default: target/release, label "now", after `cargo build --release --workspace`;
#                a set in this workspace's target/release is rebuilt first)
#   --up-flags / --bench-flags  extra flags for the last --bin-dir's `up` and
#                `bench` (one string, split on spaces), e.g. the same binaries
#                twice, the second with --up-flags "--tls-dir DIR" --bench-flags
#                "--tls-ca DIR/ca.pem" to measure what TLS costs
#   --input      corpus (default: the bundled Wikipedia summaries); --input-dir: a directory of text files
#   --queries    the queries to send, one per line (default: the bundled ones)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

quick=0
out="bench-results/capacity-$(date -u +%Y%m%dT%H%M%SZ)"
input="corpus-tools/data/wiki-summaries.jsonl.gz"
input_flag="--input"
queries=()
bin_dirs=()
labels=()
up_flags=()
bench_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    --input) input="$2"; input_flag="--input"; shift ;;
    --input-dir) input="$2"; input_flag="--input-dir"; shift ;;
    --queries) queries=(--queries "$(realpath "$2")"); shift ;;
    --bin-dir) bin_dirs+=("$(realpath "$2")"); up_flags+=(""); bench_flags+=(""); shift ;;
    --up-flags) up_flags[${#bin_dirs[@]}-1]="$2"; shift ;;
    --bench-flags) bench_flags[${#bin_dirs[@]}-1]="$2"; shift ;;
    --label) labels+=("$2"); shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#bin_dirs[@]} = 0 ]; then
  bin_dirs=("$PWD/target/release")
  up_flags=(""); bench_flags=("")
  [ ${#labels[@]} = 0 ] && labels=(now)
fi
if [ ${#labels[@]} != ${#bin_dirs[@]} ]; then
  echo "give one --label per --bin-dir" >&2; exit 2
fi
for i in "${!bin_dirs[@]}"; do
  if ! [[ "${labels[$i]}" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "label '${labels[$i]}': use letters, digits, '.', '_' or '-'" >&2; exit 2
  fi
  for j in "${!labels[@]}"; do
    if [ "$i" != "$j" ] && [ "${labels[$i]}" = "${labels[$j]}" ]; then
      echo "label '${labels[$i]}' given twice" >&2; exit 2
    fi
  done
  if [ "${bin_dirs[$i]}" = "$PWD/target/release" ]; then
    cargo build --release --workspace --quiet
  fi
  for b in searchtree searchtree-root searchtree-parent searchtree-leaf; do
    [ -x "${bin_dirs[$i]}/$b" ] || { echo "${bin_dirs[$i]}/$b: not found" >&2; exit 2; }
  done
done

if [ "$quick" = 1 ]; then warmup=1; duration=3; else warmup=3; duration=20; fi
budget=1000
mkdir -p "$out"
out="$(realpath "$out")"
echo "writing to $out"

# Starts set $1's tree; sets root_of[$1], up_pid_of[$1]. Tries the topology
# with the result cache off first; binaries with no cache refuse that key,
# and then get the plain topology.
declare -A root_of up_pid_of bin_of up_flags_of bench_flags_of
start_tree() {
  local label="$1" bin="$2" dir="$out/$1" topology
  local -a extra
  read -r -a extra <<< "${up_flags_of[$label]}"
  for topology in "$dir/tree-index/nocache.toml" "$dir/tree-index/topology.toml"; do
    if start_up "$bin" "$topology" "$dir/tree.log" "${extra[@]}"; then
      up_pid_of[$label]="$up_pid"
      root_of[$label]="$root"
      echo "  $label: tree up at ${root_of[$label]} ($(basename "$topology"))"
      return
    fi
    cp "$dir/tree.log" "$dir/tree-$(basename "$topology" .toml).failed.log"
  done
  echo "$label: the tree did not start; see $dir/tree-*.failed.log" >&2; exit 1
}

for i in "${!bin_dirs[@]}"; do
  label="${labels[$i]}"; bin="${bin_dirs[$i]}"; dir="$out/$label"; bin_of[$label]="$bin"
  up_flags_of[$label]="${up_flags[$i]}"; bench_flags_of[$label]="${bench_flags[$i]}"
  mkdir -p "$dir"
  echo "$label: $bin ${up_flags[$i]:+up: ${up_flags[$i]}} ${bench_flags[$i]:+bench: ${bench_flags[$i]}}" > "$dir/bin-dir.txt"
  "$bin/searchtree" build "$input_flag" "$input" --shards 4 --parents 2 --out "$dir/tree-index" 2> "$dir/build-tree.log"
  "$bin/searchtree" build "$input_flag" "$input" --shards 1 --out "$dir/one-index" 2> "$dir/build-one.log"
  without_cache "$dir/tree-index/topology.toml" "$dir/tree-index/nocache.toml"
  start_tree "$label" "$bin"
done

# bench LABEL NAME ARGS...: set LABEL's bench, report NAME.json. With
# WATCH=1 in the environment, snapshots of the tree's sockets and CPU are
# taken just after the warm-up and just before the end of the measured
# window (while the bench's connections are still open), and
# NAME-levels.json gets bytes per query per link and CPU-ms per query per
# role.
bench() {
  local label="$1" name="$2"; shift 2
  local bin="${bin_of[$label]}" dir="$out/$label" start bench_pid watcher=""
  local -a extra=()
  # The set's bench flags go to runs against its tree only.
  [ "$1" = --root ] && read -r -a extra <<< "${bench_flags_of[$label]}"
  start=$(date +%s.%N)
  "$bin/searchtree" bench "${extra[@]}" --warmup "${warmup}s" --duration "${duration}s" --budget-ms "$budget" \
    "${queries[@]}" "$@" --json "$dir/$name.json" > "$dir/$name.txt" 2>> "$dir/bench.log" &
  bench_pid=$!
  if [ "${WATCH:-0}" = 1 ]; then
    python3 scripts/socket_bytes.py watch --up-log "$dir/tree.log" --up-pid "${up_pid_of[$label]}" \
      --start "$start" --at "$(awk "BEGIN { print $warmup + 0.1 }")" --at "$(awk "BEGIN { print $warmup + $duration - 0.2 }")" \
      --out "$dir/$name-watch.json" &
    watcher=$!
  fi
  wait "$bench_pid" || { echo "$label $name: bench failed, see $dir/bench.log" >&2; exit 1; }
  if [ -n "$watcher" ]; then
    wait "$watcher"
    python3 scripts/socket_bytes.py report --watch "$dir/$name-watch.json" --bench-pid "$bench_pid" \
      --completed "$(json "$dir/$name.json" completed)" --duration "$(json "$dir/$name.json" duration_s)" \
      > "$dir/$name-levels.json"
  fi
}
json() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# 1. Peak throughput, direct then tree, set by set.
for label in "${labels[@]}"; do
  bench "$label" direct-max --direct "$out/$label/one-index/shards/shard-000" --max --connections 8
done
echo "  direct peak done"
for label in "${labels[@]}"; do
  WATCH=1 bench "$label" tree-max --root "${root_of[$label]}" --max --connections 8
done
echo "  tree peak done"
# 2. and 3. Open loop at 100/s and at half of each set's tree peak.
for load in 100 half; do
  for label in "${labels[@]}"; do
    rate=100
    [ "$load" = half ] && rate=$(python3 -c "import json; print(max(1, round(json.load(open('$out/$label/tree-max.json'))['rate_achieved'] / 2)))")
    bench "$label" "direct-$load" --direct "$out/$label/one-index/shards/shard-000" --rate "$rate"
    WATCH=1 bench "$label" "tree-$load" --root "${root_of[$label]}" --rate "$rate"
  done
  echo "  open loop ($load) done"
done

python3 - "$out" "${labels[@]}" > "$out/results.md" <<'EOF'
import json, os, platform, sys
from datetime import datetime, timezone
out, labels = sys.argv[1], sys.argv[2:]

def load(label, name):
    path = os.path.join(out, label, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

def ms(us):
    return f"{us / 1000:.2f}"

def errors(r):
    n, rejected = sum(r["errors"].values()), r.get("rejected", 0)
    return f"{n} ({rejected} rejected)" if rejected else f"{n}"

cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
print(f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), "
      f"{platform.system()} {platform.release()}.\n")
for label in labels:
    print(f"- {label}: {open(os.path.join(out, label, 'bin-dir.txt')).read().split(': ', 1)[1].strip()}")
print()

print("### Peak throughput (closed loop, 8 workers)\n")
print("| set | direct peak/s | tree peak/s | tree ÷ direct | errors direct/tree | partial tree |")
print("|---|---|---|---|---|---|")
for label in labels:
    d, t = load(label, "direct-max"), load(label, "tree-max")
    if d and t:
        ratio = t["rate_achieved"] / d["rate_achieved"] if d["rate_achieved"] else float("nan")
        print(f"| {label} | {d['rate_achieved']:.0f} | {t['rate_achieved']:.0f} | {ratio:.2f} "
              f"| {errors(d)}/{errors(t)} | {100 * t['partial_fraction']:.2f}% |")

print("\n### Open loop: direct vs tree at the same rate (budget 1 s)\n")
print("| set | load | rate/s | direct p50 / p99 / p99.9 ms | tree p50 / p99 / p99.9 ms "
      "| tree ÷ direct p99 | errors direct/tree | partial tree |")
print("|---|---|---|---|---|---|---|---|")
for load_name, title in (("100", "100/s"), ("half", "50% of tree peak")):
    for label in labels:
        d, t = load(label, f"direct-{load_name}"), load(label, f"tree-{load_name}")
        if not (d and t):
            continue
        dl, tl = d["latency_us"], t["latency_us"]
        ratio = tl["p99"] / dl["p99"] if dl["p99"] else float("nan")
        print(f"| {label} | {title} | {t['rate_target']:.0f} "
              f"| {ms(dl['p50'])} / {ms(dl['p99'])} / {ms(dl['p999'])} "
              f"| {ms(tl['p50'])} / {ms(tl['p99'])} / {ms(tl['p999'])} | {ratio:.2f} "
              f"| {errors(d)}/{errors(t)} | {100 * t['partial_fraction']:.2f}% |")

links = ("root<->bench", "root<->parents", "parents<->leaves")
print("\n### Bytes per query between levels (tree, 100/s; TCP payload, down = requests / up = answers)\n")
print("| set | " + " | ".join(f"{l} down / up" for l in links) + " | total | sockets opened / closed meanwhile |")
print("|---|" + "---|" * (len(links) + 2))
for label in labels:
    r = load(label, "tree-100-levels")
    if not r:
        continue
    cells, total, opened, closed = [], 0.0, 0, 0
    for name in links:
        l = r["links"].get(name)
        if l is None or l["down_per_query"] is None:
            cells.append("–")
            continue
        cells.append(f"{l['down_per_query']:.0f} / {l['up_per_query']:.0f}")
        total += l["down_per_query"] + l["up_per_query"]
    for l in r["links"].values():
        opened += l["new_sockets"]; closed += l["vanished_sockets"]
    print(f"| {label} | " + " | ".join(cells) + f" | {total:.0f} | {opened} / {closed} |")

roles = ("root", "parent", "leaf")
print("\n### CPU-ms per query by role (node processes' utime + stime)\n")
print("| set | run | queries/s | root | parents (all) | leaves (all) | total | bench's own CPU (cores) |")
print("|---|---|---|---|---|---|---|---|")
for run, title in (("tree-max", "closed loop (peak)"), ("tree-100", "100/s")):
    for label in labels:
        r, b = load(label, f"{run}-levels"), load(label, run)
        if not (r and b):
            continue
        cells = [f"{r['cpu'][x]['cpu_ms_per_query']:.3f}" if x in r["cpu"] and r["cpu"][x]["cpu_ms_per_query"] is not None else "–"
                 for x in roles]
        total = sum(r["cpu"][x]["cpu_ms_per_query"] or 0 for x in roles if x in r["cpu"])
        lg = b.get("loadgen_cpu")
        lg = f"{lg:.2f}" if lg is not None else "–"
        print(f"| {label} | {title} | {b['rate_achieved']:.0f} | " + " | ".join(cells)
              + f" | {total:.3f} | {lg} |")
EOF
cat "$out/results.md"
