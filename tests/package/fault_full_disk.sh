#!/usr/bin/env bash
# A full data disk: serve's data directory is a 1 MiB tmpfs, filled up while serve runs.
#   - a policy PUT gets a clear 5xx naming the lack of space (no crash, no partial file);
#   - the policies already stored stay intact (GET answers them; their files parse after a restart);
#   - the service keeps serving (health, admin reads, a running terminal);
#   - once space is freed, writes work again and survive a restart.
# Needs root (mount); skipped (exit 77) without it or when tmpfs cannot be mounted here.
# Usage: fault_full_disk.sh PATH_TO_TERMINALS_CLI   (terminals-agent must sit next to it)
cli=$1
source "$(dirname "$0")/fault_lib.sh"

[[ $EUID -eq 0 ]] || skip "needs root to mount a small tmpfs as the data directory"
mkdir -p "$data"
mount -t tmpfs -o size=1m,mode=0755 fault-full-disk "$data" 2>"$tmp/mount.err" ||
  skip "cannot mount a tmpfs here: $(cat "$tmp/mount.err")"
unmount() { umount "$data" 2>/dev/null || umount -l "$data" 2>/dev/null; }
extra_cleanup=unmount   # after serve and the agents are gone (cleanup kills them first)

user=lou
say "0. serve on a 1 MiB tmpfs"
start_serve
out=$(admin PUT /api/v1/policies/keep '{"cpu_limit":"250m","env":{"KEPT":"yes"}}')
[[ $out == 200* && $out == *'"revision":1'* ]] || fail "PUT keep: $out"
out=$(admin PUT /api/v1/policies/keep/lifecycle '{"reset":{"schedule":"@daily"}}')
[[ $out == 200* ]] || fail "PUT keep/lifecycle: $out"
out=$(req "$user" POST '/execute?wait=5' '{"command":"echo still-here > note.txt; cat note.txt"}')
[[ $out == 200* && $out == *still-here* ]] || fail "first request of $user: $out"

say "1. fill the disk"
dd if=/dev/zero of="$data/filler" bs=4k >/dev/null 2>&1
# tmpfs counts pages; top up with whatever small writes still fit.
for i in $(seq 20); do head -c 512 /dev/zero >"$data/filler.$i" 2>/dev/null || break; done
avail=$(df --output=avail -B1 "$data" | tail -1 | tr -d ' ')
((avail < 4096)) || fail "the disk is not full: $avail bytes available"
say "   $(df -h --output=size,used,avail "$data" | tail -1)"

say "2. writes fail clearly, nothing breaks"
out=$(admin PUT /api/v1/policies/fresh '{"cpu_limit":"100m"}')
say "   PUT fresh: $out"
[[ $out == 5* ]] || fail "PUT on a full disk: expected 5xx, got $out"
[[ $out == *"Policy 'fresh' was not saved: "*"No space left on device"* ]] ||
  fail "the error does not say that the policy was not saved for lack of space: $out"
out=$(admin PUT /api/v1/policies/keep '{"cpu_limit":"500m"}')
[[ $out == 5* ]] || fail "updating keep on a full disk: expected 5xx, got $out"
out=$(admin PUT /api/v1/policies/keep/lifecycle '{"reset":{"schedule":"@weekly"}}')
[[ $out == 5* && $out == *"lifecycle of policy 'keep' was not saved: "*"No space left on device"* ]] ||
  fail "updating keep's lifecycle on a full disk: expected 5xx saying why, got $out"
kill -0 "$serve_pid" 2>/dev/null || fail "serve died on a full disk"
curl -fsS -m 5 "$url/health" >/dev/null || fail "health failed on a full disk"
out=$(admin GET /api/v1/policies/keep)
[[ $out == 200* && $out == *'"revision":1'* && $out == *'"cpu_limit":"250m"'* && $out == *'"KEPT":"yes"'* ]] ||
  fail "keep changed on a full disk: $out"
out=$(admin GET /api/v1/policies/keep/lifecycle)
[[ $out == 200* && $out == *'"schedule":"@daily"'* ]] || fail "keep's lifecycle changed on a full disk: $out"
out=$(admin GET /api/v1/policies)
[[ $out == 200* && $out == *'"id":"keep"'* && $out != *'"id":"fresh"'* ]] || fail "policy list on a full disk: $out"
out=$(req "$user" GET '/files/read?path=note.txt')
[[ $out == 200* && $out == *still-here* ]] || fail "the running terminal on a full disk: $out"
leftovers=$(find "$data/policies" -name '*.tmp')
[[ -z $leftovers ]] || fail "temporary files left behind: $leftovers"

say "3. space freed: writes work again and survive a restart"
rm -f "$data"/filler*
out=$(admin PUT /api/v1/policies/fresh '{"cpu_limit":"100m"}')
[[ $out == 200* && $out == *'"revision":1'* ]] || fail "PUT fresh after freeing space: $out"
out=$(admin PUT /api/v1/policies/keep '{"cpu_limit":"500m","env":{"KEPT":"yes"}}')
[[ $out == 200* && $out == *'"revision":2'* ]] || fail "PUT keep after freeing space: $out"
kill9_serve
start_serve
out=$(admin GET /api/v1/policies/keep)
[[ $out == 200* && $out == *'"revision":2'* && $out == *'"cpu_limit":"500m"'* ]] || fail "keep after the restart: $out"
out=$(admin GET /api/v1/policies/keep/lifecycle)
[[ $out == 200* && $out == *'"schedule":"@daily"'* ]] || fail "keep's lifecycle after the restart: $out"
out=$(admin GET /api/v1/policies/fresh)
[[ $out == 200* && $out == *'"revision":1'* ]] || fail "fresh after the restart: $out"
out=$(req "$user" GET '/files/read?path=note.txt')
[[ $out == 200* && $out == *still-here* ]] || fail "the terminal after the restart: $out"
say "PASS"
