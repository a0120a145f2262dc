# Shared by the fault-injection tests (fault_*.sh): a real `terminals-cli serve` (local backend,
# isolation none) on a free loopback port with its data in a temporary directory, and cleanup of
# everything a test started (serve, the agents whose home is ours, mounts) whatever happens.
# Source it with "$cli" set; it sets tmp, data, key, port, url. Exit 77 = skipped.

set -uo pipefail
name=$(basename "$0" .sh)
say() { printf "[%s %s] %s\n" "$name" "$(date +%T.%N | cut -c1-12)" "$*"; }
tmp=$(mktemp -d)
data=$tmp/data
key=fault-test-key-$RANDOM$RANDOM-0123456789
serve_pid=
extra_cleanup=:   # a test's own cleanup (a mount), run before the directory is removed

# The pids of processes whose command line names our directory (the agents: --home $data/...)
# or that run in it (commands the agents started, orphaned when an agent is killed).
our_pids() {
  {
    pgrep -f -- "$tmp/" 2>/dev/null
    find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$tmp/*" -printf '%h\n' 2>/dev/null | sed 's|^/proc/||'
  } | grep -vx "$$" | sort -u
}

cleanup() {
  set +e
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  # The terminals outlive serve by design: stop this test's agents, by pid.
  local pids
  pids=$(our_pids)
  [[ -n $pids ]] && kill -9 $pids 2>/dev/null
  $extra_cleanup
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP   # so that a timeout's kill still cleans up

fail() {
  say "FAIL: $*"
  [[ -f $tmp/serve.log ]] && sed 's/^/  serve| /' "$tmp/serve.log" | tail -40
  exit 1
}
skip() { say "SKIPPED: $*"; exit 77; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
unset TERMINALS_URL TERMINALS_DATA_DIR

start_serve() {
  TERMINALS_API_KEY=$key TERMINALS_MAX_CPU=1 TERMINALS_LOG_LEVEL=info \
    "$cli" serve --isolation none --host 127.0.0.1 --port "$port" --data-dir "$data" \
    >>"$tmp/serve.log" 2>&1 </dev/null &
  serve_pid=$!
  for _ in $(seq 200); do
    curl -fsS -m 2 "$url/health" >/dev/null 2>&1 && return 0
    kill -0 "$serve_pid" 2>/dev/null || fail "serve exited at start"
    sleep 0.05
  done
  fail "serve did not come up on $url"
}

kill9_serve() {
  kill -9 "$serve_pid"
  wait "$serve_pid" 2>/dev/null
  serve_pid=
}

# req USER METHOD PATH [BODY]: prints "STATUS BODY" (STATUS 000 when there was no answer).
req() {
  local user=$1 method=$2 path=$3 out
  out=$(mktemp -p "$tmp")
  local args=(-s -m 20 -o "$out" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $key")
  [[ -n $user ]] && args+=(-H "X-User-Id: $user")
  [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
  local code
  code=$(curl "${args[@]}" "$url$path" 2>/dev/null)
  echo "${code:-000} $(cat "$out")"
  rm -f "$out"
}
admin() { req "" "$@"; }

# The terminal (instance id) of a user's default terminal, from the admin API.
# instance_of USER [LISTING]: from LISTING (a saved `admin GET /api/v1/terminals`) when given.
instance_of() {
  { if [[ $# -ge 2 ]]; then echo "$2"; else admin GET /api/v1/terminals; fi; } | grep -o "\"user_id\":\"$1\",[^}]*\"instance_id\":\"[^\"]*\"" |
    sed 's/.*"instance_id":"//; s/"$//' | tr '\n' ' ' | sed 's/ $//'
}
# The pids of the agent processes serving a terminal (its socket is in its command line).
agent_pids() { pgrep -f -- "$data/run/$1/agent.sock" | tr '\n' ' ' | sed 's/ $//'; }
# All agent processes with a home in our data directory.
agent_count() { pgrep -fc -- "terminals-agent .*--home $data/" || true; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
