#!/usr/bin/env bash
# Small changes to a large tree: what a load and its publish cost when they
# touch a few documents of every shard. A tree of the corpus COPIES times
# over (4 shards, 2 parents) takes LOADS loads of CHANGES replaced
# documents and CHANGES/5 deleted ones each (ids drawn at random, none
# deleted twice), each published; prints each load's wall time (publish
# included), from the tree's log the leaves' candidates (which segments
# each kept, merged or wrote deletes for, and how long each step took),
# then what the final version costs a query: the closed-loop peak (8
# connections) and the p99 at 100/s, result caches off; and last the query
# p99 at RATE/s while such loads run back to back (the files again, in
# turn) against idle, ROUNDS windows of each in alternation.
# Usage: [INPUT=FILE.jsonl[.gz]] [COPIES=10] [CHANGES=100] [LOADS=6]
#        [RATE=100] [ROUNDS=2] [BIN_DIR=target/release]
#        scripts/small_loads.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --workspace --quiet
  BIN_DIR="$PWD/target/release"
fi
bin="$BIN_DIR"
out="${1:-bench-results/small-loads-$(date -u +%Y%m%dT%H%M%SZ)}"; mkdir -p "$out"
input="${INPUT:-corpus-tools/data/wiki-summaries.jsonl.gz}"
copies="${COPIES:-10}"; changes="${CHANGES:-100}"; loads="${LOADS:-6}"; rate="${RATE:-100}"; rounds="${ROUNDS:-2}"

python3 - "$input" "$copies" "$changes" "$loads" "$out" <<'EOF'
import gzip, json, random, sys
src, copies, changes, loads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
opener = gzip.open if src.endswith(".gz") else open
lines = [json.loads(l) for l in opener(src, "rt") if l.strip()]
docs = [dict(d, id=f"{d['id']}#{c}") for c in range(copies) for d in lines]
with open(f"{out}/docs.jsonl", "w") as f:
    for d in docs:
        f.write(json.dumps(d) + "\n")
rng = random.Random(7)
live = list(range(len(docs)))
for n in range(1, loads + 1):
    rng.shuffle(live)
    deleted, live = live[: changes // 5], live[changes // 5 :]
    with open(f"{out}/changes-{n}.jsonl", "w") as f:
        for i in live[:changes]:
            d = docs[i]
            f.write(json.dumps(dict(d, body=d["body"] + f" revised in load {n}")) + "\n")
        for i in deleted:
            f.write(json.dumps({"id": docs[i]["id"], "op": "delete"}) + "\n")
EOF
docs=$(wc -l < "$out/docs.jsonl")
"$bin/searchtree" build --input "$out/docs.jsonl" --shards 4 --parents 2 --out "$out/tree" 2> "$out/build.log"
without_cache "$out/tree/topology.toml" "$out/tree/t.toml"
mv "$out/tree/t.toml" "$out/tree/topology.toml"
start_up "$bin" "$out/tree/topology.toml" "$out/up.log" \
  || { echo "the tree did not start, see $out/up.log" >&2; exit 1; }

now() { date +%s.%N; }
for n in $(seq "$loads"); do
  t0=$(now)
  "$bin/searchtree" load --root "$root" --input "$out/changes-$n.jsonl" > "$out/load-$n.txt" 2>> "$out/load.log"
  t1=$(now)
  python3 -c "print(f'{($t1 - $t0) * 1000:.0f}')" > "$out/load-$n.ms"
done
"$bin/searchtree" verify --root "$root" > "$out/verify.txt" 2>&1 || { echo "verify failed, see $out/verify.txt" >&2; exit 1; }
"$bin/searchtree" bench --root "$root" --max --connections 8 --warmup 1s --duration 8s --json "$out/peak.json" > "$out/peak.txt" 2>> "$out/bench.log"
"$bin/searchtree" bench --root "$root" --rate 100 --warmup 1s --duration 10s --json "$out/rate100.json" > "$out/rate100.txt" 2>> "$out/bench.log"

# Queried while small loads run back to back, against idle, alternating.
reload_loop() { # $1: round
  local n=0 start; start=$(now)
  while [ ! -e "$out/bench.done" ]; do
    "$bin/searchtree" load --root "$root" --input "$out/changes-$((n % loads + 1)).jsonl" >> "$out/reload.txt" 2>> "$out/load.log"
    n=$((n + 1))
  done
  echo "$n $start $(now)" > "$out/reload-$1.times"
}
for r in $(seq "$rounds"); do
  "$bin/searchtree" bench --root "$root" --rate "$rate" --warmup 1s --duration 15s --json "$out/idle-$r.json" > "$out/idle-$r.txt" 2>> "$out/bench.log"
  rm -f "$out/bench.done"
  reload_loop "$r" &
  reload_pid=$!
  "$bin/searchtree" bench --root "$root" --rate "$rate" --warmup 1s --duration 15s --json "$out/during-$r.json" > "$out/during-$r.txt" 2>> "$out/bench.log"
  touch "$out/bench.done"
  wait "$reload_pid"
done

python3 - "$out" "$loads" "$docs" "$changes" "$rounds" "$rate" <<'EOF' | tee "$out/summary.txt"
import re, statistics, sys
out, loads, docs, changes, rounds, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
strip = lambda s: re.sub(r"\x1b\[[0-9;]*m", "", s)
log = [strip(l) for l in open(f"{out}/up.log", errors="replace")]
field = lambda l, k: (re.search(rf"\b{k}=(\d+)", l) or [None, None])[1]
walls = [int(open(f"{out}/load-{n}.ms").read()) for n in range(1, loads + 1)]
print(f"tree: {docs} documents, 4 shards; {loads} loads of {changes} replaced and {changes // 5} deleted documents, each published")
print("load wall ms (publish included):", " ".join(map(str, walls)), f"median {statistics.median(walls):.0f}")
cands = [l for l in log if "candidate written" in l]
for k in ["kept", "merged", "with_deletes", "docs_read", "commit_ms", "left_ms", "write_ms"]:
    vals = [int(v) for v in (field(l, k) for l in cands) if v is not None]
    if vals:
        print(f"leaves' candidates, {k}: median {statistics.median(vals):.0f}, max {max(vals)} (of {len(vals)})")
import json
peak, low = (json.load(open(f"{out}/{n}.json")) for n in ("peak", "rate100"))
print(f"final version: peak {peak['rate_achieved']:.0f} q/s (8 connections); at 100/s p50 {low['latency_us']['p50'] / 1000:.2f} ms, p99 {low['latency_us']['p99'] / 1000:.2f} ms")
p99 = lambda name: [json.load(open(f"{out}/{name}-{r}.json"))["latency_us"]["p99"] / 1000 for r in range(1, rounds + 1)]
errors = lambda name: sum(sum(json.load(open(f"{out}/{name}-{r}.json"))["errors"].values()) for r in range(1, rounds + 1))
idle, during = p99(f"idle"), p99(f"during")
n = t = 0.0
for r in range(1, rounds + 1):
    k, t0, t1 = open(f"{out}/reload-{r}.times").read().split()
    n += int(k); t += float(t1) - float(t0)
print(f"queried at {rate}/s: p99 idle {statistics.median(idle):.2f} ms ({' '.join(f'{x:.2f}' for x in idle)}), "
      f"during small loads {statistics.median(during):.2f} ms ({' '.join(f'{x:.2f}' for x in during)}) = "
      f"{statistics.median(during) / statistics.median(idle):.2f}x idle; {n / t:.1f} loads/s back to back; "
      f"errors idle {errors('idle')}, during {errors('during')}")
EOF
