#!/usr/bin/env bash
# An agent killed in the middle of a request: the client gets a clean failure within a bound (a
# truncated download, a 502), never a hang; the service keeps serving; the user's next request
# starts the terminal again and succeeds.
#   1. during a long streamed download (GET /files/view of a 1 GiB sparse file, read slowly);
#   2. during a slow POST /execute?wait=... (the agent holds the request).
# Usage: fault_agent_kill.sh PATH_TO_TERMINALS_CLI   (terminals-agent must sit next to it)
cli=$1
source "$(dirname "$0")/fault_lib.sh"

user=kim
start_serve
out=$(req "$user" GET /files/cwd)
[[ $out == 200* ]] || fail "first request: $out"
home=$(sed 's/.*"home":"\([^"]*\)".*/\1/' <<<"$out")
[[ -d $home ]] || fail "no home directory in $out"
# Sparse: reads as 1 GiB of zeros, takes no space.
truncate -s 1G "$home/big.bin"
echo kept >"$home/small.txt"

inst=$(instance_of "$user")
pid=$(agent_pids "$inst")
[[ -n $pid && $pid != *" "* ]] || fail "expected one agent for $inst, got '$pid'"

# elapsed_since START_NS: milliseconds since then.
now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }

say "1. the agent is killed during a streamed download"
# Read at 8 MB/s: the download would take two minutes; curl's own bound is far above ours.
curl -s -m 60 --limit-rate 8M -o "$tmp/big.out" -w '%{http_code} %{size_download}' \
  -H "Authorization: Bearer $key" -H "X-User-Id: $user" "$url/files/view?path=big.bin" \
  >"$tmp/curl.w" 2>"$tmp/curl.err" &
curl_pid=$!
for _ in $(seq 200); do
  [[ $(stat -c %s "$tmp/big.out" 2>/dev/null || echo 0) -gt 2000000 ]] && break
  sleep 0.05
done
got=$(stat -c %s "$tmp/big.out" 2>/dev/null || echo 0)
((got > 2000000)) || fail "the download did not start streaming (got $got bytes)"
kill -9 "$pid"
killed=$(now_ns)
# The client must be told within a bound; what is already buffered (socket buffers, the proxy's
# watermark) drains at 8 MB/s, a few seconds at most.
for _ in $(seq 300); do kill -0 "$curl_pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$curl_pid" 2>/dev/null; then
  kill "$curl_pid"
  fail "the download still hangs $(ms_since "$killed") ms after the agent was killed"
fi
wait "$curl_pid"
rc=$?
took=$(ms_since "$killed")
read -r code size <"$tmp/curl.w"
say "   curl exit $rc, HTTP $code, $size bytes, ended $took ms after the kill"
((rc != 0)) || fail "the truncated download looked complete to the client (exit 0, $size bytes)"
((size < 1073741824)) || fail "all of the file arrived although its agent was killed"
[[ $code == 200 ]] || fail "the download began with HTTP $code"

say "2. the service survives; the next request starts the terminal again"
curl -fsS -m 5 "$url/health" >/dev/null || fail "serve stopped answering after the agent died"
out=$(req "$user" GET '/files/read?path=small.txt')
[[ $out == 200* && $out == *kept* ]] || fail "the request after the kill: $out"
pid2=$(agent_pids "$(instance_of "$user")")
[[ -n $pid2 && $pid2 != *" "* && $pid2 != "$pid" ]] || fail "expected one new agent, got '$pid2' (was $pid)"

say "3. the agent is killed while it holds a slow /execute"
marker=fault-sleep-$RANDOM$RANDOM
start=$(now_ns)
req "$user" POST '/execute?wait=25' '{"command":"sleep 40; true '"$marker"'"}' >"$tmp/exec.out" &
exec_pid=$!
# Wait until the command runs (so the request is inside the agent), then kill the agent.
for _ in $(seq 200); do pgrep -f -- "$marker" >/dev/null && break; sleep 0.05; done
pgrep -f -- "$marker" >/dev/null || fail "the slow command never started"
sleep 0.3
kill -9 "$pid2"
killed=$(now_ns)
for _ in $(seq 200); do kill -0 "$exec_pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$exec_pid" 2>/dev/null && fail "the /execute request still hangs $(ms_since "$killed") ms after the agent was killed"
wait "$exec_pid"
took=$(ms_since "$killed")
out=$(cat "$tmp/exec.out")
say "   /execute answered ${out:0:160} after $took ms"
[[ $out == 502* ]] || fail "expected 502 for the request whose agent died, got: $out"

# The next request without a body starts the terminal again and succeeds within itself. (One
# with a body that reaches serve before it has noticed the agent's death gets 503 "send the
# request again": its body was already streamed towards the dead agent and cannot be replayed.)
out=$(req "$user" GET '/files/read?path=small.txt')
[[ $out == 200* && $out == *kept* ]] || fail "the request after the second kill: $out"
out=$(req "$user" POST '/execute?wait=5' '{"command":"cat small.txt; echo again"}')
[[ $out == 200* && $out == *kept*again* ]] || fail "an /execute after the second kill: $out"
pid3=$(agent_pids "$(instance_of "$user")")
[[ -n $pid3 && $pid3 != *" "* && $pid3 != "$pid2" ]] || fail "expected one new agent, got '$pid3' (was $pid2)"
[[ $(agent_count) -eq 1 ]] || fail "expected one agent process, found $(agent_count)"
say "PASS"
