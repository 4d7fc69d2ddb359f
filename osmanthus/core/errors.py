"""The one error hierarchy of Osmanthus, shared by nodes, coordinator, SDK and CLI.

Every error names what went wrong in words a department operator or an SDK user can act on.
`field` names the offending input (a request field, a CSV column, a config key) where there is one.
The mapping to gRPC status codes lives in `osmanthus.core.grpc_errors` (one place per side).
"""

from __future__ import annotations


class OsmanthusError(Exception):
    """Root of every error Osmanthus raises on purpose."""

    #: process exit code the CLI uses for this class of error
    exit_code: int = 1
    #: whether the same request may succeed later unchanged (a server down, a deadline)
    retryable: bool = False

    def __init__(
        self, message: str, *, field: str | None = None, departments: tuple[str, ...] = ()
    ) -> None:
        self.field = field
        self.message = message
        #: the departments the failure is about (those that did not answer), where it has any
        self.departments = departments
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(OsmanthusError):
    """A value is malformed or out of range; `field` names it."""

    exit_code = 3


class ImportRejected(InvalidArgument):
    """A bulk import was refused; nothing was written. `problems` lists the bad rows (an import
    keeps the first thousand found); `problem_count` is how many problems there were in all."""

    def __init__(
        self,
        message: str,
        *,
        problems: list[tuple[int, str, str]],
        problem_count: int | None = None,
    ) -> None:
        # (line number, field, problem) for each bad row listed
        self.problems = problems
        self.problem_count = len(problems) if problem_count is None else problem_count
        super().__init__(message)


class ConfigError(OsmanthusError):
    """A configuration file, rule file, policy or certificate on disk is unusable."""

    exit_code = 3


class Unauthenticated(OsmanthusError):
    """The caller could not be identified: bad, expired or replayed token; wrong certificate."""

    exit_code = 4


class PermissionDenied(OsmanthusError):
    """The caller is known but policy, consent or key binding does not allow the request."""

    exit_code = 4


class NotFound(OsmanthusError):
    """A named object (consent, key registration, department) does not exist."""

    exit_code = 3


class FailedPrecondition(OsmanthusError):
    """The request is well-formed but the state does not allow it (e.g. too few departments)."""

    exit_code = 4


class KeyProofRequired(FailedPrecondition):
    """A node has not yet verified this key's modulus proof and none came with the request.

    The coordinator answers it by sending the request again with the registered proof attached
    (ErrorInfo reason KEY_PROOF_REQUIRED).
    """


class WitnessConflict(FailedPrecondition):
    """A witness refused a checkpoint: the request's old size is not the size the witness last
    cosigned for the log, or the checkpoint contradicts what it cosigned (C2SP tlog-witness
    409 Conflict). `latest_size` is the size the witness holds (ErrorInfo metadata
    latest_size): a submitter that was merely behind asks the log for a proof from there.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        departments: tuple[str, ...] = (),
        latest_size: int | None = None,
    ) -> None:
        self.latest_size = latest_size
        self.info_metadata = {} if latest_size is None else {"latest_size": str(latest_size)}
        super().__init__(message, field=field, departments=departments)


class WitnessInconsistent(FailedPrecondition):
    """A witness refused a checkpoint whose consistency proof from the last checkpoint it
    cosigned does not verify: the log does not extend what it signed before (C2SP tlog-witness
    422 Unprocessable Entity)."""


class Unavailable(OsmanthusError):
    """A server could not be reached or is shutting down."""

    exit_code = 5
    retryable = True


class DeadlineExceeded(OsmanthusError):
    """No answer arrived within the deadline."""

    exit_code = 5
    retryable = True


class RateLimited(OsmanthusError):
    """The requester made more requests than its policy allows in a period; retry later.

    `retry_after_s`, where known, is when the oldest grant in the window expires: clients get it
    as google.rpc.RetryInfo.
    """

    exit_code = 4
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        departments: tuple[str, ...] = (),
        retry_after_s: float | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, field=field, departments=departments)


class BudgetExhausted(OsmanthusError):
    """A STATS query would take the requester past its privacy budget (ε) for the period.

    Not retryable: room comes back only as earlier spending leaves the rolling period, which
    the message dates; retrying sooner is refused the same way.
    """

    exit_code = 4


class CryptoError(OsmanthusError):
    """A key or ciphertext failed validation, or decoding found an inconsistency."""

    exit_code = 3
