import os
import threading
import time

import pytest

import terminals


def _orch(data_dir, agent_path, **kw):
    return terminals.Orchestrator(data_dir, isolation="none", agent_path=agent_path, **kw)


def test_acquire_list_stop_refresh(data_dir, agent_path):
    baseline = threading.active_count()
    with _orch(data_dir, agent_path) as orch:
        t = orch.acquire("alice")
        assert isinstance(t, terminals.Terminal)
        assert (t.user_id, t.policy_id, t.context_id, t.state) == ("alice", "default", "", "running")
        assert t.endpoint.startswith("unix:")
        assert os.path.exists(t.endpoint[len("unix:"):])
        assert t.api_key and t.api_key not in repr(t)
        assert t.created_at is not None
        # The same key gives the same terminal.
        assert orch.acquire("alice").name == t.name
        other = orch.acquire("alice", context_id="chat:1")
        assert other.name != t.name
        rows = orch.list()
        assert [(r.user_id, r.context_id, r.state) for r in rows] == [("alice", "", "running"),
                                                                    ("alice", "chat:1", "running")]
        assert all(isinstance(r, terminals.TerminalRow) for r in rows)
        assert orch.stop(user_id="alice", context_id="default") == 1
        states = {r.context_id: r.state for r in orch.list()}
        assert states == {"": "stopped", "chat:1": "running"}
        # refresh(only_idle=False) stops the rest; reset removes the data.
        assert orch.refresh(only_idle=False) == 1
        assert orch.stop() == 0
        again = orch.acquire("alice")
        assert again.state == "running"
        assert orch.refresh("alice", only_idle=False, reset=True) >= 1
    assert threading.active_count() == baseline
    with pytest.raises(terminals.CancelledError):
        orch.acquire("alice")
    orch.close()  # idempotent


def test_terminals_survive_close_and_are_adopted(data_dir, agent_path):
    with _orch(data_dir, agent_path) as orch:
        name = orch.acquire("bob").name
    with _orch(data_dir, agent_path) as orch:
        rows = orch.list()
        assert [(r.name, r.state) for r in rows] == [(name, "running")]
        assert orch.stop() == 1


def test_errors(data_dir, agent_path):
    with _orch(data_dir, agent_path) as orch:
        with pytest.raises(terminals.InvalidArgumentError):
            orch.acquire("")
        with pytest.raises(terminals.NotFoundError) as err:
            orch.acquire("alice", policy_id="nope")
        assert err.value.code == "not_found" and "nope" in str(err.value)
        assert isinstance(err.value, LookupError)
    with pytest.raises(terminals.InvalidArgumentError):
        terminals.Orchestrator(data_dir, isolation="bogus", agent_path=agent_path)
    with pytest.raises(terminals.TerminalsError):
        terminals.Orchestrator(data_dir, isolation="none", agent_path="/nonexistent/agent")
    with pytest.raises(TypeError):
        terminals.Orchestrator(data_dir, isolation="none", agent_path=agent_path, on_event=42)


def test_events(data_dir, agent_path):
    baseline = threading.active_count()
    events = []
    seen = threading.Event()

    def on_event(ev):
        assert threading.current_thread() is not threading.main_thread()
        events.append(ev)
        # Calling back into the orchestrator from the callback is fine (not the loop thread).
        orch.list()
        if ev.event == "stopped":
            seen.set()

    orch = _orch(data_dir, agent_path, on_event=on_event)
    assert threading.active_count() == baseline + 1  # the dispatcher
    orch.acquire("carol")
    orch.stop("carol")
    assert seen.wait(10)
    orch.close()
    kinds = [e.event for e in events]
    assert kinds[:2] == ["provisioned", "stopped"]
    assert all(isinstance(e, terminals.TerminalEvent) and e.user_id == "carol" for e in events)
    assert threading.active_count() == baseline


def test_a_failing_callback_is_reported_not_fatal(data_dir, agent_path, monkeypatch):
    reported = []
    monkeypatch.setattr("sys.unraisablehook", reported.append)

    def boom(ev):
        raise RuntimeError("boom")

    with _orch(data_dir, agent_path, on_event=boom) as orch:
        orch.acquire("dave")
        orch.stop()
    assert reported and isinstance(reported[0].exc_value, RuntimeError)


def test_threads_at_once(data_dir, agent_path):
    baseline = threading.active_count()
    errors = []
    names = {}
    with _orch(data_dir, agent_path, max_concurrent_provisions=4) as orch:
        def work(i):
            try:
                for _ in range(3):
                    t = orch.acquire(f"user{i % 4}")
                    names.setdefault(t.user_id, set()).add(t.name)
                    orch.list()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert sorted(names) == [f"user{i}" for i in range(4)]
        assert all(len(v) == 1 for v in names.values())  # one terminal per user
        assert len(orch.list()) == 4
        assert orch.stop() == 4
    assert threading.active_count() == baseline


def test_close_while_other_threads_call(data_dir, agent_path):
    orch = _orch(data_dir, agent_path)
    outcomes = []

    def work():
        for _ in range(50):
            try:
                orch.list()
                orch.acquire("eve")
            except terminals.CancelledError:
                outcomes.append("cancelled")
                return
        outcomes.append("done")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    orch.close()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 4


def test_policies_from_a_store(data_dir, agent_path, tmp_path):
    store = terminals.PolicyStore(tmp_path / "policies")
    store.create("small", {"memory_limit": "256Mi", "idle_timeout_minutes": 5})
    with _orch(data_dir, agent_path, policies=store) as orch:
        t = orch.acquire("frank", policy_id="small")
        assert t.policy_id == "small"
        assert orch.acquire("frank").policy_id == "default"
        with pytest.raises(terminals.NotFoundError):
            orch.acquire("frank", policy_id="other")
        assert orch.stop() == 2
