#!/usr/bin/env bash
# Loading into a running tree, measured side by side with an offline build:
#   1. `searchtree build` of the load's documents (4 shards): documents/s.
#   2. A 4-shard tree (2 parents, REPLICAS leaves per shard) built from a
#      seed of SEED_DOCS documents; `searchtree load` of the same documents,
#      publish included: documents/s. Ratio load/build.
#   3. Query p99 at RATE/s with the tree idle, then with the same bench
#      running while the documents are loaded again (all replaced) and
#      published, back to back, for the whole bench; ROUNDS times in
#      alternation. Ratio of the medians, during/idle.
# The load is the corpus COPIES times over with distinct ids, so that it
# lasts long enough to query through.
# Usage: [INPUT=FILE.jsonl[.gz]] [COPIES=3] [SEED_DOCS=1000] [REPLICAS=1]
#        [RATE=100] [ROUNDS=3] [LOAD_FLAGS='--in-flight 8'] [ROOT_KEYS='load_pace = false']
#        scripts/load_bench.sh [OUT_DIR]
#        (BENCH_FLAGS: extra flags for the query bench, e.g. --profile-tail)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --workspace --quiet
bin="$PWD/target/release"
out="${1:-bench-results/load-$(date -u +%Y%m%dT%H%M%SZ)}"; mkdir -p "$out"
input="${INPUT:-corpus-tools/data/wiki-summaries.jsonl.gz}"
load_flags=(${LOAD_FLAGS:-}); copies="${COPIES:-3}"; seed_docs="${SEED_DOCS:-1000}"; replicas="${REPLICAS:-1}"; rate="${RATE:-100}"; rounds="${ROUNDS:-3}"

# The documents: COPIES copies of the corpus, ids suffixed per copy; the
# first SEED_DOCS of them seed the tree.
python3 - "$input" "$copies" "$seed_docs" "$out" <<'EOF'
import gzip, json, sys
src, copies, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
opener = gzip.open if src.endswith(".gz") else open
lines = [json.loads(l) for l in opener(src, "rt") if l.strip()]
with open(f"{out}/docs.jsonl", "w") as docs, open(f"{out}/seed.jsonl", "w") as first:
    n = 0
    for c in range(copies):
        for d in lines:
            d = dict(d, id=f"{d['id']}#{c}")
            line = json.dumps(d) + "\n"
            docs.write(line)
            if n < seed:
                first.write(line)
            n += 1
EOF
docs=$(wc -l < "$out/docs.jsonl")
now() { date +%s.%N; }
rate_of() { python3 -c "print(f'{$1 / ($3 - $2):.0f}')"; }

t0=$(now)
"$bin/searchtree" build --input "$out/docs.jsonl" --shards 4 --parents 2 --out "$out/build" 2> "$out/build.log"
t1=$(now)
build_rate=$(rate_of "$docs" "$t0" "$t1")

"$bin/searchtree" build --input "$out/seed.jsonl" --shards 4 --parents 2 --replicas "$replicas" --out "$out/tree" 2>> "$out/build.log"
# The result cache off at the root and the parents: the bundled queries
# repeat within a run, and a publish empties the caches, so with them on the
# comparison would be of cache hits against misses, not of search latency.
without_cache "$out/tree/topology.toml" "$out/tree/t.toml"
mv "$out/tree/t.toml" "$out/tree/topology.toml"
# ROOT_KEYS: more keys for the root, e.g. 'load_pace = false' to compare
# loads the root does not pace.
if [ -n "${ROOT_KEYS:-}" ]; then
  awk -v keys="$ROOT_KEYS" '{ print } /^\[root\]$/ { print keys }' "$out/tree/topology.toml" > "$out/tree/t.toml"
  mv "$out/tree/t.toml" "$out/tree/topology.toml"
fi
start_up "$bin" "$out/tree/topology.toml" "$out/up.log" \
  || { echo "the tree did not start, see $out/up.log" >&2; exit 1; }

t0=$(now)
"$bin/searchtree" load "${load_flags[@]}" --root "$root" --input "$out/docs.jsonl" > "$out/load1.txt" 2>> "$out/load.log"
t1=$(now)
load_rate=$(rate_of "$docs" "$t0" "$t1")

bench() { # $1: name; queries the root at RATE/s for $2
  "$bin/searchtree" bench ${BENCH_FLAGS:-} --root "$root" --rate "$rate" --duration "$2" --warmup 1s --json "$out/$1.json" > "$out/$1.txt" 2>> "$out/bench.log"
}
# Idle and loaded windows alternate, ROUNDS times, so that the machine's
# drift hits both alike; the medians of their p99s are compared.
reload_loop() { # $1: round
  local n=0 start; start=$(now)
  while [ ! -e "$out/bench.done" ]; do
    "$bin/searchtree" load "${load_flags[@]}" --root "$root" --input "$out/docs.jsonl" >> "$out/reload.txt" 2>> "$out/load.log"
    n=$((n + 1))
  done
  echo "$n $start $(now)" > "$out/reload-$1.times"
}
for r in $(seq "$rounds"); do
  bench "idle-$r" 15s
  # Loads (every document replaced) and publishes back to back, for as
  # long as the bench queries: each query meets a load or a publish under way.
  rm -f "$out/bench.done"
  reload_loop "$r" &
  reload_pid=$!
  bench "during-$r" 15s
  touch "$out/bench.done"
  wait "$reload_pid"
done
read -r reloads reload_rate < <(python3 - "$out" "$rounds" "$docs" <<'EOF2'
import sys
out, rounds, docs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = t = 0.0
for r in range(1, rounds + 1):
    k, t0, t1 = open(f"{out}/reload-{r}.times").read().split()
    n += int(k); t += float(t1) - float(t0)
print(int(n), f"{n * docs / t:.0f}")
EOF2
)
p99s() { # $1: idle or during: every round's p99 (ms) and their median
  python3 - "$out" "$rounds" "$1" <<'EOF2'
import json, statistics, sys
out, rounds, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = [json.load(open(f"{out}/{name}-{r}.json"))["latency_us"]["p99"] / 1000 for r in range(1, rounds + 1)]
print(f"{statistics.median(p):.2f}", " ".join(f"{x:.2f}" for x in p))
EOF2
}
errors() { python3 -c "import json, sys; print(sum(sum(json.load(open(f))['errors'].values()) for f in sys.argv[1:]))" "$out"/"$1"-*.json; }
read -r idle_p99 idle_all < <(p99s idle)
read -r during_p99 during_all < <(p99s during)

{
  echo "documents: $docs (corpus x $copies), tree seeded with $seed_docs, $replicas replica(s) per shard, 4 shards, 2 parents"
  echo "build:                 $build_rate docs/s"
  echo "load into the tree:    $load_rate docs/s (publish included) = $(python3 -c "print(f'{$load_rate / $build_rate:.2f}')") x build"
  echo "reload (all replaced): $reload_rate docs/s over $reloads loads and publishes back to back, while queried at $rate/s"
  echo "query p99 idle:        $idle_p99 ms (median of $rounds windows: $idle_all), errors $(errors idle)"
  echo "query p99 during load: $during_p99 ms (median of $rounds windows: $during_all), errors $(errors during) = $(python3 -c "print(f'{$during_p99 / $idle_p99:.2f}')") x idle"
} | tee "$out/summary.txt"
