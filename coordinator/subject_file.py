"""SubjectFile at the coordinator: a subject's own file, gathered sealed from every department.

A subjects' portal device (a kiosk in the service hall, role `kiosk`; the online self-service
site, role `portal`) asks for the file of the subject of its session: every department's
records about them and why each counts or not, their list entries, and who asked about them.
Each department's node seals its part to the device's X25519 key (osmanthus.core.subjectseal)
and the coordinator forwards the parts as they came: it holds no key that opens them, and never
tries. The key must be the one the device's token names (claim `seal_fp`): the coordinator
refuses any other before asking a node, and every node checks the same itself, so a coordinator
that put its own key in would be refused by every department.

The coordinator adds one part of its own (source "coordinator"): the entries of its audit log
about the subject (found by the subject's hash under its own log salt; batch entries that named
the subject among others marked `in_batch`), this request included, sealed the same way so
that the portal reads one format, and signed with the coordinator's certificate key as each
node signs its part with its own (osmanthus.core.subjectpart). The portal's nonce goes to every
node unchanged: the coordinator cannot make a part, nor replay one from an earlier call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from coordinator.context import CoordinatorContext
from coordinator.nodes import NodeFailure, SubjectFileAnswer
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.auditproofs import proven_audit
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from osmanthus.core.ids import canonical_subject, validate_subject
from osmanthus.core.names import validate_purpose
from osmanthus.core.subjectfile import (
    AUDIT_SHAPE,
    COORDINATOR_SOURCE,
    MAX_ITEMS,
    AuditLine,
    SubjectFile,
    rfc3339,
    today_cst,
)
from osmanthus.core.subjectpart import PartSigner, seal_part
from osmanthus.core.subjectseal import SEAL_OVERHEAD, check_nonce, seal_fingerprint
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import (
    SELF_QUERY,
    SUBJECT_DEVICE_ROLES,
    DepartmentStatus,
    QueryId,
    SubjectKind,
)
from osmanthus.core.wire.coordinator import SubjectFileOutcome, SubjectFileRequest
from osmanthus.core.wire.node import MAX_SEALED_PART_BYTES, SealedPart, SubjectFileQuery

#: what the coordinator's own part says of this very request (it is audited once answered)
THIS_REQUEST_REASON: Final = "subject file forwarded sealed"


class SubjectFileGatherer:
    """Answers SubjectFile: checks the device and its key, asks every department, adds its own
    audit entries about the subject, and forwards every part sealed."""

    def __init__(self, ctx: CoordinatorContext, *, signer: PartSigner | None) -> None:
        """`signer`: the coordinator certificate's key that signs its own part; without one,
        no subject's file is served (the portal would refuse an unsigned part)."""
        self._ctx = ctx
        self._signer = signer

    def gather(
        self,
        query_id: QueryId,
        request: SubjectFileRequest,
        *,
        authenticate: Callable[[], TokenClaims],
        token: str | None,
    ) -> SubjectFileOutcome:
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
            extra={"parts_forwarded": 0},
        )
        with self._ctx.audited(record):
            claims = record.identify(authenticate())
            assert token is not None  # authenticate() refuses a missing token
            kind, subject = self._checked(request, claims)
            decision = self._ctx.require(
                engine,
                claims,
                "SubjectFile",
                ("Dataset", kind.value),
                {"purpose": request.purpose, "subject_kind": kind.value},
            )
            if request.purpose != SELF_QUERY:
                # whatever a policy permits: a subject's file is for the subject alone
                raise PermissionDenied(
                    f"a subject's file is asked for with purpose {SELF_QUERY!r} only",
                    field="purpose",
                )
            with self._ctx.rate_limited(claims.requester, engine.rate_limits(decision)):
                outcome = self._answer(query_id, kind, subject, request, claims, token)
            record.allow(
                THIS_REQUEST_REASON + (" (partial)" if outcome.partial else ""),
                parts_forwarded=len(outcome.parts),
                departments_missing=len(outcome.missing),
            )
        return outcome

    def _checked(self, request: SubjectFileRequest, claims: TokenClaims) -> tuple[SubjectKind, str]:
        """The request's subject, once the token is shown to allow it; refused early (before
        any policy or node is asked) when the device, the purpose or the key is not right."""
        kind = request.subject_kind
        if kind is None:
            raise InvalidArgument(
                "name the subject kind (person or enterprise)", field="subject_kind"
            )
        subject = validate_subject(kind, request.subject_id, field=kind.id_field)
        purpose = validate_purpose(request.purpose)
        # the device's, for this call: forwarded unchanged, bound into every part
        check_nonce(request.nonce)
        if self._signer is None:
            raise FailedPrecondition(
                "this coordinator has no key to sign its part of a subject's file with (its "
                "certificate's): it serves none"
            )
        if claims.role not in SUBJECT_DEVICE_ROLES:
            raise PermissionDenied(
                "a subject's file is given to a subjects' portal device only (role kiosk or "
                f"portal), not to role {claims.role.value!r}"
            )
        claims.require_purpose(purpose)
        # the key must be the token's: a key of the coordinator's (or anyone's) would open
        # every part; nodes check the same, this refuses before any of them is asked
        claims.require_seal_key(seal_fingerprint(request.recipient_key))
        return kind, subject

    def _answer(
        self,
        query_id: QueryId,
        kind: SubjectKind,
        subject: str,
        request: SubjectFileRequest,
        claims: TokenClaims,
        token: str,
    ) -> SubjectFileOutcome:
        expected = sorted(d.id for d in self._ctx.catalogue.departments_for(kind))
        configured = [d for d in expected if d in self._ctx.nodes.departments]
        failures = [
            NodeFailure(d, "no node registered for this department")
            for d in expected
            if d not in configured
        ]
        answers, failed = self._ctx.nodes.subject_files_all(
            configured,
            SubjectFileQuery(
                query_id=query_id,
                subject_kind=kind,
                subject_id=subject,
                purpose=SELF_QUERY,
                recipient_key=request.recipient_key,
                nonce=request.nonce,
            ),
            token=token,
            deadline_s=self._ctx.deadline_s,
        )
        failures += failed
        kept: list[SubjectFileAnswer] = []
        for answer in answers:
            size = len(answer.part.sealed)
            if not SEAL_OVERHEAD <= size <= MAX_SEALED_PART_BYTES:
                # the coordinator cannot read a part, but it can refuse to carry one of a size
                # no honest node sends
                failures.append(
                    NodeFailure(answer.department, f"sent a sealed part of {size} bytes; discarded")
                )
                continue
            if not answer.part.signature or not answer.part.certificate:
                # the portal would refuse the whole file over it: say which node is at fault
                failures.append(NodeFailure(answer.department, "sent an unsigned part; discarded"))
                continue
            kept.append(answer)
        if not kept:
            if failures and all(isinstance(f.error, PermissionDenied) for f in failures):
                # the departments' policies answer: a standing refusal, not an outage
                raise PermissionDenied(
                    "every department refused: "
                    + "; ".join(f"{f.department}: {f.reason}" for f in failures)
                )
            raise Unavailable(
                "no department answered: "
                + "; ".join(f"{f.department}: {f.reason}" for f in failures)
            )
        order = {dept: i for i, dept in enumerate(expected)}
        kept.sort(key=lambda a: order.get(a.department, len(order)))
        own = self._own_part(query_id, kind, subject, request, claims)
        missing = tuple(
            DepartmentStatus(f.department, f.reason)
            for f in sorted(failures, key=lambda f: f.department)
        )
        return SubjectFileOutcome(
            query_id=query_id,
            parts=(*(a.part for a in kept), own),
            missing=missing,
            partial=bool(missing),
        )

    def _own_part(
        self,
        query_id: QueryId,
        kind: SubjectKind,
        subject: str,
        request: SubjectFileRequest,
        claims: TokenClaims,
    ) -> SealedPart:
        """The coordinator's audit entries about the subject, sealed to the device's key and
        signed with the coordinator's."""
        now = self._ctx.clock()
        # each line with its logged line and inclusion proof to the log's newest witnessed
        # checkpoint (none is signed for this request)
        proven = proven_audit(
            self._ctx.audit,
            self._ctx.audit.subject_hash(subject),
            checkpoints=self._ctx.transparency,
            keep=MAX_ITEMS - 1,
        )
        # this request's own entry is written once it is answered: the subject sees it now,
        # unproven (pending) until a later file shows it in a checkpoint
        this = AuditLine(
            time=rfc3339(now),
            query_id=query_id,
            requester=claims.requester,
            purpose=SELF_QUERY,
            shape=AUDIT_SHAPE,
            consent_id="",
            decision="allow",
            reason=THIS_REQUEST_REASON,
        )
        own = SubjectFile(
            source=COORDINATOR_SOURCE,
            query_id=query_id,
            subject_kind=kind.value,
            subject_id=subject,
            as_of=today_cst(now).isoformat(),
            generated_at=rfc3339(now),
            audit=(*proven.lines, this),
            audit_truncated=proven.truncated,
            checkpoint=proven.checkpoint,
            subject_hash=proven.subject_hash,
        )
        assert self._signer is not None  # _checked refuses without one
        # fitted to the budget every node's part keeps to: the oldest audit lines go first
        # (the newest, this request's, goes last)
        return seal_part(
            subject_file=own,
            recipient_key=request.recipient_key,
            nonce=request.nonce,
            signer=self._signer,
            policy_hash=self._ctx.policy.current().hash,
        )
