# Shared by the scripts in tests/docker/ (sourced, bash). Set NAME (the log prefix) and cli (the
# terminals-cli binary) before sourcing.

say() { printf '[%s] %s\n' "$NAME" "$*"; }
fail() { say "FAIL: $*"; [[ -f ${work:-/nonexistent}/serve.log ]] && sed 's/^/  serve| /' "$work/serve.log" | tail -40; exit 1; }
# Exit 77 (CTest's SKIP_RETURN_CODE) with the reason; in CI a missing prerequisite is a failure.
skip() {
  if [[ -n ${CI:-} ]]; then fail "$* (CI must have it)"; fi
  say "SKIPPED: $*"
  exit 77
}

# new_work: a scratch directory, a free loopback port and a service key for serve.
new_work() {
  work=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
}

# start_serve IMAGE: terminals-cli serve on the Docker backend with IMAGE, in the background
# (serve_pid), logging to $work/serve.log; returns once it accepts connections.
start_serve() {
  TERMINALS_API_KEY=$key TERMINALS_LOG_LEVEL=info "$cli" serve --backend docker --image "$1" \
    --host 127.0.0.1 --port "$port" --data-dir "$work/data" --env-file /dev/null >>"$work/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$serve_pid" 2>/dev/null || fail "serve exited at start"
    sleep 0.05
  done
  fail "serve did not listen on 127.0.0.1:$port"
}
