"""The one mapping between Osmanthus errors and gRPC status codes, for servers and clients.

A refusal travels as its gRPC status code and message, with the standard rich error model
(google.rpc.Status in the `grpc-status-details-bin` trailer, as googleapis' python-api-core and
every gRPC language's status libraries read it):

- `ErrorInfo`: `reason` the error class in UPPER_SNAKE_CASE (e.g. RATE_LIMITED, NOT_FOUND),
  `domain` "osmanthus", `metadata` the offending field and the departments concerned;
- `BadRequest` with one `FieldViolation` (field, description) for INVALID_ARGUMENT;
- `RetryInfo` with the delay, for a rate limit that says when to come back.

The same facts also go in the plain trailing metadata of earlier releases (`osmanthus-field`,
`osmanthus-error`, `osmanthus-departments`), so older clients keep reading them. A client
rebuilds the Osmanthus error from the details first and falls back to the plain metadata.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from osmanthus.core import errors
from osmanthus.core.catalogue import DEPARTMENT_ID_PATTERN

_log = logging.getLogger(__name__)

#: ErrorInfo.domain of every Osmanthus error
ERROR_DOMAIN = "osmanthus"
#: the trailer that carries google.rpc.Status (gRPC's convention)
STATUS_DETAILS_KEY = "grpc-status-details-bin"

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
    # before FailedPrecondition: the first match names the class a client rebuilds
    (errors.KeyProofRequired, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.WitnessConflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.WitnessInconsistent, grpc.StatusCode.FAILED_PRECONDITION),
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


def error_reason(cls: type[errors.OsmanthusError]) -> str:
    """The ErrorInfo reason of an error class: its name in UPPER_SNAKE_CASE."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__).upper()


class _Status(NamedTuple):
    """A grpc.Status: what context.abort_with_status ends a call with."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def rich_status(error: errors.OsmanthusError) -> status_pb2.Status:
    """The google.rpc.Status a refusal travels as (see the module docstring)."""
    code = status_of(error)
    message = str(error)
    info = error_details_pb2.ErrorInfo(reason=error_reason(type(error)), domain=ERROR_DOMAIN)
    if error.field:
        info.metadata["field"] = error.field
    if error.departments:
        info.metadata["departments"] = ",".join(error.departments)
    # facts an error class adds for the caller to act on (e.g. RevocationsBehind's sequence)
    extra = getattr(error, "info_metadata", None)
    if isinstance(extra, dict):
        for key, value in extra.items():
            if isinstance(key, str) and isinstance(value, str):
                info.metadata[key] = value
    details = [info]
    if code is grpc.StatusCode.INVALID_ARGUMENT and error.field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message
                    )
                ]
            )
        )
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        details.append(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=math.ceil(retry_after))
            )
        )
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=code.value[0], message=message, details=packed)


def abort(context: grpc.ServicerContext, error: errors.OsmanthusError) -> NoReturn:
    metadata: list[tuple[str, str | bytes]] = [(ERROR_METADATA_KEY, type(error).__name__)]
    if error.field:
        metadata.append((FIELD_METADATA_KEY, error.field))
    if error.departments:
        metadata.append((DEPARTMENTS_METADATA_KEY, ",".join(error.departments)))
    status = rich_status(error)
    metadata.append((STATUS_DETAILS_KEY, status.SerializeToString()))
    context.abort_with_status(_Status(status_of(error), status.message, tuple(metadata)))
    raise AssertionError("unreachable: context.abort_with_status raises")  # pragma: no cover


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
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        # grpc's request iterator raises this when the call has ended under the handler: the
        # client cancelled it or went away, its deadline passed, or grpc refused one of its
        # messages (over the receive limit: the client reads RESOURCE_EXHAUSTED). Nothing is
        # wrong with this server, and grpc ends the call itself
        _log.info(
            "%s ended by the client or the transport (CANCELLED): the client cancelled or "
            "went away, its deadline passed, or a message of it was refused (one over the "
            "receive limit is RESOURCE_EXHAUSTED to the client)",
            name,
        )
        raise exc
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
        except GeneratorExit:
            # grpc closes the stream's generator when a response can no longer be sent: the
            # client cancelled or went away while the server was answering. Not an error
            if not context.is_active():
                _log.info(
                    "%s ended by the client or the transport (CANCELLED) while a response "
                    "was being sent",
                    method.__name__,
                )
            raise
        except Exception as exc:
            _abort_for(context, method.__name__, exc)

    return wrapper  # type: ignore[return-value]


def error_from_rpc(exc: grpc.RpcError) -> errors.OsmanthusError:
    """A failed call's status → the matching Osmanthus error, keeping the server's message.

    The standard details (ErrorInfo, BadRequest) are read first; a server of an earlier release
    sends only the plain trailing metadata, which is read otherwise.
    """
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    field: str | None = None
    name: str | None = None
    departments: tuple[str, ...] = ()
    retry_after_s: float | None = None
    if isinstance(exc, grpc.Call):
        for key, value in exc.trailing_metadata() or ():
            if key == FIELD_METADATA_KEY and isinstance(value, str):
                field = value
            elif key == ERROR_METADATA_KEY and isinstance(value, str):
                name = value
            elif key == DEPARTMENTS_METADATA_KEY and isinstance(value, str):
                departments = _departments(value.split(","))
        rich = _rich_details(exc)
        if rich is not None:
            name = rich.reason or name
            field = rich.field or field
            departments = rich.departments or departments
            retry_after_s = rich.retry_after_s
    message = details or code.name
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    cls = _FROM_STATUS.get(code, errors.OsmanthusError)
    named = _BY_NAME.get(name or "") or _BY_REASON.get(name or "")
    # trust the name only when it agrees with the status code, so a server cannot, say,
    # turn a permission refusal into an error the client would retry
    if named is not None and status_of(named("")) is code:
        cls = named
    if cls is errors.RateLimited:
        return errors.RateLimited(
            message, field=field, departments=departments, retry_after_s=retry_after_s
        )
    if cls is errors.WitnessConflict:
        latest = error_info(exc)[1].get("latest_size", "")
        return errors.WitnessConflict(
            message,
            field=field,
            departments=departments,
            latest_size=int(latest) if latest.isdigit() and len(latest) <= 20 else None,
        )
    return cls(message, field=field, departments=departments)


def error_info(exc: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata a failed call carries ("" and {} if none)."""
    if not isinstance(exc, grpc.Call):
        return "", {}
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        return "", {}
    if status is None:
        return "", {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return info.reason, dict(info.metadata)
    return "", {}


#: classes by their ErrorInfo reason, as error_from_rpc reads them
_BY_REASON: dict[str, type[errors.OsmanthusError]] = {
    error_reason(cls): cls for cls in _BY_NAME.values()
}


def _departments(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(d for d in values if DEPARTMENT_ID_PATTERN.match(d))


class _Rich(NamedTuple):
    reason: str | None
    field: str | None
    departments: tuple[str, ...]
    retry_after_s: float | None


def _rich_details(call: grpc.Call) -> _Rich | None:
    """What the call's google.rpc.Status says, if it sent one."""
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        # a status whose code or message contradicts the call's is not believed at all
        return None
    if status is None or status.code == code_pb2.OK:
        return None
    reason: str | None = None
    field: str | None = None
    departments: tuple[str, ...] = ()
    retry_after_s: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain != ERROR_DOMAIN:
                continue
            reason = info.reason or None
            field = info.metadata.get("field") or field
            if "departments" in info.metadata:
                departments = _departments(info.metadata["departments"].split(","))
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            if request.field_violations and not field:
                field = request.field_violations[0].field or None
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_s = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 or None
    return _Rich(reason, field, departments, retry_after_s)
