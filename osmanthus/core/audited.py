"""One audited decision per request: the steps of a request, and exactly one audit entry for it.

Every request a node or the coordinator serves is authenticated, checked, decided (policy,
consent, certificate role), charged against a rate limit and answered, and whatever happens on
the way, one audit entry records it: "allow" with the reason the handler gives, "deny" with the
refusal's reason (redacted, so no part of a subject's identifier is written), or "deny" with
"internal error" for a fault. Handlers run inside `audited(...)` and fill in an AuditedRequest as
they learn who asked and what; none of them writes an entry itself, so none can forget to, or
write two.

    record = AuditedRequest(query_id=qid, purpose=request.purpose, ...)
    with audited(log, record, clock=clock) as record:
        claims = record.identify(authenticate())
        ...
        record.allow("sum forwarded", ciphertexts_forwarded=1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from osmanthus.core.audit import AuditEntry, AuditLog, redacted_reason
from osmanthus.core.errors import OsmanthusError
from osmanthus.core.tokens import TokenClaims

_log = logging.getLogger(__name__)

#: the requester an entry names when the request was refused before anyone was identified
UNAUTHENTICATED = "unauthenticated"
#: the reason recorded for an exception that is not an Osmanthus refusal (its text may hold
#: anything, so the log does not; the server log has the traceback)
INTERNAL_ERROR = "internal error"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(kw_only=True)
class AuditedRequest:
    """What one request's audit entry will say, filled in while the request is served.

    Set what is known at the start (the query id, the purpose and shape asked, the policy version
    deciding, the subject as far as it is an identifier); the handler then names the requester
    once authenticated (`identify`), adds facts of the exchange to `extra` (counts and
    identifiers, never personal data), may replace the subject hashes with validated ones, and
    says why it allowed (`allow`).
    """

    query_id: str
    purpose: str = ""
    consent_id: str = ""
    #: the hash of the policy version that decides the request ("" where certificates decide)
    policy_hash: str = ""
    shape: str = ""
    subject_hash: str = ""
    subject_hashes: tuple[str, ...] = ()
    requester: str = UNAUTHENTICATED
    extra: dict[str, int | str] = field(default_factory=dict)
    #: why the request was allowed; set by `allow` before the handler returns
    reason: str = ""
    #: fills in, for a refusal only, what costs work to name and the answered path names
    #: better itself (a refused cohort's ids hashed as far as they are ids at all)
    on_refusal: Callable[[AuditedRequest], None] | None = None

    def identify(self, claims: TokenClaims) -> TokenClaims:
        """Record who asked, as the verified token names them; returns the claims."""
        self.requester = claims.requester
        return claims

    def allow(self, reason: str, **extra: int | str) -> None:
        """The request is answered: record why, with facts of the answer."""
        if not reason:
            raise ValueError("an allowed request records why it was allowed")
        self.reason = reason
        self.extra.update(extra)

    def entry(self, decision: str, reason: str, *, time: datetime) -> AuditEntry:
        return AuditEntry(
            time=time,
            query_id=self.query_id[:64],
            requester=self.requester,
            purpose=self.purpose[:64],
            consent_id=self.consent_id[:64],
            policy_hash=self.policy_hash,
            decision=decision,
            reason=reason,
            shape=self.shape,
            subject_hash=self.subject_hash,
            subject_hashes=self.subject_hashes,
            extra=self.extra,
        )


@contextmanager
def audited(
    log: AuditLog,
    record: AuditedRequest,
    *,
    clock: Callable[[], datetime] = _utc_now,
    redact: Callable[[OsmanthusError], str] = redacted_reason,
) -> Iterator[AuditedRequest]:
    """Run one request's steps and append its one audit entry, whatever they do.

    An OsmanthusError is a refusal: "deny" with `redact(error)` as the reason. Any other
    exception is a fault: "deny", "internal error". A block that ends without `record.allow`
    is a fault too (a handler must say why it answered), recorded as a denial and raised.
    The entry is on disk (AuditLog appends durably) before the answer or the error leaves;
    an entry that cannot be written raises the log's `Unavailable` in place of either, so that
    nothing leaves unaudited.
    """
    try:
        yield record
    except OsmanthusError as exc:
        _deny(log, record, redact(exc), clock)
        raise
    except Exception:
        _deny(log, record, INTERNAL_ERROR, clock)
        raise
    if not record.reason:
        _deny(log, record, INTERNAL_ERROR, clock)
        raise AssertionError(f"request {record.query_id}: answered without recording why")
    log.append(record.entry("allow", record.reason, time=clock()))


def _deny(
    log: AuditLog, record: AuditedRequest, reason: str, clock: Callable[[], datetime]
) -> None:
    if record.on_refusal is not None:
        record.on_refusal(record)
    log.append(record.entry("deny", reason, time=clock()))
