#!/usr/bin/env bash
# The Docker engine stops in the middle of a provision (terminals-cli serve, Docker backend):
#   1. a user's first request is in flight; as soon as the engine has created the user's
#      container, dockerd is stopped. The image's agent starts only after 4 s (a derived image,
#      terminals-agent:dev with `sleep 4` before it), so the provision is always caught waiting
#      for the agent. That request gets a clear 503 (naming the engine, or the exit of the
#      container the stopping engine killed); the next ones while it is down, a 503 naming it;
#   2. dockerd is started again the same way: the user's next request succeeds, and exactly one
#      container is left for the user: nothing half-created stays behind.
# This stops the machine's dockerd, so it runs only in CI or with TERMINALS_TEST_ENGINE_RESTART=1,
# and only when no init system owns dockerd (like step 4 of serve_docker.sh). Whatever happens,
# dockerd is started again before the script exits.
#
# Usage: engine_stop_provision.sh TERMINALS_CLI IMAGE. Exit 77 = skipped.
set -uo pipefail
cli=$1
image=${2:-terminals-agent:dev}

NAME=engine_stop_provision
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -z ${CI:-} && -z ${TERMINALS_TEST_ENGINE_RESTART:-} ]]; then
  say "SKIPPED: it stops this machine's dockerd; runs in CI or with TERMINALS_TEST_ENGINE_RESTART=1"
  exit 77
fi
docker info >/dev/null 2>&1 || skip "no Docker engine answers (start dockerd, or run scripts/test)"
docker image inspect "$image" >/dev/null 2>&1 ||
  skip "image $image is missing (cmake --build <build dir> --target agent-image)"
[[ -f /var/run/docker.pid ]] || fail "no /var/run/docker.pid: cannot tell which dockerd to restart"
if [[ -d /run/systemd/system ]]; then
  say "SKIPPED: systemd owns dockerd here"
  exit 77
fi
engine_pid=$(cat /var/run/docker.pid)
# The dockerd command line, to start it the same way.
mapfile -d '' engine_cmd <"/proc/$engine_pid/cmdline"
((${#engine_cmd[@]} > 0)) || fail "cannot read dockerd's command line"

new_work
user="engine-stop-$RANDOM$RANDOM"
slow_image="terminals-agent:fault-slow-start-$RANDOM$RANDOM"
sock=/var/run/docker.sock
serve_pid=
req_pid=

start_engine() {
  docker info >/dev/null 2>&1 && return 0
  setsid nohup "${engine_cmd[@]}" >"$work/engine.log" 2>&1 </dev/null &
  for _ in $(seq 150); do docker info >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
cleanup() {
  [[ -n $req_pid ]] && kill "$req_pid" 2>/dev/null
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  # Never leave the machine without its engine.
  start_engine || { say "dockerd did not come back:"; cat "$work/engine.log"; }
  docker ps -aq --filter "label=openwebui.com/user-id=$user" | xargs -r docker rm -f >/dev/null 2>&1
  docker image rm "$slow_image" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# req PATH: prints "STATUS BODY".
req() {
  local code
  code=$(curl -s -m 30 -o "$work/body" -w '%{http_code}' -H "Authorization: Bearer $key" -H "X-User-Id: $user" \
    "http://127.0.0.1:$port$1" || true)
  echo "${code:-000} $(cat "$work/body" 2>/dev/null)"
}
# The user's containers, asked of the engine's socket directly (faster than the docker CLI).
containers_json() {
  curl -s -m 2 --unix-socket "$sock" -G 'http://docker/containers/json' --data-urlencode all=1 \
    --data-urlencode "filters={\"label\":[\"openwebui.com/user-id=$user\"]}"
}
containers() { docker ps -aq --filter "label=openwebui.com/user-id=$user" | wc -l; }

# The agent of this image starts 4 s after its container (same agent, same environment).
base=$(docker create "$image") || fail "cannot create a container of $image"
docker commit --change 'CMD ["/bin/sh", "-c", "sleep 4; exec /bin/terminals-agent"]' "$base" "$slow_image" >/dev/null ||
  { docker rm -f "$base" >/dev/null; fail "cannot derive $slow_image"; }
docker rm -f "$base" >/dev/null
start_serve "$slow_image"

say "1. the engine stops while the user's first terminal is being provisioned"
curl -s -m 30 -o "$work/first.body" -w '%{http_code}' -H "Authorization: Bearer $key" -H "X-User-Id: $user" \
  "http://127.0.0.1:$port/files/cwd" >"$work/first.code" 2>/dev/null &
req_pid=$!
created=
for _ in $(seq 400); do
  if [[ $(containers_json) == *'"Id"'* ]]; then created=1; break; fi
  kill -0 "$req_pid" 2>/dev/null || break
  sleep 0.02
done
[[ -n $created ]] || fail "no container was created for the first request (it answered $(cat "$work/first.code" 2>/dev/null))"
kill "$engine_pid"
for _ in $(seq 300); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$engine_pid" 2>/dev/null && fail "dockerd did not stop"
wait "$req_pid"
req_pid=
first="$(cat "$work/first.code") $(cat "$work/first.body")"
say "   the request in flight: ${first:0:200}"
# A stopping dockerd first stops its containers (SIGTERM, exit 143) and serve may still see that
# over its open engine connection: then the 503 says the terminal exited instead of naming the
# engine. Both are clear; anything else (a hang, a 500, a 200) is not.
[[ $first == 503* && ($first == *"Docker engine"* || $first == *"exited with code 143"*) ]] ||
  fail "the request in flight: expected 503 naming the engine (or the container stopped by it), got $first"
out=$(req /files/cwd)
say "   engine down: ${out:0:200}"
[[ $out == 503* && $out == *"Docker engine"* ]] || fail "with the engine down: expected 503 naming the engine, got $out"
kill -0 "$serve_pid" 2>/dev/null || fail "serve died with the engine"

say "2. the engine starts again: the next request succeeds, one container is left"
start_engine || { cat "$work/engine.log"; fail "dockerd did not come back"; }
ok=
for _ in $(seq 60); do
  out=$(req /files/cwd)
  if [[ $out == 200* ]]; then ok=1; break; fi
  sleep 0.25
done
[[ -n $ok ]] || fail "no recovery after the engine came back: $out"
n=$(containers)
if [[ $n -ne 1 ]]; then
  docker ps -a --filter "label=openwebui.com/user-id=$user"
  fail "expected exactly one container for the user after recovery, found $n"
fi
id=$(docker ps -aq --filter "label=openwebui.com/user-id=$user")
[[ $(docker inspect -f '{{.State.Running}}' "$id") == true ]] || fail "the user's container is not running"
out=$(req /files/cwd)
[[ $out == 200* ]] || fail "a second request after recovery: $out"
say "PASS"
