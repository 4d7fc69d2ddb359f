"""FileCase at the coordinator: a subject's objection or repair application, forwarded sealed.

The online self-service portal (role `portal`, purpose `self_query`) files a case for the
subject signed in to it: an objection (异议) to one record or list entry of one department, or
an application for credit repair (信用修复). The portal sealed the case (statement, attachments,
commitment letter) to that department's case key, which the department's signed part of the
subject's file published (osmanthus.core.cases.seal_case), so the coordinator forwards it
without reading it; it holds no key that opens it.

What the coordinator decides is who may file and where the case goes: the requester's token and
certificate, the central policy (action `FileCase` on `Department::"<id>"`, deny by default;
the default policy permits the portal alone, under a rate limit), the department (it must be
in the catalogue and serve the subject's kind: NotFound naming `department` otherwise), the
subject id, the nonce, the sealed case's size and the shape of the portal's proof that it made
the seal (sender_key and sender_proof, forwarded unchanged: only the node, which holds the case
private key, can verify it). It then asks that one department's node, and
no other. The node checks the requester's token itself, opens the case, checks it against its
records and limits, and answers with a receipt or a refusal, which goes back to the portal as
the node gave it (its status, message and field), so that the subject sees why.

Every filing, allowed or refused here or at the node, is one entry of the coordinator's audit
log (shape "case"), naming the subject by its salted hash and the department; never a word of
the case, and for a refusal by the node only its kind and field, not its message (which may
name the record the case is about: the coordinator has no business keeping that).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

from coordinator.context import CoordinatorContext
from coordinator.nodes import FileCaseAnswer, NodeFailure
from osmanthus.core.audit import redacted_reason
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.cases import (
    CASE_ID_PATTERN,
    DRAFT_MAGIC,
    MAX_ATTACHMENT_BYTES,
    SENDER_PROOF_BYTES,
    CaseReceipt,
)
from osmanthus.core.errors import (
    BudgetExhausted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.ids import canonical_subject, validate_subject
from osmanthus.core.names import validate_purpose
from osmanthus.core.subjectseal import PUBLIC_KEY_BYTES, SEAL_OVERHEAD, check_nonce
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import SELF_QUERY, DepartmentId, QueryId, Role, SubjectKind
from osmanthus.core.wire.cases import FileCaseRequest, receipt_from_proto

#: the central policy's action, on resource Department::"<id>"
ACTION: Final = "FileCase"
#: the audit entry's `shape` for a filing (it releases no score)
AUDIT_SHAPE: Final = "case"
#: what the audit entry says of a case the department's node took
FORWARDED_REASON: Final = "case forwarded sealed to its department"
#: the portal's sealing public key (raw X25519), forwarded with its proof unchanged
SENDER_KEY_BYTES: Final = PUBLIC_KEY_BYTES
#: the header of an encoded case (statement up to 2,000 characters, a commitment letter up to
#: 4,000, the attachments' names and digests) fits in this many bytes with room to spare
_HEADER_ROOM: Final = 64 * 1024
#: the smallest and largest sealed case an honest portal sends: a draft's magic and header
#: length sealed, and every attachment byte allowed plus the header (under the servers' 1 MiB
#: receive limit, so the forwarded request fits the node's as well)
MIN_SEALED_CASE_BYTES: Final = SEAL_OVERHEAD + len(DRAFT_MAGIC) + 4
MAX_SEALED_CASE_BYTES: Final = SEAL_OVERHEAD + MAX_ATTACHMENT_BYTES + _HEADER_ROOM
#: a node's refusal is forwarded with at most this much of its message
_MAX_FORWARDED_MESSAGE: Final = 1_000
#: the node's refusals that reach the portal as they are: what the subject can act on (a
#: record not theirs, a case already open, a limit, a field of the case)
_FORWARDED_AS_IS: Final = (
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    RateLimited,
    BudgetExhausted,
)


class CaseForwarder:
    """Answers FileCase: checks the requester, the department and the case's envelope, decides
    under the central policy, and forwards the sealed case to the department's node alone."""

    def __init__(self, ctx: CoordinatorContext) -> None:
        self._ctx = ctx

    def file(
        self,
        query_id: QueryId,
        request: FileCaseRequest,
        *,
        authenticate: Callable[[], TokenClaims],
        token: str | None,
    ) -> CaseReceipt:
        """Authenticate, check, decide, charge the rate limit, forward; audit it all."""
        # one policy version decides the request and is the one the audit entry names
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=query_id,
            purpose=request.purpose,
            policy_hash=engine.hash,
            shape=AUDIT_SHAPE,
            subject_hash=self._ctx.audit.subject_hash(
                canonical_subject(request.subject_kind, request.subject_id)
            ),
        )
        refusals: list[OsmanthusError] = []
        with self._ctx.audited(record, redact=lambda e: _audit_reason(e, refusals)):
            claims = record.identify(authenticate())
            assert token is not None  # authenticate() refuses a missing token
            kind, subject, department = self._checked(request, claims)
            record.extra["department"] = department
            decision = self._ctx.require(
                engine,
                claims,
                ACTION,
                ("Department", department),
                {"purpose": request.purpose, "subject_kind": kind.value},
            )
            # whatever a policy permits: a case is filed by the subject, signed in online
            if claims.role is not Role.PORTAL:
                raise PermissionDenied(
                    "a case is filed through the online self-service portal only (role "
                    f"portal), not by role {claims.role.value!r}"
                )
            if request.purpose != SELF_QUERY:
                raise PermissionDenied(
                    f"a case is filed with purpose {SELF_QUERY!r} only", field="purpose"
                )
            # a filing the node refused still counts against the permit's @rate_limit: it had
            # the node open up to a megabyte, and refused filings are what a flood is made of;
            # only a filing no node answered is given back
            limits = engine.rate_limits(decision)
            stamp = self._ctx.rate_limiter.charge(claims.requester, limits)
            try:
                receipt = self._forward(
                    department,
                    dataclasses.replace(
                        request, query_id=query_id, subject_id=subject, department=department
                    ),
                    token=token,
                    refusals=refusals,
                )
            except (Unavailable, DeadlineExceeded):
                self._ctx.rate_limiter.refund(claims.requester, limits, stamp)
                raise
            record.allow(
                FORWARDED_REASON + (" (filed before: the same case)" if receipt.duplicate else ""),
                case_id=receipt.case_id,
            )
        return receipt

    def _checked(
        self, request: FileCaseRequest, claims: TokenClaims
    ) -> tuple[SubjectKind, str, DepartmentId]:
        """The subject and the department, once the request is shown to be well-formed and
        the token to allow its purpose; refused before any policy or node is asked."""
        kind = request.subject_kind
        subject = validate_subject(kind, request.subject_id, field=kind.id_field)
        claims.require_purpose(validate_purpose(request.purpose))
        try:
            check_nonce(request.case_nonce)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, field="case_nonce") from None
        # the portal's proof that it made this seal: only its shape is checked here; the
        # coordinator cannot verify it (the proof's key comes from the department's case
        # private key, which only its node holds: that is the point of it), nor does it need
        # to: the node checks that sender_key is the token's seal_fp and that the proof
        # verifies, so a coordinator holding a portal's token cannot file a case of its own
        if len(request.sender_key) != SENDER_KEY_BYTES:
            raise InvalidArgument(
                f"the portal's sealing public key is {SENDER_KEY_BYTES} raw bytes (X25519, the "
                f"key its token's seal_fp names); got {len(request.sender_key)}",
                field="sender_key",
            )
        if len(request.sender_proof) != SENDER_PROOF_BYTES:
            raise InvalidArgument(
                f"the portal's proof that it sealed the case is {SENDER_PROOF_BYTES} bytes "
                f"(osmanthus.core.cases.sender_proof); got {len(request.sender_proof)}",
                field="sender_proof",
            )
        size = len(request.sealed_case)
        if not MIN_SEALED_CASE_BYTES <= size <= MAX_SEALED_CASE_BYTES:
            raise InvalidArgument(
                f"a sealed case is {MIN_SEALED_CASE_BYTES} to {MAX_SEALED_CASE_BYTES} bytes "
                f"(osmanthus.core.cases.seal_case); got {size}",
                field="sealed_case",
            )
        department = self._ctx.catalogue.department(request.department)
        if not department.serves(kind):
            # the same code as an unknown department: there is no such department for the
            # subject, and the portal shows the message next to the department
            raise NotFound(
                f"department {department.id!r} keeps no records about {kind.value}s, so it "
                "has no case of theirs to decide",
                field="department",
            )
        return kind, subject, DepartmentId(department.id)

    def _forward(
        self,
        department: DepartmentId,
        request: FileCaseRequest,
        *,
        token: str,
        refusals: list[OsmanthusError],
    ) -> CaseReceipt:
        """The department's node's receipt, or its refusal as it gave it."""
        if department not in self._ctx.nodes.departments:
            raise Unavailable(
                f"no node is registered for {department}: the case cannot be filed now",
                departments=(department,),
            )
        answer = self._ctx.nodes.file_case(
            department, request, token=token, deadline_s=self._ctx.deadline_s
        )
        if isinstance(answer, NodeFailure):
            error = _from_node(answer)
            refusals.append(error)
            raise error
        return _checked_receipt(answer, department)


def _from_node(failure: NodeFailure) -> OsmanthusError:
    """The error the portal gets for a node's failure: the node's refusal with its status,
    message and field; Unavailable or DeadlineExceeded (naming the department) otherwise."""
    error = failure.error
    dept = failure.department
    if isinstance(error, _FORWARDED_AS_IS):
        message = error.message[:_MAX_FORWARDED_MESSAGE]
        if isinstance(error, RateLimited):
            return RateLimited(message, field=error.field, retry_after_s=error.retry_after_s)
        return type(error)(message, field=error.field)
    if isinstance(error, DeadlineExceeded):
        return DeadlineExceeded(
            f"{dept}'s node did not answer in time; the case may or may not be filed: file it "
            "again with the same nonce to find out (a case is never filed twice)",
            departments=(dept,),
        )
    return Unavailable(
        f"{dept}'s node did not take the case: {failure.reason[:_MAX_FORWARDED_MESSAGE]}",
        departments=(dept,),
    )


def _checked_receipt(answer: FileCaseAnswer, department: DepartmentId) -> CaseReceipt:
    """The node's receipt if it is one: the department asked, a case id, dates."""
    try:
        receipt = receipt_from_proto(answer.message)
    except InvalidArgument as exc:
        raise Unavailable(
            f"{department}'s node answered with a malformed receipt ({exc.field}); the case "
            "may be filed: file it again with the same nonce",
            departments=(department,),
        ) from None
    if receipt.department != department or not CASE_ID_PATTERN.fullmatch(receipt.case_id):
        raise Unavailable(
            f"{department}'s node answered with a receipt that is not one for this department "
            "(department or case id wrong)",
            departments=(department,),
        )
    return receipt


def _audit_reason(error: OsmanthusError, refusals: list[OsmanthusError]) -> str:
    """A refusal as the audit entry records it: a node's by its kind and field only."""
    if any(error is refused for refused in refusals):
        where = f" ({error.field})" if error.field else ""
        return f"refused by the department's node: {type(error).__name__}{where}"
    return redacted_reason(error)
