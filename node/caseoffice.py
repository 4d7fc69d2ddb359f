"""A department's case office: its officer lists, reads and decides the subjects' cases.

CaseOfficeService (ListCases, GetCase, GetAttachment, DecideCase) answers the department's
case officer only: an operator certificate whose name is the department id, as the list office
does (node.office). Another department's officer, the coordinator and everyone else are refused
(PERMISSION_DENIED), and every call is one audit entry in the node's log, subjects as salted
hashes, never a statement or an attachment.

What a decision does (docs/cases.md, "At the node"):

- an objection about a record, upheld: WITHDRAW drops the record for good, CORRECT replaces its
  quantity or dates (checked as an import checks them); either is an amendment in the record
  history (node.cases), which the record overlay applies in every read path;
- an objection about a list entry, upheld: the entry is withdrawn with reason `error` (the
  entry never changes in place: a corrected entry is published under a new id);
- a repair, approved: the black-list entry is withdrawn with reason `repaired`, or the penalty
  record withdrawn in the record history with reason repaired;
- rejected: nothing changes, and the record counts again once its case is closed.

List withdrawals go through the node's ListStore with the case id as the reference, so the
change feed carries them and the sync job reports them to the province. Each call first
deletes the attachments whose retention period ended (CaseStore.purge).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import date
from typing import Final

from node.casefiling import TargetFinder, case_audit_reason
from node.cases import (
    AMEND_CORRECT,
    AMEND_WITHDRAW,
    REASON_OBJECTION,
    REASON_REPAIRED,
    Amendment,
    CaseStore,
)
from node.lists import ListStore
from osmanthus.core.audit import AuditLog
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.cases import (
    AttachmentInfo,
    Case,
    CaseKind,
    CasePage,
    CaseQuery,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
)
from osmanthus.core.catalogue import Department
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from osmanthus.core.ids import canonical_subject
from osmanthus.core.lists import EntryStatus, WithdrawReason
from osmanthus.core.peers import PeerRole
from osmanthus.core.rules import Record
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.types import SubjectId

_log = logging.getLogger(__name__)

#: the fields of a record a correction may change
_CORRECTED: Final = ("quantity", "event_start", "event_end")


def _record_fields(record: Record) -> dict[str, object]:
    return {
        "quantity": record.quantity,
        "event_start": record.event_start.isoformat(),
        "event_end": record.event_end.isoformat() if record.event_end else None,
    }


class CaseOffice:
    """The node's CaseOfficeService on typed values."""

    def __init__(
        self,
        *,
        department: Department,
        cases: CaseStore,
        targets: TargetFinder,
        lists: ListStore | None,
        audit: AuditLog,
        today: Callable[[], date],
        check_record: Callable[[Record], list[tuple[str, str]]],
    ) -> None:
        """`check_record`: the import's checks of a record (node.store.record_problems with
        this node's rules), which a corrected record must pass."""
        self._department = department
        self._cases = cases
        self._targets = targets
        self._lists = lists
        self._audit = audit
        self._today = today
        self._check_record = check_record

    @property
    def cases(self) -> CaseStore:
        return self._cases

    def _require_officer(self, caller: PeerIdentity) -> None:
        dept = self._department.id
        if caller.role is not PeerRole.OPERATOR or caller.name != dept:
            raise PermissionDenied(
                f"the case office of {dept} serves its case officer only: an operator "
                f"certificate named {dept!r} (osmanthus certs issue --role operator --name "
                f"{dept}); the caller's certificate names {caller.role.value} {caller.name!r}"
            )

    def _audited(
        self, caller: PeerIdentity, purpose: str, extra: Mapping[str, int | str] | None = None
    ) -> AbstractContextManager[AuditedRequest]:
        record = AuditedRequest(
            query_id=f"case_{secrets.token_hex(8)}",
            requester=f"{caller.role.value}:{caller.name}",
            purpose=purpose,
            extra=dict(extra or {}),
        )
        return audited(self._audit, record, redact=case_audit_reason)

    def _name_subject(self, record: AuditedRequest, case: Case) -> None:
        record.subject_hash = self._audit.subject_hash(
            canonical_subject(case.subject_kind, case.subject_id)
        )

    def _purge(self) -> None:
        deleted = self._cases.purge()
        if deleted:
            _log.info(
                "%s: the attachments of %d decided cases were deleted (retention period ended)",
                self._department.id,
                deleted,
            )

    # -- reading --------------------------------------------------------------------------------

    def list_cases(
        self, query: CaseQuery | Callable[[], CaseQuery], *, caller: PeerIdentity
    ) -> CasePage:
        """The department's cases, newest first; `query` may be a function that reads the
        request (the servicer's), so that a bad one is refused inside the audited call, after
        the caller's certificate."""
        with self._audited(caller, "case_list") as record:
            self._require_officer(caller)
            query = query() if callable(query) else query
            record.extra.update(
                status=query.status.value if query.status else "any",
                overdue_only=int(query.overdue_only),
            )
            self._purge()
            page = self._cases.list(query)
            # the subjects listed, as salted hashes: who was read, without who they are
            hashes = self._audit.subject_hashes(
                list(dict.fromkeys(canonical_subject(c.subject_kind, c.subject_id)
                                   for c in page.cases))
            )  # fmt: skip
            if len(hashes) == 1:
                record.subject_hash = hashes[0]
            elif hashes:
                record.subject_hashes = tuple(hashes)
            record.allow("cases listed", cases=len(page.cases))
        return page

    def get_case(self, case_id: str, *, caller: PeerIdentity) -> Case:
        with self._audited(caller, "case_read", {"case_id": str(case_id)[:40]}) as record:
            self._require_officer(caller)
            self._purge()
            case = self._cases.get(case_id)
            self._name_subject(record, case)
            record.allow("case read")
        return case

    def attachment(
        self, case_id: str, index: int, *, caller: PeerIdentity
    ) -> tuple[AttachmentInfo, bytes]:
        extra: dict[str, int | str] = {"case_id": str(case_id)[:40], "index": index}
        with self._audited(caller, "case_attachment", extra) as record:
            self._require_officer(caller)
            self._purge()
            case = self._cases.get(case_id)
            self._name_subject(record, case)
            info, content = self._cases.attachment(case_id, index)
            record.allow("attachment decrypted for the department's officer", size=info.size)
        return info, content

    # -- deciding -------------------------------------------------------------------------------

    def decide(self, decision: Decision | Callable[[], Decision], *, caller: PeerIdentity) -> Case:
        """Decide an open case (the module docstring says what each outcome does); `decision`
        may be a function that reads the request, as for list_cases."""
        with self._audited(caller, "case_decision") as record:
            self._require_officer(caller)
            checked = (decision() if callable(decision) else decision).checked()
            record.extra.update(
                case_id=checked.case_id,
                outcome=checked.outcome.value,
                remedy=checked.remedy.value if checked.remedy else "",
            )
            self._purge()
            # one decision of a case at a time: a list entry's withdrawal and the case's
            # decision are two stores' transactions
            with self._cases.locked():
                case = self._cases.get(checked.case_id)
                self._name_subject(record, case)
                if case.status is not CaseStatus.OPEN:
                    raise FailedPrecondition(
                        f"case {case.case_id} was decided already ({case.status.value}); a "
                        "decision is final",
                        field="case_id",
                    )
                amendment = (
                    self._carry_out(case, checked, officer=caller.name)
                    if checked.outcome is CaseStatus.UPHELD
                    else None
                )
                decided = self._cases.decide(
                    case.case_id,
                    outcome=checked.outcome,
                    reason=checked.reason,
                    remedy=checked.remedy,
                    correction=checked.correction,
                    officer=caller.name,
                    amendment=amendment,
                )
            record.allow(
                f"case {checked.outcome.value}"
                + (f" ({checked.remedy.value})" if checked.remedy else "")
            )
        return decided

    def _carry_out(self, case: Case, decision: Decision, *, officer: str) -> Amendment | None:
        """What an upheld case does: a list entry withdrawn (done here, in the list store), or
        the amendment of a record (stored with the decision)."""
        remedy = decision.remedy
        if case.target is CaseTarget.LIST_ENTRY:
            if remedy is not CaseRemedy.WITHDRAW:
                raise InvalidArgument(
                    "a list entry is never changed in place: uphold with withdraw, then publish "
                    "the corrected entry under a new id (osmanthus lists publish)",
                    field="remedy",
                )
            reason = (
                WithdrawReason.REPAIRED if case.kind is CaseKind.REPAIR else WithdrawReason.ERROR
            )
            self._withdraw_entry(case, reason, officer=officer)
            return None
        record = self._record_of(case)
        if remedy is CaseRemedy.WITHDRAW:
            return Amendment(
                record_id=record.record_id,
                subject_kind=record.subject_kind,
                subject_id=record.subject_id,
                action=AMEND_WITHDRAW,
                reason=REASON_REPAIRED if case.kind is CaseKind.REPAIR else REASON_OBJECTION,
                before=_record_fields(record),
                after={},
            )
        if case.kind is CaseKind.REPAIR:
            raise InvalidArgument(
                "an approved repair withdraws the penalty record: uphold with withdraw",
                field="remedy",
            )
        return self._correction(record, decision)

    def _correction(self, record: Record, decision: Decision) -> Amendment:
        correction = decision.correction
        assert correction is not None  # Decision.checked requires one with CORRECT
        if correction.window_end is not None:
            raise InvalidArgument(
                "window_end corrects a list entry's period; a record has a quantity and event "
                "dates",
                field="correction.window_end",
            )
        corrected = dataclasses.replace(
            record,
            quantity=correction.quantity if correction.quantity is not None else record.quantity,
            event_start=correction.event_start or record.event_start,
            event_end=correction.event_end or record.event_end,
        )
        problems = self._check_record(corrected)
        if problems:
            field, problem = problems[0]
            raise InvalidArgument(
                f"the corrected record fails the import's check: {problem}",
                field=f"correction.{field}",
            )
        before, after = _record_fields(record), _record_fields(corrected)
        changed = [name for name in _CORRECTED if before[name] != after[name]]
        if not changed:
            raise InvalidArgument(
                "the correction changes nothing: the record already reads so",
                field="correction",
            )
        return Amendment(
            record_id=record.record_id,
            subject_kind=record.subject_kind,
            subject_id=record.subject_id,
            action=AMEND_CORRECT,
            reason=REASON_OBJECTION,
            before={name: before[name] for name in changed},
            after={name: after[name] for name in changed},
        )

    def _record_of(self, case: Case) -> Record:
        try:
            return self._targets.record(
                case.subject_kind, SubjectId(case.subject_id), case.target_id
            )
        except NotFound:
            raise FailedPrecondition(
                f"the record of case {case.case_id} is no longer in the record store (was it "
                "re-imported?); reject the case saying so, or restore the record",
                field="case_id",
            ) from None

    def _withdraw_entry(self, case: Case, reason: WithdrawReason, *, officer: str) -> None:
        if self._lists is None:
            raise FailedPrecondition(
                f"department {self._department.id}: this node runs without its list store"
            )
        today = self._today()
        found = self._lists.entry(case.target_id, today=today)
        if found.status is EntryStatus.WITHDRAWN and found.withdraw_reference == case.case_id:
            # withdrawn for this case before, by a decision whose own write then failed
            return
        if found.status is EntryStatus.EXPIRED:
            # out of public view already: nothing to withdraw, the decision stands
            return
        self._lists.withdraw(
            case.target_id, reason=reason, reference=case.case_id, actor=officer, today=today
        )
