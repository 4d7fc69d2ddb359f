"""Osmanthus errors ↔ gRPC status codes, through a real gRPC server and client on 127.0.0.1.

The server here is insecure (no TLS) on purpose: this test is about the status mapping of
`servicer_method` and `error_from_rpc`, not about transport security, which the TLS tests cover.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from osmanthus.core import errors
from osmanthus.core.grpc_errors import (
    ERROR_METADATA_KEY,
    FIELD_METADATA_KEY,
    error_from_rpc,
    servicer_method,
    status_of,
)

SERVICE = "osmanthus.test.Errors"
SECRET = "p=1234567890123456789 and the salt is hunter2"

#: the documented mapping (osmanthus/core/grpc_errors.py):
#: class → (status, class the client rebuilds)
EXPECTED: dict[type[errors.OsmanthusError], tuple[grpc.StatusCode, type[errors.OsmanthusError]]] = {
    errors.InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    # ImportRejected's problem list does not travel: the client sees the general class
    errors.ImportRejected: (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    # shares INVALID_ARGUMENT; the class name in the trailing metadata tells them apart
    errors.CryptoError: (grpc.StatusCode.INVALID_ARGUMENT, errors.CryptoError),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
    errors.PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    errors.NotFound: (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    errors.FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    # shares FAILED_PRECONDITION; the coordinator resends with the key's proof on this one
    errors.KeyProofRequired: (grpc.StatusCode.FAILED_PRECONDITION, errors.KeyProofRequired),
    # a witness's 409 and 422 (C2SP tlog-witness): the submitter retries only the first
    errors.WitnessConflict: (grpc.StatusCode.FAILED_PRECONDITION, errors.WitnessConflict),
    errors.WitnessInconsistent: (
        grpc.StatusCode.FAILED_PRECONDITION,
        errors.WitnessInconsistent,
    ),
    errors.Unavailable: (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
    errors.DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    errors.RateLimited: (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RateLimited),
    # shares RESOURCE_EXHAUSTED but is not retryable: the class name tells them apart
    errors.BudgetExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.BudgetExhausted),
    # a server's broken configuration is the server's problem, not the caller's
    errors.ConfigError: (grpc.StatusCode.INTERNAL, errors.ConfigError),
    errors.OsmanthusError: (grpc.StatusCode.INTERNAL, errors.OsmanthusError),
}


def all_error_classes() -> set[type[errors.OsmanthusError]]:
    found: set[type[errors.OsmanthusError]] = {errors.OsmanthusError}
    todo = [errors.OsmanthusError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__ == errors.__name__ and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def class_name(cls: object) -> str:
    return cls.__name__ if isinstance(cls, type) else repr(cls)


def make_error(name: str, message: str, field: str | None) -> Exception:
    cls = getattr(errors, name, None)
    if cls is errors.ImportRejected:
        return errors.ImportRejected(message, problems=[(3, "subject_id", "not a resident id")])
    if cls is errors.WitnessConflict:
        return errors.WitnessConflict(message, field=field, latest_size=41)
    if isinstance(cls, type) and issubclass(cls, errors.OsmanthusError):
        return cls(message, field=field)
    return RuntimeError(message)


class Raiser:
    """A servicer whose one method raises whatever the request names."""

    @servicer_method
    def Raise(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        spec = json.loads(request)
        if spec["error"] == "abort_not_found":
            # a handler that chose its own status: the decorator must leave it alone
            context.abort(grpc.StatusCode.NOT_FOUND, spec["message"])
        if spec["error"] == "forge":
            # a server naming a class of its choice next to a status of its choice
            context.set_trailing_metadata(((ERROR_METADATA_KEY, spec["name"]),))
            context.abort(grpc.StatusCode[spec["status"]], spec["message"])
        if spec["error"] == "none":
            return b"ok"
        raise make_error(spec["error"], spec["message"], spec["field"])


@pytest.fixture(scope="module")
def stub() -> Iterator[grpc.UnaryUnaryMultiCallable]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Raise": grpc.unary_unary_rpc_method_handler(Raiser().Raise)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    assert port
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel.unary_unary(f"/{SERVICE}/Raise")
    finally:
        channel.close()
        server.stop(0).wait()


def call(stub: grpc.UnaryUnaryMultiCallable, error: str, message: str, field: str | None) -> Any:
    request = json.dumps({"error": error, "message": message, "field": field}).encode()
    with pytest.raises(grpc.RpcError) as info:
        stub(request, timeout=10)
    return info.value


def test_the_expected_table_covers_every_error_class() -> None:
    assert all_error_classes() == set(EXPECTED)


@pytest.mark.parametrize("cls", sorted(EXPECTED, key=class_name), ids=class_name)
def test_status_of_matches_the_documented_table(cls: type[errors.OsmanthusError]) -> None:
    error = make_error(cls.__name__, "boom", "x")
    assert isinstance(error, errors.OsmanthusError)
    assert status_of(error) is EXPECTED[cls][0]


@pytest.mark.parametrize(
    "cls",
    # ConfigError is redacted on the way out: see test_config_error_text_stays_in_the_server_log
    sorted(set(EXPECTED) - {errors.ImportRejected, errors.ConfigError}, key=class_name),
    ids=class_name,
)
@pytest.mark.parametrize("field", ["purpose", "parts[3].ciphertext", None])
def test_error_crosses_the_wire_with_status_class_message_and_field(
    stub: grpc.UnaryUnaryMultiCallable, cls: type[errors.OsmanthusError], field: str | None
) -> None:
    status, rebuilt_class = EXPECTED[cls]
    message = "department 市公安局 refused: no valid consent"
    exc = call(stub, cls.__name__, message, field)
    assert exc.code() is status
    assert exc.details() == (f"{field}: {message}" if field else message)
    metadata = dict(exc.trailing_metadata() or ())
    assert metadata.get(FIELD_METADATA_KEY) == field
    assert metadata.get(ERROR_METADATA_KEY) == cls.__name__
    rebuilt = error_from_rpc(exc)
    assert type(rebuilt) is rebuilt_class
    assert rebuilt.field == field
    assert rebuilt.message == message
    assert str(rebuilt) == str(cls(message, field=field))


def test_a_witness_conflict_carries_the_witness_size(stub: grpc.UnaryUnaryMultiCallable) -> None:
    rebuilt = error_from_rpc(call(stub, "WitnessConflict", "old size 3 is not 41", "body"))
    assert isinstance(rebuilt, errors.WitnessConflict)
    assert rebuilt.latest_size == 41


def test_config_error_text_stays_in_the_server_log(
    stub: grpc.UnaryUnaryMultiCallable, caplog: pytest.LogCaptureFixture
) -> None:
    # a server's configuration problem may name its files; the caller gets only the kind
    secret = "rules file /srv/osmanthus/rules/psb.toml disagrees with the stored records"
    with caplog.at_level("ERROR", logger="osmanthus.core.grpc_errors"):
        exc = call(stub, "ConfigError", secret, "rules")
    assert exc.code() is grpc.StatusCode.INTERNAL
    assert "/srv/osmanthus" not in exc.details() and "rules" not in exc.details()
    assert "server log" in exc.details()
    rebuilt = error_from_rpc(exc)
    assert type(rebuilt) is errors.ConfigError and rebuilt.field is None
    assert secret in caplog.text


def test_import_rejected_arrives_as_invalid_argument(stub: grpc.UnaryUnaryMultiCallable) -> None:
    exc = call(stub, "ImportRejected", "3 rows are bad; nothing was imported", None)
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
    rebuilt = error_from_rpc(exc)
    assert type(rebuilt) is errors.InvalidArgument
    assert rebuilt.message == "3 rows are bad; nothing was imported"
    assert rebuilt.field is None


@pytest.mark.parametrize(
    ("claimed", "status", "expected"),
    [
        # a name that disagrees with the status is ignored: the status decides
        ("Unavailable", grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        ("CryptoError", grpc.StatusCode.INTERNAL, errors.OsmanthusError),
        ("ImportRejected", grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        ("SystemExit", grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        ("CryptoError", grpc.StatusCode.INVALID_ARGUMENT, errors.CryptoError),
    ],
)
def test_class_name_is_trusted_only_when_it_agrees_with_the_status(
    stub: grpc.UnaryUnaryMultiCallable,
    claimed: str,
    status: grpc.StatusCode,
    expected: type[errors.OsmanthusError],
) -> None:
    request = json.dumps(
        {"error": "forge", "message": "x", "field": None, "name": claimed, "status": status.name}
    ).encode()
    with pytest.raises(grpc.RpcError) as info:
        stub(request, timeout=10)
    assert info.value.code() is status
    assert type(error_from_rpc(info.value)) is expected


def test_unexpected_exception_becomes_internal_without_its_text(
    stub: grpc.UnaryUnaryMultiCallable, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="osmanthus.core.grpc_errors"):
        exc = call(stub, "RuntimeError", SECRET, "should_not_matter")
    assert exc.code() is grpc.StatusCode.INTERNAL
    assert SECRET not in (exc.details() or "")
    assert "hunter2" not in (exc.details() or "")
    assert exc.details() == "internal error; see the server log"
    assert FIELD_METADATA_KEY not in dict(exc.trailing_metadata() or ())
    assert ERROR_METADATA_KEY not in dict(exc.trailing_metadata() or ())
    rebuilt = error_from_rpc(exc)
    assert type(rebuilt) is errors.OsmanthusError
    assert SECRET not in str(rebuilt)
    # the operator still finds the cause in the server's own log
    assert any(
        r.exc_info is not None and SECRET in str(r.exc_info[1])
        for r in caplog.records
        if r.name == "osmanthus.core.grpc_errors"
    )


def test_status_chosen_by_the_handler_passes_through(stub: grpc.UnaryUnaryMultiCallable) -> None:
    exc = call(stub, "abort_not_found", "no such consent", None)
    assert exc.code() is grpc.StatusCode.NOT_FOUND
    assert exc.details() == "no such consent"
    assert type(error_from_rpc(exc)) is errors.NotFound


def test_success_is_untouched(stub: grpc.UnaryUnaryMultiCallable) -> None:
    request = json.dumps({"error": "none", "message": "", "field": None}).encode()
    assert stub(request, timeout=10) == b"ok"


def test_status_osmanthus_never_sends_becomes_the_root_class(
    stub: grpc.UnaryUnaryMultiCallable,
) -> None:
    # grpc itself refuses a request above its default 4 MiB limit with RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        stub(b"x" * (5 << 20), timeout=10)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    rebuilt = error_from_rpc(info.value)
    assert type(rebuilt) is errors.OsmanthusError
    assert rebuilt.field is None
    assert rebuilt.message


# --- the standard rich error model (google.rpc.Status), as any language's client reads it -------


def _details(call_error: grpc.RpcError) -> dict[str, Any]:
    """What a client that knows nothing of Osmanthus reads: grpc_status and google.rpc types."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(call_error)
    assert status is not None, "no google.rpc.Status in the trailers"
    found: dict[str, Any] = {"code": status.code, "message": status.message}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def test_an_invalid_argument_carries_error_info_and_a_field_violation(
    stub: grpc.UnaryUnaryMultiCallable,
) -> None:
    exc = call(stub, "InvalidArgument", "must be 8-64 characters", "query_id")
    details = _details(exc)
    assert details["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert details["message"] == "query_id: must be 8-64 characters"
    info = details["ErrorInfo"]
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "osmanthus")
    assert dict(info.metadata) == {"field": "query_id"}
    (violation,) = details["BadRequest"].field_violations
    assert (violation.field, violation.description) == ("query_id", "must be 8-64 characters")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("PermissionDenied", "PERMISSION_DENIED"),
        ("RateLimited", "RATE_LIMITED"),
        ("BudgetExhausted", "BUDGET_EXHAUSTED"),
        ("CryptoError", "CRYPTO_ERROR"),
        ("Unavailable", "UNAVAILABLE"),
    ],
)
def test_every_refusal_names_its_kind_in_error_info(
    stub: grpc.UnaryUnaryMultiCallable, name: str, reason: str
) -> None:
    exc = call(stub, name, "refused", None)
    details = _details(exc)
    assert details["ErrorInfo"].reason == reason
    assert "BadRequest" not in details
    # and the Osmanthus client rebuilds the same class from it
    assert type(error_from_rpc(exc)).__name__ == name


def test_the_client_reads_the_details_without_the_older_metadata() -> None:
    # a server that sends only the standard details (another implementation, a proxy that
    # drops unknown trailers) is understood as well
    from osmanthus.core.grpc_errors import STATUS_DETAILS_KEY, rich_status

    error = errors.BudgetExhausted("ε budget spent until 2027-01-01", field="epsilon")
    status = rich_status(error)

    class Call(grpc.RpcError, grpc.Call):  # type: ignore[misc]
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return status.message

        def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
            return ((STATUS_DETAILS_KEY, status.SerializeToString()),)

    rebuilt = error_from_rpc(Call())
    assert type(rebuilt) is errors.BudgetExhausted
    assert rebuilt.field == "epsilon" and rebuilt.message == "ε budget spent until 2027-01-01"


def test_a_rate_limit_crosses_the_wire_with_its_retry_delay(
    stub: grpc.UnaryUnaryMultiCallable,
) -> None:
    exc = call(stub, "RateLimited", "limit reached", None)
    rebuilt = error_from_rpc(exc)
    # the test servicer raises RateLimited without a delay: none is invented on the way
    assert isinstance(rebuilt, errors.RateLimited) and rebuilt.retry_after_s is None


def test_a_rate_limit_says_when_to_come_back_in_retry_info() -> None:
    from google.rpc import error_details_pb2

    from osmanthus.core.grpc_errors import rich_status

    status = rich_status(errors.RateLimited("limit reached; retry in 42 s", retry_after_s=41.2))
    (retry,) = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    info = error_details_pb2.RetryInfo()
    retry.Unpack(info)
    assert info.retry_delay.seconds == 42
