import json

import pytest

import terminals


def test_parse_and_round_trip():
    p = terminals.Policy.parse({"cpu_limit": "500m", "memory_limit": "1Gi", "env": {"A": "1"}, "custom": True})
    d = p.to_dict()
    assert d["cpu_limit"] == "500m" and d["memory_limit"] == "1Gi" and d["env"] == {"A": "1"}
    assert d["custom"] is True  # unknown keys are kept
    assert p["cpu_limit"] == "500m" and p.get("image") is None
    assert terminals.Policy.parse(p.to_json()) == p
    assert terminals.Policy.parse(json.dumps(d)) == p
    assert terminals.Policy.parse({"a": None}).to_dict() == {}


def test_validation_errors():
    with pytest.raises(terminals.InvalidArgumentError, match="cpu_limit"):
        terminals.Policy.parse({"cpu_limit": "abc"})
    with pytest.raises(terminals.InvalidArgumentError):
        terminals.Policy.parse("[1, 2]")
    with pytest.raises(terminals.InvalidArgumentError):
        terminals.Policy.parse("{not json")
    with pytest.raises(terminals.PolicyDeniedError, match="TERMINALS_MAX_CPU"):
        terminals.Policy.parse({"cpu_limit": "4000m"}, caps={"max_cpu": "2"})
    with pytest.raises(PermissionError):
        terminals.Policy.parse({"image": "evil/x"}, caps={"allowed_images": ["ghcr.io/open-webui/*"]})
    assert terminals.Policy.parse({"cpu_limit": "2"}, caps={"max_cpu": "2"})["cpu_limit"] == "2"
    with pytest.raises(TypeError):
        terminals.Policy.parse({}, caps={"max_gpu": "1"})
    with pytest.raises(TypeError):
        terminals.Policy.parse(42)


def test_quantities():
    assert terminals.parse_cpu("2") == 2000
    assert terminals.parse_cpu("500m") == 500
    assert terminals.parse_bytes("4Gi") == 4 << 30
    assert terminals.parse_bytes("512M") == 512_000_000
    assert terminals.format_cpu(1500) == "1500m"
    assert terminals.format_bytes(4 << 30) == "4Gi"
    with pytest.raises(terminals.InvalidArgumentError):
        terminals.parse_bytes("10m")
    with pytest.raises(ValueError):
        terminals.parse_cpu("-1")


def test_store(tmp_path):
    store = terminals.PolicyStore(tmp_path / "p", caps={"max_memory": "2Gi"})
    assert store.list() == []
    a = store.create("a", {"memory_limit": "1Gi"})
    assert (a.id, a.revision, a.policy["memory_limit"]) == ("a", 1, "1Gi")
    assert a.created_at is not None
    with pytest.raises(terminals.AlreadyExistsError):
        store.create("a", {})
    with pytest.raises(terminals.PolicyDeniedError):
        store.create("big", {"memory_limit": "4Gi"})
    with pytest.raises(terminals.InvalidArgumentError):
        store.create("../x", {})
    b = store.put("a", terminals.Policy.parse({"memory_limit": "512Mi"}))
    assert b.revision == 2 and b.policy["memory_limit"] == "512Mi"
    with pytest.raises(terminals.AlreadyExistsError):
        store.put("a", {}, expected_revision=1)
    store.put("b", "{}", expected_revision=0)
    assert [p.id for p in store.list()] == ["a", "b"]
    assert "a" in store and "zzz" not in store
    store.remove("a")
    with pytest.raises(terminals.NotFoundError):
        store.get("a")
    with pytest.raises(terminals.NotFoundError):
        store.remove("a")
    assert store.lifecycle("b") == {}
    # Reopened: the data is on disk.
    with pytest.raises(terminals.TerminalsIOError):
        terminals.PolicyStore(tmp_path / "p")  # locked by `store`
    store.close()
    with pytest.raises(terminals.CancelledError):
        store.list()
    again = terminals.PolicyStore(tmp_path / "p")
    assert [p.id for p in again.list()] == ["b"]
