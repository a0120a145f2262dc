#!/usr/bin/env bash
# Slowloris and header floods against `terminals-cli serve` (its server's documented limits, see
# ServerOptions in terminals/server.hpp: 16 KiB of request line + headers and 100 headers, else
# 431; the whole head within 10 s, else 408 and close):
#   - 200 connections send their head one byte at a time and never finish it; 100 send half a
#     head and go silent: all are answered 408 and closed by the header timeout, none is kept;
#   - huge header lines, too many headers, a huge request line, an endless header stream: 431
#     and close, at once;
#   - meanwhile another user's requests are served with normal latency, and serve's memory
#     stays bounded (RSS before, during and after).
# Usage: fault_slowloris.sh PATH_TO_TERMINALS_CLI   (terminals-agent must sit next to it)
cli=$1
source "$(dirname "$0")/fault_lib.sh"

user=vic
start_serve
out=$(req "$user" POST '/execute?wait=5' '{"command":"echo ready"}')
[[ $out == 200* && $out == *ready* ]] || fail "first request of $user: $out"

python3 - "$port" "$key" "$user" "$serve_pid" <<'EOF' || fail "see above"
import socket, sys, threading, time

port, key, user, serve_pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
HEADER_TIMEOUT = 10.0  # ServerOptions::header_timeout, serve's default
failures = []
def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL  " + what, flush=True)

def rss_kib():
    with open(f"/proc/{serve_pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))

def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def victim_request():
    """One ordinary request of another user; returns (seconds, status line)."""
    t = time.monotonic()
    s = connect()
    s.sendall((f"GET /files/cwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
               f"X-User-Id: {user}\r\nConnection: close\r\n\r\n").encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return time.monotonic() - t, data.split(b"\r\n", 1)[0].decode(errors="replace")

def read_all(s, timeout):
    """Everything until EOF (or reset) within timeout; returns (bytes, 'eof'|'reset'|'open')."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, "eof"
            data += chunk
    except socket.timeout:
        return data, "open"
    except (ConnectionResetError, BrokenPipeError):
        return data, "reset"

baseline = [victim_request() for _ in range(5)]
for _, status in baseline:
    check(status.endswith("200 OK"), f"baseline request: {status}")
base = max(t for t, _ in baseline)
rss_before = rss_kib()
print(f"baseline: slowest of 5 requests {base*1000:.0f} ms, serve RSS {rss_before} KiB", flush=True)

# The slow ones.
start = time.monotonic()
slow = []
for i in range(200):
    s = connect()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow-%d: " % i)
    slow.append(s)
silent = []
for i in range(100):
    s = connect()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half: a")
    silent.append(s)
opened = time.monotonic() - start
print(f"300 slow connections opened in {opened:.1f} s", flush=True)

stop = threading.Event()
dead = set()
def drip():
    # One byte per connection every 0.25 s; never the blank line that ends a head.
    while not stop.is_set():
        for s in slow:
            if s.fileno() in dead:
                continue
            try:
                s.send(b"a")
            except OSError:
                dead.add(s.fileno())
        stop.wait(0.25)
dripper = threading.Thread(target=drip)
dripper.start()

# The floods: each must get 431 and be closed at once.
def flood(name, head, endless=False):
    s = connect()
    try:
        s.sendall(head)
        if endless:  # keeps sending header bytes after the limit; the server must cut it off
            for _ in range(64):
                s.sendall(b"X-More: " + b"b" * 8192 + b"\r\n")
    except OSError:
        pass
    data, end = read_all(s, 5)
    s.close()
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    check(status.startswith("HTTP/1.1 431") or (endless and end == "reset"),
          f"{name}: expected 431, got {status!r} ({end})")
    check(end in ("eof", "reset"), f"{name}: the connection was left open after {status!r}")

for n in range(5):
    flood("a 64 KiB header line", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    flood("200 headers", b"GET /health HTTP/1.1\r\nHost: x\r\n" +
          b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n")
    flood("a 32 KiB request line", b"GET /health?" + b"q" * 32768 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    flood("an endless header stream", b"GET /health HTTP/1.1\r\nHost: x\r\n", endless=True)

# The other user during the attack.
during = []
rss_peak = rss_kib()
while time.monotonic() - start < HEADER_TIMEOUT - 2:
    during.append(victim_request())
    rss_peak = max(rss_peak, rss_kib())
    time.sleep(0.2)
worst = max(t for t, _ in during)
print(f"during the attack: {len(during)} requests, slowest {worst*1000:.0f} ms; serve RSS peak {rss_peak} KiB", flush=True)
for _, status in during:
    check(status.endswith("200 OK"), f"request during the attack: {status}")
# Normal latency: a generous bound relative to this machine's own baseline.
check(worst < max(2.0, 5 * base), f"a request took {worst*1000:.0f} ms during the attack (baseline {base*1000:.0f} ms)")
check(rss_peak - rss_before < 64 * 1024, f"serve's RSS grew by {rss_peak - rss_before} KiB during the attack")

# The header timeout closes every slow connection: 408, then EOF.
deadline = start + HEADER_TIMEOUT + opened + 5
late = 0
results = {"408": 0, "reset": 0}
for s in silent + slow:
    data, end = read_all(s, max(0.1, deadline - time.monotonic()))
    if end == "open":
        late += 1
    elif data.startswith(b"HTTP/1.1 408"):
        results["408"] += 1
    elif end == "reset" and not data:
        results["reset"] += 1  # a drip byte crossed the close: the 408 can be lost to the reset
    else:
        check(False, f"a slow connection ended with {data[:40]!r} ({end})")
stop.set()
dripper.join()
closed_at = time.monotonic() - start
print(f"slow connections after {closed_at:.1f} s: {results['408']} got 408, {results['reset']} reset, {late} still open", flush=True)
check(late == 0, f"{late} slow connections still open {HEADER_TIMEOUT + 5:.0f} s after the header timeout started")
check(results["408"] >= len(silent), f"only {results['408']} connections got 408 (at least the {len(silent)} silent ones must)")
check(closed_at >= HEADER_TIMEOUT - 1, f"slow connections closed after {closed_at:.1f} s, before the header timeout")
for s in silent + slow:
    s.close()

time.sleep(0.5)
after = victim_request()
rss_after = rss_kib()
print(f"after: request {after[0]*1000:.0f} ms ({after[1]}), serve RSS {rss_after} KiB", flush=True)
check(after[1].endswith("200 OK"), f"request after the attack: {after[1]}")
check(rss_after - rss_before < 32 * 1024, f"serve's RSS stays {rss_after - rss_before} KiB above its start")
sys.exit(1 if failures else 0)
EOF
kill -0 "$serve_pid" 2>/dev/null || fail "serve died"
say "PASS"
