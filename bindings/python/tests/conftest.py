"""Shared fixtures. The module under test is the one on PYTHONPATH (scripts/test puts
<build>/bindings/python first); the agent binary is the one built next to it."""

import os
import subprocess
import threading

import pytest

import terminals


def _agent_path() -> str:
    # $TERMINALS_AGENT_PATH, else the agent installed with the package or of its build tree.
    return terminals.agent_path()


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
    subprocess.run(["pkill", "-f", "--", f"--home {d}"], check=False)


@pytest.fixture
def thread_baseline():
    before = threading.active_count()
    yield before
