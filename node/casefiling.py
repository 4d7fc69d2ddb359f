"""NodeService.FileCase: a subject's objection or credit-repair application, filed at the node.

The coordinator forwards what the portal sealed to this department's case key (node.cases);
the node decides for itself, as it does for a subject's file: the coordinator's certificate,
the portal's token verified here (role portal, purpose self_query), its own policy (action
`FileCase`), the portal's proof that it made the seal itself (its sealing key, which the token
binds, and osmanthus.core.cases.sender_proof: a coordinator that holds the token and the public
case key cannot file a case of its own), then the seal, the draft, the target and the limits.
A filing is stored whole in the case store, or nothing is; every filing, allowed or refused, is
one audit entry naming the subject by its salted hash, never the statement, an attachment or a
raw identifier.

A refusal's message travels back through the coordinator, which reads it: it names the field
and the kind of problem, never a target's id, an attachment's name, a record's category or
whether it counts, or a list entry's colour (the portal checked the attachments with
check_attachment before sending, and shows the subject the detailed message).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import date
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.cases import CaseStore, Filing
from node.lists import ListStore
from node.store import RecordStore
from node.subject import COUNTS, record_state
from osmanthus.core.audit import AuditLog, redacted_reason
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.cases import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENT_NAME_CHARS,
    SENDER_PROOF_BYTES,
    CaseDraft,
    CaseKind,
    CaseReceipt,
    CaseTarget,
    case_context,
    commitment_letter,
    encode_draft,
    open_case,
    verify_sender_proof,
)
from osmanthus.core.catalogue import Department, ListColour
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
)
from osmanthus.core.ids import canonical_subject, validate_subject
from osmanthus.core.lists import EntryStatus, ListEntry, holds_resident_id
from osmanthus.core.names import validate_purpose, validate_query_id
from osmanthus.core.policy import Decision, PolicyEngine, ReloadablePolicy
from osmanthus.core.rules import Record, RuleSet
from osmanthus.core.subjectseal import check_nonce, recipient_public_key, seal_fingerprint
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import SELF_QUERY, Role, SubjectId, SubjectKind
from osmanthus.core.wire.cases import FileCaseRequest

#: the disclosure shape a filing's audit entry names (the coordinator's entry names it too)
CASE_SHAPE: Final = "case"
#: the node policy's action for a filing
FILE_CASE_ACTION: Final = "FileCase"
#: list entries a case may be filed about: those in public view or scheduled to be
_OPEN_ENTRY_STATUSES: Final = frozenset({EntryStatus.IN_VIEW, EntryStatus.SCHEDULED})
#: fields whose refusals would quote what the subject wrote or attached, or the target's id
_CONTENT_FIELDS: Final = frozenset(
    {"statement", "commitment_letter", "attachments", "target_id", "case", "ground", "version"}
)

#: what a case may be repaired for, said the same way whatever the target was
_NOT_REPAIRABLE: Final = (
    "cannot be the subject of a repair: only deduction records that count, and black-list "
    "entries in view, can be repaired"
)
#: a refused attachment, by the last part of the field the draft's check named: the portal
#: shows the detailed message (with the file's name); this one leaves through the coordinator
_ATTACHMENT_PROBLEMS: Final = {
    "media_type": "its declared type is not one accepted, or not the type its content is (PDF, "
    "JPEG or PNG, checked by content)",
    "name": f"its name is empty, longer than {MAX_ATTACHMENT_NAME_CHARS} characters or holds "
    "control characters",
    "size": f"its size must be 1 to {MAX_ATTACHMENT_BYTES} bytes",
    "": "it is not a PDF, JPEG or PNG file by its content, is empty or too large, or arrived "
    "damaged",
}

Authenticate = Callable[[PeerIdentity, str | None], TokenClaims]
Decide = Callable[[PolicyEngine, TokenClaims, str, Mapping[str, object]], Decision]


def case_audit_reason(error: OsmanthusError) -> str:
    """The reason a case's audit entry records: never a statement, a letter, an attachment's
    name or a target id (they name the field and the kind of refusal), never a piece of an id."""
    if isinstance(error, NotFound) and error.field == "target_id":
        return "NotFound: no such target about this subject"
    base = (error.field or "").split("[", 1)[0].split(".", 1)[0]
    if base in _CONTENT_FIELDS:
        return f"{type(error).__name__}: {error.field} refused"
    reason = redacted_reason(error)
    if holds_resident_id(reason):
        return f"{type(error).__name__}: {error.field or 'request'} refused"
    return reason


class TargetFinder:
    """A case's target as the subject may name it: a record or a list entry of theirs, as the
    node reads it today (the record overlay applied)."""

    def __init__(
        self,
        *,
        department: Department,
        records: RecordStore,
        cases: CaseStore,
        lists: ListStore | None,
        rules: RuleSet,
        today: Callable[[], date],
    ) -> None:
        self._department = department
        self._records = records
        self._cases = cases
        self._lists = lists
        self._rules = rules
        self._today = today

    def _not_found(self, target: CaseTarget, target_id: str) -> NotFound:
        # the same words whether the target does not exist or is another subject's: a caller
        # learns nothing about records that are not the subject's
        what = "record" if target is CaseTarget.RECORD else "list entry"
        return NotFound(
            f"no {what} with this id about this subject at {self._department.id}",
            field="target_id",
        )

    def record(self, kind: SubjectKind, subject: SubjectId, record_id: str) -> Record:
        records = self._cases.overlay.records(self._records.records_for(kind, subject))
        for record in records:
            if record.record_id == record_id:
                return record
        raise self._not_found(CaseTarget.RECORD, record_id)

    def entry(self, kind: SubjectKind, subject: SubjectId, entry_id: str) -> ListEntry:
        if self._lists is None:
            raise self._not_found(CaseTarget.LIST_ENTRY, entry_id)
        try:
            found = self._lists.entry(entry_id, today=self._today())
        except (NotFound, InvalidArgument):
            raise self._not_found(CaseTarget.LIST_ENTRY, entry_id) from None
        if found.entry.subject_kind is not kind or found.entry.subject_id != subject:
            raise self._not_found(CaseTarget.LIST_ENTRY, entry_id)
        return found

    def check(self, draft: CaseDraft, kind: SubjectKind, subject: SubjectId) -> None:
        """The target exists, is the subject's, and this kind of case may be filed on it."""
        if draft.target is CaseTarget.RECORD:
            record = self.record(kind, subject, draft.target_id)
            if draft.kind is CaseKind.REPAIR:
                self._require_repairable_record(record)
            return
        found = self.entry(kind, subject, draft.target_id)
        if found.status not in _OPEN_ENTRY_STATUSES:
            raise FailedPrecondition(
                "this list entry is not in public view (nor scheduled to be): there is nothing "
                "to object to or repair",
                field="target_id",
            )
        if draft.kind is CaseKind.REPAIR and found.entry.colour is not ListColour.BLACK:
            raise FailedPrecondition(f"this list entry {_NOT_REPAIRABLE}", field="target_id")

    def _require_repairable_record(self, record: Record) -> None:
        rule = self._rules.rule(record.subject_kind, record.kind)
        if not rule.is_deduction:
            raise FailedPrecondition(f"this record {_NOT_REPAIRABLE}", field="target_id")
        open_case = self._cases.open_case_on(CaseTarget.RECORD, record.record_id)
        if open_case is not None:
            raise FailedPrecondition(
                f"case {open_case} about this record is open; the department decides it first",
                field="target_id",
            )
        if record_state(record, self._rules, as_of=self._today()) != COUNTS:
            raise FailedPrecondition(f"this record {_NOT_REPAIRABLE}", field="target_id")


class CaseFiling:
    """NodeService.FileCase on typed values (no proto types here)."""

    def __init__(
        self,
        *,
        department: Department,
        cases: CaseStore,
        targets: TargetFinder,
        audit: AuditLog,
        policy: ReloadablePolicy,
        seal_key: X25519PrivateKey,
        authenticate: Authenticate,
        decide: Decide,
    ) -> None:
        self._department = department
        self._cases = cases
        self._targets = targets
        self._audit = audit
        self._policy = policy
        self._seal_key = seal_key
        self._authenticate = authenticate
        self._decide = decide

    def file_case(
        self, request: FileCaseRequest, *, caller: PeerIdentity, token: str | None
    ) -> CaseReceipt:
        engine = self._policy.current()
        record = AuditedRequest(
            query_id=request.query_id,
            purpose=request.purpose,
            policy_hash=engine.hash,
            shape=CASE_SHAPE,
            subject_hash=self._audit.subject_hash(
                canonical_subject(request.subject_kind, request.subject_id)
            ),
        )
        with audited(self._audit, record, redact=case_audit_reason):
            claims = record.identify(self._authenticate(caller, token))
            kind, subject = self._allowed(request, claims, engine)
            self._require_sender(request, claims, kind, subject)
            draft = self._opened(request, kind, subject)
            record.extra.update(
                case_kind=draft.kind.value,
                target=draft.target.value,
                attachments=len(draft.attachments),
            )
            self._check_letter(draft, kind, subject)
            receipt = self._cases.file(
                Filing(
                    subject_kind=kind,
                    subject_id=subject,
                    nonce=request.case_nonce,
                    draft=draft,
                    body_sha256=_body_sha256(draft),
                ),
                check_target=lambda: self._targets.check(draft, kind, subject),
            )
            record.allow(
                "the same filing again: the case filed before"
                if receipt.duplicate
                else "case filed and queued for the department's decision",
                case_id=receipt.case_id,
                duplicate=int(receipt.duplicate),
            )
        return receipt

    def _allowed(
        self, request: FileCaseRequest, claims: TokenClaims, engine: PolicyEngine
    ) -> tuple[SubjectKind, SubjectId]:
        """The portal's token for self_query, the kind served, a valid subject and nonce, and
        this node's policy; raises the first that fails."""
        if claims.role is not Role.PORTAL:
            raise PermissionDenied(
                "cases are filed through the subjects' online portal only (role portal); the "
                f"token's role is {claims.role.value}"
            )
        validate_query_id(request.query_id)
        purpose = validate_purpose(request.purpose)
        if purpose != SELF_QUERY:
            raise PermissionDenied(
                f"a case is filed for purpose {SELF_QUERY!r} only, not {purpose!r}",
                field="purpose",
            )
        claims.require_purpose(purpose)
        kind = request.subject_kind
        if not self._department.serves(kind):
            raise InvalidArgument(
                f"department {self._department.id} holds no {kind.value} records",
                field="subject_kind",
            )
        subject = validate_subject(kind, request.subject_id, field="subject_id")
        try:
            check_nonce(request.case_nonce)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, field="case_nonce") from None
        context = {"purpose": purpose, "subject_kind": kind.value}
        decision = self._decide(engine, claims, FILE_CASE_ACTION, context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        return kind, subject

    def _require_sender(
        self,
        request: FileCaseRequest,
        claims: TokenClaims,
        kind: SubjectKind,
        subject: SubjectId,
    ) -> None:
        """The portal whose token came with the case made its seal, before anything is opened:
        the sender's key is the one the token binds (claim seal_fp, which the issuer signed),
        and the proof over the sealed bytes verifies with the node's case key
        (osmanthus.core.cases.verify_sender_proof). Whoever holds the token but not the
        portal's private key (the coordinator sees every token) cannot make one."""
        if not request.sender_key:
            raise InvalidArgument(
                "is missing: the portal sends its sealing public key with each case",
                field="sender_key",
            )
        recipient_public_key(request.sender_key, field="sender_key")
        if len(request.sender_proof) != SENDER_PROOF_BYTES:
            raise InvalidArgument(
                f"must be the portal's {SENDER_PROOF_BYTES}-byte proof that it sealed the case "
                f"(osmanthus.core.cases.sender_proof), got {len(request.sender_proof)} bytes",
                field="sender_proof",
            )
        try:
            claims.require_seal_key(seal_fingerprint(request.sender_key))
        except PermissionDenied:
            raise PermissionDenied(
                "is not the sealing key the portal's token binds (claim seal_fp), or the token "
                "binds none: a case is filed only by the portal that holds that key",
                field="sender_key",
            ) from None
        context = case_context(
            department=self._department.id,
            subject_kind=kind,
            subject_id=subject,
            nonce=request.case_nonce,
        )
        try:
            verify_sender_proof(
                sealed=request.sealed_case,
                proof=request.sender_proof,
                sender_public_key=request.sender_key,
                private_key=self._seal_key,
                context=context,
            )
        except Unauthenticated:
            raise Unauthenticated(
                "does not verify: the case was not sealed by the portal whose token and key "
                "came with it, or not for this department, subject and nonce",
                field="sender_proof",
            ) from None

    def _opened(self, request: FileCaseRequest, kind: SubjectKind, subject: SubjectId) -> CaseDraft:
        if not request.sealed_case:
            raise InvalidArgument("is empty: the portal seals the case here", field="sealed_case")
        try:
            return open_case(
                request.sealed_case,
                private_key=self._seal_key,
                department=self._department.id,
                subject_kind=kind,
                subject_id=subject,
                nonce=request.case_nonce,
            )
        except Unauthenticated:
            raise Unauthenticated(
                f"the case does not open with {self._department.id}'s case key: it was sealed "
                "to another key, for another department, subject or nonce, or altered on the "
                "way",
                field="sealed_case",
            ) from None
        except InvalidArgument as exc:
            if exc.field == "sealed":
                raise InvalidArgument(exc.message, field="sealed_case") from None
            raise _without_file_names(exc) from None

    def _check_letter(self, draft: CaseDraft, kind: SubjectKind, subject: SubjectId) -> None:
        if draft.kind is not CaseKind.REPAIR:
            return
        expected = commitment_letter(
            subject_kind=kind,
            subject_id=subject,
            department=self._department,
            target=draft.target,
            target_id=draft.target_id,
        )
        if draft.commitment_letter != expected:
            raise InvalidArgument(
                "differs from the credit commitment letter this department renders for the "
                "case (osmanthus.core.cases.commitment_letter): the subject confirms that text, "
                "unchanged",
                field="commitment_letter",
            )


def _without_file_names(error: InvalidArgument) -> InvalidArgument:
    """A refused attachment said without its name (the check's own message quotes it): the
    field, and what is wrong with such a file in general."""
    field = error.field or ""
    if not field.startswith("attachments["):
        return error
    head, _, part = field.partition("].")
    index = head.removeprefix("attachments[").rstrip("]")
    problem = _ATTACHMENT_PROBLEMS.get(part, _ATTACHMENT_PROBLEMS[""])
    return InvalidArgument(f"attachment {index}: {problem}", field=field)


def _body_sha256(draft: CaseDraft) -> str:
    return hashlib.sha256(encode_draft(draft)).hexdigest()
