#!/usr/bin/env bash
# SIGKILL `terminals-cli serve` under load and start it again on the same data directory:
#   - load: concurrent clients for several users (some with terminals already running, some
#     whose first request is in flight), plus policy writes through the admin API;
#   - after the restart: one terminal record and one agent process per user (no duplicate), every
#     policy PUT that was acknowledged with 2xx is there, and the terminals that ran before are
#     adopted with their keys: same agent pid, requests succeed without re-provisioning.
# Usage: fault_serve_kill.sh PATH_TO_TERMINALS_CLI   (terminals-agent must sit next to it)
cli=$1
source "$(dirname "$0")/fault_lib.sh"

old_users=(ann bea cid dan)   # terminals running before the load
new_users=(eve fay)           # first requests race the kill
start_serve

declare -A pid_before inst_before
jobs_=()
for u in "${old_users[@]}"; do  # provisioned in parallel
  req "$u" POST '/execute?wait=5' '{"command":"echo hello-'"$u"' > mark.txt; cat mark.txt"}' >"$tmp/first-$u" &
  jobs_+=($!)
done
wait "${jobs_[@]}"
listing=$(admin GET /api/v1/terminals)
for u in "${old_users[@]}"; do
  out=$(cat "$tmp/first-$u")
  [[ $out == 200* && $out == *hello-$u* ]] || fail "first request of $u: $out"
  inst_before[$u]=$(instance_of "$u" "$listing")
  pid_before[$u]=$(agent_pids "${inst_before[$u]}")
  [[ -n ${pid_before[$u]} && ${pid_before[$u]} != *" "* ]] || fail "$u: expected one agent, got '${pid_before[$u]}'"
done
say "4 terminals running: ${pid_before[*]}"

# The load: two client loops per user, and two policy writers, until $tmp/stop exists.
client() {  # USER N
  local i=0
  while [[ ! -e $tmp/stop ]]; do
    i=$((i + 1))
    if ((i % 2)); then
      req "$1" POST '/execute?wait=5' '{"command":"cat mark.txt 2>/dev/null; echo '"$2-$i"'"}'
    else
      req "$1" GET '/files/list?directory=.'
    fi | cut -c1-3 >>"$tmp/client-$1-$2"
  done
}
writer() {  # N: PUTs policy w<N>-<i> and records the status of each
  local i=0 out
  while [[ ! -e $tmp/stop ]]; do
    i=$((i + 1))
    out=$(admin PUT "/api/v1/policies/w$1-$i" '{"cpu_limit":"100m","env":{"SEQ":"'"$i"'"}}')
    echo "w$1-$i ${out%% *}" >>"$tmp/writes"
  done
}
loads=()
for u in "${old_users[@]}"; do
  client "$u" 1 & loads+=($!)
  client "$u" 2 & loads+=($!)
done
writer 1 & loads+=($!)
writer 2 & loads+=($!)
# Load for a while, and at least until some requests and policy writes went through (the machine
# may be slow), before the first requests of the new users and the kill.
sleep 1
for _ in $(seq 150); do
  grep -qs ' 2[0-9][0-9]$' "$tmp/writes" && cat "$tmp"/client-* 2>/dev/null | grep -q '^200' && break
  sleep 0.1
done
for u in "${new_users[@]}"; do
  client "$u" 1 & loads+=($!)
  client "$u" 2 & loads+=($!)
done
sleep 0.3
kill9_serve
say "serve SIGKILLed under load"
touch "$tmp/stop"
# Every client call is bounded by curl -m 20; they all fail fast now that nothing listens.
wait "${loads[@]}" 2>/dev/null
acked=$(awk '$2 ~ /^2/ {print $1}' "$tmp/writes")
n_acked=$(wc -w <<<"$acked")
n_ok=$(cat "$tmp"/client-* | grep -c '^200' || true)
say "before the kill: $n_ok successful client requests, $n_acked acknowledged policy PUTs"
((n_acked > 0)) || fail "no policy PUT was acknowledged under load: $(tail -3 "$tmp/writes")"
((n_ok > 0)) || fail "no client request succeeded under load"

start_serve
grep -q "adopted [0-9]* running terminals" "$tmp/serve.log" || fail "the restarted serve did not report adoption"

# No acknowledged policy lost.
admin GET /api/v1/policies >"$tmp/list"
[[ $(cut -c1-3 "$tmp/list") == 200 ]] || fail "policy list after the restart: $(head -c 300 "$tmp/list")"
missing=0
for id in $acked; do
  grep -q "\"id\":\"$id\"" "$tmp/list" || { say "acknowledged policy $id is missing"; missing=$((missing + 1)); }
done
((missing == 0)) || fail "$missing acknowledged policies lost"
# And each stored one is whole: a GET answers with the data that was sent.
last=$(tail -1 <<<"$acked")
out=$(admin GET "/api/v1/policies/$last")
[[ $out == 200* && $out == *'"cpu_limit":"100m"'* && $out == *'"SEQ":"'"${last##*-}"'"'* ]] || fail "GET $last: $out"

# The old terminals were adopted: same agent, same key (requests work without re-provisioning);
# the users whose first request raced the kill get a terminal now. All users at once.
jobs_=()
for u in "${old_users[@]}"; do req "$u" GET '/files/read?path=mark.txt' >"$tmp/after-$u" & jobs_+=($!); done
for u in "${new_users[@]}"; do
  req "$u" POST '/execute?wait=5' '{"command":"echo after-'"$u"'"}' >"$tmp/after-$u" &
  jobs_+=($!)
done
wait "${jobs_[@]}"
listing=$(admin GET /api/v1/terminals)
for u in "${old_users[@]}"; do
  out=$(cat "$tmp/after-$u")
  [[ $out == 200* && $out == *hello-$u* ]] || fail "$u after the restart: $out"
  inst=$(instance_of "$u" "$listing")
  [[ $inst == "${inst_before[$u]}" ]] || fail "$u: terminal ${inst_before[$u]} became '$inst'"
  [[ $(agent_pids "$inst") == "${pid_before[$u]}" ]] ||
    fail "$u: agent pid ${pid_before[$u]} became '$(agent_pids "$inst")' (re-provisioned instead of adopted)"
done
for u in "${new_users[@]}"; do
  out=$(cat "$tmp/after-$u")
  [[ $out == 200* && $out == *after-$u* ]] || fail "$u after the restart: $out"
done
# No duplicates: one record and one agent per user, nothing else.
all=("${old_users[@]}" "${new_users[@]}")
for u in "${all[@]}"; do
  inst=$(instance_of "$u" "$listing")
  [[ -n $inst && $inst != *" "* ]] || fail "$u: expected one terminal record, got '$inst'"
  pids=$(agent_pids "$inst")
  [[ -n $pids && $pids != *" "* ]] || fail "$u: expected one agent process for $inst, got '$pids'"
done
records=$(find "$data/terminals" -name '*.json' | wc -l)
((records == ${#all[@]})) || fail "expected ${#all[@]} terminal records on disk, found $records"
agents=$(agent_count)
((agents == ${#all[@]})) || { ps -eo pid,args | grep -F -- "$data/" | grep -v grep; fail "expected ${#all[@]} agent processes, found $agents"; }
say "PASS: ${#all[@]} users, one terminal and agent each; $n_acked acknowledged policies all kept"
