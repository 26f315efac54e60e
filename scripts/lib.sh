# What the benchmark scripts share: stopping the trees they start, the
# result cache turned off, and starting and stopping a tree. Source it from a script:
#   . "$(dirname "$0")/lib.sh"

# Every `up` a script starts, stopped (with its nodes) when the script exits.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# without_cache TOPOLOGY OUT: TOPOLOGY with `cache_mb = 0` at the root and
# at every parent, written to OUT. A benchmark whose queries repeat would
# otherwise measure cache hits, not searches.
without_cache() {
  awk '{ print } /^\[root\]$|^\[\[parent\]\]$/ { print "cache_mb = 0" }' "$1" > "$2"
}

# start_up BIN_DIR TOPOLOGY LOG [UP_FLAGS...]: starts BIN_DIR's
# `searchtree up` on TOPOLOGY (its nodes from BIN_DIR too), stderr to LOG,
# and waits for its readiness line. Sets up_pid, and root (the root's
# HOST:PORT) once it is ready; returns 1, after the process has ended, if
# it was not.
start_up() {
  local bin_dir="$1" topology="$2" log="$3" fifo line
  shift 3
  fifo=$(mktemp -u); mkfifo "$fifo"
  SEARCHTREE_BIN_DIR="$bin_dir" "$bin_dir/searchtree" up --topology "$topology" "$@" > "$fifo" 2> "$log" &
  up_pid=$!
  line=""; read -r line < "$fifo" || true; rm -f "$fifo"
  if [[ "$line" == "READY root="* ]]; then
    pids+=("$up_pid")
    root="${line#READY root=}"
    return 0
  fi
  wait "$up_pid" 2>/dev/null || true
  return 1
}

# stop_up: stops the `up` the last start_up started, and its nodes.
stop_up() {
  kill "$up_pid" 2>/dev/null || true
  wait "$up_pid" 2>/dev/null || true
}
