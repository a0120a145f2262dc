import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

import pytest

import terminals


def _get(url, headers=None, timeout=20):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def _server(data_dir, agent_path, **kw):
    return terminals.Server(port=0, data_dir=data_dir, isolation="none", agent_path=agent_path, **kw)


def test_start_stop_and_a_real_request(data_dir, agent_path):
    baseline = threading.active_count()
    server = _server(data_dir, agent_path, api_key="k" * 32)
    assert not server.running
    server.start()
    try:
        assert server.running
        assert server.port > 0
        assert server.address == f"http://127.0.0.1:{server.port}"
        assert server.service_key == "k" * 32
        status, body = _get(server.address + "/health")
        assert status == 200 and json.loads(body)["status"] is True
        # A user's terminal through the proxy: provisions an agent (isolation none).
        headers = {"Authorization": "Bearer " + server.service_key, "X-User-Id": "alice"}
        status, body = _get(server.address + "/files/cwd", headers)
        assert status == 200
        assert "cwd" in json.loads(body) or body
        # Without the key: refused.
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(server.address + "/files/cwd", {"X-User-Id": "alice"})
        assert err.value.code in (401, 403)
        err.value.close()  # an HTTPError holds its response's socket open until closed
    finally:
        server.stop()
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{server.port}/health", timeout=2)
    assert threading.active_count() == baseline


def test_context_manager_and_generated_key(data_dir, agent_path):
    with _server(data_dir, agent_path) as server:
        assert server.running
        assert len(server.service_key) >= 16
        assert server.service_key_generated
        assert os.path.exists(server.service_key_path)
        assert "local" in server.backend_description
        assert "running" in repr(server) and server.service_key not in repr(server)
    assert not server.running
    # The next server on the same data directory loads the same key.
    with _server(data_dir, agent_path) as again:
        assert again.service_key == server.service_key
        assert not again.service_key_generated


def test_settings_dict_and_validation(data_dir, agent_path):
    with pytest.raises(TypeError, match="TERMINALS_NO_SUCH"):
        terminals.Server(no_such=1, data_dir=data_dir)
    with pytest.raises(terminals.InvalidArgumentError, match="TERMINALS_IDLE_TIMEOUT_MINUTES"):
        terminals.Server(data_dir=data_dir, idle_timeout_minutes="soon")
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        terminals.Server(settings={"TERMINALS_ISOLATION": "bogus"}, data_dir=data_dir)
    s = terminals.Server(settings={"TERMINALS_PORT": "0", "TERMINALS_ISOLATION": "none",
                                   "TERMINALS_AGENT_PATH": agent_path, "TERMINALS_DATA_DIR": data_dir})
    with s:
        assert s.port > 0
        assert _get(s.address + "/health")[0] == 200


def test_port_in_use_raises(data_dir, agent_path):
    with _server(data_dir, agent_path) as first:
        other = terminals.Server(port=first.port, data_dir=data_dir + "2", isolation="none", agent_path=agent_path)
        with pytest.raises(terminals.TerminalsError):
            other.start()
        other.stop()


def test_serve_forever_stopped_from_another_thread(data_dir, agent_path):
    server = _server(data_dir, agent_path)
    timer = threading.Timer(0.5, server.stop)
    timer.start()
    t0 = time.monotonic()
    server.serve_forever()
    assert time.monotonic() - t0 < 15
    assert not server.running
    timer.join()


def test_serve_forever_ctrl_c(data_dir, agent_path):
    baseline = threading.active_count()
    server = _server(data_dir, agent_path)
    server.start()
    port = server.port
    killer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    killer.start()
    with pytest.raises(KeyboardInterrupt):
        server.serve_forever()
    killer.join()
    assert not server.running
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/health", timeout=2)
    assert threading.active_count() == baseline


def _run_script(code, data_dir, agent_path, **kw):
    env = dict(os.environ, DATA_DIR=data_dir, AGENT=agent_path)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_ctrl_c_in_a_subprocess(data_dir, agent_path):
    proc = _run_script("""
        import os, terminals
        s = terminals.Server(port=0, data_dir=os.environ["DATA_DIR"], isolation="none",
                             agent_path=os.environ["AGENT"])
        s.start()
        print(s.port, flush=True)
        try:
            s.serve_forever()
        except KeyboardInterrupt:
            print("interrupted", s.running, flush=True)
    """, data_dir, agent_path)
    port = proc.stdout.readline().strip()
    assert port.isdigit(), proc.stderr.read()
    time.sleep(0.5)  # into serve_forever
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "interrupted False" in out


def test_interpreter_exit_with_a_running_server(data_dir, agent_path):
    t0 = time.monotonic()
    proc = _run_script("""
        import os, urllib.request, terminals
        s = terminals.Server(port=0, data_dir=os.environ["DATA_DIR"], isolation="none",
                             agent_path=os.environ["AGENT"])
        s.start()
        urllib.request.urlopen(s.address + "/health", timeout=10).read()
        print("up", flush=True)
        # exits without stop(): the atexit hook stops it
    """, data_dir, agent_path)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "up" in out
    assert time.monotonic() - t0 < 10


def test_interpreter_exit_with_an_unreferenced_server(data_dir, agent_path):
    proc = _run_script("""
        import os, terminals
        terminals.Server(port=0, data_dir=os.environ["DATA_DIR"], isolation="none",
                         agent_path=os.environ["AGENT"]).start()
        import gc; gc.collect()
        o = terminals.Orchestrator(os.environ["DATA_DIR"] + "/o", isolation="none",
                                   agent_path=os.environ["AGENT"], on_event=print)
        print("ok", flush=True)
    """, data_dir, agent_path)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "ok" in out


def test_gateway_example(data_dir, agent_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    example = os.path.join(root, "examples", "python", "gateway.py")
    proc = subprocess.Popen([sys.executable, example, "--port", "0", "--data-dir", data_dir, "--isolation", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C"):
            break
    text = "".join(lines)
    assert "listening on http://127.0.0.1:" in text, proc.stderr.read() if proc.poll() is not None else text
    address = text.split("listening on ")[1].split()[0]
    key = text.split("Service key (generated now, stored in ")[1].splitlines()[1].strip()
    status, _ = _get(address + "/files/cwd", {"Authorization": "Bearer " + key, "X-User-Id": "gw"})
    assert status == 200
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "gateway stopped" in out


def test_start_twice_restart_and_never_started(data_dir, agent_path):
    baseline = threading.active_count()
    server = _server(data_dir, agent_path)
    server.start()
    server.start()  # already serving: no-op
    server.stop()
    with pytest.raises(terminals.InvalidArgumentError, match="stopped"):
        server.start()
    never = _server(data_dir, agent_path)
    del never  # created, never started: freed without a hang
    unstarted = _server(data_dir, agent_path)
    unstarted.stop()
    assert threading.active_count() == baseline
