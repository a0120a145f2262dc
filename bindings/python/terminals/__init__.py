"""terminals: per-user isolated terminals behind one authenticating reverse proxy, from Python.

The library's event loop runs on a background thread owned by each :class:`Server` and
:class:`Orchestrator`. Their methods may be called from any Python thread, at the same time;
blocking calls release the GIL while they wait for the loop. Errors are raised as
:class:`TerminalsError` subclasses (``terminals.errors``).

>>> import terminals
>>> with terminals.Server(port=0, data_dir="/tmp/t", isolation="none") as server:
...     print(server.address, server.service_key)
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json as _json
import os as _os
import sys as _sys
import threading as _threading
import weakref as _weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from . import _terminals
from ._terminals import format_bytes, format_cpu, parse_bytes, parse_cpu, set_log_level
from .errors import (AlreadyExistsError, BackendUnavailableError, CancelledError, EofError,
                     InternalError, InvalidArgumentError, LimitExceededError, NotFoundError,
                     PolicyDeniedError, TerminalsError, TerminalsIOError, TerminalsTimeoutError,
                     TimeoutError, UpstreamProtocolError)

__all__ = [
    "Server", "Orchestrator", "agent_path", "Terminal", "TerminalRow", "TerminalEvent", "Policy", "PolicyStore",
    "StoredPolicy", "set_log_level", "parse_cpu", "parse_bytes", "format_cpu", "format_bytes",
    "TerminalsError", "InvalidArgumentError", "NotFoundError", "AlreadyExistsError",
    "PolicyDeniedError", "LimitExceededError", "BackendUnavailableError", "TerminalsTimeoutError",
    "TimeoutError", "CancelledError", "EofError", "UpstreamProtocolError", "TerminalsIOError",
    "InternalError",
]

# Objects with a loop thread that are still open; closed at interpreter exit so that no loop
# thread outlives the interpreter.
_live: "_weakref.WeakSet[Any]" = _weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for obj in list(_live):
        try:
            obj._atexit()
        except Exception:  # pragma: no cover - best effort at exit
            pass


def agent_path() -> str:
    """The ``terminals-agent`` binary used when none is given: ``$TERMINALS_AGENT_PATH``, else
    the one installed with this package (pip), else the one of the build tree this module was
    built in; "" lets the library look next to the Python executable, then on PATH."""
    env = _os.environ.get("TERMINALS_AGENT_PATH")
    if env:
        return env
    here = _os.path.dirname(_os.path.abspath(__file__))
    for candidate in (_os.path.join(here, "terminals-agent"),
                      _os.path.join(here, "..", "..", "..", "cli", "terminals-agent")):
        if _os.access(candidate, _os.X_OK):
            return _os.path.normpath(candidate)
    return ""


_find_agent = agent_path  # for code where a parameter named agent_path hides the function


def _time(seconds: float) -> Optional[_dt.datetime]:
    if not seconds:
        return None
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)


def _setting_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, (dict,)):
        return _json.dumps(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Server


class Server:
    """The whole service (authentication, orchestrator, proxy) on one HTTP listener, as
    ``terminals-cli serve`` runs it.

    Keyword arguments are the service's settings by their lower-case names without the
    ``TERMINALS_`` prefix: ``host``, ``port``, ``data_dir``, ``api_key``, ``isolation``,
    ``backend``, ``image``, ``idle_timeout_minutes``, ``max_cpu``, ``open_webui_url``, ... (the
    README's settings table); ``settings`` takes ``TERMINALS_*`` names instead. Keywords win over
    ``settings``. The process environment and ``.env`` are *not* read unless
    ``from_environment=True``. ``port=0`` picks a free port (see :attr:`port`). ``host``
    defaults to 127.0.0.1 here (the CLI's default is 0.0.0.0).

    Use as a context manager (``with Server(...) as s:`` starts it and stops it at the end), or
    call :meth:`start` and :meth:`stop`, or :meth:`serve_forever`. Stopping leaves terminals
    running; the next server on the same data directory adopts them.
    """

    def __init__(self, *, settings: Optional[Mapping[str, Any]] = None, from_environment: bool = False,
                 **kwargs: Any) -> None:
        flags: Dict[str, str] = {}
        for name, value in (settings or {}).items():
            if value is not None:
                flags[name.upper()] = _setting_value(value)
        kwargs.setdefault("host", "127.0.0.1")
        for name, value in kwargs.items():
            if value is None:
                continue
            key = name.upper()
            if key != "OPEN_TERMINAL_SYSTEM_PROMPT" and not key.startswith("TERMINALS_"):
                key = "TERMINALS_" + key
            flags[key] = _setting_value(value)
        if "TERMINALS_AGENT_PATH" not in flags and not (from_environment and "TERMINALS_AGENT_PATH" in _os.environ):
            found = _find_agent()
            if found:
                flags["TERMINALS_AGENT_PATH"] = found
        known = set(_terminals._known_setting_names())
        unknown = sorted(k for k in flags if k not in known)
        if unknown:
            raise TypeError("unknown setting(s): " + ", ".join(unknown))
        environment = [f"{k}={v}" for k, v in _os.environ.items()] if from_environment else []
        self._impl = _terminals._Service(flags, environment)
        self._lock = _threading.Lock()
        _live.add(self)

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "Server":
        """Adopts the terminals the backend already runs, then listens. Returns once serving."""
        self._impl.start()
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stops accepting, lets requests in flight finish for up to ``grace`` seconds, and stops
        the loop thread. Terminals keep running. Idempotent; any thread may call it (for example
        to end :meth:`serve_forever` in another thread)."""
        self._impl.stop(grace)
        _live.discard(self)

    close = stop

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        """Starts (if needed) and serves until :meth:`stop` is called from another thread, or
        until Ctrl-C: then the server is stopped cleanly and ``KeyboardInterrupt`` propagates."""
        try:
            if not self._impl.running and not self._impl.stopped:
                self.start()
            # Short waits with the GIL released; Python delivers signals between them.
            while not self._impl.wait(poll_interval):
                pass
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _atexit(self) -> None:
        self._impl.stop(1.0)

    # Properties --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._impl.running

    @property
    def host(self) -> str:
        return self._impl.host

    @property
    def port(self) -> int:
        """The port it listens on (the real one when created with ``port=0``), after start."""
        return self._impl.port

    @property
    def address(self) -> str:
        """``http://HOST:PORT`` to reach it from this machine (a wildcard host reads as loopback)."""
        host = self._impl.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._impl.port}"

    @property
    def service_key(self) -> str:
        """The service key (secret): ``Authorization: Bearer <key>`` plus ``X-User-Id``."""
        return self._impl.service_key

    @property
    def service_key_generated(self) -> bool:
        return self._impl.service_key_generated

    @property
    def service_key_path(self) -> str:
        return self._impl.service_key_path

    @property
    def backend_description(self) -> str:
        return self._impl.backend_description

    @property
    def data_dir(self) -> str:
        return self._impl.data_dir

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._impl.stopped else "created"
        where = f" {self.address}" if self.running else ""
        return f"<terminals.Server {state}{where}>"


# ---------------------------------------------------------------------------------------------
# Orchestrator


@dataclass(frozen=True)
class Terminal:
    """A running terminal handed out by :meth:`Orchestrator.acquire`.

    ``endpoint`` is where its agent listens (``unix:/...`` for the local backend). ``api_key``
    is the agent's bearer key: a secret, never shown in ``repr``; do not log it."""

    name: str
    user_id: str
    policy_id: str
    context_id: str
    state: str
    endpoint: str
    created_at: Optional[_dt.datetime]
    reason: str = ""
    api_key: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class TerminalRow:
    """One terminal as :meth:`Orchestrator.list` reports it (no key)."""

    name: str
    user_id: str
    policy_id: str
    context_id: str
    state: str
    reason: str
    created_at: Optional[_dt.datetime]
    last_activity: Optional[_dt.datetime]
    open_connections: int


@dataclass(frozen=True)
class TerminalEvent:
    """A lifecycle event: ``event`` is "provisioned", "provision_failed", "stopped", "reset" or
    "stop_failed"; ``detail`` says why."""

    event: str
    user_id: str
    policy_id: str
    context_id: str
    detail: str


class Orchestrator:
    """Terminals on this host (the local backend): one ``terminals-agent`` per (user, policy,
    context), provisioned on first :meth:`acquire`, stopped when idle.

    ``isolation`` is "none", "user" or "sandbox" (empty: the strongest this host allows;
    "user" and "sandbox" need root). ``agent_path``: the ``terminals-agent`` binary (default:
    :func:`terminals.agent_path`).
    ``policies``: a :class:`PolicyStore` to resolve policy ids; without one only "default" exists.
    ``on_event(TerminalEvent)`` is called for lifecycle events on a dispatcher thread of this
    object (never on the loop thread, so it may call back into the orchestrator); exceptions it
    raises are reported with ``sys.unraisablehook`` and otherwise ignored.

    :meth:`close` (or leaving the ``with`` block) shuts the orchestrator down; terminals keep
    running, and the next orchestrator on the same data directory adopts them. Use
    :meth:`stop` first to stop them.
    """

    def __init__(self, data_dir: str, *, isolation: str = "", agent_path: Optional[str] = None,
                 max_concurrent_provisions: int = 8, max_queued_provisions: int = 256,
                 idle_timeout_minutes: float = 30, policies: Optional["PolicyStore"] = None,
                 image: str = "", on_event: Optional[Callable[[TerminalEvent], Any]] = None) -> None:
        if agent_path is None:
            agent_path = _find_agent()
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be callable")
        self._on_event = on_event
        self._impl = _terminals._Orchestrator(
            _os.fspath(data_dir), isolation or "", agent_path, int(max_concurrent_provisions),
            int(max_queued_provisions), float(idle_timeout_minutes),
            policies._impl if policies is not None else None, on_event is not None, image)
        self._dispatcher: Optional[_threading.Thread] = None
        if on_event is not None:
            self._dispatcher = _threading.Thread(target=self._dispatch, name="terminals-events", daemon=True)
            self._dispatcher.start()
        _live.add(self)

    def _dispatch(self) -> None:
        while True:
            item = self._impl.next_event()
            if item is None:
                return
            try:
                self._on_event(TerminalEvent(*item))  # type: ignore[misc]
            except BaseException as exc:  # noqa: BLE001 - a callback must not end the dispatcher
                _sys.unraisablehook(_UnraisableEvent(exc, self._on_event))

    def acquire(self, user_id: str, policy_id: str = "default", context_id: str = "") -> Terminal:
        """A running terminal for (user, policy, context), provisioned if needed."""
        d = self._impl.acquire(user_id, policy_id, context_id)
        return Terminal(name=d["name"], user_id=d["user_id"], policy_id=d["policy_id"],
                        context_id=d["context_id"], state=d["state"], endpoint=d["endpoint"],
                        created_at=_time(d["created_at"]), reason=d["reason"], api_key=d["api_key"])

    def list(self) -> List[TerminalRow]:
        """Every terminal tracked (running, starting, stopped or failed), sorted by key."""
        return [TerminalRow(name=d["name"], user_id=d["user_id"], policy_id=d["policy_id"],
                            context_id=d["context_id"], state=d["state"], reason=d["reason"],
                            created_at=_time(d["created_at"]), last_activity=_time(d["last_activity"]),
                            open_connections=d["open_connections"])
                for d in self._impl.list()]

    def stop(self, user_id: Optional[str] = None, policy_id: Optional[str] = None,
             context_id: Optional[str] = None) -> int:
        """Stops the running terminals that match (None matches any; context "default" matches
        only default contexts) and returns how many. Their data stays."""
        return self._impl.stop(user_id or "", policy_id or "", context_id or "")

    def refresh(self, user_id: Optional[str] = None, policy_id: Optional[str] = None,
                context_id: Optional[str] = None, *, only_idle: bool = True, reset: bool = False) -> int:
        """Stops matching terminals (with ``only_idle``, only idle ones) so the next acquire gets
        a fresh one; with ``reset`` their data goes too. Returns how many."""
        return self._impl.refresh(user_id or "", policy_id or "", context_id or "", bool(only_idle), bool(reset))

    def close(self) -> None:
        """Shuts down (acquires in flight fail with CancelledError); terminals keep running.
        Idempotent."""
        self._impl.close()
        d = self._dispatcher
        if d is not None and d is not _threading.current_thread():
            d.join()
        _live.discard(self)

    def _atexit(self) -> None:
        self.close()

    def __enter__(self) -> "Orchestrator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _UnraisableEvent:
    """What sys.unraisablehook expects (the real type is not constructible from Python)."""

    def __init__(self, exc: BaseException, obj: Any) -> None:
        self.exc_type = type(exc)
        self.exc_value = exc
        self.exc_traceback = exc.__traceback__
        self.err_msg = "Exception ignored in terminals.Orchestrator on_event callback"
        self.object = obj


# ---------------------------------------------------------------------------------------------
# Policies


def _caps_args(caps: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    if not caps:
        return {}
    allowed = {"max_cpu", "max_memory", "max_storage", "allowed_images"}
    unknown = sorted(set(caps) - allowed)
    if unknown:
        raise TypeError("unknown cap(s): " + ", ".join(unknown) + " (expected " + ", ".join(sorted(allowed)) + ")")
    return {k: _setting_value(v) for k, v in caps.items() if v is not None}


def _policy_json(policy: Union["Policy", Mapping[str, Any], str]) -> str:
    if isinstance(policy, Policy):
        return policy.to_json()
    if isinstance(policy, str):
        return policy
    if isinstance(policy, Mapping):
        return _json.dumps(dict(policy))
    raise TypeError("a policy is a terminals.Policy, a dict or JSON text")


class Policy:
    """A validated policy: what the terminals of one policy id get (image, cpu_limit,
    memory_limit, storage, env, idle_timeout_minutes, isolation, network, pids_limit,
    max_terminals, ...). Build one with :meth:`parse`."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    @classmethod
    def parse(cls, policy: Union[Mapping[str, Any], str], caps: Optional[Mapping[str, Any]] = None) -> "Policy":
        """Validates a policy (a dict or JSON text). ``caps``: ``max_cpu``, ``max_memory``,
        ``max_storage``, ``allowed_images`` as the operator sets them. Raises
        InvalidArgumentError (malformed) or PolicyDeniedError (over a cap, disallowed image)."""
        canonical = _terminals._parse_policy(_policy_json(policy), **_caps_args(caps))
        return cls(_json.loads(canonical))

    def to_dict(self) -> Dict[str, Any]:
        return _json.loads(_json.dumps(self._data))

    def to_json(self) -> str:
        return _json.dumps(self._data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other._data == self._data

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Policy({self._data!r})"


@dataclass(frozen=True)
class StoredPolicy:
    """A policy in a :class:`PolicyStore`, with its revision and times."""

    id: str
    policy: Policy
    revision: int
    created_at: Optional[_dt.datetime]
    updated_at: Optional[_dt.datetime]


def _stored(d: Mapping[str, Any]) -> StoredPolicy:
    return StoredPolicy(id=d["id"], policy=Policy(_json.loads(d["data"])), revision=d["revision"],
                        created_at=_time(d["created_at"]), updated_at=_time(d["updated_at"]))


class PolicyStore:
    """Policies kept as files in ``directory`` (created 0700), written crash-safely. Policies
    are validated (against ``caps`` when given) before they are stored. Thread-safe."""

    def __init__(self, directory: Union[str, "_os.PathLike[str]"], *, caps: Optional[Mapping[str, Any]] = None) -> None:
        self._impl = _terminals._PolicyStore(_os.fspath(directory), **_caps_args(caps))

    def list(self) -> List[StoredPolicy]:
        """Every policy, oldest first."""
        return [_stored(d) for d in self._impl.list()]

    def get(self, policy_id: str) -> StoredPolicy:
        """NotFoundError when there is none."""
        return _stored(self._impl.get(policy_id))

    def create(self, policy_id: str, policy: Union[Policy, Mapping[str, Any], str]) -> StoredPolicy:
        """AlreadyExistsError when it exists."""
        return _stored(self._impl.create(policy_id, _policy_json(policy)))

    def put(self, policy_id: str, policy: Union[Policy, Mapping[str, Any], str], *,
            expected_revision: Optional[int] = None) -> StoredPolicy:
        """Creates or replaces. With ``expected_revision`` (0: must not exist), another current
        revision raises AlreadyExistsError (a lost-update guard)."""
        return _stored(self._impl.put(policy_id, _policy_json(policy), expected_revision))

    def remove(self, policy_id: str) -> None:
        """NotFoundError when there is none."""
        self._impl.remove(policy_id)

    def lifecycle(self, policy_id: str) -> Dict[str, Any]:
        """The policy's lifecycle (reset schedule) configuration; {} when none."""
        return _json.loads(self._impl.lifecycle(policy_id))

    def set_lifecycle(self, policy_id: str, config: Mapping[str, Any]) -> None:
        """Replaces it; {} clears it."""
        self._impl.put_lifecycle(policy_id, _json.dumps(dict(config)))

    def close(self) -> None:
        """Releases the store's directory lock (another store may open it then). Acquires of
        orchestrators that use this store fail with CancelledError afterwards."""
        self._impl.close()

    def __enter__(self) -> "PolicyStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __contains__(self, policy_id: str) -> bool:
        try:
            self.get(policy_id)
        except NotFoundError:
            return False
        return True

    def __iter__(self) -> Iterable[StoredPolicy]:
        return iter(self.list())
