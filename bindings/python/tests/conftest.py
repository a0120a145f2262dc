"""Shared fixtures. The module under test is the one on PYTHONPATH (scripts/test puts
<build>/bindings/python first); the agent binary is the one built next to it."""

import os
import signal
import subprocess
import threading
import time

import pytest

import terminals


def _agent_path() -> str:
    # $TERMINALS_AGENT_PATH, else the agent installed with the package or of its build tree.
    return terminals.agent_path()


# Started in the background by a non-interactive shell (`cmd &`), this process inherits SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler: the Ctrl-C tests would wait
# forever. Installing it here also gives the children a default SIGINT (exec resets handlers,
# not an ignored signal).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

AGENT = _agent_path()
os.environ["TERMINALS_AGENT_PATH"] = AGENT


@pytest.fixture(scope="session")
def agent_path() -> str:
    if not os.access(AGENT, os.X_OK):
        pytest.fail(f"terminals-agent not built at {AGENT} (build the terminals-agent target)")
    return AGENT


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    yield str(d)
    # Terminals keep running after close by design: end this test's agents.
    # Without LD_PRELOAD: under scripts/test's ThreadSanitizer run it holds libtsan, which a
    # plain pkill must not load (it hangs in the runtime's start-up).
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(["pkill", "-f", "--", f"--home {d}"], check=False, env=env)


@pytest.fixture
def thread_baseline():
    before = threading.active_count()
    yield before


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _os_threads() -> int:
    # The loop threads are C++ threads, invisible to threading.active_count().
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="session", autouse=True)
def warm_up(tmp_path_factory):
    """libuv and libcurl open a few process-wide descriptors once (libuv's signal pipe, ...), on
    first use; a server started and stopped once before the tests keeps those out of the counts."""
    d = tmp_path_factory.mktemp("warm-up")
    with terminals.Server(port=0, data_dir=str(d / "data"), isolation="none", api_key="warm-up-key-0123456789"):
        pass
    with terminals.Orchestrator(data_dir=str(d / "orch"), isolation="none"):
        pass


@pytest.fixture(autouse=True)
def no_leaks():
    """Every test ends with as many threads and open descriptors as it started with: servers,
    orchestrators and stores must release their loop threads, sockets and files when closed."""
    threads, fds = _os_threads(), _open_fds()
    yield
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if _os_threads() <= threads and _open_fds() <= fds:
            return
        time.sleep(0.02)
    leaked = [t.name for t in threading.enumerate()]
    targets = sorted(os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
                     if os.path.exists(f"/proc/self/fd/{n}"))
    pytest.fail(f"leaked: {_os_threads() - threads} threads (Python threads now: {leaked}), "
                f"{_open_fds() - fds} file descriptors (open now: {targets})")
