"""Exceptions raised by terminals: one class per library error code (``Errc``).

Every class derives from :class:`TerminalsError` and, where one fits, from the matching
built-in exception, so ``except LookupError`` or ``except PermissionError`` work too.
"""

from __future__ import annotations

import builtins
from typing import Dict, Type

__all__ = [
    "TerminalsError", "InvalidArgumentError", "NotFoundError", "AlreadyExistsError",
    "PolicyDeniedError", "LimitExceededError", "BackendUnavailableError",
    "TerminalsTimeoutError", "TimeoutError", "CancelledError", "EofError",
    "UpstreamProtocolError", "TerminalsIOError", "InternalError",
]


class TerminalsError(Exception):
    """Base class. ``code`` is the library's error code ("not_found", ...), ``message`` says
    what failed and, where it helps, how to fix it."""

    code = "internal"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(TerminalsError, ValueError):
    """The input was malformed (fix the input)."""
    code = "invalid_argument"


class NotFoundError(TerminalsError, LookupError):
    """The named thing does not exist."""
    code = "not_found"


class AlreadyExistsError(TerminalsError):
    """A create collided with an existing thing (or a put's expected revision did not match)."""
    code = "already_exists"


class PolicyDeniedError(TerminalsError, PermissionError):
    """A policy, cap or credential refused the operation."""
    code = "policy_denied"


class LimitExceededError(TerminalsError):
    """A size, count or rate limit was hit."""
    code = "limit_exceeded"


class BackendUnavailableError(TerminalsError, ConnectionError):
    """The engine (Docker, Kubernetes, local) could not be reached."""
    code = "backend_unavailable"


class TerminalsTimeoutError(TerminalsError, builtins.TimeoutError):
    """The operation did not finish in time."""
    code = "timeout"


TimeoutError = TerminalsTimeoutError  # noqa: A001 - terminals.TimeoutError, as the brief names it


class CancelledError(TerminalsError):
    """The operation was cancelled, usually because the object was closed."""
    code = "cancelled"


class EofError(TerminalsError, EOFError):
    """The peer closed the stream."""
    code = "eof"


class UpstreamProtocolError(TerminalsError):
    """The peer spoke malformed or unexpected protocol."""
    code = "upstream_protocol"


class TerminalsIOError(TerminalsError, OSError):
    """An operating-system I/O error."""
    code = "io"


class InternalError(TerminalsError):
    """A bug or an unexpected state."""
    code = "internal"


_BY_CODE: Dict[str, Type[TerminalsError]] = {
    cls.code: cls
    for cls in (InvalidArgumentError, NotFoundError, AlreadyExistsError, PolicyDeniedError,
                LimitExceededError, BackendUnavailableError, TerminalsTimeoutError, CancelledError,
                EofError, UpstreamProtocolError, TerminalsIOError, InternalError)
}


def _from_code(code: str, message: str) -> TerminalsError:
    """The exception for a library error (called by the extension module)."""
    cls = _BY_CODE.get(code, TerminalsError)
    return cls(message, code)
