#!/usr/bin/env bash
# terminals-cli's admin commands (policy, terminals) against a real `terminals-cli serve`
# (local backend, no isolation, on a free loopback port, data in a temporary directory): what
# they print, their exit status, and the server's refusals passed on readably.
# Usage: admin_cli.sh PATH_TO_TERMINALS_CLI   (terminals-agent must sit next to it)
set -uo pipefail

cli=$1
failures=0
tmp=$(mktemp -d)
out=$tmp/out err=$tmp/err
key=admin-cli-test-key-0123456789
serve_pid=

cleanup() {
  if [[ -n $serve_pid ]]; then
    kill "$serve_pid" 2>/dev/null
    wait "$serve_pid" 2>/dev/null
  fi
  # The terminals outlive the server by design: stop this test's agents (their --home is ours).
  pkill -f -- "--home $tmp/" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# expect STATUS PATTERN_ON_STDOUT PATTERN_ON_STDERR -- ARGS...   (an empty pattern is not checked;
# stdin comes from $input when set)
input=
expect() {
  local want=$1 out_re=$2 err_re=$3
  shift 4
  if [[ -n $input ]]; then
    "$cli" "$@" <<<"$input" >"$out" 2>"$err"
  else
    "$cli" "$@" </dev/null >"$out" 2>"$err"
  fi
  local got=$?
  local ok=1
  [[ $got -eq $want ]] || ok=0
  [[ -z "$out_re" ]] || grep -Eq -- "$out_re" "$out" || ok=0
  [[ -z "$err_re" ]] || grep -Eq -- "$err_re" "$err" || ok=0
  # The key is never printed, whatever happened.
  ! grep -qF -- "$key" "$out" "$err" || ok=0
  if [[ $ok -eq 1 ]]; then
    echo "ok    terminals-cli $*"
  else
    echo "FAIL  terminals-cli $*: exit $got (want $want)"
    sed 's/^/      stdout: /' "$out"
    sed 's/^/      stderr: /' "$err"
    failures=$((failures + 1))
  fi
}
refute_out() {  # PATTERN: the last command's stdout must not match
  if grep -Eq -- "$1" "$out"; then
    echo "FAIL  stdout matches '$1'"
    sed 's/^/      stdout: /' "$out"
    failures=$((failures + 1))
  fi
}

# A free port: one nothing answers on.
port=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    port=$p
    break
  fi
done
[[ -n $port ]] || { echo "FAIL  no free port"; exit 1; }
url=http://127.0.0.1:$port

unset TERMINALS_URL TERMINALS_DATA_DIR
TERMINALS_API_KEY=$key TERMINALS_MAX_CPU=1 TERMINALS_LOG_LEVEL=warning \
  "$cli" serve --isolation none --host 127.0.0.1 --port "$port" --data-dir "$tmp/data" \
  >"$tmp/serve.log" 2>&1 </dev/null &
serve_pid=$!
for _ in $(seq 100); do
  curl -fsS "$url/health" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fsS "$url/health" >/dev/null 2>&1; then
  echo "FAIL  terminals-cli serve did not come up"
  sed 's/^/      serve: /' "$tmp/serve.log"
  exit 1
fi

export TERMINALS_API_KEY=$key TERMINALS_PORT=$port

# ---- policies -------------------------------------------------------------------------------
expect 0 "^ID +REVISION +UPDATED \(UTC\) +IMAGE +CPU +MEMORY$" "" -- policy ls
expect 0 '"revision": 1' "" -- policy put dev --set cpu_limit=500m --set memory_limit=256Mi \
  --set env.GREETING=hello --set idle_timeout_minutes=30
expect 0 '"cpu_limit": "500m"' "" -- policy get dev
expect 0 '"GREETING": "hello"' "" -- policy get dev
expect 0 '"lifecycle": \{\}' "" -- policy get dev
input='{"memory_limit": "128Mi", "pids_limit": 64}'
expect 0 '"pids_limit": 64' "" -- policy put small -
input=
# --url wins over TERMINALS_PORT.
expect 0 "^dev +1 +[0-9-]{10} [0-9:]{8} +- +500m +256Mi$" "" -- policy ls --url "$url/"
expect 0 "^small +1 .* +- +- +128Mi$" "" -- policy ls
expect 0 '"id":"small"' "" -- policy ls --json
# get --data round-trips through put; --set/--unset edit the stored policy.
"$cli" policy get dev --data >"$tmp/dev.json"
expect 0 '"revision": 2' "" -- policy put dev "$tmp/dev.json" --set memory_limit=512Mi
expect 0 '"memory_limit": "512Mi"' "" -- policy get dev --data
expect 0 '"revision": 3' "" -- policy put dev --unset env.GREETING --set pids_limit=100
refute_out 'GREETING'
expect 0 '"cpu_limit": "500m"' "" -- policy get dev --data
# The lifecycle.
input='{"reset": {"schedule": "@daily", "timezone": "UTC"}}'
expect 0 '"schedule": "@daily"' "" -- policy put dev --lifecycle -
input=
expect 0 '"schedule": "@daily"' "" -- policy get dev --lifecycle
expect 0 '"lifecycle": \{' "" -- policy get dev
# Refusals: the cap (400), a bad value (422, the field named), a missing policy (404).
expect 1 "" "cpu_limit.*\(HTTP 400\)" -- policy put big --set cpu_limit=2000m
expect 1 "" "pids_limit.*\(HTTP 422\)" -- policy put bad --set pids_limit=-5
expect 1 "" "not found.*\(HTTP 404\)" -- policy get nope
input='{"reset": {"schedule": "every tuesday"}}'
expect 1 "" "reset.schedule.*\(HTTP 400\)" -- policy put dev --lifecycle -
input='[1, 2]'
expect 2 "" "standard input is not a JSON object" -- policy put dev -
input=
expect 0 "^removed policy small$" "" -- policy rm small
expect 0 "" "" -- policy ls
refute_out '^small '
expect 1 "" "not found" -- policy rm small

# ---- keys -----------------------------------------------------------------------------------
expect 1 "" "refused the service key from --api-key" -- policy ls --api-key wrong-key-wrong-key-wrong
mkdir -m 700 "$tmp/other"
(umask 077; echo "another-key-another-key-0000" >"$tmp/other/service-key")
TERMINALS_API_KEY= expect 1 "" "refused the service key from the key file $tmp/other/service-key" \
  -- policy ls --data-dir "$tmp/other"
# The key file the server would have written, when no key is set.
(umask 077; echo "$key" >"$tmp/other/service-key")
TERMINALS_API_KEY= expect 0 "^ID " "" -- policy ls --data-dir "$tmp/other"

# ---- terminals ------------------------------------------------------------------------------
expect 0 "^USER +POLICY +CONTEXT +STATUS +IDLE +CONNS +NAME +REASON$" "" -- terminals ls
for user in alice bob; do
  if ! curl -fsS -H "Authorization: Bearer $key" -H "X-User-Id: $user" "$url/files/cwd" >"$tmp/curl.out" 2>&1; then
    echo "FAIL  could not start a terminal for $user:"
    sed 's/^/      /' "$tmp/curl.out"
    failures=$((failures + 1))
  fi
done
expect 0 "^alice +default +default +running +[0-9]+s +0 +[^ ]+ +" "" -- terminals ls
# serve restarts itself with a larger glibc allocator cache (cli/main.cpp), unless the caller
# set GLIBC_TUNABLES (then theirs stays); its terminals get an environment of their own,
# without it.
if [[ -r /proc/$serve_pid/environ ]] && ldd "$cli" 2>/dev/null | grep -q 'libc\.so\.6'; then
  want_tunables=${GLIBC_TUNABLES-glibc.malloc.tcache_count=128}
  if ! tr '\0' '\n' <"/proc/$serve_pid/environ" | grep -qxF "GLIBC_TUNABLES=$want_tunables"; then
    echo "FAIL  serve runs without GLIBC_TUNABLES=$want_tunables"
    failures=$((failures + 1))
  else
    echo "ok    serve runs with GLIBC_TUNABLES=$want_tunables"
  fi
  agent_pid=$(pgrep -f -- "--home $tmp/" | head -1)
  if [[ -z $agent_pid ]] || tr '\0' '\n' <"/proc/$agent_pid/environ" | grep -q '^GLIBC_TUNABLES='; then
    echo "FAIL  a terminal's agent (pid ${agent_pid:-none}) inherited GLIBC_TUNABLES or was not found"
    failures=$((failures + 1))
  else
    echo "ok    the terminals' agents do not inherit it"
  fi
fi
expect 0 "^bob +default +default +running" "" -- terminals ls --policy default
expect 0 "^alice " "" -- terminals ls --user alice
refute_out '^bob '
expect 0 '"user_id":"bob"' "" -- terminals ls --user bob --json
expect 0 "^stopped 1 of 1 matching terminal$" "" -- terminals stop --user alice
expect 1 "" "Terminal not found \(HTTP 404\)" -- terminals stop --user nobody
# bob was just active: refresh skips him unless --all.
expect 0 "^refreshed 0 of 1 matching terminal, 1 skipped as active$" "" -- terminals refresh --user bob
expect 0 "^refreshed 1 of 1 matching terminal$" "" -- terminals refresh --user bob --all
expect 0 '"matched":0' "" -- terminals refresh --user nobody --all --reset --json
curl -fsS -H "Authorization: Bearer $key" -H "X-User-Id: bob" "$url/files/cwd" >/dev/null 2>&1
expect 0 "^refreshed 1 of 1 matching terminal, 1 reset$" "" -- terminals refresh --user bob --policy default --all --reset

# ---- the server gone ----------------------------------------------------------------------
kill "$serve_pid"
wait "$serve_pid" 2>/dev/null
serve_pid=
expect 1 "" "cannot reach the terminals server at $url \(is \`terminals-cli serve\` running\?\)" -- terminals ls

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed"
  sed 's/^/      serve: /' "$tmp/serve.log" 2>/dev/null | tail -30
  exit 1
fi
echo "all terminals-cli admin checks passed"
