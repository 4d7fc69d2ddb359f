"""The one mapping between Osmanthus errors and gRPC status codes, for servers and clients."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from osmanthus.core import errors
from osmanthus.core.catalogue import DEPARTMENT_ID_PATTERN

_log = logging.getLogger(__name__)

#: trailing-metadata key carrying the offending field's name, so clients can rebuild `.field`
FIELD_METADATA_KEY = "osmanthus-field"
#: trailing-metadata key carrying the error class, for classes that share a status code
ERROR_METADATA_KEY = "osmanthus-error"
#: trailing-metadata key carrying the departments an error is about, comma-separated
DEPARTMENTS_METADATA_KEY = "osmanthus-departments"

_TO_STATUS: tuple[tuple[type[errors.OsmanthusError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.CryptoError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.BudgetExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ConfigError, grpc.StatusCode.INTERNAL),
)

#: classes a client may rebuild by name (all take (message, field=...)); anything else by status
_BY_NAME: dict[str, type[errors.OsmanthusError]] = {cls.__name__: cls for cls, _ in _TO_STATUS}

_FROM_STATUS: dict[grpc.StatusCode, type[errors.OsmanthusError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    # not RESOURCE_EXHAUSTED: grpc itself sends it (a message over the size limit); only a
    # RateLimited that names itself in the trailing metadata is rebuilt as one
}


def status_of(error: errors.OsmanthusError) -> grpc.StatusCode:
    for cls, code in _TO_STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, error: errors.OsmanthusError) -> NoReturn:
    metadata = [(ERROR_METADATA_KEY, type(error).__name__)]
    if error.field:
        metadata.append((FIELD_METADATA_KEY, error.field))
    if error.departments:
        metadata.append((DEPARTMENTS_METADATA_KEY, ",".join(error.departments)))
    context.set_trailing_metadata(tuple(metadata))
    context.abort(status_of(error), str(error))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


F = TypeVar("F", bound=Callable[..., Any])


def _abort_for(context: grpc.ServicerContext, name: str, exc: Exception) -> NoReturn:
    if isinstance(exc, errors.ConfigError):
        # a server-side configuration problem: its text may hold file paths, so only the
        # server's log gets it; the caller learns what kind of failure it was
        _log.error("configuration problem in %s: %s", name, exc)
        abort(
            context,
            errors.ConfigError(
                "the server's configuration cannot serve this request; "
                "its operator has the details in the server log"
            ),
        )
    if isinstance(exc, errors.OsmanthusError):
        abort(context, exc)
    if context.code() is not None:  # context.abort already chose a status
        raise exc
    _log.error("internal error in %s", name, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def servicer_method(method: F) -> F:
    """Turn OsmanthusError into its gRPC status; anything else becomes INTERNAL, logged."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort_for(context, method.__name__, exc)

    return wrapper  # type: ignore[return-value]


def stream_servicer_method(method: F) -> F:
    """servicer_method for a response-streaming method: errors raised mid-stream map the same."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as exc:
            _abort_for(context, method.__name__, exc)

    return wrapper  # type: ignore[return-value]


def error_from_rpc(exc: grpc.RpcError) -> errors.OsmanthusError:
    """A failed call's status → the matching Osmanthus error, keeping the server's message."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    field: str | None = None
    name: str | None = None
    departments: tuple[str, ...] = ()
    if isinstance(exc, grpc.Call):
        for key, value in exc.trailing_metadata() or ():
            if key == FIELD_METADATA_KEY and isinstance(value, str):
                field = value
            elif key == ERROR_METADATA_KEY and isinstance(value, str):
                name = value
            elif key == DEPARTMENTS_METADATA_KEY and isinstance(value, str):
                departments = tuple(d for d in value.split(",") if DEPARTMENT_ID_PATTERN.match(d))
    message = details or code.name
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    cls = _FROM_STATUS.get(code, errors.OsmanthusError)
    named = _BY_NAME.get(name or "")
    # trust the name only when it agrees with the status code, so a server cannot, say,
    # turn a permission refusal into an error the client would retry
    if named is not None and status_of(named("")) is code:
        cls = named
    return cls(message, field=field, departments=departments)
