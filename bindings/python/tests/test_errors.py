import builtins

import pytest

import terminals
from terminals import _terminals

CASES = [
    ("invalid_argument", terminals.InvalidArgumentError, ValueError),
    ("not_found", terminals.NotFoundError, LookupError),
    ("already_exists", terminals.AlreadyExistsError, None),
    ("policy_denied", terminals.PolicyDeniedError, PermissionError),
    ("limit_exceeded", terminals.LimitExceededError, None),
    ("backend_unavailable", terminals.BackendUnavailableError, ConnectionError),
    ("timeout", terminals.TerminalsTimeoutError, builtins.TimeoutError),
    ("cancelled", terminals.CancelledError, None),
    ("eof", terminals.EofError, EOFError),
    ("upstream_protocol", terminals.UpstreamProtocolError, None),
    ("io", terminals.TerminalsIOError, OSError),
    ("internal", terminals.InternalError, None),
]


@pytest.mark.parametrize("code,cls,builtin", CASES)
def test_each_code_maps_to_its_class(code, cls, builtin):
    with pytest.raises(cls) as err:
        _terminals._raise_for_test(code, "what failed")
    e = err.value
    assert type(e) is cls
    assert isinstance(e, terminals.TerminalsError)
    assert e.code == code == cls.code
    assert e.message == str(e) == "what failed"
    if builtin is not None:
        assert isinstance(e, builtin)


def test_aliases():
    assert terminals.TimeoutError is terminals.TerminalsTimeoutError
    assert terminals.errors.TimeoutError is terminals.TerminalsTimeoutError


def test_set_log_level():
    terminals.set_log_level("warning")
    with pytest.raises(terminals.InvalidArgumentError):
        terminals.set_log_level("loud")
    terminals.set_log_level("info")
