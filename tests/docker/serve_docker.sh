#!/usr/bin/env bash
# terminals-cli serve on the Docker backend, end to end against the real engine:
#   1. a user's first request provisions a container; a file written through the proxy lands in
#      the home on the host;
#   2. serve is SIGKILLed and started again: the same container is adopted (same id, same key,
#      no second container);
#   3. the container is killed from outside: the next request re-provisions it, home intact;
#   4. the engine is stopped: requests get 503 naming the engine; it is started again: the
#      terminal comes back by itself, home intact. Step 4 stops the machine's dockerd, so it runs
#      only in CI or with TERMINALS_TEST_ENGINE_RESTART=1, and only when no init system owns it.
#
# Usage: serve_docker.sh TERMINALS_CLI IMAGE. Exit 77 = skipped (no engine or image, outside CI).
set -euo pipefail
cli=$1
image=${2:-terminals-agent:dev}

NAME=serve_docker
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

docker info >/dev/null 2>&1 || skip "no Docker engine answers (start dockerd, or run scripts/test)"
docker image inspect "$image" >/dev/null 2>&1 ||
  skip "image $image is missing (cmake --build <build dir> --target agent-image)"

new_work
user="serve-test-$RANDOM$RANDOM"
serve_pid=
cleanup() {
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null || true
  # Our containers: this data directory's instance label.
  if docker info >/dev/null 2>&1; then
    docker ps -aq --filter "label=openwebui.com/user-id=$user" | xargs -r docker rm -f >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT


# req METHOD PATH [BODY]: prints "STATUS BODY".
req() {
  local args=(-s -o "$work/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $key" -H "X-User-Id: $user")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
  local code
  code=$(curl "${args[@]}" "http://127.0.0.1:$port$2" || true)
  echo "$code $(cat "$work/body" 2>/dev/null)"
}

containers() { docker ps -aq --filter "label=openwebui.com/user-id=$user" | wc -l; }
container_id() { docker ps -aq --no-trunc --filter "label=openwebui.com/user-id=$user" | head -1; }
container_key() { docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$1" | sed -n 's/^OPEN_TERMINAL_API_KEY=//p'; }

start_serve "$image"

say "1. first request provisions a container"
out=$(req POST '/execute?wait=10' '{"command":"echo kept-across-restarts > keep.txt && cat keep.txt"}')
[[ $out == 200* && $out == *kept-across-restarts* ]] || fail "execute through the proxy: $out"
[[ $(containers) -eq 1 ]] || fail "expected one container, found $(containers)"
id1=$(container_id)
key1=$(container_key "$id1")
home_file=$(find "$work/data/homes" -name keep.txt | head -1)
[[ -n $home_file && $(cat "$home_file") == kept-across-restarts ]] || fail "keep.txt not in the home on the host"
[[ $(docker inspect -f '{{.HostConfig.NetworkMode}} {{.HostConfig.CapDrop}}' "$id1") == "none [ALL]" ]] ||
  fail "unexpected container settings: $(docker inspect -f '{{.HostConfig.NetworkMode}} {{.HostConfig.CapDrop}}' "$id1")"

say "2. SIGKILL serve, start it again: the same container is adopted"
kill -9 "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
start_serve "$image"
grep -q "adopted 1 running terminals" "$work/serve.log" || fail "the restarted serve did not adopt the container"
out=$(req GET '/files/read?path=keep.txt')
[[ $out == 200* && $out == *kept-across-restarts* ]] || fail "read after the restart: $out"
[[ $(containers) -eq 1 ]] || fail "expected still one container, found $(containers)"
[[ $(container_id) == "$id1" ]] || fail "the container was replaced instead of adopted"
[[ $(container_key "$id1") == "$key1" ]] || fail "the adopted container's key changed"

say "3. the container is killed from outside: re-provisioned with its home"
docker kill "$id1" >/dev/null
ok=
for _ in $(seq 40); do
  out=$(req GET '/files/read?path=keep.txt')
  if [[ $out == 200* && $out == *kept-across-restarts* && $(container_id) != "$id1" ]]; then ok=1; break; fi
  sleep 0.25
done
[[ -n $ok ]] || fail "not re-provisioned after docker kill: $out (container $(container_id))"
[[ $(containers) -eq 1 ]] || fail "expected one container after re-provisioning, found $(containers)"
id2=$(container_id)
[[ $(docker inspect -f '{{.State.Running}}' "$id2") == true ]] || fail "the new container is not running"

say "4. the engine stops and starts again"
if [[ -z ${CI:-} && -z ${TERMINALS_TEST_ENGINE_RESTART:-} ]]; then
  say "step 4 SKIPPED: it stops this machine's dockerd; runs in CI or with TERMINALS_TEST_ENGINE_RESTART=1"
  exit 0
fi
[[ -f /var/run/docker.pid ]] || fail "no /var/run/docker.pid: cannot tell which dockerd to restart"
if [[ -d /run/systemd/system ]]; then
  say "step 4 SKIPPED: systemd owns dockerd here"
  exit 0
fi
engine_pid=$(cat /var/run/docker.pid)
# The dockerd command line, to start it the same way.
mapfile -d '' engine_cmd <"/proc/$engine_pid/cmdline"
kill "$engine_pid"
for _ in $(seq 300); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$engine_pid" 2>/dev/null && fail "dockerd did not stop"
out=$(req GET '/files/read?path=keep.txt')
[[ $out == 503* ]] || fail "with the engine down: expected 503, got $out"
[[ $out == *"Docker engine"* ]] || fail "the 503 does not name the engine: $out"
say "   engine down: $out"
engine_log=$(mktemp)
setsid nohup "${engine_cmd[@]}" >"$engine_log" 2>&1 </dev/null &
for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
docker info >/dev/null 2>&1 || { cat "$engine_log"; fail "dockerd did not come back"; }
ok=
for _ in $(seq 60); do
  out=$(req GET '/files/read?path=keep.txt')
  if [[ $out == 200* && $out == *kept-across-restarts* ]]; then ok=1; break; fi
  sleep 0.25
done
[[ -n $ok ]] || fail "no recovery after the engine came back: $out"
[[ $(containers) -eq 1 ]] || fail "expected one container after the engine restart, found $(containers)"
say "PASS"
